/**
 * The process's Prometheus metrics (prom-client), on one Registry made per process and passed in
 * (never prom-client's global registry, so two apps in one test process do not share counters).
 * Names follow Prometheus conventions: `online_extend_` prefix, `_total` counters, `_seconds`.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { isServiceError } from '../errors.js';
import { BoundCounter, BoundHistogram } from './boundMetrics.js';

/** Buckets for HTTP, RPC and libvirt calls (seconds): 0.5 ms to 10 s. */
const CALL_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Buckets for workflow steps (seconds): a step may wait on a guest for minutes. */
const STEP_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300];

/** The route label of a request that matched no route: one series, whatever the URL (bounded cardinality). */
export const UNMATCHED_ROUTE = 'unmatched';

/** The counts of volumes per status, read at scrape time (VolumeStore.countVolumesByStatus). */
export type VolumeCounter = () => Promise<Record<string, number>>;

/** Every metric the process exports; `registry` is what GET /metrics serializes. */
export class Metrics {
  readonly registry: Registry;
  /** HTTP requests answered, by API, method, route pattern (never the raw URL) and status. */
  readonly httpRequests: BoundCounter<'api' | 'method' | 'route' | 'status'>;
  /** HTTP request duration (seconds), by API and route pattern. */
  readonly httpSeconds: BoundHistogram<'api' | 'route'>;
  /** Volume extends finished, by result (`success`, `error`) and backend. */
  readonly extends: Counter<'result' | 'backend'>;
  /** Time per extend workflow step (seconds). */
  readonly workflowStepSeconds: Histogram<'step'>;
  /** Retries of extend workflow steps. */
  readonly workflowRetries: Counter<'step'>;
  /** Compute RPC call latency (seconds), by method. */
  readonly rpcSeconds: BoundHistogram<'method'>;
  /** libvirt remote-protocol call latency (seconds), by procedure. */
  readonly libvirtSeconds: BoundHistogram<'procedure'>;
  /** Driver errors, by our error code. */
  readonly driverErrors: Counter<'code'>;
  private volumeCounter: VolumeCounter | undefined;
  private volumeStatuses: readonly string[] = [];

  constructor(registry = new Registry()) {
    this.registry = registry;
    const registers = [registry];
    // The metrics updated on every request or call are bound ones (util/boundMetrics.ts: same
    // exposition, a fraction of prom-client's cost per update); the rest are prom-client's own.
    this.httpRequests = new BoundCounter('online_extend_http_requests_total', 'HTTP requests answered, by API, method, route pattern and status.', ['api', 'method', 'route', 'status'], registers);
    this.httpSeconds = new BoundHistogram('online_extend_http_request_duration_seconds', 'HTTP request duration (to the answer handed to the socket), by API and route pattern.', ['api', 'route'], CALL_BUCKETS, registers);
    this.extends = new Counter({ name: 'online_extend_volume_extends_total', help: 'Volume extends finished, by result and backend.', labelNames: ['result', 'backend'], registers });
    this.workflowStepSeconds = new Histogram({ name: 'online_extend_workflow_step_duration_seconds', help: 'Time per extend workflow step.', labelNames: ['step'], buckets: STEP_BUCKETS, registers });
    this.workflowRetries = new Counter({ name: 'online_extend_workflow_step_retries_total', help: 'Retries of extend workflow steps.', labelNames: ['step'], registers });
    this.rpcSeconds = new BoundHistogram('online_extend_compute_rpc_duration_seconds', 'Compute RPC call latency, by method.', ['method'], CALL_BUCKETS, registers);
    this.libvirtSeconds = new BoundHistogram('online_extend_libvirt_call_duration_seconds', 'libvirt remote-protocol call latency, by procedure.', ['procedure'], CALL_BUCKETS, registers);
    this.driverErrors = new Counter({ name: 'online_extend_driver_errors_total', help: 'Virt driver errors, by error code.', labelNames: ['code'], registers });
    // Read at scrape time: one grouped count per scrape, nothing kept between scrapes.
    const volumesOf = () => this.volumeCounter;
    const statusesOf = () => this.volumeStatuses;
    new Gauge({
      name: 'online_extend_volumes',
      help: 'Volumes, by status (counted in the store at scrape time).',
      labelNames: ['status'],
      registers,
      async collect() {
        const counter = volumesOf();
        if (counter === undefined) return;
        const counts = await counter();
        this.reset();
        // Every known status reads 0 when no volume has it, rather than its series vanishing
        // (a query over `available` must see 0 after the last one is deleted).
        for (const status of statusesOf()) this.set({ status }, 0);
        for (const [status, n] of Object.entries(counts)) this.set({ status }, n);
      },
    });
  }

  /** Counts one driver error under its catalogue code (`Unexpected` for one that is not a ServiceError): a bounded label. */
  countDriverError(err: unknown): void {
    this.driverErrors.inc({ code: isServiceError(err) ? err.code : 'Unexpected' });
  }

  /** Where the volumes gauge reads from (the volume service's store), and the statuses it shows at 0 when no volume has them; unset: no volume series. */
  countVolumesWith(counter: VolumeCounter, statuses: readonly string[] = []): void {
    this.volumeCounter = counter;
    this.volumeStatuses = statuses;
  }

  /** The text exposition (Prometheus text format 0.0.4) and its content type. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/**
 * Counts one API's answers in `metrics` (`httpRequests` by method, route pattern and status;
 * `httpSeconds` by route pattern), through the bound series (each label set resolved once).
 * `api` labels the series (`compute`, `volume`, `image`, `identity`).
 */
export class RequestCounter {
  constructor(
    private readonly metrics: Metrics,
    private readonly api: string,
  ) {}

  /**
   * One answer of `status` to `method` on `route` (a route pattern, never a URL; undefined:
   * UNMATCHED_ROUTE), and its duration in the route's histogram when `seconds` is given (answers
   * made before a request reached the API's hooks have none).
   */
  count(method: string, status: number, route: string = UNMATCHED_ROUTE, seconds?: number): void {
    this.metrics.httpRequests.series({ api: this.api, method, route, status }).inc();
    if (seconds !== undefined) this.metrics.httpSeconds.series({ api: this.api, route }).observe(seconds);
  }
}
