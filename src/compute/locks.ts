export { KeyedMutex } from '../util/keyedMutex.js';

/**
 * Coalesces repeated requests for the same key: while a run is under way, further requests
 * share one follow-up run (the storage may have grown after the running one started), so N
 * duplicate calls cost at most two runs.
 */
export class Coalescer {
  private readonly running = new Map<string, { current: Promise<void>; next?: Promise<void> }>();

  request(key: string, fn: () => Promise<void>): Promise<void> {
    const slot = this.running.get(key);
    if (!slot) {
      const entry: { current: Promise<void>; next?: Promise<void> } = { current: Promise.resolve() };
      entry.current = fn().finally(() => this.advance(key, entry));
      this.running.set(key, entry);
      return entry.current;
    }
    if (!slot.next) {
      slot.next = slot.current.catch(() => undefined).then(fn);
    }
    return slot.next;
  }

  /** Resolves when no run for `key` is under way or queued (whatever their outcome). */
  async settled(key: string): Promise<void> {
    for (let slot = this.running.get(key); slot; slot = this.running.get(key)) {
      await (slot.next ?? slot.current).catch(() => undefined);
    }
  }

  private advance(key: string, entry: { current: Promise<void>; next?: Promise<void> }): void {
    if (entry.next) {
      const next = entry.next;
      const promoted: { current: Promise<void>; next?: Promise<void> } = { current: next };
      promoted.current = next.finally(() => this.advance(key, promoted));
      // Callers hold `next` and see its outcome; this copy only drives the slot.
      promoted.current.catch(() => undefined);
      this.running.set(key, promoted);
    } else {
      this.running.delete(key);
    }
  }
}
