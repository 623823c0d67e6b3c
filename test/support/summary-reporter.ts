import type { Reporter, TestModule } from 'vitest/node';

interface Counts {
  passed: number;
  failed: number;
  skipped: number;
}

const line = (c: Counts): string => `${c.passed} passed, ${c.failed} failed, ${c.skipped} skipped`;

/**
 * Prints the plain closing line `tests: N passed, N failed, N skipped` that CI reads. When files of more
 * than one tier ran (vitest projects `fast` and `real`, see vitest.config.ts), one line per tier before it.
 */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    const total: Counts = { passed: 0, failed: 0, skipped: 0 };
    const byTier = new Map<string, Counts>();
    for (const mod of modules) {
      const tierName = mod.project.name || 'default';
      const tier = byTier.get(tierName) ?? { passed: 0, failed: 0, skipped: 0 };
      byTier.set(tierName, tier);
      for (const t of mod.children.allTests()) {
        const state = t.result().state;
        const key = state === 'passed' ? 'passed' : state === 'failed' ? 'failed' : 'skipped';
        total[key]++;
        tier[key]++;
      }
      if (mod.state() === 'failed' && mod.children.size === 0) {
        total.failed++;
        tier.failed++;
      }
    }
    if (byTier.size > 1) for (const [name, c] of byTier) console.log(`tests (${name}): ${line(c)}`);
    console.log(`\ntests: ${line(total)}`);
  }
}
