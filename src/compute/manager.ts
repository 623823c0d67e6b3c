/**
 * ComputeManager: the host side (Nova's compute/manager.py). It owns the virt driver of one
 * hypervisor host, serialises work per volume, coalesces rescans, and keeps the host's
 * inventory in the store. It knows nothing of HTTP, tokens or policy.
 */
import type { Logger } from 'pino';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { errors } from '../errors.js';
import type { ComputeStore, InventorySyncResult, ServerRecord } from '../db/store.js';
import type { AttachSpec, DriverCapabilities, VirtDriver } from '../virt/driver.js';
import { Coalescer, KeyedMutex } from './locks.js';

export interface ComputeManagerOptions {
  host: string;
  driver: VirtDriver;
  store: ComputeStore;
  defaultProjectId: string;
  logger: Logger;
}

export class ComputeManager {
  readonly host: string;
  private readonly driver: VirtDriver;
  private readonly store: ComputeStore;
  private readonly defaultProjectId: string;
  private readonly log: Logger;
  private readonly volumeLocks = new KeyedMutex();
  private readonly rescans = new Coalescer();
  /** The inventory sync under way, and the one queued to run after it. */
  private syncing: Promise<InventorySyncResult> | undefined;
  private syncQueued: Promise<InventorySyncResult> | undefined;

  constructor(opts: ComputeManagerOptions) {
    this.host = opts.host;
    this.driver = opts.driver;
    this.store = opts.store;
    this.defaultProjectId = opts.defaultProjectId;
    this.log = opts.logger;
  }

  get capabilities(): DriverCapabilities {
    return this.driver.capabilities;
  }

  get driverName(): string {
    return this.driver.name;
  }

  /**
   * Copy the driver's view of this host into the store, by difference: the store writes only
   * the servers that changed, a chunk at a time, yielding to the event loop in between, so a
   * sync of a large host never holds requests up for long. Resolves once a sync that *started
   * after this call* is done (a sync already under way may have listed the host before the
   * caller's change): concurrent callers share one queued run, so syncs never overlap and never
   * pile up. Throws what the driver's listServers throws (HypervisorUnreachable).
   */
  async syncInventory(): Promise<void> {
    await this.syncInventoryCounted();
  }

  /** `syncInventory`, answering what the store wrote. */
  syncInventoryCounted(): Promise<InventorySyncResult> {
    if (this.syncQueued) return this.syncQueued;
    if (!this.syncing) return this.startSync();
    this.syncQueued = this.syncing
      .then(
        () => undefined,
        () => undefined,
      )
      .then(() => {
        this.syncQueued = undefined;
        return this.startSync();
      });
    return this.syncQueued;
  }

  private startSync(): Promise<InventorySyncResult> {
    const run: Promise<InventorySyncResult> = this.syncOnce().finally(() => {
      if (this.syncing === run) this.syncing = undefined;
    });
    this.syncing = run;
    return run;
  }

  private async syncOnce(): Promise<InventorySyncResult> {
    const servers = await this.driver.listServers();
    const records: Array<Omit<ServerRecord, 'updatedAt' | 'taskState' | 'host'>> = [];
    for (const s of servers) {
      records.push({
        id: s.id,
        name: s.name,
        projectId: s.projectId ?? this.defaultProjectId,
        state: s.state,
        attachments: s.disks.map((d) => ({
          serverId: s.id,
          volumeId: d.volumeId,
          device: d.device,
          kind: d.kind,
          ...(d.format === undefined ? {} : { format: d.format }),
          ...(d.source === undefined ? {} : { source: d.source }),
          readonly: d.readonly ?? false,
        })),
      });
      // A host of thousands of servers: convert them a slice at a time, as the store compares them.
      if (records.length % 250 === 0) await yieldToEventLoop();
    }
    const result = await this.store.syncServers(this.host, records);
    this.log.debug({ host: this.host, servers: servers.length, ...result }, 'inventory synced');
    return result;
  }

  /** Make the host see the volume's storage size. Duplicate requests coalesce. */
  rescan(serverId: string, volumeId: string): Promise<void> {
    return this.rescans.request(`${serverId}/${volumeId}`, async () => {
      await this.driver.rescan(serverId, volumeId);
      this.log.info({ serverId, volumeId }, 'volume rescanned on host');
    });
  }

  /** The host's size, measured after any rescan of the volume under way has finished. */
  async getHostBytes(serverId: string, volumeId: string): Promise<number> {
    await this.rescans.settled(`${serverId}/${volumeId}`);
    return this.driver.getHostBytes(serverId, volumeId);
  }

  getGuestBytes(serverId: string, volumeId: string): Promise<number> {
    return this.driver.getGuestBytes(serverId, volumeId);
  }

  /** Grow the guest's view, one call per volume at a time; returns the measured guest size. */
  extendAttached(serverId: string, volumeId: string, bytes: number): Promise<number> {
    return this.volumeLocks.run(volumeId, async () => {
      // Never shrink: measure first and refuse before the driver is asked to resize anything.
      const current = await this.driver.getGuestBytes(serverId, volumeId);
      if (bytes < current) throw errors.shrinkRefused(volumeId, bytes, current);
      if (bytes === current) return current;
      const measured = await this.driver.extendAttached(serverId, volumeId, bytes, { currentGuestBytes: current });
      this.log.info({ serverId, volumeId, bytes, measured }, 'attached volume extended');
      return measured;
    });
  }

  async attachVolume(serverId: string, spec: AttachSpec): Promise<string> {
    const device = await this.volumeLocks.run(spec.volumeId, () => this.driver.attachVolume(serverId, spec));
    await this.syncInventory();
    this.log.info({ serverId, volumeId: spec.volumeId, device }, 'volume attached');
    return device;
  }

  async detachVolume(serverId: string, volumeId: string): Promise<void> {
    await this.volumeLocks.run(volumeId, () => this.driver.detachVolume(serverId, volumeId));
    await this.syncInventory();
    this.log.info({ serverId, volumeId }, 'volume detached');
  }

  close(): Promise<void> {
    return this.driver.close();
  }
}
