/**
 * Attach and detach (Nova's attach flow): the compute API's os-volume_attachments routes call
 * this; it reserves the volume, asks its backend how the host reaches it (connection_info),
 * has compute plug it in, and records the attachment.
 */
import type { ComputeAPI } from '../compute/api.js';
import type { VolumeAttacher } from '../compute/attacher.js';
import type { RequestContext } from '../context.js';
import type { AttachmentRecord, ServerRecord, VolumeStore } from '../db/store.js';
import { errors } from '../errors.js';
import type { VolumeBackend } from './backends/backend.js';

export class VolumeAttachService implements VolumeAttacher {
  constructor(
    private readonly deps: { store: VolumeStore; backends: ReadonlyMap<string, VolumeBackend>; compute: ComputeAPI },
  ) {}

  async attach(ctx: RequestContext, server: ServerRecord, volumeId: string, device?: string): Promise<AttachmentRecord> {
    const { store } = this.deps;
    const v = await store.getVolume(volumeId);
    if (!v || v.projectId !== server.projectId) throw errors.volumeNotFound(volumeId);
    if (v.status === 'in-use' && v.serverId === server.id) return this.deps.compute.attachment(server, volumeId);
    if (!(await store.updateVolume(volumeId, ['available'], { status: 'attaching' }))) {
      throw errors.volumeInvalidState(volumeId, v.status, 'attach');
    }
    try {
      const backend = this.deps.backends.get(v.backend);
      if (!backend) throw errors.backendFailed(`backend ${v.backend} is not configured`);
      const connection = await backend.connection(volumeId);
      const att = await this.deps.compute.attachVolume(ctx, server, { ...connection, ...(device ? { device } : {}) });
      await store.updateVolume(volumeId, ['attaching'], { status: 'in-use', serverId: server.id, serverProjectId: server.projectId, device: att.device });
      return att;
    } catch (err) {
      await store.updateVolume(volumeId, ['attaching'], { status: 'available' });
      throw err;
    }
  }

  async detach(ctx: RequestContext, server: ServerRecord, volumeId: string): Promise<void> {
    const { store } = this.deps;
    const v = await store.getVolume(volumeId);
    if (v && v.serverId === server.id) {
      if (!(await store.updateVolume(volumeId, ['in-use', 'error_extending'], { status: 'detaching' }))) {
        throw errors.volumeInvalidState(volumeId, v.status, 'detach');
      }
    }
    try {
      await this.deps.compute.detachVolume(ctx, server, volumeId);
    } catch (err) {
      if (v) await store.updateVolume(volumeId, ['detaching'], { status: v.status });
      throw err;
    }
    if (v) await store.updateVolume(volumeId, ['detaching'], { status: 'available', serverId: null, serverProjectId: null, device: null });
  }
}
