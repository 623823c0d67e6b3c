/**
 * The fake driver's test and operator controls around every call: a counter per method, an
 * artificial latency, and fault injection (external-resizer's fake client: call counters and
 * `SetExpansionError`).
 */
import type { ServiceError } from '../../errors.js';

/** The FakeDriver methods that count calls and can be made to fail. */
export type FakeMethod =
  | 'listServers'
  | 'getServer'
  | 'rescan'
  | 'getHostBytes'
  | 'getGuestBytes'
  | 'extendAttached'
  | 'attachVolume'
  | 'detachVolume'
  | 'spawn'
  | 'destroy'
  | 'growGuestFilesystem';

/** Call counting, latency and injected faults for FakeDriver. */
export class FakeCallControls {
  /** Calls per method, including calls that failed. */
  readonly calls: Record<FakeMethod, number> = {
    listServers: 0,
    getServer: 0,
    rescan: 0,
    getHostBytes: 0,
    getGuestBytes: 0,
    extendAttached: 0,
    attachVolume: 0,
    detachVolume: 0,
    spawn: 0,
    destroy: 0,
    growGuestFilesystem: 0,
  };
  /** Artificial latency of every call, in ms. */
  latencyMs: number;
  private readonly faults = new Map<FakeMethod, { error: ServiceError; times: number }>();

  constructor(latencyMs = 0) {
    this.latencyMs = latencyMs;
  }

  /** Make the next `times` calls of `method` fail with `error`. */
  inject(method: FakeMethod, error: ServiceError, times = 1): void {
    this.faults.set(method, { error, times });
  }

  /** Remove every injected fault. */
  clear(): void {
    this.faults.clear();
  }

  /**
   * At the start of every call: count it, wait the latency, throw an injected fault if any.
   * Without latency the call goes on at once: undefined, and a fault is thrown right here (an
   * `await` of it in an async method rejects the same way); with latency, a promise that
   * resolves after it, or rejects with the fault.
   */
  enter(method: FakeMethod): Promise<void> | undefined {
    this.calls[method]++;
    if (this.latencyMs > 0) return new Promise((r) => setTimeout(r, this.latencyMs)).then(() => this.throwFault(method));
    this.throwFault(method);
    return undefined;
  }

  /** Throws the fault injected for `method`, if any (counting its uses). */
  private throwFault(method: FakeMethod): void {
    const fault = this.faults.get(method);
    if (fault) {
      if (--fault.times <= 0) this.faults.delete(method);
      throw fault.error;
    }
  }
}
