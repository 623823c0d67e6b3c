/**
 * ComputeManager: the host side (Nova's compute/manager.py). It owns the virt driver of one
 * hypervisor host, serialises work per volume, coalesces rescans, and keeps the host's
 * inventory in the store. It knows nothing of HTTP, tokens or policy.
 */
import type { Logger } from 'pino';
import { errors } from '../errors.js';
import type { ComputeStore } from '../db/store.js';
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
  private syncing: Promise<void> | undefined;

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

  /** Copy the driver's view of this host into the store. Concurrent callers share one run. */
  syncInventory(): Promise<void> {
    this.syncing ??= (async () => {
      try {
        const servers = await this.driver.listServers();
        await this.store.syncServers(
          this.host,
          servers.map((s) => ({
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
          })),
        );
        this.log.debug({ host: this.host, servers: servers.length }, 'inventory synced');
      } finally {
        this.syncing = undefined;
      }
    })();
    return this.syncing;
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
