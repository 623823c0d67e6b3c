/**
 * The SQLite store's one write batcher: every write the store defers goes through a WriteQueue.
 *
 * Contract (what callers may rely on):
 *  1. Order. Writes are applied in the order they were submitted, whatever submitted them.
 *  2. Group commit. Every write submitted during one event-loop turn (`write`) commits in ONE
 *     transaction at the end of that turn (one WAL append instead of one each). Its promise settles
 *     once it has committed (or failed); until then, readers see the database without it.
 *  3. Failure stays with its write. If the group's transaction fails, it is rolled back and each
 *     of its writes is run again alone, in its own transaction and in order: a bad write rejects
 *     only its own promise, its neighbours commit. So a write's `run` must do nothing but run
 *     statements (it may run twice: once in the group that failed, once alone).
 *  4. Sequences. `sequence(job)` runs a job that reads, compares and writes over several turns
 *     (an inventory sync in chunks, a single-server write compared against the host's copy) after
 *     every job sequenced before it has settled, so two jobs never interleave. A job's writes go
 *     through `write` like any other: grouped with whatever else is queued in their turn, so
 *     audit writes never wait for a whole sync. A job that fails does not stop the next.
 *  5. `flush()` commits what is queued, now (the store calls it before it closes the database).
 *
 * Writes whose outcome decides the caller's answer at once (conditional updates read through
 * `changes`: volume guards, task states, tokens) do not use it: single statements, autocommitted.
 */
import type Database from 'better-sqlite3';

interface Pending {
  run: () => unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/** One database's write batcher (see the module's contract). */
export class WriteQueue {
  private queue: Pending[] = [];
  private immediate: NodeJS.Immediate | undefined;
  /** The last job sequenced, settled or not (never rejects). */
  private lastJob: Promise<unknown> = Promise.resolve();

  constructor(private readonly db: Database.Database) {}

  /**
   * Queue `run` (statements only) to commit with the rest of this turn's writes. Resolves with
   * what `run` returned once committed; rejects with what it threw when run alone.
   */
  write<T>(run: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ run, resolve: resolve as (value: unknown) => void, reject });
      this.immediate ??= setImmediate(() => this.flush());
    });
  }

  /** Run `job` after every job sequenced before it has settled; resolves or rejects as `job` does. */
  sequence<T>(job: () => T | Promise<T>): Promise<T> {
    const run = this.lastJob.then(job);
    this.lastJob = run.catch(() => undefined);
    return run;
  }

  /** Commit every queued write now, in one transaction (then alone on failure: see contract 3). */
  flush(): void {
    if (this.immediate) clearImmediate(this.immediate);
    this.immediate = undefined;
    const batch = this.queue;
    this.queue = [];
    if (batch.length === 0) return;
    let results: unknown[];
    try {
      results = this.db.transaction(() => batch.map((w) => w.run()))();
    } catch {
      // One bad write must not fail its neighbours: retry each alone to attribute the error.
      for (const w of batch) {
        try {
          w.resolve(this.db.transaction(w.run)());
        } catch (err) {
          w.reject(err);
        }
      }
      return;
    }
    batch.forEach((w, i) => w.resolve(results[i]));
  }
}
