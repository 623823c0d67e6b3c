/**
 * How the volume service reaches compute: over real HTTP with its own service token, as Cinder
 * reaches Nova (or, when compute's API is served by the same process, through that API's request
 * pipeline in-process: `dispatch`, rpc/inProcess.ts; same auth, policy, audit and answers). The extend calls are the spec's os-online_extend_volume; attach and detach and
 * the reconciler's look at a server go through compute's internal os-volume_connections routes
 * (the service role only). Each call answers the compute request id for the volume's audit;
 * failures come back as the ServiceError compute raised (code and final-or-uncertain kept).
 */
import { ApiClient, type ApiClientOptions, type CallOptions, type RemoteCall } from './httpClient.js';
import { serverStateFromNova, type ConnectBody, type Connection, type ConnectionInfo, type GuestFilesystemAnswer, type ServerState } from './shapes.js';

export type { CallOptions, RemoteCall as ComputeCall } from './httpClient.js';

/** Everything the volume service asks of compute. `tenantId` is the server's project. */
export interface ComputeForVolumes {
  /** GET get_blockdev: the size in bytes the host sees (also proves the host can extend: ExtendVolumeNotSupported, 501, otherwise). */
  getBlockdev(tenantId: string, serverId: string, volumeId: string, opts?: CallOptions): Promise<RemoteCall<number>>;
  /** PUT rescan (202): the host rescans in the background. */
  rescan(tenantId: string, serverId: string, volumeId: string, opts?: CallOptions): Promise<RemoteCall<void>>;
  /** POST assist_extend to `bytes`: the measured guest-visible size in bytes. InstanceStopped (409) when the server is shut off. */
  assistExtend(tenantId: string, serverId: string, volumeId: string, bytes: number, opts?: CallOptions): Promise<RemoteCall<number>>;
  /** GET the server: its state (Nova's vm_state), as compute last saw it. InstanceNotFound (404). */
  getServerState(tenantId: string, serverId: string, opts?: CallOptions): Promise<RemoteCall<ServerState>>;
  /**
   * Whether the server can take the volume now (on `device` if given), before the volume is
   * reserved: InstanceBusy, InstanceStopped, InstanceInvalidState, DevicePathInUse (409),
   * TooManyDiskDevices (403), ExtendVolumeNotSupported (501: no attach support), InstanceNotFound (404).
   */
  checkConnect(tenantId: string, serverId: string, volumeId: string, device: string | undefined, opts?: CallOptions): Promise<RemoteCall<void>>;
  /** Plug the volume into the server (idempotent); answers the device the guest got. Errors as checkConnect, and the driver's. */
  connect(tenantId: string, serverId: string, connection: ConnectionInfo, opts?: CallOptions): Promise<RemoteCall<Connection>>;
  /** Unplug the volume from the server. VolumeNotAttached / InstanceNotFound (404), InstanceBusy (409). */
  disconnect(tenantId: string, serverId: string, volumeId: string, opts?: CallOptions): Promise<RemoteCall<void>>;
  /** The volumes plugged into the server as the hypervisor has them now (read fresh). InstanceNotFound (404) when it is gone. */
  connections(tenantId: string, serverId: string, opts?: CallOptions): Promise<RemoteCall<Connection[]>>;
  /**
   * Grow the last partition and the filesystem on the volume's disk inside the guest: what the
   * guest reported (grown, or not and why; sizes in bytes). VolumeNotAttached / InstanceNotFound
   * (404), InstanceBusy (409), GuestFilesystemGrowNotSupported (501), HypervisorUnreachable (503).
   */
  growGuestFilesystem(tenantId: string, serverId: string, volumeId: string, opts?: CallOptions): Promise<RemoteCall<GuestFilesystemAnswer['growth']>>;
}

/** ComputeForVolumes over HTTP (see the module comment). */
export class HttpComputeClient implements ComputeForVolumes {
  private readonly api: ApiClient;

  /** `dispatch`: compute's API is in this process (rpc/inProcess.ts); absent: over HTTP to `url`. */
  constructor(opts: Pick<ApiClientOptions, 'url' | 'token' | 'timeoutMs' | 'dispatch' | 'serviceCredential'>) {
    this.api = new ApiClient({ ...opts, unreachableCode: 'ComputeUnreachable' });
  }

  private server(tenantId: string, serverId: string): string {
    return `/v2/${encodeURIComponent(tenantId)}/servers/${encodeURIComponent(serverId)}`;
  }

  private path(tenantId: string, serverId: string): string {
    return `${this.server(tenantId, serverId)}/os-online_extend_volume`;
  }

  private connectionsPath(tenantId: string, serverId: string): string {
    return `${this.server(tenantId, serverId)}/os-volume_connections`;
  }

  async getBlockdev(tenantId: string, serverId: string, volumeId: string, opts: CallOptions = {}): Promise<RemoteCall<number>> {
    const res = await this.api.request<{ volume_blockdev: { bytes: number } }>('GET', `${this.path(tenantId, serverId)}/${encodeURIComponent(volumeId)}`, undefined, opts);
    return { value: res.body.volume_blockdev.bytes, requestId: res.requestId };
  }

  async rescan(tenantId: string, serverId: string, volumeId: string, opts: CallOptions = {}): Promise<RemoteCall<void>> {
    const res = await this.api.request('PUT', this.path(tenantId, serverId), { onlineExtendVolume: { volume_id: volumeId } }, opts);
    return { value: undefined, requestId: res.requestId };
  }

  async assistExtend(tenantId: string, serverId: string, volumeId: string, bytes: number, opts: CallOptions = {}): Promise<RemoteCall<number>> {
    const res = await this.api.request<{ volume_blockdev: { bytes: number } }>(
      'POST',
      `${this.path(tenantId, serverId)}/${encodeURIComponent(volumeId)}`,
      { onlineExtendVolume: { bytes } },
      opts,
    );
    return { value: res.body.volume_blockdev.bytes, requestId: res.requestId };
  }

  async getServerState(tenantId: string, serverId: string, opts: CallOptions = {}): Promise<RemoteCall<ServerState>> {
    type View = { status: string; 'OS-EXT-STS:vm_state': string; 'OS-EXT-STS:power_state': number };
    const res = await this.api.request<{ server: View }>('GET', this.server(tenantId, serverId), undefined, opts);
    const s = res.body.server;
    return { value: serverStateFromNova({ vmState: s['OS-EXT-STS:vm_state'], powerState: s['OS-EXT-STS:power_state'], status: s.status }), requestId: res.requestId };
  }

  async checkConnect(tenantId: string, serverId: string, volumeId: string, device: string | undefined, opts: CallOptions = {}): Promise<RemoteCall<void>> {
    const res = await this.api.request('POST', `${this.connectionsPath(tenantId, serverId)}/check`, { volumeId, ...(device ? { device } : {}) }, opts);
    return { value: undefined, requestId: res.requestId };
  }

  async connect(tenantId: string, serverId: string, connection: ConnectionInfo, opts: CallOptions = {}): Promise<RemoteCall<Connection>> {
    const body: ConnectBody = { connection };
    const res = await this.api.request<{ connection: Connection }>('POST', this.connectionsPath(tenantId, serverId), body, opts);
    return { value: res.body.connection, requestId: res.requestId };
  }

  async disconnect(tenantId: string, serverId: string, volumeId: string, opts: CallOptions = {}): Promise<RemoteCall<void>> {
    const res = await this.api.request('DELETE', `${this.connectionsPath(tenantId, serverId)}/${encodeURIComponent(volumeId)}`, undefined, opts);
    return { value: undefined, requestId: res.requestId };
  }

  async growGuestFilesystem(tenantId: string, serverId: string, volumeId: string, opts: CallOptions = {}): Promise<RemoteCall<GuestFilesystemAnswer['growth']>> {
    const res = await this.api.request<GuestFilesystemAnswer>('POST', `${this.connectionsPath(tenantId, serverId)}/${encodeURIComponent(volumeId)}/grow_fs`, undefined, opts);
    return { value: res.body.growth, requestId: res.requestId };
  }

  async connections(tenantId: string, serverId: string, opts: CallOptions = {}): Promise<RemoteCall<Connection[]>> {
    const res = await this.api.request<{ connections: Connection[] }>('GET', this.connectionsPath(tenantId, serverId), undefined, opts);
    return { value: res.body.connections, requestId: res.requestId };
  }
}
