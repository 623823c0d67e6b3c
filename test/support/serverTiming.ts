/**
 * Reading a Server-Timing header in tests: the parts by name, in ms, with the header's format
 * checked (every item `name;dur=<ms with three decimals>`, as src/util/timing.ts writes it).
 */
import { expect } from 'vitest';

/** A Server-Timing header's parts by name (ms); fails the test when the header is missing or an item is malformed. */
export function serverTimingParts(header: string | null): Record<string, number> {
  expect(header, 'a Server-Timing header').not.toBeNull();
  const out: Record<string, number> = {};
  for (const item of header!.split(', ')) {
    const m = /^([a-z]+);dur=([0-9]+\.[0-9]{3})$/.exec(item);
    expect(m, item).not.toBeNull();
    out[m![1]!] = Number(m![2]);
  }
  return out;
}
