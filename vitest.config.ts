import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

/**
 * Three tiers, chosen by a file's name or folder (a new file falls into one without a list to edit):
 *
 * - `real`: needs the real host — a lab (private libvirtd, tgtd, a booted guest), root (loop devices,
 *   mounts, a tgtd it starts) or a real hypervisor: `test/e2e/**`, `test/lab/**`, `*.e2e.test.ts`
 *   (boots guests), `*.real.test.ts`. Files run one at a time (a guest takes about one core under TCG).
 * - `load`: needs no lab and no root, but loads the machine on purpose and judges the service by
 *   what it does under that load (floods of thousands of connections, 1,000 concurrent extends,
 *   thousands of fuzzed requests, `serve` processes signalled mid-request): `*.load.test.ts`. Files
 *   run one at a time, alone, so a window (a header timeout, the compute client's timeout) is the
 *   service's and not the neighbours'.
 * - `fast` (`npm run test:fast`): everything else — every test that needs no root, no lab and no
 *   external server, files in parallel.
 *
 * `npm test` runs the three, fast first (a broken build fails before any guest boots).
 */
export const REAL_TESTS = ['test/e2e/**', 'test/lab/**', '**/*.e2e.test.ts', '**/*.real.test.ts'];
export const LOAD_TESTS = ['**/*.load.test.ts'];

const asFiles = (globs: string[]): string[] => globs.map((g) => (g.endsWith('/**') ? `${g}/*.test.ts` : g));

export default defineConfig({
  test: {
    // The fast tier's files mostly wait (HTTP round trips, backoff timers, child processes), so
    // more workers than cores pays; the other tiers run in a single fork, one file at a time.
    maxWorkers: Math.max(2, availableParallelism() * 2),
    minWorkers: 1,
    testTimeout: 30_000,
    hookTimeout: 180_000,
    reporters: ['default', './test/support/summary-reporter.ts'],
    projects: [
      {
        extends: true,
        test: {
          name: 'fast',
          include: ['test/**/*.test.ts'],
          exclude: [...REAL_TESTS, ...LOAD_TESTS],
          // Tests that spawn bin/online-extend.js need dist/ to match src/.
          globalSetup: ['./test/support/ensure-built.ts'],
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'load',
          include: asFiles(LOAD_TESTS),
          globalSetup: ['./test/support/ensure-built.ts'],
          // One child process, one file after another.
          poolOptions: { forks: { singleFork: true } },
          sequence: { groupOrder: 1 },
        },
      },
      {
        extends: true,
        test: {
          name: 'real',
          include: asFiles(REAL_TESTS),
          // One child process, one file after another.
          poolOptions: { forks: { singleFork: true } },
          sequence: { groupOrder: 2 },
        },
      },
    ],
  },
});
