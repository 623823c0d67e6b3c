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
 */
import type { Logger } from 'pino';
import type { VolumeRecord, VolumeStatus, VolumeStore } from '../db/store.js';
import { isFinalError, isServiceError, unexpectedError } from '../errors.js';
import type { ComputeForVolumes } from '../rpc/computeClient.js';
import type { VolumeBackend } from './backends/backend.js';

/** Volumes with an operation under way in this process. */
export class InFlight {
  private readonly counts = new Map<string, number>();

  has(volumeId: string): boolean {
    return this.counts.has(volumeId);
  }

  /** Runs `fn` with `volumeId` marked as under way. */
  async run<T>(volumeId: string, fn: () => Promise<T>): Promise<T> {
    this.counts.set(volumeId, (this.counts.get(volumeId) ?? 0) + 1);
    try {
      return await fn();
    } finally {
      const n = (this.counts.get(volumeId) ?? 1) - 1;
      if (n <= 0) this.counts.delete(volumeId);
      else this.counts.set(volumeId, n);
    }
  }
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
            await this.deps.inFlight.run(v.id, () => this.reconcile(v)).catch((err: unknown) => {
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
    const guard = { status: [v.status], version: v.version };
    const backend = this.deps.backends.get(v.backend);
    switch (v.status) {
      case 'creating': {
        if (!backend) return void (await store.updateVolume(v.id, guard, { status: 'error' }));
        try {
          const made = await backend.create(v.id, v.sizeBytes, v.format ? { format: v.format } : undefined);
          await store.updateVolume(v.id, guard, { status: 'available', sizeBytes: made.bytes });
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
        const plugged = await this.attachedNow(v);
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
  private async attachedNow(v: VolumeRecord): Promise<{ device: string } | false | undefined> {
    if (!v.serverId) {
      // Reserved, but the server was never recorded: nothing can have been plugged in by us.
      await this.deps.store.updateVolume(v.id, { status: [v.status], version: v.version }, { status: 'available', device: null });
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
