/**
 * VolumeService (Cinder's volume API and manager in one): volumes on storage backends, and the
 * extend of available and in-use volumes. The in-use extend runs as a durable workflow.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { RequestContext } from '../context.js';
import type { VolumeRecord, VolumeStore } from '../db/store.js';
import { errors, isServiceError, ServiceError } from '../errors.js';
import type { VolumeBackend } from './backends/backend.js';
import type { ComputeForVolumes } from './computeClient.js';
import { FIRST_STEP, type ExtendWorkflow } from './workflow.js';

export interface CreateVolumeRequest {
  name: string;
  sizeBytes: number;
  backend: string;
  format?: 'raw' | 'qcow2';
}

export class VolumeService {
  constructor(
    private readonly deps: {
      store: VolumeStore;
      backends: ReadonlyMap<string, VolumeBackend>;
      compute: ComputeForVolumes;
      workflow: ExtendWorkflow;
      logger: Logger;
      defaultBackend: string;
    },
  ) {}

  get backendNames(): string[] {
    return [...this.deps.backends.keys()];
  }

  private backend(name: string): VolumeBackend {
    const b = this.deps.backends.get(name);
    if (!b) throw errors.invalidInput(`Unknown volume type "${name}"; available: ${this.backendNames.join(', ')}.`);
    return b;
  }

  /** The volume if it exists in `projectId`; 404 otherwise. */
  async get(projectId: string, volumeId: string): Promise<VolumeRecord> {
    const v = await this.deps.store.getVolume(volumeId);
    if (!v || v.projectId !== projectId) throw errors.volumeNotFound(volumeId);
    return v;
  }

  list(projectId: string): Promise<VolumeRecord[]> {
    return this.deps.store.listVolumes({ projectId });
  }

  async create(ctx: RequestContext, projectId: string, req: CreateVolumeRequest): Promise<VolumeRecord> {
    const backendName = req.backend || this.deps.defaultBackend;
    const backend = this.backend(backendName);
    const format = backendName === 'file' ? (req.format ?? 'raw') : null;
    if (req.format && backendName !== 'file') throw errors.invalidInput(`Volume type "${backendName}" has no format option.`);
    const id = randomUUID();
    const { store } = this.deps;
    await store.createVolume({
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
    });
    await this.audit(ctx, id, 'create', { size_bytes: req.sizeBytes, backend: backendName }, async () => {
      try {
        const created = await backend.create(id, req.sizeBytes, format ? { format } : undefined);
        await store.updateVolume(id, ['creating'], { status: 'available', sizeBytes: created.bytes });
      } catch (err) {
        await store.updateVolume(id, ['creating'], { status: 'error' });
        throw err;
      }
    });
    return (await store.getVolume(id))!;
  }

  async delete(ctx: RequestContext, projectId: string, volumeId: string): Promise<void> {
    const v = await this.get(projectId, volumeId);
    const { store } = this.deps;
    if (!(await store.updateVolume(volumeId, ['available', 'error', 'error_extending'], { status: 'deleting' }))) {
      throw errors.volumeInvalidState(volumeId, v.status, 'delete');
    }
    await this.audit(ctx, volumeId, 'delete', {}, async () => {
      try {
        await this.backend(v.backend).delete(volumeId);
      } catch (err) {
        await store.updateVolume(volumeId, ['deleting'], { status: 'error' });
        throw err;
      }
      await store.deleteVolume(volumeId);
    });
  }

  /**
   * Extend to `newBytes`. An available volume grows on its backend only, now. An in-use volume
   * is checked with compute first (before the storage is touched), moved to `extending`, and
   * grown by the workflow in the background; the caller polls the volume.
   */
  async extend(ctx: RequestContext, projectId: string, volumeId: string, newBytes: number): Promise<VolumeRecord> {
    const v = await this.get(projectId, volumeId);
    const { store } = this.deps;
    if (newBytes <= v.sizeBytes) {
      throw errors.invalidInput(
        `New size ${newBytes} bytes must be greater than the current size ${v.sizeBytes} bytes` +
          (newBytes < v.sizeBytes ? ': volumes are never shrunk.' : '.'),
      );
    }
    if (v.status === 'available') {
      if (!(await store.updateVolume(volumeId, ['available'], { status: 'extending' }))) {
        throw errors.volumeInvalidState(volumeId, (await store.getVolume(volumeId))?.status ?? 'deleted', 'extend');
      }
      await this.audit(ctx, volumeId, 'extend', { new_bytes: newBytes, attached: false }, async () => {
        try {
          const measured = await this.backend(v.backend).extend(volumeId, newBytes);
          await store.updateVolume(volumeId, ['extending'], { status: 'available', sizeBytes: measured });
        } catch (err) {
          await store.updateVolume(volumeId, ['extending'], { status: 'available' });
          throw err;
        }
      });
      return (await store.getVolume(volumeId))!;
    }
    // error_extending: the operator may simply try again once the cause is fixed (Cinder would
    // need a reset-state first); every step is idempotent, so a new run is safe.
    if ((v.status !== 'in-use' && v.status !== 'error_extending') || !v.serverId) {
      throw errors.volumeInvalidState(volumeId, v.status, 'extend');
    }

    // 1. Can the compute host do it? Upstream extends the storage even when it cannot.
    let check;
    try {
      check = await this.deps.compute.getBlockdev(v.serverProjectId ?? v.projectId, v.serverId, volumeId);
    } catch (err) {
      throw computeRefusal(volumeId, err);
    }
    // 2. in-use → extending, conditionally: a concurrent extend loses here with 409.
    const now = Date.now();
    const started = await store.updateVolume(volumeId, ['in-use', 'error_extending'], {
      status: 'extending',
      extend: {
        requestId: ctx.requestId,
        targetBytes: newBytes,
        step: FIRST_STEP,
        startedAt: new Date(now).toISOString(),
        deadline: new Date(now + this.deps.workflow.options.timeoutMs).toISOString(),
        attempts: 0,
        hostBytes: check.value,
        error: null,
      },
    });
    if (!started) throw errors.volumeInvalidState(volumeId, (await store.getVolume(volumeId))?.status ?? 'deleted', 'extend');
    await store.startVolumeAction({
      requestId: ctx.requestId,
      volumeId,
      action: 'extend',
      userId: ctx.userId,
      projectId: ctx.projectId,
      startTime: new Date(now).toISOString(),
      message: null,
      computeRequestIds: check.requestId ? [check.requestId] : [],
      details: { new_bytes: newBytes, from_bytes: v.sizeBytes, attached: true, server_id: v.serverId },
    });
    void this.deps.workflow.start(volumeId);
    return (await store.getVolume(volumeId))!;
  }

  listActions(volumeId: string) {
    return this.deps.store.listVolumeActions(volumeId);
  }

  private async audit(ctx: RequestContext, volumeId: string, action: string, details: Record<string, unknown>, fn: () => Promise<void>): Promise<void> {
    const { store } = this.deps;
    await store.startVolumeAction({
      requestId: ctx.requestId,
      volumeId,
      action,
      userId: ctx.userId,
      projectId: ctx.projectId,
      startTime: new Date().toISOString(),
      message: null,
      computeRequestIds: [],
      details,
    });
    try {
      await fn();
      await store.finishVolumeAction(ctx.requestId, volumeId, 'Success', null);
    } catch (err) {
      await store.finishVolumeAction(ctx.requestId, volumeId, 'Error', (err as Error).message);
      throw err;
    }
  }
}

/** What compute said when asked whether it can extend, as our own error (classification kept). */
function computeRefusal(volumeId: string, err: unknown) {
  if (!isServiceError(err)) return errors.computeUnreachable((err as Error).message);
  if (err.code === 'ExtendVolumeNotSupported') return errors.computeCannotExtend(err.message);
  if (err.status === 404 || err.status === 409) {
    return new ServiceError('VolumeInvalidState', `Compute refused to extend volume ${volumeId}: ${err.message}`, { final: err.final, reason: err.reason ?? err.message });
  }
  return err;
}
