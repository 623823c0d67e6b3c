/**
 * How compute reaches the volume service: over real HTTP, as Nova calls Cinder. The compute API's
 * os-volume_attachments routes attach and detach through it; the volume service then reserves
 * the volume, asks compute to plug or unplug it (computeClient.ts) and finishes the attachment.
 *
 * Whose token: the caller's. Nova forwards the user's token to Cinder, so Cinder's own policy
 * (`volume:attach`, `volume:detach`) and project checks apply to the user, and the volume's
 * audit names the user. Each call therefore takes the token of the request it serves.
 */
import { ApiClient, ApiError, type ApiClientOptions, type CallOptions, type RemoteCall } from './httpClient.js';
import type { AttachmentCreateBody, Connection } from './shapes.js';

/** Everything compute asks of the volume service. `projectId` is the server's (and the volume's) project. */
export interface VolumesForCompute {
  /**
   * Attach `volumeId` to `serverId` (on `device`, e.g. `vdc`, if given) with the caller's
   * `token`; answers the attachment. VolumeNotFound (404), InvalidVolume (400: already
   * attached), VolumeInvalidState / VolumeBusy (409), compute's refusals (see
   * ComputeForVolumes.checkConnect) before anything changes.
   */
  attach(token: string, projectId: string, serverId: string, volumeId: string, device: string | undefined, opts?: CallOptions): Promise<RemoteCall<Connection>>;
  /** Detach `volumeId` from `serverId` with the caller's `token`. VolumeNotAttached (404), VolumeBusy (409). */
  detach(token: string, projectId: string, serverId: string, volumeId: string, opts?: CallOptions): Promise<RemoteCall<void>>;
  /**
   * The volume's status and the servers it is attached to, read with the caller's `token`
   * (Cinder's GET /volumes/{id}); undefined when the volume service has no such volume (a disk
   * found on the host, not one of its volumes). Throws what the volume API answers otherwise.
   */
  volume(token: string, projectId: string, volumeId: string, opts?: CallOptions): Promise<RemoteCall<VolumeState | undefined>>;
}

/** What compute reads of a volume before and during a server delete (see VolumesForCompute.volume). */
export interface VolumeState {
  /** Cinder's status: `available`, `in-use`, `attaching`, `detaching`, `extending`, … */
  status: string;
  /** The servers it is attached to (Cinder's `attachments[].server_id`). */
  serverIds: string[];
}

/** VolumesForCompute over HTTP (see the module comment). */
export class HttpVolumeClient implements VolumesForCompute {
  private readonly api: ApiClient;

  /** `token` is unused (every call carries its caller's); `url` may be a catalog lookup. */
  constructor(opts: Pick<ApiClientOptions, 'url' | 'timeoutMs'>) {
    this.api = new ApiClient({ ...opts, token: '', unreachableCode: 'ServiceUnavailable' });
  }

  private attachments(projectId: string): string {
    return `/v3/${encodeURIComponent(projectId)}/attachments`;
  }

  async attach(token: string, projectId: string, serverId: string, volumeId: string, device: string | undefined, opts: CallOptions = {}): Promise<RemoteCall<Connection>> {
    const body: AttachmentCreateBody = { attachment: { volume_uuid: volumeId, instance_uuid: serverId, ...(device ? { mountpoint: device } : {}) } };
    const res = await this.api.request<{ attachment: Connection }>('POST', this.attachments(projectId), body, { ...opts, token });
    return { value: res.body.attachment, requestId: res.requestId };
  }

  async detach(token: string, projectId: string, serverId: string, volumeId: string, opts: CallOptions = {}): Promise<RemoteCall<void>> {
    const path = `${this.attachments(projectId)}/${encodeURIComponent(volumeId)}?instance_uuid=${encodeURIComponent(serverId)}`;
    const res = await this.api.request('DELETE', path, undefined, { ...opts, token });
    return { value: undefined, requestId: res.requestId };
  }

  async volume(token: string, projectId: string, volumeId: string, opts: CallOptions = {}): Promise<RemoteCall<VolumeState | undefined>> {
    const path = `/v3/${encodeURIComponent(projectId)}/volumes/${encodeURIComponent(volumeId)}`;
    try {
      const res = await this.api.request<{ volume: { status: string; attachments?: Array<{ server_id?: string }> } }>('GET', path, undefined, { ...opts, token });
      const v = res.body.volume;
      return { value: { status: v.status, serverIds: (v.attachments ?? []).flatMap((a) => (a.server_id ? [a.server_id] : [])) }, requestId: res.requestId };
    } catch (err) {
      if (err instanceof ApiError && err.code === 'VolumeNotFound') return { value: undefined, requestId: err.requestId };
      throw err;
    }
  }
}
