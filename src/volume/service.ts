/**
 * VolumeService (Cinder's volume API and manager in one): volumes on storage backends, and their
 * extend. Every action is decided by the lifecycle table (lifecycle.ts) and applied with a
 * conditional update that requires the record to be exactly as it was when the decision was
 * made, so a concurrent change makes the loser decide again on what is there now.
 */
import { checkGrowFsMetadata, growFsRequested } from './extend/growFs.js';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { RequestContext } from '../context.js';
import type { ExtendState, FsGrowthRecord, PageQuery, VolumeActionRecord, VolumeGuard, VolumeRecord, VolumeStatus, VolumeStore } from '../db/store.js';
import { errors, isFinalError, isServiceError, ServiceError } from '../errors.js';
import type { VolumeBackend } from './backends/backend.js';
import type { ComputeForVolumes } from '../rpc/computeClient.js';
import { decide, extendMode, isAttached, policiesFor, type ExtendMode, type VolumeAction } from './lifecycle.js';
import type { ExtendWorkflow } from './extend/workflow.js';
import { FIRST_STEP } from './extend/stepNames.js';
import type { InFlight } from './reconciler.js';
import { createOptions, newPassphrase, parseVolumeType, volumeTypeNames, volumeTypeOf } from './encryption.js';
import { currentTimings, withTimings } from '../util/timing.js';

/** A volume to create: `sizeBytes` a positive multiple of 512, `backend` a configured volume type (empty: the default). */
export interface CreateVolumeRequest {
  name: string;
  sizeBytes: number;
  backend: string;
  format?: 'raw' | 'qcow2';
  /**
   * Encryption asked for by name (`luks`), besides an encrypted volume type in `backend`
   * (encryption.ts: `luks`, `<backend>-luks`). InvalidInput (400) for another name.
   */
  encryption?: string;
  /** Cinder's description (null or absent: none). */
  description?: string | null;
  /** Cinder's volume metadata (string → string). */
  metadata?: Record<string, string>;
}

/** What Cinder's update may change (absent: unchanged; `description` null: none; `metadata` replaces the set). */
export interface VolumeUpdate {
  name?: string;
  description?: string | null;
  metadata?: Record<string, string>;
}

type VolumePatch = Partial<Omit<VolumeRecord, 'id' | 'createdAt' | 'updatedAt' | 'version'>>;

/** Answers whether the caller's token passes a policy rule (the route binds it to the request). */
export type PolicyCheck = (rule: string) => boolean;

/** The smallest encrypted volume: its LUKS header (2,068,480 bytes with QEMU's defaults) leaves at least 2 MiB to the guest. */
export const MIN_ENCRYPTED_BYTES = 4 * 1024 * 1024;

/** Conditional updates lost to concurrent changes before giving up with VolumeBusy (409). */
const MAX_DECISIONS = 5;

/** How long an extend of a detached volume may keep the request waiting before it answers 202. */
const DETACHED_EXTEND_WAIT_MS = 30_000;

/** Volumes and their extend (see the module comment). */
export class VolumeService {
  constructor(
    private readonly deps: {
      store: VolumeStore;
      backends: ReadonlyMap<string, VolumeBackend>;
      compute: ComputeForVolumes;
      workflow: ExtendWorkflow;
      logger: Logger;
      defaultBackend: string;
      /** Marks volumes with an operation under way here, for the reconciler. */
      inFlight: InFlight;
    },
  ) {}

  get backendNames(): string[] {
    return [...this.deps.backends.keys()];
  }

  /**
   * The backend `name`; InvalidInput (400) naming `type` (the volume type as the user gave it or
   * the volume shows it: `nfs-luks`, not `nfs`) and every type a create accepts.
   */
  private backend(name: string, type = name): VolumeBackend {
    const b = this.deps.backends.get(name);
    if (!b) throw errors.invalidInput(`Unknown volume type "${type}"; available: ${volumeTypeNames(this.backendNames).join(', ')}.`);
    return b;
  }

  /**
   * The volume if it exists in `projectId`, or in any project when `anyProject` (an admin acting
   * by id, as Cinder's `volume_api.get`; the caller then checks its policy on the volume's owner,
   * `projectId` of the record); VolumeNotFound (404) otherwise, never revealing other projects' volumes.
   */
  async get(projectId: string, volumeId: string, anyProject = false): Promise<VolumeRecord> {
    const v = await this.deps.store.getVolume(volumeId);
    if (!v || (!anyProject && v.projectId !== projectId)) throw errors.volumeNotFound(volumeId);
    return v;
  }

  /**
   * Cinder's update: sets the name, description and metadata given (metadata replaces the whole
   * set, as Cinder's), whatever the volume's status, and returns the volume as it is now.
   * `anyProject` as `get`. Throws VolumeNotFound (404), also if it is deleted meanwhile.
   */
  async update(projectId: string, volumeId: string, patch: VolumeUpdate, opts: { anyProject?: boolean } = {}): Promise<VolumeRecord> {
    checkGrowFsMetadata(patch.metadata);
    // The caller's request timings, current now but not after an await (util/timing.ts).
    const timings = currentTimings();
    await this.get(projectId, volumeId, opts.anyProject);
    // No guard: these fields are independent of the lifecycle; a concurrent decision on the
    // volume sees the version move and decides again.
    if (Object.keys(patch).length > 0 && !(await withTimings(timings, () => this.deps.store.updateVolume(volumeId, {}, patch)))) throw errors.volumeNotFound(volumeId);
    return withTimings(timings, () => this.get(projectId, volumeId, opts.anyProject));
  }

  /** What the latest extend of each volume did about the guest's filesystem (volumes without a record are absent). */
  latestFsGrowths(volumeIds: readonly string[]): Promise<Map<string, FsGrowthRecord>> {
    return this.deps.store.latestFsGrowths(volumeIds);
  }

  /**
   * Cinder's set metadata (`POST volumes/{id}/metadata`): merges `items` into the volume's
   * metadata, keys given replacing their values, and answers the whole set. The merge is a
   * compare-and-swap on the volume's version, retried, so concurrent sets both land. Throws
   * VolumeNotFound (404), BadRequest (400) for a bad `online_extend:grow_fs` value (nothing changes).
   */
  async setMetadata(projectId: string, volumeId: string, items: Record<string, string>, opts: { anyProject?: boolean } = {}): Promise<Record<string, string>> {
    checkGrowFsMetadata(items);
    // The caller's request timings, re-entered for each read and write after the first await (util/timing.ts).
    const timings = currentTimings();
    for (;;) {
      const v = await withTimings(timings, () => this.get(projectId, volumeId, opts.anyProject));
      const metadata = { ...(v.metadata ?? {}), ...items };
      if (await withTimings(timings, () => this.deps.store.updateVolume(volumeId, { version: v.version }, { metadata }))) return metadata;
    }
  }

  /**
   * One page of volumes, oldest first (keyset paging in the store): the project's, or every
   * project's when `projectId` is undefined (an admin's `all_tenants`); `status` and `name`
   * filter exactly, as Cinder's.
   */
  list(projectId: string | undefined, page?: PageQuery, filter: { status?: VolumeStatus; name?: string } = {}): Promise<VolumeRecord[]> {
    return this.deps.store.listVolumes({ ...(projectId !== undefined ? { projectId } : {}), ...filter }, page);
  }

  /** The largest volume `backend` holds; SizeLimitExceeded (400) above it, before anything is made. */
  private async checkFits(backend: VolumeBackend, volumeId: string | undefined, bytes: number, format: 'raw' | 'qcow2' | null): Promise<void> {
    const limit = await backend.maxBytes(format ? { format } : undefined);
    if (bytes > limit) throw errors.sizeLimitExceeded(volumeId, bytes, limit, `volume type "${backend.name}"${format ? ` (${format})` : ''}`);
  }

  async create(ctx: RequestContext, projectId: string, req: CreateVolumeRequest): Promise<VolumeRecord> {
    checkGrowFsMetadata(req.metadata);
    const type = parseVolumeType(req.backend, req.encryption, (name) => this.deps.backends.has(name));
    const backendName = type.backend || this.deps.defaultBackend;
    const typeName = req.backend || backendName;
    const backend = this.backend(backendName, typeName);
    if (req.format && backend.attachedGrowth !== 'hypervisor') throw errors.invalidInput(`Volume type "${typeName}" has no format option.`);
    if (type.encryption && req.format && req.format !== 'raw') throw errors.invalidInput('An encrypted volume is raw underneath: format must be raw.');
    if (type.encryption && req.sizeBytes < MIN_ENCRYPTED_BYTES) {
      throw errors.invalidInput(`An encrypted volume must be at least ${MIN_ENCRYPTED_BYTES} bytes: its LUKS header takes about 2 MiB.`);
    }
    const format = backend.attachedGrowth === 'hypervisor' ? (req.format ?? 'raw') : null;
    // The request's Server-Timing parts (util/timing.ts), re-entered after each await.
    const within = <T>(call: () => T): T => withTimings(ctx.timings, call);
    await this.checkFits(backend, undefined, req.sizeBytes, format);
    const id = randomUUID();
    const { store } = this.deps;
    const passphrase = type.encryption ? newPassphrase() : undefined;
    const record: Omit<VolumeRecord, 'createdAt' | 'updatedAt' | 'version'> = {
      id,
      projectId,
      name: req.name,
      sizeBytes: req.sizeBytes,
      status: 'creating',
      backend: backendName,
      format,
      serverId: null,
      serverProjectId: null,
      device: null,
      extend: null,
      userId: ctx.userId,
      description: req.description ?? null,
      metadata: req.metadata ?? {},
      attachedAt: null,
      encryption: type.encryption ?? null,
      payloadOffset: null,
    };
    await within(() => store.createVolume(record, passphrase !== undefined ? { encryptionKey: passphrase } : undefined));
    await this.deps.inFlight.run(id, () =>
      this.audit(ctx, id, 'create', { size_bytes: req.sizeBytes, backend: backendName, ...(type.encryption ? { encryption: type.encryption } : {}) }, async () => {
        let made;
        try {
          made = await backend.create(id, req.sizeBytes, createOptions(record, passphrase));
        } catch (err) {
          // Final: the backend will not make it. Uncertain: it may have; the reconciler retries
          // the (idempotent) create and settles the status.
          if (isFinalError(err)) await within(() => store.updateVolume(id, ['creating'], { status: 'error' }));
          throw err;
        }
        await within(() => store.updateVolume(id, ['creating'], { status: 'available', sizeBytes: made.bytes, ...(made.encryption ? { payloadOffset: made.encryption.payloadOffset } : {}) }));
      }),
    );
    return (await within(() => store.getVolume(id)))!;
  }

  /**
   * Decides `action` on the volume as it is now and moves it to the table's next status with a
   * conditional update on the version it read: if anything changed meanwhile, it reads again and
   * decides again. `check` may refuse (it sees the record the decision is about); `guard` and
   * `patch` add to the update. Returns the record as it was before the change.
   */
  private async begin(
    action: VolumeAction,
    projectId: string,
    volumeId: string,
    opts: {
      /** Find the volume in any project (an admin by id; see `get`). */
      anyProject?: boolean;
      /** Runs before the table is asked: refusals that hold whatever the status (policy, a shrink). */
      precheck?: (v: VolumeRecord) => void;
      check?: (v: VolumeRecord) => Promise<void> | void;
      guard?: (v: VolumeRecord) => VolumeGuard;
      patch?: (v: VolumeRecord) => VolumePatch;
    } = {},
  ): Promise<VolumeRecord> {
    // The caller's request timings, current now but not after an await (util/timing.ts): the
    // check, the re-reads and the update run as part of the request.
    const timings = currentTimings();
    const within = <T>(call: () => T): T => withTimings(timings, call);
    for (let attempt = 1; ; attempt++) {
      const v = await within(() => this.get(projectId, volumeId, opts.anyProject));
      opts.precheck?.(v);
      const d = decide(action, v);
      if (!d.ok) throw d.error;
      try {
        await within(() => opts.check?.(v));
      } catch (err) {
        // The check may have judged a state that is gone (another extend grew the volume while
        // compute was being asked): if the record changed meanwhile, decide again on what is there.
        const now = await within(() => this.deps.store.getVolume(volumeId));
        if (now && now.version !== v.version && attempt < MAX_DECISIONS) continue;
        throw err;
      }
      const guard: VolumeGuard = { status: [v.status], version: v.version, attached: isAttached(v), ...opts.guard?.(v) };
      if (await within(() => this.deps.store.updateVolume(volumeId, guard, { ...opts.patch?.(v), status: d.to }))) return v;
      if (attempt >= MAX_DECISIONS) throw errors.volumeBusy(volumeId, v.status, action);
    }
  }

  /** Deletes a volume without an attachment (`anyProject` as `get`). */
  async delete(ctx: RequestContext, projectId: string, volumeId: string, opts: { anyProject?: boolean } = {}): Promise<void> {
    const { store, inFlight } = this.deps;
    // The request's Server-Timing parts (util/timing.ts), re-entered after each await.
    const within = <T>(call: () => T): T => withTimings(ctx.timings, call);
    await inFlight.run(volumeId, async () => {
      const v = await within(() => this.begin('delete', projectId, volumeId, { anyProject: opts.anyProject === true }));
      await this.audit(ctx, volumeId, 'delete', {}, async () => {
        try {
          await this.backend(v.backend, volumeTypeOf(v)).delete(volumeId);
        } catch (err) {
          // Final: what is left stays in `error`. Uncertain: the reconciler deletes it again.
          if (isFinalError(err)) await within(() => store.updateVolume(volumeId, ['deleting'], { status: 'error' }));
          throw err;
        }
        await within(() => store.deleteVolume(volumeId));
      });
    });
  }

  /**
   * Extend to `newBytes`. The lifecycle table decides whether the volume may be extended now;
   * `allows` checks the policy rules the table names for it (an attached volume needs
   * `volume:extend_attached_volume`, whatever its status). The target must be above the size
   * recorded at the moment the change applies (checked inside the conditional update).
   * Any volume's storage must be there (VolumeStorageMissing, 500, final: removed or replaced by
   * hand; storageChecked.ts). An attached volume is checked with compute first (capability, 501;
   * the server's state, 409 where no extend can work) before anything changes; its extend then runs in the background
   * (the caller polls the volume). A detached volume's storage is grown before the answer, unless
   * that takes longer than DETACHED_EXTEND_WAIT_MS.
   */
  async extend(
    ctx: RequestContext,
    projectId: string,
    volumeId: string,
    newBytes: number,
    allows: PolicyCheck = () => true,
    opts: {
      /**
       * The caller may extend only a volume without an attachment (Cinder below volume microversion
       * 3.42 extends `available` volumes only): an attached one is refused with Cinder's 400
       * (InvalidVolume), before anything changes.
       */
      detachedOnly?: boolean;
      /** Find the volume in any project (an admin by id; see `get`). */
      anyProject?: boolean;
      /**
       * os-extend's `online_extend:grow_fs`: grow the guest's filesystem after the block extend
       * (true) or not (false); absent: as the volume's metadata key says (extend/growFs.ts).
       */
      growFs?: boolean;
    } = {},
  ): Promise<VolumeRecord> {
    const { store, workflow } = this.deps;
    let growFs = false;
    let plan: { mode: ExtendMode | 'detached'; hostBytes: number | null; computeRequestIds: string[] } = { mode: 'detached', hostBytes: null, computeRequestIds: [] };
    const now = Date.now();
    // The request's Server-Timing parts (util/timing.ts): each step below that reaches the store
    // or compute after an await re-enters them.
    const within = <T>(call: () => T): T => withTimings(ctx.timings, call);
    const v = await within(() => this.begin('extend', projectId, volumeId, {
      anyProject: opts.anyProject === true,
      // Sizes only grow: a target at or below the recorded size is wrong whatever is under way.
      precheck: (cur) => {
        if (opts.detachedOnly && isAttached(cur)) {
          throw errors.badRequest(
            `Invalid volume: Volume ${cur.id} status must be 'available' to extend, currently ${cur.status}: extending an attached volume needs volume API microversion 3.42 or later.`,
          );
        }
        for (const rule of policiesFor('extend', isAttached(cur))) if (!allows(rule)) throw errors.forbidden(rule);
        checkTarget(cur, newBytes);
        growFs = growFsRequested(opts.growFs, cur.metadata);
      },
      check: async (cur) => {
        const backend = this.backend(cur.backend, volumeTypeOf(cur));
        const fits = this.checkFits(backend, cur.id, newBytes, cur.format);
        if (!isAttached(cur)) {
          await fits;
          // The storage of a detached volume may hold more than its record says (a hypervisor grew
          // the file while it was attached, an extend failed after its storage step): a target
          // below that is a shrink, refused here, before anything changes (the workflow's storage
          // step would refuse it too, but only after the volume went through `extending`).
          const has = await backend.getBytes(cur.id);
          if (newBytes < has) throw errors.shrinkRefused(cur.id, newBytes, has, 'the volume has');
          plan = { mode: 'detached', hostBytes: null, computeRequestIds: [] };
          return;
        }
        // Compute's reads (get_blockdev, the server's state) change nothing, so they go out while
        // the storage's limit is measured and its presence checked (one wait instead of several
        // before the extend starts); a size the storage cannot hold is still the answer when all
        // refuse, then storage that is missing (VolumeStorageMissing, from the checked backend:
        // QEMU grows an attached file volume itself, so nothing else would look at it).
        const present = backend.inspectStorage(cur.id, cur.format ? { format: cur.format } : undefined);
        const [fit, there, planned] = await Promise.allSettled([fits, present, within(() => this.planAttached(cur))]);
        if (fit.status === 'rejected') throw fit.reason;
        if (there.status === 'rejected') throw there.reason;
        if (planned.status === 'rejected') throw planned.reason;
        plan = planned.value;
        VolumeService.checkHostTarget(cur, newBytes, planned.value.hostBytes);
      },
      guard: () => ({ sizeBelow: newBytes }),
      patch: () => ({
        extend: {
          requestId: ctx.requestId,
          targetBytes: newBytes,
          step: FIRST_STEP,
          startedAt: new Date(now).toISOString(),
          deadline: new Date(now + workflow.options.timeoutMs).toISOString(),
          attempts: 0,
          hostBytes: plan.hostBytes,
          error: null,
          mode: plan.mode,
          lastError: null,
          ...(growFs ? { growFs } : {}),
        } satisfies ExtendState,
      }),
    }));
    const started = within(() => store.startVolumeAction({
      requestId: ctx.requestId,
      volumeId,
      action: 'extend',
      userId: ctx.userId,
      projectId: ctx.projectId,
      startTime: new Date(now).toISOString(),
      message: null,
      computeRequestIds: plan.computeRequestIds,
      details: { new_bytes: newBytes, from_bytes: v.sizeBytes, attached: isAttached(v), mode: plan.mode, grow_fs: growFs, ...(v.serverId ? { server_id: v.serverId } : {}) },
    }));
    // Every extend's record says whether it was asked to grow the guest's filesystem; grow_fs
    // (or confirm, when no guest runs the disk) writes the outcome over it; a run fast enough to
    // have written it already (another worker took the extend up at once) keeps it.
    const asked: FsGrowthRecord = {
      volumeId,
      requestId: ctx.requestId,
      requested: growFs,
      grown: null,
      reason: null,
      device: null,
      partitionGrown: null,
      fsType: null,
      mountpoint: null,
      fsBytesBefore: null,
      fsBytes: null,
      requestedAt: new Date(now).toISOString(),
      finishedAt: null,
    };
    // Written with the action's start (one commit: the SQLite store groups the writes of one
    // event-loop turn), both before the workflow starts.
    await Promise.all([started, within(() => store.putFsGrowth(asked, { onlyIfAbsent: true }))]);
    // Driven here once this worker's claim on the extend's lease is granted; if another live
    // worker still holds it, `start` resolves at once with `elsewhere` and no error, and the
    // caller gets its 202 all the same (a watchdog takes the extend up once the lease is free).
    const run = workflow.start(volumeId);
    if (plan.mode === 'detached') {
      // Storage-only extends are quick: answer with their result, as before, unless they are not.
      const waited = new AbortController();
      const result = await Promise.race([run, sleep(DETACHED_EXTEND_WAIT_MS, undefined, { signal: waited.signal }).catch(() => undefined)]);
      waited.abort();
      if (result?.error) throw result.error;
    }
    return (await within(() => store.getVolume(volumeId)))!;
  }

  /**
   * Asks compute whether it can extend this attached volume, and how: get_blockdev proves the
   * capability (501 otherwise, before the storage is touched; upstream extends the storage
   * anyway), the server's state picks online or offline, or refuses (409) where neither works.
   */
  private async planAttached(v: VolumeRecord): Promise<{ mode: ExtendMode; hostBytes: number; computeRequestIds: string[] }> {
    const tenant = v.serverProjectId ?? v.projectId;
    const serverId = v.serverId!;
    try {
      const [host, state] = await Promise.all([
        this.deps.compute.getBlockdev(tenant, serverId, v.id),
        this.deps.compute.getServerState(tenant, serverId),
      ]);
      const ids = [host.requestId, state.requestId].filter((x): x is string => x !== undefined);
      return { mode: extendMode(serverId, state.value), hostBytes: host.value, computeRequestIds: ids };
    } catch (err) {
      throw computeRefusal(v.id, err);
    }
  }

  /**
   * The compute host may already see more than the record says (an extend that timed out after
   * the storage or even the guest grew): a target below what it sees cannot be reached without a
   * shrink, so it is refused now, before anything changes.
   */
  private static checkHostTarget(v: VolumeRecord, newBytes: number, hostBytes: number): void {
    if (newBytes < hostBytes) throw errors.shrinkRefused(v.id, newBytes, hostBytes, 'the compute host sees');
  }

  /** One page of the volume's actions, newest first. */
  listActions(volumeId: string, page?: PageQuery): Promise<VolumeActionRecord[]> {
    return this.deps.store.listVolumeActions(volumeId, page);
  }

  private async audit(ctx: RequestContext, volumeId: string, action: string, details: Record<string, unknown>, fn: () => Promise<void>): Promise<void> {
    const { store } = this.deps;
    // The request's Server-Timing parts (util/timing.ts), re-entered after each await.
    const within = <T>(call: () => T): T => withTimings(ctx.timings, call);
    await within(() => store.startVolumeAction({
      requestId: ctx.requestId,
      volumeId,
      action,
      userId: ctx.userId,
      projectId: ctx.projectId,
      startTime: new Date().toISOString(),
      message: null,
      computeRequestIds: [],
      details,
    }));
    try {
      await within(fn);
      await within(() => store.finishVolumeAction(ctx.requestId, volumeId, 'Success', null));
    } catch (err) {
      await within(() => store.finishVolumeAction(ctx.requestId, volumeId, 'Error', (err as Error).message));
      throw err;
    }
  }
}

/**
 * The target must be above the recorded size (400: never shrink, and equal is nothing to do),
 * and not below what an earlier, failed extend already gave the storage (it cannot be taken back).
 */
function checkTarget(v: VolumeRecord, newBytes: number): void {
  if (newBytes <= v.sizeBytes) {
    throw errors.invalidInput(
      `New size ${newBytes} bytes must be greater than the current size ${v.sizeBytes} bytes` + (newBytes < v.sizeBytes ? ': volumes are never shrunk.' : '.'),
    );
  }
  const grown = v.status === 'error_extending' ? v.extend?.storageBytes : undefined;
  if (grown !== undefined && newBytes < grown) {
    throw errors.invalidInput(
      `New size ${newBytes} bytes is below the ${grown} bytes the storage already has from the extend that failed; ask for at least ${grown} bytes: volumes are never shrunk.`,
    );
  }
}

/** What compute said when asked whether it can extend, as our own error (classification kept). */
function computeRefusal(volumeId: string, err: unknown): ServiceError {
  if (!isServiceError(err)) return errors.computeUnreachable((err as Error).message);
  if (err.code === 'ExtendVolumeNotSupported') return errors.computeCannotExtend(err.message);
  if (err.code === 'InstanceNotFound' || err.code === 'VolumeNotAttached') {
    return new ServiceError('VolumeInvalidState', `Compute refused to extend volume ${volumeId}: ${err.message}`, { final: err.final, reason: err.reason ?? err.message });
  }
  return err;
}
