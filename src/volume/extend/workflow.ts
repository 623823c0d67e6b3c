/**
 * The extend workflow: an explicit state machine stored in the volume's record, so a crash or
 * restart at any point resumes from the last completed step (external-resizer's stored resize
 * states, verbose on purpose).
 *
 *   extending{storage → rescan → wait_host → assist → confirm [→ grow_fs]} ──▶ in-use | available (measured size)
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
 * 5a. Crash during `grow_fs`: it runs again; growing a partition or filesystem that already fills
 *    its disk is a no-op in the guest, so a second grow is harmless. Its deadline is the
 *    extend's: past it the extend still ends well (the block extend stands), the filesystem
 *    recorded as not grown.
 * 6. An `extending` record without a workflow state (left by an older version): the backend's
 *    size is measured and the volume goes back to its resting status with it; if its storage is
 *    missing, to the status a failed extend leaves, with its recorded size.
 *
 * Errors are classified where they are raised (errors.ts): a final one ends the extend at once
 * with its cause and code; an uncertain one retries the step with backoff and is kept as
 * `lastError`, so a deadline reports the real cause, not just "timed out".
 *
 * Supervision: every run is wrapped so that any exception it did not expect (the store failing
 * with a full disk, a bug) restarts it from the stored state after a backoff, in the same
 * process. A watchdog, independent of the runs, restarts runs that are missing and ends extends
 * whose deadline passed even while their run is stuck in a call.
 *
 * Workers: several processes may run this workflow over one database; each extend is driven by
 * exactly one of them at a time, the holder of its lease (store `claimExtend`: a row of its own,
 * so renewing it never moves the volume's version). A run starts only once its claim is granted
 * and claims again (which renews) before every step; a renewal loop renews the leases of all
 * running extends every `leaseMs / 3` and stops a run whose lease it finds lost (its sleeps and
 * polls are aborted; it acts no more). A step the old and the new holder both ran in the
 * overlap does no harm: every step is idempotent (the recovery cases above). A run releases its
 * lease when it ends, `close` releases them all (a graceful stop hands over at once); a killed
 * worker's leases expire after `leaseMs`, and then any worker's watchdog takes its extends over.
 * `serve` is the only worker on its database (the data dir lock) and names itself the same
 * across restarts, so a restart after a kill takes its own leases back at once.
 */
import type { Logger } from 'pino';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ExtendState, VolumeRecord, VolumeStore } from '../../db/store.js';
import { isFinalError, isServiceError, ServiceError, unexpectedError } from '../../errors.js';
import type { VolumeBackend } from '../backends/backend.js';
import type { ComputeForVolumes } from '../../rpc/computeClient.js';
import { isAttached, outcome } from '../lifecycle.js';
import { DEFAULT_WORKFLOW_OPTIONS, type WorkflowOptions } from './options.js';
import { finalError, finishExtend, notGrown, runStep, save, type StepDeps } from './steps.js';
import { FIRST_STEP } from './stepNames.js';
import type { Metrics } from '../../util/metrics.js';

/** What the workflow is built from; `options` override DEFAULT_WORKFLOW_OPTIONS. */
interface WorkflowDeps {
  store: VolumeStore;
  backends: ReadonlyMap<string, VolumeBackend>;
  compute: ComputeForVolumes;
  logger: Logger;
  options?: Partial<WorkflowOptions>;
  /**
   * This worker's name in the leases it holds; unique per live worker. Default: a new one per
   * instance, `<hostname>:<pid>:<uuid>` (see `defaultWorkerName`).
   */
  owner?: string;
  /** The process's metrics: time per step, retries, extends by result and backend (absent: none). */
  metrics?: Metrics;
}

/**
 * How a run ended: the volume as it is now, and the error that ended the extend, if it failed.
 * `elsewhere`: this worker did not drive the extend to its end, because another worker holds
 * its lease (the claim was refused, or the lease was lost on the way); that worker finishes it.
 */
export interface ExtendResult {
  volume: VolumeRecord | undefined;
  error?: ServiceError;
  elsewhere?: true;
}

/** A worker name no other live worker has: `<hostname>:<pid>:<uuid>`. */
export function defaultWorkerName(): string {
  return `${hostname()}:${process.pid}:${randomUUID()}`;
}

/** This worker's hold on the extend of one volume while its run lives. */
interface RunLease {
  /** Aborted once the lease is found lost: the run's sleeps and polls end and it acts no more. */
  readonly lost: AbortController;
  /** performance.now() when the lease was first granted to this run; undefined before. */
  grantedAt: number | undefined;
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
  /** This worker's name in the extend leases (store `claimExtend`). */
  readonly owner: string;
  private readonly metrics: Metrics | undefined;
  /** The lease of every run of this worker, by volume id. */
  private readonly leases = new Map<string, RunLease>();
  private renewal: NodeJS.Timeout | undefined;
  private renewing = false;
  /** Set by `abandon`: stop without releasing any lease, as a killed process does. */
  private abandoned = false;
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
    this.owner = deps.owner ?? defaultWorkerName();
    this.metrics = deps.metrics;
  }

  /**
   * Run (or join) the workflow of one volume in the background, once this worker's claim on its
   * lease is granted; resolves when the run stops. When another live worker holds the lease,
   * nothing is done here: it resolves at once with `elsewhere: true` and the volume as it is
   * (that worker drives the extend; the caller's request was accepted all the same).
   */
  start(volumeId: string): Promise<ExtendResult> {
    let p = this.running.get(volumeId);
    if (!p) {
      p = this.drive(volumeId).finally(() => this.running.delete(volumeId));
      this.running.set(volumeId, p);
    }
    return p;
  }

  /**
   * At start-up: claim every unfinished extend this worker may drive (a free or expired lease,
   * or one this worker's name already holds: a `serve` restarted after a kill) and run it; start
   * the watchdog. Answers the ids of the extends claimed.
   */
  async resumeAll(): Promise<string[]> {
    const pending = await this.store.listVolumes({ status: 'extending' });
    const claimed: string[] = [];
    for (const v of pending) {
      if (this.closed) break;
      if (!(await this.store.claimExtend(v.id, this.owner, this.options.leaseMs))) continue;
      this.log.info({ volumeId: v.id, step: v.extend?.step, requestId: v.extend?.requestId, owner: this.owner }, 'resuming extend');
      claimed.push(v.id);
      void this.start(v.id);
    }
    this.startWatchdog();
    return claimed;
  }

  startWatchdog(): void {
    if (this.watchdog || this.abort.signal.aborted) return;
    this.watchdog = setInterval(() => void this.tick(), this.options.watchdogMs);
    this.watchdog.unref();
    this.startRenewal();
  }

  private startRenewal(): void {
    if (this.renewal || this.abort.signal.aborted) return;
    this.renewal = setInterval(() => void this.renew(), Math.max(1, Math.floor(this.options.leaseMs / 3)));
    this.renewal.unref();
  }

  /** Whether a run of this worker drives the extend of `volumeId` now (it holds the lease, as far as it knows). */
  driving(volumeId: string): boolean {
    const lease = this.leases.get(volumeId);
    return lease?.grantedAt !== undefined && !lease.lost.signal.aborted;
  }

  /** Wait for the background run of a volume, if any. */
  async settled(volumeId: string): Promise<void> {
    await this.running.get(volumeId);
  }

  /** Stops the runs (each at its next step or sleep) and the timers; each run releases its lease. */
  async close(): Promise<void> {
    this.abort.abort();
    if (this.watchdog) clearInterval(this.watchdog);
    if (this.renewal) clearInterval(this.renewal);
    await Promise.allSettled([...this.running.values()]);
  }

  /**
   * Stops as `close` does but releases no lease, as a worker killed with SIGKILL leaves them
   * (they expire after `leaseMs`). For tests of the takeover by another worker.
   */
  async abandon(): Promise<void> {
    this.abandoned = true;
    await this.close();
  }

  private get closed(): boolean {
    return this.abort.signal.aborted;
  }

  private backoff(attempts: number, base = this.options.backoffBaseMs): number {
    return Math.min(this.options.backoffMaxMs, base * 2 ** Math.min(attempts, 10));
  }

  private async pause(ms: number, signal: AbortSignal = this.abort.signal): Promise<void> {
    await sleep(ms, undefined, { signal }).catch(() => undefined);
  }

  /** One run of `volumeId` under its lease, which it gives back when it stops (unless abandoned). */
  private async drive(volumeId: string): Promise<ExtendResult> {
    const lease: RunLease = { lost: new AbortController(), grantedAt: undefined };
    this.leases.set(volumeId, lease);
    this.startRenewal();
    try {
      return await this.supervise(volumeId, lease);
    } finally {
      if (this.leases.get(volumeId) === lease) this.leases.delete(volumeId);
      if (!this.abandoned) await this.release(volumeId);
    }
  }

  /** Claims (or renews) the lease for `lease`'s run; a refusal marks the lease lost. */
  private async claim(volumeId: string, lease: RunLease): Promise<boolean> {
    const granted = await this.store.claimExtend(volumeId, this.owner, this.options.leaseMs);
    if (granted) lease.grantedAt ??= performance.now();
    else lease.lost.abort();
    return granted;
  }

  private async release(volumeId: string): Promise<void> {
    await this.store.releaseExtend(volumeId, this.owner).catch((err: unknown) => this.log.warn({ err, volumeId, owner: this.owner }, 'could not release an extend lease; it expires by itself'));
  }

  /**
   * The renewal loop's round: renews every lease of this worker; a run whose lease is no longer
   * held stops; a lease held with no run here (its release failed) is given back.
   */
  private async renew(): Promise<void> {
    if (this.renewing || this.closed) return;
    this.renewing = true;
    // Only leases granted before the renewal was sent can be judged by its answer.
    const sentAt = performance.now();
    try {
      const held = new Set(await this.store.renewExtendLeases(this.owner, this.options.leaseMs));
      if (this.closed) return;
      for (const [volumeId, lease] of this.leases) {
        if (lease.grantedAt === undefined || lease.grantedAt > sentAt || held.has(volumeId) || lease.lost.signal.aborted) continue;
        this.log.warn({ volumeId, owner: this.owner }, 'extend lease lost; its run stops here (another worker drives it)');
        lease.lost.abort();
      }
      for (const volumeId of held) if (!this.leases.has(volumeId)) await this.release(volumeId);
    } catch (err) {
      this.log.error({ err, owner: this.owner }, 'extend lease renewal failed');
    } finally {
      this.renewing = false;
    }
  }

  /** The answer of a run that stopped because another worker holds the extend (or it just ended). */
  private async handedOver(volumeId: string): Promise<ExtendResult> {
    const volume = await this.store.getVolume(volumeId);
    if (volume?.status !== 'extending') return { volume };
    this.log.info({ volumeId, owner: this.owner }, 'extend not driven here: another worker holds its lease');
    return { volume, elsewhere: true };
  }

  /**
   * The watchdog's round: extends without a run anywhere (their lease free or expired: a run
   * that died, a worker that was killed, one a restart has not picked up) get one here; extends
   * past their deadline whose run is here end now, even if that run is stuck in a call (its next
   * stored change then finds the extend gone and stops). Extends another live worker holds are
   * that worker's: its own watchdog ends them at their deadline.
   */
  private async tick(): Promise<void> {
    if (this.ticking || this.closed) return;
    this.ticking = true;
    try {
      const now = Date.now();
      const extending = await this.store.listVolumes({ status: 'extending' });
      const claimable = new Set(await this.store.listClaimableExtends(new Date(now)));
      for (const v of extending) {
        if (this.closed) return;
        const late = v.extend !== null && now > Date.parse(v.extend.deadline) + this.options.watchdogMs;
        if (this.running.has(v.id)) {
          if (!late) continue;
          const lease = this.leases.get(v.id);
          if (lease && !(await this.claim(v.id, lease).catch(() => false))) continue;
          await this.failAtDeadline(v).catch((err: unknown) => this.log.error({ err, volumeId: v.id }, 'watchdog could not end an extend past its deadline'));
        } else if (claimable.has(v.id)) {
          // The run claims the lease first (another worker may win it) and ends a late extend itself.
          this.log.warn({ volumeId: v.id, step: v.extend?.step, owner: this.owner }, 'watchdog restarting an extend without a run');
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
  private async supervise(volumeId: string, lease: RunLease): Promise<ExtendResult> {
    for (let failures = 0; ; failures++) {
      if (this.closed) return { volume: undefined };
      try {
        const result = await this.run(volumeId, lease);
        this.lastErrors.delete(volumeId);
        return result;
      } catch (err) {
        if (this.closed) return { volume: undefined };
        if (lease.lost.signal.aborted) {
          this.lastErrors.delete(volumeId);
          return this.handedOver(volumeId);
        }
        const e = asServiceError(err);
        const prev = this.lastErrors.get(volumeId);
        this.lastErrors.set(volumeId, { step: prev?.step ?? FIRST_STEP, code: e.code, message: e.message, at: new Date().toISOString() });
        this.log.error({ err, volumeId, failures: failures + 1 }, 'extend run failed; restarting it from the stored state');
        await this.pause(this.backoff(failures, 100));
      }
    }
  }

  private async run(volumeId: string, lease: RunLease): Promise<ExtendResult> {
    const steps = this.steps(lease);
    for (;;) {
      if (this.closed) return { volume: undefined };
      if (lease.lost.signal.aborted) return this.handedOver(volumeId);
      const v = await this.store.getVolume(volumeId);
      if (!v || v.status !== 'extending') return { volume: v };
      // Before every step: this worker must still hold the extend (the claim also renews it).
      if (!(await this.claim(volumeId, lease))) return this.handedOver(volumeId);
      if (!v.extend) return { volume: await this.recoverStateless(v) };
      const state = v.extend;
      if (Date.now() > Date.parse(state.deadline)) {
        const error = await this.failAtDeadline(v);
        return { volume: await this.store.getVolume(volumeId), ...(error ? { error } : {}) };
      }
      if (this.options.stepDelayMs > 0) await this.pause(this.options.stepDelayMs, steps.signal);
      if (this.closed) return { volume: undefined };
      if (lease.lost.signal.aborted) return this.handedOver(volumeId);
      const stepStart = performance.now();
      try {
        const finished = await runStep(steps, v, state);
        this.metrics?.workflowStepSeconds.observe({ step: state.step }, (performance.now() - stepStart) / 1000);
        if (finished) {
          this.metrics?.extends.inc({ result: 'success', backend: v.backend });
          return { volume: await this.store.getVolume(volumeId) };
        }
      } catch (err) {
        this.metrics?.workflowStepSeconds.observe({ step: state.step }, (performance.now() - stepStart) / 1000);
        if (this.closed) return { volume: undefined };
        if (lease.lost.signal.aborted) return this.handedOver(volumeId);
        const error = asServiceError(err);
        if (isFinalError(error)) {
          await this.fail(v, state, error);
          return { volume: await this.store.getVolume(volumeId), error };
        }
        const attempts = state.attempts + 1;
        const lastError = { step: state.step, code: error.code, message: error.message, at: new Date().toISOString() };
        this.lastErrors.set(volumeId, lastError);
        await save(steps, v, { ...state, attempts, lastError });
        this.metrics?.workflowRetries.inc({ step: state.step });
        this.log.warn({ volumeId, step: state.step, attempts, code: error.code, err: error.message }, 'extend step failed, retrying');
        await this.pause(this.backoff(attempts), steps.signal);
      }
    }
  }

  /** Case 6: an `extending` volume with no stored workflow: measure and put it back at rest. */
  private async recoverStateless(v: VolumeRecord): Promise<VolumeRecord | undefined> {
    let measured: number;
    try {
      measured = await this.backend(v).getBytes(v.id);
    } catch (err) {
      if (!isServiceError(err) || err.code !== 'VolumeStorageMissing') throw err;
      // Nothing to measure, and retrying will not bring it back: rest where a failed extend
      // leaves a volume, with its recorded size (every action on it then says what is missing).
      await this.store.updateVolume(v.id, { status: ['extending'], version: v.version }, { status: outcome('extend', 'failed', isAttached(v)) });
      this.log.error({ volumeId: v.id, code: err.code, detail: err.detail }, 'extending volume without a workflow state put back at rest unmeasured: its storage is missing');
      return this.store.getVolume(v.id);
    }
    await this.store.updateVolume(v.id, { status: ['extending'], version: v.version }, { status: outcome('extend', 'done', isAttached(v)), sizeBytes: measured });
    this.log.warn({ volumeId: v.id, bytes: measured }, 'extending volume without a workflow state put back at rest');
    return this.store.getVolume(v.id);
  }


  /** What runStep needs from this workflow, for the run holding `lease` (its sleeps end when the lease is lost). */
  private steps(lease: RunLease): StepDeps {
    const signal = AbortSignal.any([this.abort.signal, lease.lost.signal]);
    const holds = () => !lease.lost.signal.aborted;
    return { store: this.store, compute: this.compute, backend: (v) => this.backend(v), options: this.options, signal, log: this.log, holds };
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
    if (state.step === 'grow_fs') {
      // The block extend is done and stands: only the guest's filesystem was left, and it is
      // recorded as not grown (the last error says why in the log); the extend ends well.
      const last = this.lastErrors.get(v.id) ?? state.lastError;
      this.log.warn({ volumeId: v.id, requestId: state.requestId, code: last?.code, err: last?.message }, 'guest filesystem not grown before the extend deadline');
      await finishExtend({ store: this.store, log: this.log, holds: () => true }, v, state, notGrown('grow_failed'));
      this.metrics?.extends.inc({ result: 'success', backend: v.backend });
      return undefined;
    }
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
      this.metrics?.extends.inc({ result: 'error', backend: v.backend });
      await this.store.finishVolumeAction(state.requestId, v.id, 'Error', reason);
      this.log.error({ volumeId: v.id, requestId: state.requestId, step: state.step, code, reason }, 'extend failed');
    }
    return ok;
  }
}
