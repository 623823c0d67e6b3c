/**
 * Runs dependency-cruiser the way `npm run lint:deps` does (its own CLI, a real process, the repository's
 * .dependency-cruiser.cjs) on a directory, and returns the rule violations it reports.
 */
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file is test/layering/cruise.ts). */
export const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
/** The layering rules under test. */
export const CONFIG = resolve(REPO, '.dependency-cruiser.cjs');
const DEPCRUISE = resolve(REPO, 'node_modules/dependency-cruiser/bin/dependency-cruise.mjs');

/** One reported violation; `to` equals `from` for a module rule (orphan, unreachable). */
export interface Violation {
  rule: string;
  from: string;
  to: string;
  /** For no-circular: the modules of the cycle. */
  cycle: string[];
}

interface RawViolation {
  rule: { name: string };
  from: string;
  to: string;
  cycle?: Array<{ name: string } | string>;
}

/**
 * Cruises `src` under `cwd` (paths in the result are relative to it) with the repository's configuration.
 * Resolves with the violations whatever the exit code (depcruise exits with their count); rejects when it
 * prints no JSON (a crash or a broken configuration).
 */
export function cruise(cwd: string): Promise<Violation[]> {
  return new Promise((done, fail) => {
    execFile(
      process.execPath,
      [DEPCRUISE, 'src', '--config', CONFIG, '--output-type', 'json'],
      { cwd, maxBuffer: 64 * 1024 * 1024, timeout: 120_000 },
      (err, stdout, stderr) => {
        let parsed: { summary: { violations: RawViolation[] } };
        try {
          parsed = JSON.parse(stdout) as typeof parsed;
        } catch {
          fail(new Error(`dependency-cruiser printed no result (${err?.message ?? 'exit 0'}): ${stderr.slice(-2000)}`));
          return;
        }
        done(
          parsed.summary.violations.map((v) => ({
            rule: v.rule.name,
            from: v.from,
            to: v.to,
            cycle: (v.cycle ?? []).map((c) => (typeof c === 'string' ? c : c.name)),
          })),
        );
      },
    );
  });
}

/** `rule: from → to` (or `rule: module` for a module rule): one line per violation, as lint:deps prints. */
export function describeViolation(v: Violation): string {
  return v.from === v.to ? `${v.rule}: ${v.from}` : `${v.rule}: ${v.from} → ${v.to}`;
}
