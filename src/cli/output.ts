/** Output for client commands: aligned tables for people, `-f json` for programs. */
export type Format = 'table' | 'json';

/**
 * An aligned text table: a header, a dashed rule, one line per row. Columns default to every key seen in `rows`;
 * objects are shown as JSON and null/undefined as empty cells.
 */
export function table(rows: Array<Record<string, unknown>>, columns?: string[]): string {
  const cols = columns ?? [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cell = (v: unknown) => (v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(cols), line(widths.map((w) => '-'.repeat(w))), ...rows.map((r) => line(cols.map((c) => cell(r[c]))))].join('\n');
}

/** A client command's output: `data` as indented JSON for `-f json`, else `rows` as a `table`. */
export function render(format: Format, data: unknown, rows: Array<Record<string, unknown>>, columns?: string[]): string {
  return format === 'json' ? JSON.stringify(data, null, 2) : table(rows, columns);
}
