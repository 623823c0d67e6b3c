/**
 * How the volume service reaches the compute API: over real HTTP with its own service token,
 * as Cinder reaches Nova. Each call returns the compute request id for the volume's audit.
 * Failures come back as the ServiceError compute raised (code and final-or-uncertain kept).
 */
import { ApiClient } from '../httpClient.js';
import type { ServerState } from '../virt/driver.js';

export interface ComputeCall<T> {
  value: T;
  requestId: string | undefined;
}

/** Per-call options: `timeoutMs` bounds the call (the workflow passes what is left of its deadline). */
export interface CallOptions {
  timeoutMs?: number;
}

export interface ComputeForVolumes {
  /** GET get_blockdev: the size the host sees (also proves the host can extend: 501 otherwise). */
  getBlockdev(tenantId: string, serverId: string, volumeId: string, opts?: CallOptions): Promise<ComputeCall<number>>;
  /** PUT rescan (202). */
  rescan(tenantId: string, serverId: string, volumeId: string, opts?: CallOptions): Promise<ComputeCall<void>>;
  /** POST assist_extend: the measured guest-visible size. InstanceStopped (409) when the server is shut off. */
  assistExtend(tenantId: string, serverId: string, volumeId: string, bytes: number, opts?: CallOptions): Promise<ComputeCall<number>>;
  /** GET the server: its state (Nova's vm_state), as compute last saw it. */
  getServerState(tenantId: string, serverId: string, opts?: CallOptions): Promise<ComputeCall<ServerState>>;
}

export class HttpComputeClient implements ComputeForVolumes {
  private readonly api: ApiClient;

  constructor(opts: { url: string; token: string | (() => string); timeoutMs?: number }) {
    this.api = new ApiClient(opts);
  }

  private server(tenantId: string, serverId: string): string {
    return `/v2/${encodeURIComponent(tenantId)}/servers/${encodeURIComponent(serverId)}`;
  }

  private path(tenantId: string, serverId: string): string {
    return `${this.server(tenantId, serverId)}/os-online_extend_volume`;
  }

  async getBlockdev(tenantId: string, serverId: string, volumeId: string, opts: CallOptions = {}): Promise<ComputeCall<number>> {
    const res = await this.api.request<{ volume_blockdev: { bytes: number } }>('GET', `${this.path(tenantId, serverId)}/${volumeId}`, undefined, opts);
    return { value: res.body.volume_blockdev.bytes, requestId: res.requestId };
  }

  async rescan(tenantId: string, serverId: string, volumeId: string, opts: CallOptions = {}): Promise<ComputeCall<void>> {
    const res = await this.api.request('PUT', this.path(tenantId, serverId), { onlineExtendVolume: { volume_id: volumeId } }, opts);
    return { value: undefined, requestId: res.requestId };
  }

  async assistExtend(tenantId: string, serverId: string, volumeId: string, bytes: number, opts: CallOptions = {}): Promise<ComputeCall<number>> {
    const res = await this.api.request<{ volume_blockdev: { bytes: number } }>(
      'POST',
      `${this.path(tenantId, serverId)}/${volumeId}`,
      { onlineExtendVolume: { bytes } },
      opts,
    );
    return { value: res.body.volume_blockdev.bytes, requestId: res.requestId };
  }

  async getServerState(tenantId: string, serverId: string, opts: CallOptions = {}): Promise<ComputeCall<ServerState>> {
    const res = await this.api.request<{ server: { 'OS-EXT-STS:vm_state': ServerState } }>('GET', this.server(tenantId, serverId), undefined, opts);
    return { value: res.body.server['OS-EXT-STS:vm_state'], requestId: res.requestId };
  }
}
