import type { RequestContext } from '../context.js';
import type { AttachmentRecord, ServerRecord } from '../db/store.js';

/**
 * Attaching needs the volume service (it knows how the host reaches the volume, Cinder's
 * connection_info) and compute (it plugs the disk in). The volume service implements this and the
 * app wires it into the compute API's os-volume_attachments routes.
 */
export interface VolumeAttacher {
  attach(ctx: RequestContext, server: ServerRecord, volumeId: string, device?: string): Promise<AttachmentRecord>;
  detach(ctx: RequestContext, server: ServerRecord, volumeId: string): Promise<void>;
}
