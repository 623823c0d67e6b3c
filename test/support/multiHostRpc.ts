/**
 * Several compute hosts in one process, for tests of the `api` role without a broker: a
 * ComputeRpc that routes each call to the LocalComputeRpc of the host it names (each over its
 * own ComputeManager and fake driver), and records which host each call went to.
 */
import type { ServerRecord } from '../../src/db/store.js';
import { LocalComputeRpc, type ComputeRpc } from '../../src/compute/rpc.js';
import type { ComputeManager } from '../../src/compute/manager.js';
import { errors, NO_AGENT_LISTENING } from '../../src/errors.js';
import type { AttachSpec, SpawnSpec } from '../../src/virt/driver.js';

/** One call as MultiHostRpc routed it. */
export interface RoutedCall {
  method: keyof ComputeRpc;
  host: string | undefined;
}

/** See the module comment. A host it does not know answers as an unreachable agent would: ComputeHostUnavailable. */
export class MultiHostRpc implements ComputeRpc {
  readonly calls: RoutedCall[] = [];
  private readonly hosts = new Map<string, LocalComputeRpc>();

  constructor(managers: readonly ComputeManager[]) {
    for (const m of managers) this.hosts.set(m.host, new LocalComputeRpc(m));
  }

  /** The calls that named `host`. */
  callsTo(host: string): RoutedCall[] {
    return this.calls.filter((c) => c.host === host);
  }

  private on(method: keyof ComputeRpc, host: string): LocalComputeRpc {
    this.calls.push({ method, host });
    const rpc = this.hosts.get(host);
    if (!rpc) throw errors.computeHostUnavailable(host, NO_AGENT_LISTENING);
    return rpc;
  }

  capabilities(host: string) {
    return this.on('capabilities', host).capabilities(host);
  }
  async syncInventory(host?: string): Promise<void> {
    if (host !== undefined) return this.on('syncInventory', host).syncInventory();
    this.calls.push({ method: 'syncInventory', host: undefined });
    for (const rpc of this.hosts.values()) await rpc.syncInventory();
  }
  async syncServer(host: string | undefined, serverId: string): Promise<ServerRecord | undefined> {
    if (host !== undefined) return this.on('syncServer', host).syncServer(host, serverId);
    // No host known: ask each host in turn, as a broker fan-out would.
    this.calls.push({ method: 'syncServer', host: undefined });
    for (const [h, rpc] of this.hosts) {
      const found = await rpc.syncServer(h, serverId);
      if (found) return found;
    }
    return undefined;
  }
  rescan(host: string, serverId: string, volumeId: string) {
    return this.on('rescan', host).rescan(host, serverId, volumeId);
  }
  getHostBytes(host: string, serverId: string, volumeId: string) {
    return this.on('getHostBytes', host).getHostBytes(host, serverId, volumeId);
  }
  extendAttached(host: string, serverId: string, volumeId: string, bytes: number) {
    return this.on('extendAttached', host).extendAttached(host, serverId, volumeId, bytes);
  }
  extendToHostSize(host: string, serverId: string, volumeId: string) {
    return this.on('extendToHostSize', host).extendToHostSize(host, serverId, volumeId);
  }
  attachVolume(host: string, serverId: string, spec: AttachSpec) {
    return this.on('attachVolume', host).attachVolume(host, serverId, spec);
  }
  detachVolume(host: string, serverId: string, volumeId: string) {
    return this.on('detachVolume', host).detachVolume(host, serverId, volumeId);
  }
  spawn(host: string, spec: SpawnSpec) {
    return this.on('spawn', host).spawn(host, spec);
  }
  destroy(host: string, serverId: string) {
    return this.on('destroy', host).destroy(host, serverId);
  }
  growGuestFilesystem(host: string, serverId: string, volumeId: string) {
    return this.on('growGuestFilesystem', host).growGuestFilesystem(host, serverId, volumeId);
  }
}
