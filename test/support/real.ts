/**
 * Tests that need a real part (libvirt, a guest, a loop device, a server) call `needReal`.
 * In CI (CI=true) a missing part fails the test run; locally it skips loudly.
 */
import { describe } from 'vitest';

export const inCI = process.env.CI === 'true';

/** Returns `describe` or `describe.skip` (locally) and throws (in CI) when `reason` is set. */
export function describeReal(reason: string | undefined): typeof describe {
  if (reason === undefined) return describe;
  if (inCI) throw new Error(`real part missing in CI: ${reason}`);
  console.warn(`\n*** SKIPPING real-part tests: ${reason} ***\n`);
  return describe.skip as unknown as typeof describe;
}
