/**
 * The compute manager's serialization, in one place (Nova's compute manager takes its locks the
 * same way; the virt drivers below it take none of their own for the same operation):
 *
 * - Per volume, `KeyedMutex` (src/util/keyedMutex.ts, the one mutex of the code base) keyed by
 *   volume id: extend (read guest size → refuse a shrink → resize), attach and detach of one
 *   volume run one at a time. The driver's `extendAttached` relies on it (`currentGuestBytes` was
 *   measured under this lock), so a driver never locks a volume again.
 * - Per volume, `Coalescer` below: duplicate rescans share a run, and a host-size read waits for
 *   the rescan under way (a rescan only ever grows what the host sees, so it need not exclude a
 *   resize).
 *
 * What the manager's locks do not cover stays in the driver, under a name that says why: the
 * libvirt driver's `domainDeviceLocks` (per domain) keeps two attaches of *different* volumes to
 * one domain from picking the same free device name from the same domain XML.
 */

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

  /** Whether a run for `key` is under way or queued (a caller may skip awaiting `settled` when not: no promise on the hot path). */
  busy(key: string): boolean {
    return this.running.has(key);
  }

  /** Whether no run is under way or queued for any key (the hot path's check before it makes a key). */
  get idle(): boolean {
    return this.running.size === 0;
  }

  /**
   * Resolves when the runs for `key` under way or queued *now* have finished (whatever their
   * outcome); runs requested after this call are not waited for, so a steady stream of requests
   * cannot hold a reader back (it waits for at most the running run and the one queued behind it).
   */
  async settled(key: string): Promise<void> {
    const slot = this.running.get(key);
    if (slot) await (slot.next ?? slot.current).catch(() => undefined);
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
