/**
 * The extend state machine: its steps, in order, and what each one does. The workflow
 * (workflow.ts) stores the state after every step and runs `runStep` until it reports the end;
 * see there for the modes, the recovery cases and the supervision.
 *
 *   storage → rescan → wait_host → assist → confirm [→ grow_fs]
 *
 * - storage:   the backend grows the storage (skipped online when QEMU grows it itself: file volumes).
 * - rescan:    compute makes the host see the storage's size (idempotent, answers at once).
 * - wait_host: poll get_blockdev until the host sees the target (skipped when QEMU grows it).
 * - assist:    compute grows the guest's view and measures it (assist_extend); a stopped server
 *              answers InstanceStopped and the extend goes offline; HostSizeTooSmall sends it
 *              back to rescan.
 * - confirm:   the measured size is recorded and the volume goes back to rest; when the extend
 *              asked to grow the guest's filesystem and the guest was resized live, the size is
 *              recorded and the extend goes on to grow_fs instead (the volume stays `extending`).
 * - grow_fs:   compute asks the guest (its QEMU guest agent) to grow the last partition and the
 *              filesystem on the disk; the answer is recorded (volume_fs_growths) and the volume
 *              goes back to rest at its new size whatever it was: the block extend stands. Not
 *              grown is an answer; a final error is recorded as not grown (grow_failed, or
 *              not_supported); an uncertain one is retried with the workflow's backoff, and at
 *              the deadline the extend still ends well, recorded as not grown (workflow.ts).
 *
 * Every step up to confirm first makes sure the volume's storage is still there (the service's
 * backends answer VolumeStorageMissing, final, when it is not): the extend then ends in error with
 * that code and the volume keeps its recorded size.
 *
 * Every decision is on a catalogue code (InstanceStopped, HostSizeTooSmall) or a backend
 * capability (`attachedGrowth`), never on a status code or message text.
 */
import type { Logger } from 'pino';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ExtendState, FsGrowthReason, FsGrowthRecord, VolumeRecord, VolumeStore } from '../../db/store.js';
import { errors, isFinalError, isServiceError, type ServiceError } from '../../errors.js';
import type { CallOptions, ComputeForVolumes } from '../../rpc/computeClient.js';
import type { VolumeBackend } from '../backends/backend.js';
import { EXTEND_MODE_BY_SERVER_STATE, isAttached, outcome } from '../lifecycle.js';
import type { WorkflowOptions } from './options.js';
import type { ExtendStep } from './stepNames.js';
import { payloadOffsetOf } from '../encryption.js';


/** What a step needs: the store, compute (over its client), the volume's backend, the options and the workflow's abort signal. */
export interface StepDeps {
  store: VolumeStore;
  compute: ComputeForVolumes;
  backend(v: VolumeRecord): VolumeBackend;
  options: WorkflowOptions;
  signal: AbortSignal;
  log: Logger;
  /**
   * Whether this worker still holds the extend's lease, as far as it knows (no store call): a
   * step whose lease was lost while its call ran stores nothing (the new holder runs it again).
   */
  holds(): boolean;
}

/** An error the workflow itself finds final (a state it cannot go on from): InternalError, final. */
export function finalError(message: string): ServiceError {
  return errors.internal(message, { final: true });
}

/**
 * Runs the step `state.step` of volume `v`'s extend and stores the next state; answers true when
 * the extend has finished (the volume is back at rest with its measured size). Throws what the
 * step's call threw (the workflow retries an uncertain error and ends the extend on a final one).
 */
export async function runStep(d: StepDeps, v: VolumeRecord, state: ExtendState): Promise<boolean> {
  try {
    return await stepOnce(d, v, state);
  } catch (err) {
    // The storage was there when the extend was accepted (service.ts checks it): it went missing
    // since, and the extend stops here with that cause, the recorded size unchanged.
    if (isServiceError(err) && err.code === 'VolumeStorageMissing') {
      throw errors.volumeStorageMissing(v.id, v.backend, { during: 'extend', ...(err.detail === undefined ? {} : { detail: err.detail }) });
    }
    throw err;
  }
}

async function stepOnce(d: StepDeps, v: VolumeRecord, state: ExtendState): Promise<boolean> {
  const tenant = v.serverProjectId ?? v.projectId;
  const serverId = v.serverId;
  const mode = state.mode ?? (serverId ? 'online' : 'detached');
  const backend = d.backend(v);
  // The hypervisor grows this kind of volume itself while the guest runs.
  const qemuGrows = backend.attachedGrowth === 'hypervisor';
  const next = (step: ExtendStep, more: Partial<ExtendState> = {}): ExtendState => ({ ...state, step, attempts: 0, lastError: null, ...more });
  const call = (): CallOptions => ({ timeoutMs: Math.max(1, Date.parse(state.deadline) - Date.now()) });
  if (mode !== 'detached' && !serverId) throw finalError('the volume is no longer attached to a server');
  if (state.step !== 'grow_fs') {
    // Every step up to confirm relies on the volume's storage, also those that never call the
    // backend: QEMU grows an attached file volume itself (assist), and would grow a file that was
    // unlinked meanwhile, whose data is then lost at detach. The service's backends are checked
    // (storageChecked.ts): inspectStorage throws VolumeStorageMissing unless the storage is there.
    // Not grow_fs: the block extend is recorded by then, only the guest's filesystem is left.
    await backend.inspectStorage(v.id, v.format ? { format: v.format } : undefined);
  }

  switch (state.step) {
    case 'storage': {
      if (mode === 'online' && qemuGrows) {
        await advance(d, v, state, next('rescan'));
        return false;
      }
      let storageBytes: number;
      try {
        storageBytes = await backend.extend(v.id, state.targetBytes);
      } catch (err) {
        // An offline image may have been opened by a guest that started meanwhile (qemu-img
        // cannot take its lock then): if the server runs now, QEMU grows it through the resize.
        if (mode === 'offline' && qemuGrows && serverId && !isFinalByNature(err)) {
          const st = await d.compute.getServerState(tenant, serverId, call());
          if (EXTEND_MODE_BY_SERVER_STATE[st.value] === 'online') {
            await advance(d, v, state, next('rescan', { mode: 'online' }));
            return false;
          }
        }
        throw err;
      }
      await advance(d, v, state, next(mode === 'detached' ? 'confirm' : 'rescan', { storageBytes, ...(mode === 'detached' ? { measuredBytes: storageBytes } : {}) }));
      return false;
    }
    case 'rescan': {
      const r = await d.compute.rescan(tenant, serverId!, v.id, call());
      await note(d, state, v.id, r.requestId);
      await advance(d, v, state, next('wait_host'));
      return false;
    }
    case 'wait_host': {
      if (mode === 'online' && qemuGrows) {
        await advance(d, v, state, next('assist'));
        return false;
      }
      let delay = d.options.pollBaseMs;
      for (;;) {
        const r = await d.compute.getBlockdev(tenant, serverId!, v.id, call());
        await note(d, state, v.id, r.requestId);
        if (r.value >= state.targetBytes) {
          await advance(d, v, state, next('assist', { hostBytes: r.value }));
          return false;
        }
        if (r.value !== state.hostBytes) {
          await save(d, v, { ...state, hostBytes: r.value });
          state = { ...state, hostBytes: r.value };
        }
        if (Date.now() + delay > Date.parse(state.deadline)) {
          // Uncertain: the host may still catch up; the deadline ends it with this as the cause.
          throw errors.hostSizeTooSmall(v.id, state.targetBytes, r.value);
        }
        await sleep(delay, undefined, { signal: d.signal });
        delay = Math.min(d.options.backoffMaxMs, delay * 2);
      }
    }
    case 'assist': {
      try {
        // An encrypted volume's guest sees it minus the LUKS header: ask for, and measure, that;
        // the volume's size is then what the guest sees plus the header (encryption.ts).
        const offset = payloadOffsetOf(v);
        const r = await d.compute.assistExtend(tenant, serverId!, v.id, state.targetBytes - offset, call());
        await note(d, state, v.id, r.requestId);
        await advance(d, v, state, next('confirm', { measuredBytes: r.value + offset, mode: 'online' }));
        return false;
      } catch (err) {
        if (!isServiceError(err)) throw err;
        if (err.code === 'HostSizeTooSmall') {
          // The host lost sight of the new size (a path came back stale): rescan again.
          await advance(d, v, state, { ...next('rescan'), attempts: state.attempts + 1 });
          return false;
        }
        if (err.code !== 'InstanceStopped') throw err;
        if (err.requestId) await note(d, state, v.id, err.requestId);
        if (qemuGrows && state.mode !== 'offline') {
          // The storage step was left to QEMU, which is not running: grow it on the backend.
          await advance(d, v, state, next('storage', { mode: 'offline' }));
          return false;
        }
        // Offline: storage and host already have the size; the guest gets it when it starts.
        const r = await d.compute.getBlockdev(tenant, serverId!, v.id, call());
        await note(d, state, v.id, r.requestId);
        if (r.value < state.targetBytes) {
          await advance(d, v, state, next('rescan', { mode: 'offline', hostBytes: r.value }));
          return false;
        }
        await advance(d, v, state, next('confirm', { measuredBytes: r.value, hostBytes: r.value, mode: 'offline' }));
        return false;
      }
    }
    case 'confirm': {
      const measured = state.measuredBytes ?? 0;
      if (measured < state.targetBytes) {
        const offset = mode === 'online' ? payloadOffsetOf(v) : 0;
        throw finalError(`${mode === 'online' ? 'the guest sees' : 'the storage has'} ${measured - offset} bytes after the extend, not ${state.targetBytes - offset}`);
      }
      if (state.growFs && mode === 'online') {
        // The block extend is done: its size is recorded now, the volume stays `extending`
        // until the guest's filesystem has been dealt with.
        if (!d.holds()) throw lostLease();
        const ok = await d.store.updateVolume(v.id, { status: ['extending'], extendRequestId: state.requestId }, { sizeBytes: measured, extend: next('grow_fs') });
        if (!ok) throw finalError('the extend was ended by someone else (the watchdog at its deadline, or a newer request)');
        return false;
      }
      // Asked, but no guest runs this disk now: nothing to grow, and the record says why.
      const growth = state.growFs ? notGrown(mode === 'offline' ? 'server_stopped' : 'detached') : undefined;
      await finishExtend(d, v, state, growth);
      return true;
    }
    case 'grow_fs': {
      // NOTE: safe to run again, after a crash here or an uncertain error: growing a partition
      // that already ends at the disk's end, or a filesystem that already fills its device, is
      // a no-op in the guest (growpart's NOCHANGE, resize2fs's "Nothing to do!", xfs_growfs
      // leaves its size), and the fake driver keeps the same semantics.
      let growth: FsGrowthOutcome;
      try {
        const r = await d.compute.growGuestFilesystem(tenant, serverId!, v.id, call());
        await note(d, state, v.id, r.requestId);
        growth = r.value;
      } catch (err) {
        // Uncertain (the host or the hypervisor away): retried with backoff by the workflow.
        if (!isServiceError(err) || !isFinalError(err)) throw err;
        // Final: it will not work on a retry either; the block extend stands all the same.
        if (err.requestId) await note(d, state, v.id, err.requestId);
        d.log.warn({ volumeId: v.id, requestId: state.requestId, code: err.code, err: err.message }, 'guest filesystem not grown: compute refused');
        growth = notGrown(err.code === 'GuestFilesystemGrowNotSupported' ? 'not_supported' : 'grow_failed');
      }
      await finishExtend(d, v, state, growth);
      return true;
    }
  }
}

/** What the grow_fs step learnt: the guest's answer (compute's, without detail) or the workflow's own verdict. */
export interface FsGrowthOutcome {
  grown: boolean;
  reason?: FsGrowthReason;
  device?: string;
  partitionGrown?: boolean;
  fsType?: string;
  mountpoint?: string;
  fsBytesBefore?: number;
  fsBytes?: number;
}

/** Not grown, for `reason`. */
export function notGrown(reason: FsGrowthReason): FsGrowthOutcome {
  return { grown: false, reason };
}

/**
 * The extend's end, successful: the volume goes back to rest at its measured size, and when the
 * extend asked to grow the guest's filesystem, `growth` is recorded first (an upsert by request
 * id: a crash before the volume's update leaves a record a rerun writes again) and named in the
 * volume action. Used by confirm, grow_fs and the deadline of grow_fs (workflow.ts).
 */
export async function finishExtend(d: Pick<StepDeps, 'store' | 'log' | 'holds'>, v: VolumeRecord, state: ExtendState, growth: FsGrowthOutcome | undefined): Promise<void> {
  const mode = state.mode ?? (v.serverId ? 'online' : 'detached');
  const measured = state.measuredBytes ?? 0;
  if (!d.holds()) throw lostLease();
  if (growth) await d.store.putFsGrowth(fsGrowthRecord(v.id, state, growth));
  const ok = await d.store.updateVolume(
    v.id,
    { status: ['extending'], extendRequestId: state.requestId },
    { status: outcome('extend', 'done', isAttached(v)), sizeBytes: measured, extend: null },
  );
  if (!ok) return;
  const how =
    mode === 'online'
      ? v.encryption
        ? `extended to ${measured} bytes (the guest sees ${measured - payloadOffsetOf(v)} bytes past the LUKS header, measured)`
        : `extended to ${measured} bytes (measured in the guest)`
      : mode === 'offline'
        ? `extended offline to ${measured} bytes (measured on the host); the guest sees it when its server next starts`
        : `extended to ${measured} bytes (measured on the storage)`;
  const fs = growth ? `; ${describeGrowth(growth)}` : '';
  await d.store.noteVolumeAction(state.requestId, v.id, [], { mode, bytes: measured, ...(growth ? { grow_fs: growthDetails(growth) } : {}) });
  await d.store.finishVolumeAction(state.requestId, v.id, 'Success', how + fs);
  d.log.info({ volumeId: v.id, requestId: state.requestId, bytes: measured, mode, ...(growth ? { fsGrown: growth.grown, fsReason: growth.reason, fsBytes: growth.fsBytes } : {}) }, 'volume extended');
}

/** The store's record of `growth` for the extend `state`, finished now. */
function fsGrowthRecord(volumeId: string, state: ExtendState, g: FsGrowthOutcome): FsGrowthRecord {
  return {
    volumeId,
    requestId: state.requestId,
    requested: true,
    grown: g.grown,
    reason: g.grown ? null : (g.reason ?? 'grow_failed'),
    device: g.device ?? null,
    partitionGrown: g.partitionGrown ?? null,
    fsType: g.fsType ?? null,
    mountpoint: g.mountpoint ?? null,
    fsBytesBefore: g.fsBytesBefore ?? null,
    fsBytes: g.fsBytes ?? null,
    requestedAt: state.startedAt,
    finishedAt: new Date().toISOString(),
  };
}

/** `growth` as the volume action's details (snake_case, as the API shows them). */
function growthDetails(g: FsGrowthOutcome): Record<string, unknown> {
  return {
    grown: g.grown,
    ...(g.reason === undefined ? {} : { reason: g.reason }),
    ...(g.device === undefined ? {} : { device: g.device }),
    ...(g.fsType === undefined ? {} : { fs_type: g.fsType }),
    ...(g.fsBytesBefore === undefined ? {} : { fs_bytes_before: g.fsBytesBefore }),
    ...(g.fsBytes === undefined ? {} : { fs_bytes: g.fsBytes }),
  };
}

/** One clause for the volume action's message. */
function describeGrowth(g: FsGrowthOutcome): string {
  if (!g.grown) return `guest filesystem not grown (${g.reason ?? 'grow_failed'})`;
  const what = [g.fsType, g.device && `on ${g.device}`].filter(Boolean).join(' ');
  return `guest filesystem${what ? ` ${what}` : ''} grown${g.fsBytes === undefined ? '' : ` to ${g.fsBytes} bytes`}`;
}

/** Store the next state; the extend must still be this one and still be running. */
export async function advance(d: Pick<StepDeps, 'store' | 'log' | 'holds'>, v: VolumeRecord, current: ExtendState, state: ExtendState): Promise<void> {
  if (!d.holds()) throw lostLease();
  const ok = await d.store.updateVolume(v.id, { status: ['extending'], extendRequestId: current.requestId }, { extend: state });
  if (!ok) throw finalError('the extend was ended by someone else (the watchdog at its deadline, or a newer request)');
  d.log.debug({ volumeId: v.id, step: state.step }, 'extend step done');
}

/** Store `state` (progress, a retry's count and cause) while the extend is still this one. */
export async function save(d: Pick<StepDeps, 'store' | 'holds'>, v: VolumeRecord, state: ExtendState): Promise<void> {
  if (!d.holds()) throw lostLease();
  await d.store.updateVolume(v.id, { status: ['extending'], extendRequestId: state.requestId }, { extend: state });
}

/** What a step throws instead of storing its result once its worker lost the extend's lease (the workflow stops the run on it). */
function lostLease(): ServiceError {
  return finalError('the extend is driven by another worker now (this worker lost its lease)');
}

/** Add a compute request id to the extend's volume action (its audit trail). */
async function note(d: Pick<StepDeps, 'store'>, state: ExtendState, volumeId: string, computeRequestId: string | undefined): Promise<void> {
  if (computeRequestId) await d.store.noteVolumeAction(state.requestId, volumeId, [computeRequestId]);
}

/** A backend error that no change of the server's state can help. */
function isFinalByNature(err: unknown): boolean {
  return isServiceError(err) && (err.code === 'SizeLimitExceeded' || err.code === 'VolumeShrinkRefused' || err.code === 'VolumeNotFound' || err.code === 'VolumeStorageMissing');
}
