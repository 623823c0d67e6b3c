/**
 * How the volume service reaches the compute API: over real HTTP with its own service token,
 * as Cinder reaches Nova. Each call returns the compute request id for the volume's audit.
 */
import { ApiClient } from '../httpClient.js';

export interface ComputeCall<T> {
  value: T;
  requestId: string | undefined;
}

export interface ComputeForVolumes {
  /** GET get_blockdev: the size the host sees (also proves the host can extend: 501 otherwise). */
  getBlockdev(tenantId: string, serverId: string, volumeId: string): Promise<ComputeCall<number>>;
  /** PUT rescan (202). */
  rescan(tenantId: string, serverId: string, volumeId: string): Promise<ComputeCall<void>>;
  /** POST assist_extend: the measured guest-visible size. */
  assistExtend(tenantId: string, serverId: string, volumeId: string, bytes: number): Promise<ComputeCall<number>>;
}

export class HttpComputeClient implements ComputeForVolumes {
  private readonly api: ApiClient;

  constructor(opts: { url: string; token: string; timeoutMs?: number }) {
    this.api = new ApiClient(opts);
  }

  private path(tenantId: string, serverId: string): string {
    return `/v2/${encodeURIComponent(tenantId)}/servers/${encodeURIComponent(serverId)}/os-online_extend_volume`;
  }

  async getBlockdev(tenantId: string, serverId: string, volumeId: string): Promise<ComputeCall<number>> {
    const res = await this.api.request<{ volume_blockdev: { bytes: number } }>('GET', `${this.path(tenantId, serverId)}/${volumeId}`);
    return { value: res.body.volume_blockdev.bytes, requestId: res.requestId };
  }

  async rescan(tenantId: string, serverId: string, volumeId: string): Promise<ComputeCall<void>> {
    const res = await this.api.request('PUT', this.path(tenantId, serverId), { onlineExtendVolume: { volume_id: volumeId } });
    return { value: undefined, requestId: res.requestId };
  }

  async assistExtend(tenantId: string, serverId: string, volumeId: string, bytes: number): Promise<ComputeCall<number>> {
    const res = await this.api.request<{ volume_blockdev: { bytes: number } }>('POST', `${this.path(tenantId, serverId)}/${volumeId}`, {
      onlineExtendVolume: { bytes },
    });
    return { value: res.body.volume_blockdev.bytes, requestId: res.requestId };
  }
}
