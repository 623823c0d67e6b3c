import { currentTimings, withTimings } from './timing.js';

/**
 * A mutex per key: calls with one key run one at a time, in arrival order; calls with different
 * keys run in parallel. A failed call does not block the next one. THE keyed mutex of the code
 * base, shared by every layer: the compute manager per volume (src/compute/locks.ts), the libvirt
 * driver per domain for device names, the volume backends per volume and per iSCSI target.
 */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>();

  /** Run `fn` once every earlier call with `key` has settled; resolves or rejects as `fn` does. */
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    // In a request, the wait for the lock (not the time it is held) is its `lock` Server-Timing
    // part, and `fn` runs as part of the request (util/timing.ts: nothing is current when it starts).
    const timings = currentTimings();
    let enter = fn;
    if (timings) {
      const start = performance.now();
      enter = () => {
        timings.add('lock', performance.now() - start);
        return withTimings(timings, fn);
      };
    }
    const mine = previous.then(enter, enter);
    const tail = mine.catch(() => undefined);
    this.tails.set(key, tail);
    try {
      return await mine;
    } finally {
      // The last holder clears the entry so the map does not grow with every key ever seen.
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  /** Keys with a call running or waiting. */
  get size(): number {
    return this.tails.size;
  }
}
