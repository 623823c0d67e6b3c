/**
 * The extend workflow of an in-use volume: an explicit state machine stored in the volume's
 * record, so a crash or restart at any point resumes from the last completed step
 * (external-resizer's stored resize states, verbose on purpose).
 *
 *   in-use ──extend──▶ extending{storage → rescan → wait_host → assist → confirm} ──▶ in-use (measured size)
 *                                          │ final error, or deadline passed
 *                                          ▼
 *                                    error_extending (step and reason recorded)
 *
 * Recovery cases:
 * 1. Crash before `storage` finished: the backend's extend is idempotent; it runs again.
 * 2. Crash after `storage`, before `rescan` was sent or answered: rescan is idempotent; sent again.
 * 3. Crash while waiting for the host: polling starts again; the deadline is absolute, so the
 *    total wait stays bounded across restarts.
 * 4. Crash during `assist`: assist_extend at the size the guest already has is a no-op on
 *    compute, so it is sent again.
 * 5. Crash during `confirm`: nothing external happens there; it runs again.
 * Uncertain errors (timeouts, connection resets, 5xx) retry the same step with backoff until
 * the deadline; final errors (4xx, a backend refusing) end in error_extending at once.
 * No volume stays `extending` forever: each step checks the deadline first.
 */
import type { Logger } from 'pino';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ExtendState, ExtendStep, VolumeRecord, VolumeStore } from '../db/store.js';
import { EXTEND_STEPS } from '../db/store.js';
import { isFinalError, isServiceError } from '../errors.js';
import type { VolumeBackend } from './backends/backend.js';
import type { ComputeForVolumes } from './computeClient.js';

export interface WorkflowOptions {
  /** Total time an extend may take before it ends in error_extending. Generous: storage can be slow. */
  timeoutMs: number;
  /** Backoff for retries and host polling: first delay, and cap. */
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** First interval of the host-size polling (doubles up to backoffMaxMs). */
  pollBaseMs: number;
  /** Sleep before every step. For crash-recovery tests only; 0 in production. */
  stepDelayMs: number;
}

export const DEFAULT_WORKFLOW_OPTIONS: WorkflowOptions = {
  timeoutMs: 15 * 60_000,
  backoffBaseMs: 50,
  backoffMaxMs: 5_000,
  pollBaseMs: 5,
  stepDelayMs: 0,
};

interface WorkflowDeps {
  store: VolumeStore;
  backends: ReadonlyMap<string, VolumeBackend>;
  compute: ComputeForVolumes;
  logger: Logger;
  options?: Partial<WorkflowOptions>;
}

class FinalError extends Error {}

/** A file volume has no host device: QEMU grows the file itself (Nova's NFS volumes). */
function growsOnCompute(v: VolumeRecord): boolean {
  return v.backend === 'file';
}

export class ExtendWorkflow {
  private readonly store: VolumeStore;
  private readonly backends: ReadonlyMap<string, VolumeBackend>;
  private readonly compute: ComputeForVolumes;
  private readonly log: Logger;
  readonly options: WorkflowOptions;
  private readonly running = new Map<string, Promise<void>>();
  private readonly abort = new AbortController();

  constructor(deps: WorkflowDeps) {
    this.store = deps.store;
    this.backends = deps.backends;
    this.compute = deps.compute;
    this.log = deps.logger;
    this.options = { ...DEFAULT_WORKFLOW_OPTIONS, ...deps.options };
  }

  /** Run (or join) the workflow of one volume in the background. */
  start(volumeId: string): Promise<void> {
    let p = this.running.get(volumeId);
    if (!p) {
      p = this.run(volumeId)
        .catch((err: unknown) => {
          if (!this.abort.signal.aborted) this.log.error({ err, volumeId }, 'extend workflow crashed');
        })
        .finally(() => this.running.delete(volumeId));
      this.running.set(volumeId, p);
    }
    return p;
  }

  /** At start-up: pick up every extend a previous process left unfinished. */
  async resumeAll(): Promise<string[]> {
    const pending = await this.store.listVolumes({ status: 'extending' });
    for (const v of pending) {
      if (v.extend) {
        this.log.info({ volumeId: v.id, step: v.extend.step, requestId: v.extend.requestId }, 'resuming extend');
        void this.start(v.id);
      }
    }
    return pending.map((v) => v.id);
  }

  /** Wait for the background run of a volume, if any. */
  async settled(volumeId: string): Promise<void> {
    await this.running.get(volumeId);
  }

  async close(): Promise<void> {
    this.abort.abort();
    await Promise.allSettled([...this.running.values()]);
  }

  private async run(volumeId: string): Promise<void> {
    for (;;) {
      if (this.abort.signal.aborted) return;
      const v = await this.store.getVolume(volumeId);
      if (!v || v.status !== 'extending' || !v.extend) return;
      const state = v.extend;
      if (Date.now() > Date.parse(state.deadline)) {
        await this.fail(v, `timed out after ${this.options.timeoutMs} ms at step ${state.step}`);
        return;
      }
      if (this.options.stepDelayMs > 0) await sleep(this.options.stepDelayMs, undefined, { signal: this.abort.signal }).catch(() => undefined);
      if (this.abort.signal.aborted) return;
      try {
        const done = await this.step(v, state);
        if (done) return;
      } catch (err) {
        if (this.abort.signal.aborted) return;
        if (err instanceof FinalError || isFinalError(err)) {
          await this.fail(v, `step ${state.step}: ${(err as Error).message}`);
          return;
        }
        const attempts = state.attempts + 1;
        await this.save(v, { ...state, attempts });
        const delay = Math.min(this.options.backoffMaxMs, this.options.backoffBaseMs * 2 ** Math.min(attempts, 10));
        this.log.warn({ volumeId, step: state.step, attempts, err: (err as Error).message }, 'extend step failed, retrying');
        await sleep(delay, undefined, { signal: this.abort.signal }).catch(() => undefined);
      }
    }
  }

  /** Runs one step; returns true when the workflow has finished. */
  private async step(v: VolumeRecord, state: ExtendState): Promise<boolean> {
    const tenant = v.serverProjectId ?? v.projectId;
    const serverId = v.serverId;
    if (!serverId) throw new FinalError('the volume is not attached to a server');
    const backend = this.backend(v);
    const next = (step: ExtendStep): ExtendState => ({ ...state, step, attempts: 0 });

    switch (state.step) {
      case 'storage': {
        if (!growsOnCompute(v)) await backend.extend(v.id, state.targetBytes);
        await this.advance(v, next('rescan'));
        return false;
      }
      case 'rescan': {
        const r = await this.compute.rescan(tenant, serverId, v.id);
        await this.note(state, v.id, r.requestId);
        await this.advance(v, next('wait_host'));
        return false;
      }
      case 'wait_host': {
        if (growsOnCompute(v)) {
          await this.advance(v, next('assist'));
          return false;
        }
        let delay = this.options.pollBaseMs;
        for (;;) {
          const r = await this.compute.getBlockdev(tenant, serverId, v.id);
          await this.note(state, v.id, r.requestId);
          if (r.value >= state.targetBytes) {
            await this.advance(v, { ...next('assist'), hostBytes: r.value });
            return false;
          }
          await this.save(v, { ...state, hostBytes: r.value });
          if (Date.now() + delay > Date.parse(state.deadline)) {
            throw new FinalError(`the compute host still sees ${r.value} bytes, not ${state.targetBytes}, at the deadline`);
          }
          await sleep(delay, undefined, { signal: this.abort.signal });
          delay = Math.min(this.options.backoffMaxMs, delay * 2);
        }
      }
      case 'assist': {
        let measured: number;
        try {
          const r = await this.compute.assistExtend(tenant, serverId, v.id, state.targetBytes);
          await this.note(state, v.id, r.requestId);
          measured = r.value;
        } catch (err) {
          if (isServiceError(err) && err.code === 'HostSizeTooSmall') {
            // The host lost sight of the new size (a path came back stale): rescan again.
            await this.advance(v, { ...next('rescan'), attempts: state.attempts + 1 });
            return false;
          }
          throw err;
        }
        await this.advance(v, { ...next('confirm'), measuredBytes: measured });
        return false;
      }
      case 'confirm': {
        const measured = state.measuredBytes ?? 0;
        if (measured < state.targetBytes) {
          throw new FinalError(`the guest sees ${measured} bytes after the resize, not ${state.targetBytes}`);
        }
        const ok = await this.store.updateVolume(v.id, ['extending'], { status: 'in-use', sizeBytes: measured, extend: null });
        if (ok) {
          await this.store.finishVolumeAction(state.requestId, v.id, 'Success', `extended to ${measured} bytes (measured)`);
          this.log.info({ volumeId: v.id, requestId: state.requestId, bytes: measured }, 'volume extended');
        }
        return true;
      }
    }
  }

  private backend(v: VolumeRecord): VolumeBackend {
    const b = this.backends.get(v.backend);
    if (!b) throw new FinalError(`backend ${v.backend} is not configured`);
    return b;
  }

  private async advance(v: VolumeRecord, state: ExtendState): Promise<void> {
    const ok = await this.store.updateVolume(v.id, ['extending'], { extend: state });
    if (!ok) throw new FinalError('the volume left the extending state');
    this.log.debug({ volumeId: v.id, step: state.step }, 'extend step done');
  }

  private async save(v: VolumeRecord, state: ExtendState): Promise<void> {
    await this.store.updateVolume(v.id, ['extending'], { extend: state });
  }

  private async note(state: ExtendState, volumeId: string, computeRequestId: string | undefined): Promise<void> {
    if (computeRequestId) await this.store.noteVolumeAction(state.requestId, volumeId, [computeRequestId]);
  }

  private async fail(v: VolumeRecord, reason: string): Promise<void> {
    const state = v.extend!;
    const ok = await this.store.updateVolume(v.id, ['extending'], { status: 'error_extending', extend: { ...state, error: reason } });
    if (ok) {
      await this.store.finishVolumeAction(state.requestId, v.id, 'Error', reason);
      this.log.error({ volumeId: v.id, requestId: state.requestId, step: state.step, reason }, 'extend failed');
    }
  }
}

export const FIRST_STEP: ExtendStep = EXTEND_STEPS[0];
