/**
 * The extend workflow: an explicit state machine stored in the volume's record, so a crash or
 * restart at any point resumes from the last completed step (external-resizer's stored resize
 * states, verbose on purpose).
 *
 *   extending{storage → rescan → wait_host → assist → confirm} ──▶ in-use | available (measured size)
 *                      │ final error, or the deadline passed
 *                      ▼
 *   error_extending (attached) | available (detached), with the step, the cause and its code
 *
 * Modes (ExtendState.mode), decided when the extend starts and revised from what compute says:
 * - `online`: the guest runs. Storage grows (unless QEMU grows it itself: file volumes), the host
 *   rescans, compute resizes the guest's disk live and measures what the guest sees.
 * - `offline`: the server is shut off (Nova's and Proxmox's offline extend). Storage always grows
 *   through the backend (nothing holds the image open), the host rescans, and the size the host
 *   measures is the one the guest gets when it next starts. The verdict comes from compute itself:
 *   assist_extend answers InstanceStopped only while the server really is stopped, so a guest that
 *   started meanwhile is resized live instead.
 * - `detached`: no server. The backend grows the storage and measures it.
 *
 * Recovery cases:
 * 1. Crash before `storage` finished: the backend's extend is idempotent; it runs again.
 * 2. Crash after `storage`, before `rescan` was sent or answered: rescan is idempotent; sent again.
 * 3. Crash while waiting for the host: polling starts again; the deadline is absolute, so the
 *    total wait stays bounded across restarts.
 * 4. Crash during `assist`: assist_extend at the size the guest already has is a no-op on
 *    compute, so it is sent again.
 * 5. Crash during `confirm`: nothing external happens there; it runs again.
 * 6. An `extending` record without a workflow state (left by an older version): the backend's
 *    size is measured and the volume goes back to its resting status with it.
 *
 * Errors are classified where they are raised (errors.ts): a final one ends the extend at once
 * with its cause and code; an uncertain one retries the step with backoff and is kept as
 * `lastError`, so a deadline reports the real cause, not just "timed out".
 *
 * Supervision: every run is wrapped so that any exception it did not expect (the store failing
 * with a full disk, a bug) restarts it from the stored state after a backoff, in the same
 * process. A watchdog, independent of the runs, restarts runs that are missing and ends extends
 * whose deadline passed even while their run is stuck in a call.
 */
import type { Logger } from 'pino';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ExtendState, VolumeRecord, VolumeStore } from '../../db/store.js';
import { isFinalError, isServiceError, ServiceError, unexpectedError } from '../../errors.js';
import type { VolumeBackend } from '../backends/backend.js';
import type { ComputeForVolumes } from '../../rpc/computeClient.js';
import { isAttached, outcome } from '../lifecycle.js';
import { DEFAULT_WORKFLOW_OPTIONS, type WorkflowOptions } from './options.js';
import { finalError, runStep, save, type StepDeps } from './steps.js';
import { FIRST_STEP } from './stepNames.js';

/** What the workflow is built from; `options` override DEFAULT_WORKFLOW_OPTIONS. */
interface WorkflowDeps {
  store: VolumeStore;
  backends: ReadonlyMap<string, VolumeBackend>;
  compute: ComputeForVolumes;
  logger: Logger;
  options?: Partial<WorkflowOptions>;
}

/** How a run ended: the volume as it is now, and the error that ended the extend, if it failed. */
export interface ExtendResult {
  volume: VolumeRecord | undefined;
  error?: ServiceError;
}

function asServiceError(err: unknown): ServiceError {
  if (isServiceError(err)) return err;
  // Unclassified here (the store, the OS): classified by its errno or SQLite code.
  return unexpectedError(err);
}

/**
 * Runs the extends of the volume service (see the module comment): `start` one, `resumeAll` at
 * start-up, `close` at shutdown.
 */
export class ExtendWorkflow {
  private readonly store: VolumeStore;
  private readonly backends: ReadonlyMap<string, VolumeBackend>;
  private readonly compute: ComputeForVolumes;
  private readonly log: Logger;
  readonly options: WorkflowOptions;
  private readonly running = new Map<string, Promise<ExtendResult>>();
  private readonly abort = new AbortController();
  private watchdog: NodeJS.Timeout | undefined;
  private ticking = false;
  /**
   * The last uncertain error of each running extend, also kept here: when the database itself
   * is failing (a full disk), it cannot be stored, and a deadline must still report it.
   */
  private readonly lastErrors = new Map<string, NonNullable<ExtendState['lastError']>>();

  constructor(deps: WorkflowDeps) {
    this.store = deps.store;
    this.backends = deps.backends;
    this.compute = deps.compute;
    this.log = deps.logger;
    this.options = { ...DEFAULT_WORKFLOW_OPTIONS, ...deps.options };
  }

  /** Run (or join) the workflow of one volume in the background; resolves when it stops. */
  start(volumeId: string): Promise<ExtendResult> {
    let p = this.running.get(volumeId);
    if (!p) {
      p = this.supervise(volumeId).finally(() => this.running.delete(volumeId));
      this.running.set(volumeId, p);
    }
    return p;
  }

  /** At start-up: pick up every extend a previous process left unfinished, and start the watchdog. */
  async resumeAll(): Promise<string[]> {
    const pending = await this.store.listVolumes({ status: 'extending' });
    for (const v of pending) {
      this.log.info({ volumeId: v.id, step: v.extend?.step, requestId: v.extend?.requestId }, 'resuming extend');
      void this.start(v.id);
    }
    this.startWatchdog();
    return pending.map((v) => v.id);
  }

  startWatchdog(): void {
    if (this.watchdog || this.abort.signal.aborted) return;
    this.watchdog = setInterval(() => void this.tick(), this.options.watchdogMs);
    this.watchdog.unref();
  }

  /** Wait for the background run of a volume, if any. */
  async settled(volumeId: string): Promise<void> {
    await this.running.get(volumeId);
  }

  async close(): Promise<void> {
    this.abort.abort();
    if (this.watchdog) clearInterval(this.watchdog);
    await Promise.allSettled([...this.running.values()]);
  }

  private get closed(): boolean {
    return this.abort.signal.aborted;
  }

  private backoff(attempts: number, base = this.options.backoffBaseMs): number {
    return Math.min(this.options.backoffMaxMs, base * 2 ** Math.min(attempts, 10));
  }

  private async pause(ms: number): Promise<void> {
    await sleep(ms, undefined, { signal: this.abort.signal }).catch(() => undefined);
  }

  /**
   * The watchdog's round: extends without a run in this process get one (a run that died, or
   * one a restart has not picked up); extends past their deadline end now, even if their run is
   * stuck in a call (its next stored change then finds the extend gone and stops).
   */
  private async tick(): Promise<void> {
    if (this.ticking || this.closed) return;
    this.ticking = true;
    try {
      const now = Date.now();
      for (const v of await this.store.listVolumes({ status: 'extending' })) {
        if (this.closed) return;
        const late = v.extend !== null && now > Date.parse(v.extend.deadline) + this.options.watchdogMs;
        if (late && this.running.has(v.id)) {
          await this.failAtDeadline(v).catch((err: unknown) => this.log.error({ err, volumeId: v.id }, 'watchdog could not end an extend past its deadline'));
        } else if (!this.running.has(v.id)) {
          this.log.warn({ volumeId: v.id, step: v.extend?.step }, 'watchdog restarting an extend without a run');
          void this.start(v.id);
        }
      }
    } catch (err) {
      this.log.error({ err }, 'extend watchdog round failed');
    } finally {
      this.ticking = false;
    }
  }

  /** Runs `run` until it returns, restarting it after any exception it did not handle. */
  private async supervise(volumeId: string): Promise<ExtendResult> {
    for (let failures = 0; ; failures++) {
      if (this.closed) return { volume: undefined };
      try {
        const result = await this.run(volumeId);
        this.lastErrors.delete(volumeId);
        return result;
      } catch (err) {
        if (this.closed) return { volume: undefined };
        const e = asServiceError(err);
        const prev = this.lastErrors.get(volumeId);
        this.lastErrors.set(volumeId, { step: prev?.step ?? FIRST_STEP, code: e.code, message: e.message, at: new Date().toISOString() });
        this.log.error({ err, volumeId, failures: failures + 1 }, 'extend run failed; restarting it from the stored state');
        await this.pause(this.backoff(failures, 100));
      }
    }
  }

  private async run(volumeId: string): Promise<ExtendResult> {
    for (;;) {
      if (this.closed) return { volume: undefined };
      const v = await this.store.getVolume(volumeId);
      if (!v || v.status !== 'extending') return { volume: v };
      if (!v.extend) return { volume: await this.recoverStateless(v) };
      const state = v.extend;
      if (Date.now() > Date.parse(state.deadline)) {
        const error = await this.failAtDeadline(v);
        return { volume: await this.store.getVolume(volumeId), ...(error ? { error } : {}) };
      }
      if (this.options.stepDelayMs > 0) await this.pause(this.options.stepDelayMs);
      if (this.closed) return { volume: undefined };
      try {
        if (await runStep(this.steps, v, state)) return { volume: await this.store.getVolume(volumeId) };
      } catch (err) {
        if (this.closed) return { volume: undefined };
        const error = asServiceError(err);
        if (isFinalError(error)) {
          await this.fail(v, state, error);
          return { volume: await this.store.getVolume(volumeId), error };
        }
        const attempts = state.attempts + 1;
        const lastError = { step: state.step, code: error.code, message: error.message, at: new Date().toISOString() };
        this.lastErrors.set(volumeId, lastError);
        await save(this.steps, v, { ...state, attempts, lastError });
        this.log.warn({ volumeId, step: state.step, attempts, code: error.code, err: error.message }, 'extend step failed, retrying');
        await this.pause(this.backoff(attempts));
      }
    }
  }

  /** Case 6: an `extending` volume with no stored workflow: measure and put it back at rest. */
  private async recoverStateless(v: VolumeRecord): Promise<VolumeRecord | undefined> {
    const measured = await this.backend(v).getBytes(v.id);
    await this.store.updateVolume(v.id, { status: ['extending'], version: v.version }, { status: outcome('extend', 'done', isAttached(v)), sizeBytes: measured });
    this.log.warn({ volumeId: v.id, bytes: measured }, 'extending volume without a workflow state put back at rest');
    return this.store.getVolume(v.id);
  }


  /** What runStep needs from this workflow. */
  private get steps(): StepDeps {
    return { store: this.store, compute: this.compute, backend: (v) => this.backend(v), options: this.options, signal: this.abort.signal, log: this.log };
  }

  private backend(v: VolumeRecord): VolumeBackend {
    const b = this.backends.get(v.backend);
    if (!b) throw finalError(`volume type ${v.backend} is not configured on this service`);
    return b;
  }

  private async fail(v: VolumeRecord, state: ExtendState, err: ServiceError): Promise<void> {
    await this.end(v, state, `step ${state.step}: ${err.message}`, err.code);
  }

  /** Ends an extend whose deadline passed, keeping the last real cause. Returns the error it recorded. */
  private async failAtDeadline(v: VolumeRecord): Promise<ServiceError | undefined> {
    const state = v.extend;
    if (!state) return undefined;
    const last = this.lastErrors.get(v.id) ?? state.lastError;
    const reason = `timed out after ${this.options.timeoutMs} ms at step ${state.step}` + (last ? `; last error: ${last.message}` : '');
    const error = new ServiceError('RequestTimeout', `Extend of volume ${v.id} ${reason}`);
    return (await this.end(v, state, reason, last?.code ?? 'RequestTimeout')) ? error : undefined;
  }

  private async end(v: VolumeRecord, state: ExtendState, reason: string, code: string): Promise<boolean> {
    const status = outcome('extend', 'failed', isAttached(v));
    const ok = await this.store.updateVolume(
      v.id,
      { status: ['extending'], extendRequestId: state.requestId },
      { status, extend: { ...state, error: reason, errorCode: code } },
    );
    if (ok) {
      await this.store.finishVolumeAction(state.requestId, v.id, 'Error', reason);
      this.log.error({ volumeId: v.id, requestId: state.requestId, step: state.step, code, reason }, 'extend failed');
    }
    return ok;
  }
}
