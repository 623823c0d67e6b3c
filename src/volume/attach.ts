/**
 * Attach and detach (Nova's attach flow): the compute API's os-volume_attachments routes call
 * this; it reserves the volume, asks its backend how the host reaches it (connection_info),
 * has compute plug it in, and records the attachment. The lifecycle table (lifecycle.ts) decides
 * whether the volume may move, and the move is a conditional update on the version read.
 */
import type { ComputeAPI } from '../compute/api.js';
import type { VolumeAttacher } from '../compute/attacher.js';
import type { RequestContext } from '../context.js';
import type { AttachmentRecord, ServerRecord, VolumeRecord, VolumeStore } from '../db/store.js';
import { errors, isFinalError } from '../errors.js';
import type { InFlight } from './reconciler.js';
import type { VolumeBackend } from './backends/backend.js';
import { decide, isAttached, outcome, type VolumeAction } from './lifecycle.js';

const MAX_DECISIONS = 5;

export class VolumeAttachService implements VolumeAttacher {
  constructor(
    private readonly deps: { store: VolumeStore; backends: ReadonlyMap<string, VolumeBackend>; compute: ComputeAPI; inFlight: InFlight },
  ) {}

  /** Moves `v` as the table says for `action`, conditionally; decides again if it changed. */
  private async begin(action: VolumeAction, volumeId: string, v: VolumeRecord, patch: Partial<Pick<VolumeRecord, 'serverId' | 'serverProjectId'>> = {}): Promise<VolumeRecord> {
    for (let attempt = 1; ; attempt++) {
      const d = decide(action, v);
      if (!d.ok) throw d.error;
      if (await this.deps.store.updateVolume(volumeId, { status: [v.status], version: v.version, attached: isAttached(v) }, { ...patch, status: d.to })) return v;
      const now = await this.deps.store.getVolume(volumeId);
      if (!now) throw errors.volumeNotFound(volumeId);
      if (attempt >= MAX_DECISIONS) throw errors.volumeBusy(volumeId, now.status, action);
      v = now;
    }
  }

  async attach(ctx: RequestContext, server: ServerRecord, volumeId: string, device?: string): Promise<AttachmentRecord> {
    const { store } = this.deps;
    const v = await store.getVolume(volumeId);
    if (!v || v.projectId !== server.projectId) throw errors.volumeNotFound(volumeId);
    // Attaching what is already attached here is a no-op, as in Nova.
    if (v.serverId === server.id && v.status === 'in-use') return this.deps.compute.attachment(server, volumeId);
    // Compute's refusals (the server's state, a task under way, no attach support) come before
    // the volume is reserved, as in Nova, so they leave it untouched (not even its version).
    server = await this.deps.compute.checkAttach(server, { volumeId, ...(device ? { device } : {}) });
    return this.deps.inFlight.run(volumeId, async () => {
      // The reservation names the server, so whoever finds the volume `attaching` later (the
      // reconciler, after a crash) knows where to look for the disk.
      await this.begin('attach', volumeId, v, { serverId: server.id, serverProjectId: server.projectId });
      let asked = false;
      try {
        const backend = this.deps.backends.get(v.backend);
        if (!backend) throw errors.backendFailed(`volume type ${v.backend} is not configured on this service`);
        const connection = await backend.connection(volumeId);
        asked = true;
        const att = await this.deps.compute.attachVolume(ctx, server, { ...connection, ...(device ? { device } : {}) });
        await store.updateVolume(volumeId, ['attaching'], { status: outcome('attach', 'done', true), device: att.device });
        return att;
      } catch (err) {
        // Compute refused for good: nothing is plugged in. Otherwise (a timeout, the database
        // failing after the plug) the disk may be on the server: the reconciler looks and decides.
        if (!asked || isFinalError(err)) {
          await store.updateVolume(volumeId, ['attaching'], { status: outcome('attach', 'failed', false), serverId: null, serverProjectId: null, device: null });
        }
        throw err;
      }
    });
  }

  async detach(ctx: RequestContext, server: ServerRecord, volumeId: string): Promise<void> {
    const { store } = this.deps;
    const v = await store.getVolume(volumeId);
    // A volume of ours that is attached here, or not attached at all, is decided by the table; a
    // disk we never attached (no record) or a volume attached to another server is left to
    // compute, which unplugs the former and answers 404 for the latter.
    const ours = v !== undefined && v.projectId === server.projectId && (v.serverId === server.id || v.serverId === null);
    if (!ours) return this.deps.compute.detachVolume(ctx, server, volumeId);
    return this.deps.inFlight.run(volumeId, async () => {
      const before = await this.begin('detach', volumeId, v);
      try {
        await this.deps.compute.detachVolume(ctx, server, volumeId);
      } catch (err) {
        // Compute refused for good: still plugged in, back to the status it had. Otherwise the
        // guest may still let go of it: the reconciler looks and decides.
        if (isFinalError(err)) await store.updateVolume(volumeId, ['detaching'], { status: before.status });
        throw err;
      }
      // A failed extend may have grown the storage (or QEMU the file) past the record: a
      // detached volume's size is what its storage has, measured.
      const grown = before.status === 'error_extending' ? await this.storageBytes(before) : undefined;
      await store.updateVolume(volumeId, ['detaching'], {
        status: 'available',
        serverId: null,
        serverProjectId: null,
        device: null,
        ...(grown !== undefined && grown > before.sizeBytes ? { sizeBytes: grown } : {}),
      });
    });
  }

  private async storageBytes(v: VolumeRecord): Promise<number | undefined> {
    const backend = this.deps.backends.get(v.backend);
    return backend?.getBytes(v.id).catch(() => undefined);
  }
}
