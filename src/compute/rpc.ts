/**
 * The boundary between the compute API and the compute hosts (Nova's compute/rpcapi.py).
 * Today the only implementation calls the manager in-process; scale-out puts a message bus here
 * and runs one manager per hypervisor host, so the API never touches a driver directly.
 */
import type { ServerRecord } from '../db/store.js';
import type { AttachSpec, DriverCapabilities, DriverServer, GuestFilesystemGrowth, SpawnSpec } from '../virt/driver.js';
import type { ComputeManager, HostSizeExtend } from './manager.js';
import type { Metrics } from '../util/metrics.js';
import { currentTimings, type RequestTimings } from '../util/timing.js';

/** The calls the compute API makes on a host (see the module comment); `host` names the host. */
export interface ComputeRpc {
  capabilities(host: string): Promise<{ driver: string; capabilities: DriverCapabilities }>;
  syncInventory(host?: string): Promise<void>;
  /**
   * Bring one server's record up to date from its host (ComputeManager.syncServer) and answer
   * the record the store then holds, or undefined. `host`: the host it is recorded on; undefined
   * for a server no host is known for (asks every host).
   */
  syncServer(host: string | undefined, serverId: string): Promise<ServerRecord | undefined>;
  rescan(host: string, serverId: string, volumeId: string): Promise<void>;
  getHostBytes(host: string, serverId: string, volumeId: string): Promise<number>;
  extendAttached(host: string, serverId: string, volumeId: string, bytes: number): Promise<number>;
  /** Rescan, measure and grow the guest to what the host sees, never smaller (ComputeManager.extendToHostSize). */
  extendToHostSize(host: string, serverId: string, volumeId: string): Promise<HostSizeExtend>;
  attachVolume(host: string, serverId: string, spec: AttachSpec): Promise<string>;
  detachVolume(host: string, serverId: string, volumeId: string): Promise<void>;
  /** Create and start a server on `host` (ComputeManager.spawn); resolves once it runs. */
  spawn(host: string, spec: SpawnSpec): Promise<DriverServer>;
  /** Delete a server and what was made for it on `host` (ComputeManager.destroy); idempotent. */
  destroy(host: string, serverId: string): Promise<void>;
  /** Grow the partition and filesystem on the volume's disk inside the guest (ComputeManager.growGuestFilesystem); no `detail`. */
  growGuestFilesystem(host: string, serverId: string, volumeId: string): Promise<GuestFilesystemGrowth>;
}

/** ComputeRpc to the one manager of this process; another host name is an error. */
export class LocalComputeRpc implements ComputeRpc {
  constructor(private readonly manager: ComputeManager) {}

  private on(host: string): ComputeManager {
    if (host !== this.manager.host) throw new Error(`no compute manager for host ${host}`);
    return this.manager;
  }

  /** The driver's name and capabilities are fixed for the manager's life: one answer, shared by every call. */
  private caps: Promise<{ driver: string; capabilities: DriverCapabilities }> | undefined;

  capabilities(host: string): Promise<{ driver: string; capabilities: DriverCapabilities }> {
    if (host !== this.manager.host) return Promise.reject(new Error(`no compute manager for host ${host}`));
    return (this.caps ??= Promise.resolve({ driver: this.manager.driverName, capabilities: this.manager.capabilities }));
  }
  syncInventory(): Promise<void> {
    return this.manager.syncInventory();
  }
  syncServer(host: string | undefined, serverId: string): Promise<ServerRecord | undefined> {
    return (host === undefined ? this.manager : this.on(host)).syncServer(serverId);
  }
  rescan(host: string, serverId: string, volumeId: string) {
    return this.on(host).rescan(serverId, volumeId);
  }
  getHostBytes(host: string, serverId: string, volumeId: string) {
    return this.on(host).getHostBytes(serverId, volumeId);
  }
  extendAttached(host: string, serverId: string, volumeId: string, bytes: number) {
    return this.on(host).extendAttached(serverId, volumeId, bytes);
  }
  extendToHostSize(host: string, serverId: string, volumeId: string) {
    return this.on(host).extendToHostSize(serverId, volumeId);
  }
  attachVolume(host: string, serverId: string, spec: AttachSpec) {
    return this.on(host).attachVolume(serverId, spec);
  }
  detachVolume(host: string, serverId: string, volumeId: string) {
    return this.on(host).detachVolume(serverId, volumeId);
  }
  spawn(host: string, spec: SpawnSpec) {
    return this.on(host).spawn(spec);
  }
  destroy(host: string, serverId: string) {
    return this.on(host).destroy(serverId);
  }
  growGuestFilesystem(host: string, serverId: string, volumeId: string) {
    return this.on(host).growGuestFilesystem(serverId, volumeId);
  }
}

const RPC_METHODS = [
  'capabilities', 'syncInventory', 'syncServer', 'rescan', 'getHostBytes', 'extendAttached', 'extendToHostSize',
  'attachVolume', 'detachVolume', 'spawn', 'destroy', 'growGuestFilesystem',
] as const satisfies readonly (keyof ComputeRpc)[];

/**
 * `rpc` with each call's latency observed in `metrics.rpcSeconds` (by method) and added to the
 * current request's `rpc` Server-Timing part; results and errors pass through unchanged.
 */
export function timedComputeRpc(rpc: ComputeRpc, metrics: Metrics): ComputeRpc {
  const out = {} as Record<string, unknown>;
  for (const method of RPC_METHODS) {
    const fn = rpc[method] as (a?: unknown, b?: unknown, c?: unknown, d?: unknown) => Promise<unknown>;
    const histogram = metrics.rpcSeconds.series({ method });
    // Fixed arity (every ComputeRpc method takes at most four arguments): no rest array per call.
    out[method] = (a?: unknown, b?: unknown, c?: unknown, d?: unknown) => {
      const t = currentTimings();
      const start = performance.now();
      const p = fn.call(rpc, a, b, c, d);
      // Measured on the side: the caller awaits the call's own promise.
      const observe = () => observeRpc(histogram, t, start);
      p.then(observe, observe);
      return p;
    };
  }
  return out as unknown as ComputeRpc;
}

/** One RPC call's latency, started at `start` (performance.now()), into its histogram and the request's `rpc` part. */
function observeRpc(histogram: { observe(seconds: number): void }, t: RequestTimings | undefined, start: number): void {
  const ms = performance.now() - start;
  histogram.observe(ms / 1000);
  t?.add('rpc', ms);
}
