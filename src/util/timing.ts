/**
 * Per-request time accounting for the `Server-Timing` header: the API opens a RequestTimings for
 * each request and each layer adds the milliseconds it spent under its part's name.
 *
 * How a layer finds the request's timings without a request argument in every signature: the
 * timings are *current* only while code runs synchronously inside `withTimings` (one module
 * variable, set and restored). A layer takes them when it is called (`currentTimings()`, at its
 * first synchronous line) and keeps them across its own awaits; where it calls further down after
 * an await, it enters again with what it took (`withTimings(t, () => lower.call())`), and the
 * services do so from `RequestContext.timings`. A layer that forgets loses its part (it is
 * missing from the header), never adds it to another request's: between synchronous runs nothing
 * is current. AsyncLocalStorage did this implicitly, but on Node 20 its hooks cost every promise,
 * tick and socket write of the process: about 15 µs of a 65 µs get_blockdev (bench/api.ts).
 */

/**
 * The parts a request's time is split into (Server-Timing metric names), in the order the header
 * lists them: from the socket inwards. `libvirt` is the libvirt remote-protocol calls' own time,
 * inside `driver`.
 */
export const TIMING_PARTS = ['auth', 'store', 'lock', 'rpc', 'driver', 'libvirt'] as const;
/** One of TIMING_PARTS. */
export type TimingPart = (typeof TIMING_PARTS)[number];

/**
 * Milliseconds spent per part in one request (concurrent calls add up: a part may exceed the wall
 * time of the calls). One field per part, NaN until recorded: every request's object has the same
 * shape, so the adds on the hot path are plain field updates.
 */
export class RequestTimings {
  readonly start = performance.now();
  private auth = NaN;
  private store = NaN;
  private lock = NaN;
  private rpc = NaN;
  private driver = NaN;
  private libvirt = NaN;

  add(part: TimingPart, ms: number): void {
    const had = this[part];
    this[part] = Number.isNaN(had) ? ms : had + ms;
  }

  /** The parts recorded so far, in TIMING_PARTS order (tests and logs; the header reads the fields). */
  get parts(): Partial<Record<TimingPart, number>> {
    const out: Partial<Record<TimingPart, number>> = {};
    for (const part of TIMING_PARTS) if (!Number.isNaN(this[part])) out[part] = this[part];
    return out;
  }

  /** The header value: each recorded part in TIMING_PARTS order, then `total`; durations in ms with 0.001 resolution. */
  header(now = performance.now()): string {
    let out = '';
    for (const part of TIMING_PARTS) if (!Number.isNaN(this[part])) out += `${part};dur=${millis(this[part])}, `;
    return `${out}total;dur=${millis(now - this.start)}`;
  }
}

/** `ms` with exactly three decimals (as `toFixed(3)`, for the durations here: finite, not negative). */
function millis(ms: number): string {
  const micros = Math.round(ms * 1000);
  if (!(micros >= 0) || !Number.isSafeInteger(micros)) return ms.toFixed(3);
  const digits = String(micros);
  return micros < 1000 ? `0.${digits.padStart(3, '0')}` : `${digits.slice(0, -3)}.${digits.slice(-3)}`;
}

let current: RequestTimings | undefined;

/**
 * Runs `fn` with `timings` as the current request's for `fn`'s synchronous part (undefined: none,
 * e.g. background work started from a request), then restores what was current; returns what
 * `fn` returns (its promise, for an async `fn`, whose later parts are no longer inside).
 */
export function withTimings<T>(timings: RequestTimings | undefined, fn: () => T): T {
  const outer = current;
  current = timings;
  try {
    return fn();
  } finally {
    current = outer;
  }
}

/** The current request's timings (inside `withTimings`, synchronously), or undefined. */
export function currentTimings(): RequestTimings | undefined {
  return current;
}

/**
 * Awaits `fn()` and adds its duration to `part` of the current request, if any; the result or
 * rejection passes through unchanged. Outside a request it only calls `fn`.
 */
export async function timed<T>(part: TimingPart, fn: () => Promise<T>): Promise<T> {
  const t = current;
  if (t === undefined) return fn();
  const start = performance.now();
  try {
    return await fn();
  } finally {
    t.add(part, performance.now() - start);
  }
}

/**
 * `target` with each method's time added to `part` of the current request (a promise's until it
 * settles); `onError` is told every error a method throws or rejects with, and it passes through
 * unchanged. Other properties are `target`'s own. Wrapped methods are made once per name, so a
 * call costs one Map lookup more than a direct one.
 */
export function timedMethods<T extends object>(target: T, part: TimingPart, onError?: (err: unknown) => void): T {
  const wrapped = new Map<PropertyKey, unknown>();
  return new Proxy(target, {
    get(obj, name, receiver) {
      const value: unknown = Reflect.get(obj, name, receiver);
      if (typeof value !== 'function' || name === 'constructor') return value;
      let w = wrapped.get(name);
      if (w === undefined) {
        const fn = value as (...a: unknown[]) => unknown;
        // Outside a request's timings (or without Server-Timing detail) only errors are wanted:
        // one handler made here, none per call.
        const rejected = onError && ((err: unknown) => onError(err));
        w = function (this: unknown, ...args: unknown[]): unknown {
          const t = current;
          // Called on the proxy: `this` is the target, so private fields and #members work.
          const self = this === receiver || this === undefined ? obj : this;
          if (t === undefined) {
            if (rejected === undefined) return fn.apply(self, args);
            let result: unknown;
            try {
              result = fn.apply(self, args);
            } catch (err) {
              rejected(err);
              throw err;
            }
            if (result instanceof Promise) result.then(undefined, rejected);
            return result;
          }
          const start = performance.now();
          let result: unknown;
          try {
            result = fn.apply(self, args);
          } catch (err) {
            t.add(part, performance.now() - start);
            onError?.(err);
            throw err;
          }
          if (!(result instanceof Promise)) {
            t.add(part, performance.now() - start);
            return result;
          }
          // The caller gets the method's own promise (no extra link in its chain); the time and
          // the error are taken on the side, where a rejection handled here is not rethrown.
          result.then(
            () => t.add(part, performance.now() - start),
            (err: unknown) => {
              t.add(part, performance.now() - start);
              onError?.(err);
            },
          );
          return result;
        };
        wrapped.set(name, w);
      }
      return w;
    },
  });
}
