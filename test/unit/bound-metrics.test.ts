/**
 * The bound counter and histogram (src/util/boundMetrics.ts) must export exactly what
 * prom-client's own Counter and Histogram export for the same updates: text format, JSON, reset,
 * label checks. Each case runs both kinds on the same updates and compares the serializations.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Counter, Histogram, Registry } from 'prom-client';
import { BoundCounter, BoundHistogram } from '../../src/util/boundMetrics.js';

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
type L = 'api' | 'route';
type Update = { labels: { api: string; route: string }; value: number };

/** Both registries after `updates`: prom-client's metric in one, ours in the other. */
function pair(kind: 'counter' | 'histogram', updates: readonly Update[], bound: 'series' | 'direct' = 'series') {
  const theirs = new Registry();
  const ours = new Registry();
  const name = kind === 'counter' ? 'x_total' : 'x_seconds';
  if (kind === 'counter') {
    const c = new Counter<L>({ name, help: 'h "quoted" \\ help', labelNames: ['api', 'route'], registers: [theirs] });
    const b = new BoundCounter<L>(name, 'h "quoted" \\ help', ['api', 'route'], [ours]);
    for (const u of updates) {
      c.labels(u.labels).inc(u.value);
      if (bound === 'series') b.series(u.labels).inc(u.value);
      else b.inc(u.labels, u.value);
    }
  } else {
    const h = new Histogram<L>({ name, help: 'h', labelNames: ['api', 'route'], buckets: BUCKETS, registers: [theirs] });
    const b = new BoundHistogram<L>(name, 'h', ['api', 'route'], BUCKETS, [ours]);
    for (const u of updates) {
      h.labels(u.labels).observe(u.value);
      if (bound === 'series') b.series(u.labels).observe(u.value);
      else b.observe(u.labels, u.value);
    }
  }
  return { theirs, ours };
}

function withoutEmptyExemplars<T>(metrics: T): T {
  return JSON.parse(JSON.stringify(metrics, (k, v: unknown) => (k === 'exemplar' && v == null ? undefined : v))) as T;
}

const CASES: { name: string; updates: Update[] }[] = [
  { name: 'no update', updates: [] },
  { name: 'one series', updates: [{ labels: { api: 'compute', route: '/v2/:t' }, value: 0.003 }] },
  {
    name: 'values on bucket bounds, below the first and above the last',
    updates: [0.0005, 0.001, 10, 0, 11, 1e6, 0.0001].map((value) => ({ labels: { api: 'compute', route: '/a' }, value })),
  },
  {
    name: 'several series, label values needing escapes',
    updates: [
      { labels: { api: 'compute', route: '/v2/:tenant_id/servers' }, value: 0.02 },
      { labels: { api: 'volume', route: 'un"quoted\\\n' }, value: 2 },
      { labels: { api: 'compute', route: '/v2/:tenant_id/servers' }, value: 0.2 },
    ],
  },
];

describe('bound metrics export what prom-client exports', () => {
  for (const kind of ['counter', 'histogram'] as const) {
    for (const c of CASES) {
      for (const bound of ['series', 'direct'] as const) {
        it(`${kind}, ${c.name} (${bound})`, async () => {
          const { theirs, ours } = pair(kind, c.updates, bound);
          expect(await ours.metrics()).toBe(await theirs.metrics());
          // prom-client's JSON also carries `exemplar: null` per bucket (exemplars are off: ours has none).
          expect(await ours.getMetricsAsJSON()).toEqual(withoutEmptyExemplars(await theirs.getMetricsAsJSON()));
        });
      }
    }
  }

  it('match on random updates (property)', async () => {
    const update = fc.record({
      labels: fc.record({ api: fc.constantFrom('compute', 'volume'), route: fc.constantFrom('/a', '/b/:id', 'unmatched') }),
      value: fc.oneof(fc.double({ min: 0, max: 20, noNaN: true }), fc.constantFrom(...BUCKETS)),
    });
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('counter' as const, 'histogram' as const), fc.array(update, { maxLength: 40 }), async (kind, updates) => {
        const { theirs, ours } = pair(kind, updates);
        expect(await ours.metrics()).toBe(await theirs.metrics());
      }),
      { numRuns: 200 },
    );
  });

  it('reset (Registry.resetMetrics) forgets every series, bound ones included', async () => {
    const r = new Registry();
    const h = new BoundHistogram<L>('h_seconds', 'h', ['api', 'route'], BUCKETS, [r]);
    const s = h.series({ api: 'a', route: 'r' });
    s.observe(1);
    r.resetMetrics();
    expect(await r.metrics()).not.toContain('h_seconds_count');
    // A new series for the same labels starts from zero.
    h.series({ api: 'a', route: 'r' }).observe(2);
    expect(await r.metrics()).toContain('h_seconds_count{api="a",route="r"} 1');
  });

  it('refuses label names the metric does not have, and values that are not finite, as prom-client does', () => {
    const r = new Registry();
    const c = new BoundCounter<L>('c_total', 'c', ['api', 'route'], [r]);
    const h = new BoundHistogram<L>('h_seconds', 'h', ['api', 'route'], BUCKETS, [r]);
    expect(() => c.series({ api: 'a', nope: 'x' } as never)).toThrow(TypeError);
    expect(() => h.series({ api: 'a' }).observe(Number.NaN)).toThrow(TypeError);
    expect(() => h.series({ api: 'a' }).observe(Number.POSITIVE_INFINITY)).toThrow(TypeError);
    // One name per registry, as prom-client's metrics.
    expect(() => new BoundCounter<L>('c_total', 'c', ['api'], [r])).toThrow(/already been registered/);
  });
});
