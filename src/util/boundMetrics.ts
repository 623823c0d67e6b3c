/**
 * Counters and histograms for the request path, registered in a prom-client Registry and
 * serialized by it (text format, JSON, `resetMetrics`), whose updates go through series bound to
 * their label values once (`series(labels)`). prom-client's own `inc`/`observe` check the label
 * names and hash the label values on every call, even on a `labels()` child: ~1 µs each, three or
 * four per API request, a measurable share of a get_blockdev (bench/api.ts). A bound series'
 * update is a few additions. What a scrape shows is the same as prom-client's Counter and
 * Histogram would show for the same updates (test/unit/bound-metrics.test.ts compares them).
 */
import type { Registry } from 'prom-client';

/** Label values by label name, as prom-client takes them. */
export type Labels<L extends string> = Partial<Record<L, string | number>>;

/** One exported sample, in the shape prom-client's Registry serializes (`sharedLabels` after `labels`). */
interface Sample {
  value: number;
  labels: Record<string, string | number>;
  sharedLabels?: Record<string, string | number>;
  metricName?: string;
}

interface MetricShape {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  values: Sample[];
  aggregator: 'sum';
}

/** A label value as the key of the index (and of prom-client's own labels): its text; absent is empty. */
function labelText(value: string | number | undefined): string {
  return typeof value === 'string' ? value : value === undefined ? '' : String(value);
}

/** What both kinds share: a name, the label names (checked once per series), the series by their label values. */
abstract class BoundMetric<L extends string, S extends { labels: Labels<L> }> {
  readonly aggregator = 'sum' as const;
  protected readonly bySeries = new Map<string, S>();
  /** `bySeries` by label value, one Map level per label name in `labelNames` order (seriesFor). */
  private readonly index = new Map<string, unknown>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly L[],
    registers: readonly Registry[],
  ) {
    // The Registry only reads name, help, type, aggregator and get()/getForPromString()/reset():
    // the shape of prom-client's own metrics.
    for (const r of registers) r.registerMetric(this as never);
  }

  /**
   * The series for `labels` (made at the first call): keep it and update it directly. Throws
   * TypeError for a label name the metric does not have, as prom-client does.
   */
  protected seriesFor(labels: Labels<L>): S {
    // The index first, one Map level per label name: no key string built per call (a label value
    // given as a number is looked up as its text, as prom-client labels it).
    let node: Map<string, unknown> | S | undefined = this.labelNames.length === 0 ? this.bySeries.get('') : this.index;
    for (const name of this.labelNames) {
      node = (node as Map<string, unknown>).get(labelText(labels[name])) as Map<string, unknown> | S | undefined;
      if (node === undefined) break;
    }
    if (node !== undefined) return node as S;
    for (const name of Object.keys(labels)) {
      if (!this.labelNames.includes(name as L)) throw new TypeError(`Added label "${name}" is not included in initial labelset: ${JSON.stringify(this.labelNames)}`);
    }
    const made = this.newSeries({ ...labels });
    let key = '';
    let level = this.index;
    this.labelNames.forEach((name, i) => {
      const text = labelText(labels[name]);
      key += `${text}\u0000`;
      if (i === this.labelNames.length - 1) level.set(text, made);
      else {
        let next = level.get(text) as Map<string, unknown> | undefined;
        if (next === undefined) level.set(text, (next = new Map()));
        level = next;
      }
    });
    this.bySeries.set(key, made);
    return made;
  }

  /** A new series for `labels` (its own copy), at zero. */
  protected abstract newSeries(labels: Labels<L>): S;

  /** Forgets every series (prom-client's `reset`, which `Registry.resetMetrics` calls); bound series stop being exported. */
  reset(): void {
    this.bySeries.clear();
    this.index.clear();
  }

  /** The samples as the Registry serializes them to text: a histogram's series labels are `sharedLabels`, after `le`. */
  abstract getForPromString(): Promise<MetricShape>;

  /** The samples as prom-client's `get` gives them (`getMetricsAsJSON`): every label in `labels`. */
  async get(): Promise<MetricShape> {
    const shape = await this.getForPromString();
    return { ...shape, values: shape.values.map(({ sharedLabels, ...v }) => (sharedLabels ? { ...v, labels: { ...v.labels, ...sharedLabels } } : v)) };
  }
}

/** One counter series: `inc` adds (1 by default). */
export interface CounterSeries<L extends string> {
  readonly labels: Labels<L>;
  value: number;
  inc(by?: number): void;
}

/** A counter (`_total` by convention) whose series are bound once and incremented directly. */
export class BoundCounter<L extends string> extends BoundMetric<L, CounterSeries<L>> {
  readonly type = 'counter' as const;

  /** The series for `labels`; keep it and call `inc()` on it. */
  series(labels: Labels<L>): CounterSeries<L> {
    return this.seriesFor(labels);
  }

  protected newSeries(labels: Labels<L>): CounterSeries<L> {
    return {
      labels,
      value: 0,
      inc(by = 1) {
        this.value += by;
      },
    };
  }

  /** Adds `by` (1) to the series for `labels` (for occasional updates; the hot path keeps its series). */
  inc(labels: Labels<L>, by = 1): void {
    this.series(labels).inc(by);
  }

  async getForPromString(): Promise<MetricShape> {
    const values: Sample[] = [];
    for (const s of this.bySeries.values()) values.push({ value: s.value, labels: s.labels as Record<string, string | number> });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

/** One histogram series: `observe` files a value (seconds, for ours) under the first bucket it fits. */
export interface HistogramSeries<L extends string> {
  readonly labels: Labels<L>;
  observe(value: number): void;
}

/** A histogram with fixed bucket upper bounds whose series are bound once and observed directly. */
export class BoundHistogram<L extends string> extends BoundMetric<L, HistogramSeries<L> & { counts: number[]; sum: number; count: number }> {
  readonly type = 'histogram' as const;
  private readonly bounds: readonly number[];

  constructor(name: string, help: string, labelNames: readonly L[], buckets: readonly number[], registers: readonly Registry[]) {
    super(name, help, labelNames, registers);
    this.bounds = [...buckets].sort((a, b) => a - b);
  }

  /** The series for `labels`; keep it and call `observe(v)` on it. A value that is not finite is a TypeError, as in prom-client. */
  series(labels: Labels<L>): HistogramSeries<L> {
    return this.seriesFor(labels);
  }

  protected newSeries(labels: Labels<L>): HistogramSeries<L> & { counts: number[]; sum: number; count: number } {
    const bounds = this.bounds;
    return {
      labels,
      // Per bucket (not cumulative); the last slot counts values above every bound (+Inf only).
      counts: new Array<number>(bounds.length + 1).fill(0),
      sum: 0,
      count: 0,
      observe(value: number) {
        if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${value}`);
        let i = 0;
        while (i < bounds.length && value > bounds[i]!) i++;
        this.counts[i]!++;
        this.sum += value;
        this.count++;
      },
    };
  }

  /** Observes `value` in the series for `labels` (for occasional updates; the hot path keeps its series). */
  observe(labels: Labels<L>, value: number): void {
    this.series(labels).observe(value);
  }

  async getForPromString(): Promise<MetricShape> {
    const values: Sample[] = [];
    for (const s of this.bySeries.values()) {
      const shared = s.labels as Record<string, string | number>;
      let cumulative = 0;
      this.bounds.forEach((le, i) => {
        cumulative += s.counts[i]!;
        values.push({ value: cumulative, labels: { le }, sharedLabels: shared, metricName: `${this.name}_bucket` });
      });
      values.push({ value: s.count, labels: { le: '+Inf' }, sharedLabels: shared, metricName: `${this.name}_bucket` });
      values.push({ value: s.sum, labels: shared, metricName: `${this.name}_sum` });
      values.push({ value: s.count, labels: shared, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}
