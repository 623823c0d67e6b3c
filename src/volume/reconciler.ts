/**
 * Nothing stuck: every status that should end by itself (creating, attaching, detaching,
 * deleting) is brought to an end even when the operation that set it did not finish — the
 * process was killed, or the database refused the last write (a full disk). `extending` has its
 * own, richer recovery in the extend workflow (workflow.ts); this covers the rest.
 *
 * Each operation marks its volume as under way in this process (`InFlight`) while it runs; the
 * reconciler leaves those alone and, for the others, looks at what is true and moves the record
 * there with a conditional update on the version it read:
 *
 *   creating  → the backend's create is idempotent: run it again → available (error if final)
 *   attaching → compute has the disk on the server → in-use; it has not → available
 *   detaching → compute still has the disk → in-use; it has not → available
 *   deleting  → the backend's delete is idempotent: run it again → gone (error if final)
 *
 * It runs once when the service starts (no operation of this process can be under way yet) and
 * then every `intervalMs` for records untouched for at least `graceMs`.
 *
 * Several processes on one database (issue G), each with a reconciler:
 * - Two reconcilers never act on one volume at once: each first claims the record with a
 *   conditional update on the version it read that changes nothing but the version and
 *   `updatedAt`; only one claim lands, the others skip the volume, and the fresh `updatedAt`
 *   keeps them away for `graceMs` (should the claimant die, another takes it up after that).
 *   Every later update of the claimant requires the version its claim made.
 * - A reconciler does not judge an operation still under way in another process when that
 *   process's InFlight has a heartbeat (`InFlight` options): it touches its transitional records
 *   every `everyMs` (< graceMs), so they never look untouched while it lives. `serve` is the
 *   only process on its database and runs without one: nothing is written for it.
 */
import type { Logger } from 'pino';
import type { VolumeGuard, VolumeRecord, VolumeStatus, VolumeStore } from '../db/store.js';
import { isFinalError, isServiceError, unexpectedError } from '../errors.js';
import type { ComputeForVolumes } from '../rpc/computeClient.js';
import type { VolumeBackend } from './backends/backend.js';
import { createOptions } from './encryption.js';

/**
 * Volumes with an operation under way in this process. With `heartbeat` (several processes on
 * one database), the record of each such volume in a transitional status (RECONCILED_STATUSES)
 * is touched every `everyMs` (only `updatedAt` and the version change), so reconcilers in other
 * processes, which wait `graceMs` after a record's last change, leave it alone while this
 * process works on it; `everyMs` must be below their `graceMs`. Without it nothing is written.
 */
export class InFlight {
  private readonly counts = new Map<string, number>();
  /** Volumes whose record the heartbeat keeps fresh (the reconciler's own runs are not). */
  private readonly touched = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly heartbeat?: { store: Pick<VolumeStore, 'updateVolume'>; everyMs: number; logger?: Logger }) {}

  has(volumeId: string): boolean {
    return this.counts.has(volumeId);
  }

  /**
   * Runs `fn` with `volumeId` marked as under way. `opts.touch: false`: the heartbeat leaves
   * its record alone (a reconciler's run, whose conditional updates need the version it claimed).
   */
  async run<T>(volumeId: string, fn: () => Promise<T>, opts: { touch?: boolean } = {}): Promise<T> {
    const touch = opts.touch !== false && this.heartbeat !== undefined;
    bump(this.counts, volumeId, 1);
    if (touch) {
      bump(this.touched, volumeId, 1);
      this.beat();
    }
    try {
      return await fn();
    } finally {
      bump(this.counts, volumeId, -1);
      if (touch) bump(this.touched, volumeId, -1);
      if (this.touched.size === 0 && this.timer) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    }
  }

  private beat(): void {
    const hb = this.heartbeat;
    if (!hb || this.timer) return;
    this.timer = setInterval(() => {
      for (const volumeId of this.touched.keys()) {
        hb.store.updateVolume(volumeId, { status: RECONCILED_STATUSES }, {}).catch((err: unknown) => hb.logger?.warn({ err, volumeId }, 'could not touch a volume under way'));
      }
    }, hb.everyMs);
    this.timer.unref();
  }
}

function bump(counts: Map<string, number>, key: string, by: number): void {
  const n = (counts.get(key) ?? 0) + by;
  if (n <= 0) counts.delete(key);
  else counts.set(key, n);
}

/** The statuses the reconciler brings to an end (see the module comment). */
export const RECONCILED_STATUSES = ['creating', 'attaching', 'detaching', 'deleting'] as const satisfies readonly VolumeStatus[];

/** How often the reconciler looks (ms), and how long a record must be untouched first (ms). */
export interface ReconcilerOptions {
  intervalMs: number;
  /** A record changed more recently than this is left alone (its operation may be in another call). */
  graceMs: number;
}

/** Brings volumes left in a transitional status to an end (see the module comment): `start`, then `close`. */
export class VolumeReconciler {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly deps: {
      store: VolumeStore;
      backends: ReadonlyMap<string, VolumeBackend>;
      /** Only `connections` is used: what the hypervisor has plugged into a server now. */
      compute: Pick<ComputeForVolumes, 'connections'>;
      inFlight: InFlight;
      logger: Logger;
      options: ReconcilerOptions;
    },
  ) {}

  /** Reconciles everything left over now, then keeps watching. */
  async start(): Promise<void> {
    await this.round(0);
    if (this.closed) return;
    this.timer = setInterval(() => void this.round(this.deps.options.graceMs), this.deps.options.intervalMs);
    this.timer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }

  /** One pass over the statuses that end by themselves; `graceMs`: skip records changed since. */
  round(graceMs: number): Promise<void> {
    this.running ??= (async () => {
      try {
        const before = Date.now() - graceMs;
        for (const status of RECONCILED_STATUSES) {
          for (const v of await this.deps.store.listVolumes({ status })) {
            if (this.closed) return;
            if (this.deps.inFlight.has(v.id) || Date.parse(v.updatedAt) > before) continue;
            await this.deps.inFlight.run(v.id, () => this.reconcile(v), { touch: false }).catch((err: unknown) => {
              const e = unexpectedError(err);
              this.deps.logger.warn({ volumeId: v.id, status: v.status, code: e.code, final: e.final, err: e.message }, 'could not reconcile a volume yet');
            });
          }
        }
      } catch (err) {
        this.deps.logger.error({ err }, 'volume reconcile round failed');
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  private async reconcile(v: VolumeRecord): Promise<void> {
    const { store, logger } = this.deps;
    // The claim (see the module comment): only the version and updatedAt change; every update
    // below requires the version it made (each update increments it by one).
    if (!(await store.updateVolume(v.id, { status: [v.status], version: v.version }, {}))) return;
    const guard: VolumeGuard = { status: [v.status], version: v.version + 1 };
    const backend = this.deps.backends.get(v.backend);
    switch (v.status) {
      case 'creating': {
        if (!backend) return void (await store.updateVolume(v.id, guard, { status: 'error' }));
        try {
          const passphrase = v.encryption ? await store.getVolumeEncryptionKey(v.id) : undefined;
          const made = await backend.create(v.id, v.sizeBytes, createOptions(v, passphrase));
          await store.updateVolume(v.id, guard, { status: 'available', sizeBytes: made.bytes, ...(made.encryption ? { payloadOffset: made.encryption.payloadOffset } : {}) });
        } catch (err) {
          if (!isFinalError(err)) throw err;
          await store.updateVolume(v.id, guard, { status: 'error' });
        }
        break;
      }
      case 'deleting': {
        if (!backend) return void (await store.updateVolume(v.id, guard, { status: 'error' }));
        try {
          await backend.delete(v.id);
        } catch (err) {
          if (!isFinalError(err)) throw err;
          await store.updateVolume(v.id, guard, { status: 'error' });
          break;
        }
        await store.deleteVolume(v.id);
        break;
      }
      case 'attaching':
      case 'detaching': {
        const plugged = await this.attachedNow(v, guard);
        if (plugged === undefined) return;
        if (plugged) {
          await store.updateVolume(v.id, guard, { status: 'in-use', device: plugged.device });
        } else {
          await store.updateVolume(v.id, guard, { status: 'available', serverId: null, serverProjectId: null, device: null });
        }
        break;
      }
      default:
        return;
    }
    const now = await store.getVolume(v.id);
    logger.warn({ volumeId: v.id, from: v.status, to: now?.status ?? 'deleted' }, 'volume left in a transitional status reconciled');
  }

  /**
   * Whether the hypervisor has the volume on its server now: its attachment, false, or undefined
   * when the record names no server (an attach reserved before it knew one: nothing was plugged).
   */
  private async attachedNow(v: VolumeRecord, guard: VolumeGuard): Promise<{ device: string } | false | undefined> {
    if (!v.serverId) {
      // Reserved, but the server was never recorded: nothing can have been plugged in by us.
      await this.deps.store.updateVolume(v.id, guard, { status: 'available', device: null });
      return undefined;
    }
    try {
      const plugged = await this.deps.compute.connections(v.serverProjectId ?? v.projectId, v.serverId);
      const att = plugged.value.find((a) => a.volumeId === v.id);
      return att ? { device: att.device } : false;
    } catch (err) {
      // The server is gone: so is the attachment.
      if (isServiceError(err) && err.code === 'InstanceNotFound') return false;
      throw err;
    }
  }
}
