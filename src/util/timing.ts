/**
 * Per-request time accounting for the `Server-Timing` header: the API opens a RequestTimings for
 * each request (AsyncLocalStorage, so the store, lock, driver and RPC layers need no request
 * argument) and each layer adds the milliseconds it spent under its part's name.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

/** The parts a request's time is split into (Server-Timing metric names). */
export type TimingPart = 'auth' | 'store' | 'lock' | 'driver' | 'rpc';

/** Milliseconds spent per part in one request (concurrent calls add up: a part may exceed the wall time of the calls). */
export class RequestTimings {
  readonly start = performance.now();
  readonly parts: Partial<Record<TimingPart, number>> = {};

  add(part: TimingPart, ms: number): void {
    this.parts[part] = (this.parts[part] ?? 0) + ms;
  }

  /** The header value: each measured part then `total`, durations in ms with 0.001 resolution. */
  header(now = performance.now()): string {
    let out = '';
    for (const [part, ms] of Object.entries(this.parts)) out += `${part};dur=${ms.toFixed(3)}, `;
    return `${out}total;dur=${(now - this.start).toFixed(3)}`;
  }
}

const als = new AsyncLocalStorage<RequestTimings>();

/** Runs `fn` with `timings` as the current request's (the API's onRequest hook). */
export function runWithTimings<T>(timings: RequestTimings, fn: () => T): T {
  return als.run(timings, fn);
}

/** The current request's timings, or undefined outside a request (background work). */
export function currentTimings(): RequestTimings | undefined {
  return als.getStore();
}

/**
 * Awaits `fn()` and adds its duration to `part` of the current request, if any; the result or
 * rejection passes through unchanged. Outside a request it only calls `fn`.
 */
export async function timed<T>(part: TimingPart, fn: () => Promise<T>): Promise<T> {
  const t = als.getStore();
  if (t === undefined) return fn();
  const start = performance.now();
  try {
    return await fn();
  } finally {
    t.add(part, performance.now() - start);
  }
}
