/**
 * ComputeManager: the host side (Nova's compute/manager.py). It owns the virt driver of one
 * hypervisor host, serialises work per volume, coalesces rescans, and keeps the host's
 * inventory in the store. It knows nothing of HTTP, tokens or policy.
 */
import type { Logger } from 'pino';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { errors, isServiceError } from '../errors.js';
import type { ComputeStore, InventorySyncResult, ServerRecord } from '../db/store.js';
import type { AttachSpec, DriverCapabilities, DriverServer, GuestFilesystemGrowth, SpawnSpec, VirtDriver } from '../virt/driver.js';
import { Coalescer } from './locks.js';
import { KeyedMutex } from '../util/keyedMutex.js';
import { currentTimings, withTimings } from '../util/timing.js';

/**
 * What `extendToHostSize` did, sizes in bytes: `grown` (the guest went from `guestBytes` to
 * `bytes`, measured, for the host's `hostBytes`), `unchanged` (the host sees no more than the
 * guest: nothing to do, and never a shrink), `offline` (the server is shut off: the host side is
 * rescanned and the guest sees `hostBytes` when it next starts), `not_attached` (the server has
 * no such disk: nothing done).
 */
export type HostSizeExtend =
  | { outcome: 'grown'; hostBytes: number; guestBytes: number; bytes: number }
  | { outcome: 'unchanged'; hostBytes: number; guestBytes: number }
  | { outcome: 'offline'; hostBytes: number }
  | { outcome: 'not_attached' };

/** A server as the inventory holds it, before the store adds host, task state and time. */
type InventoryServer = Omit<ServerRecord, 'updatedAt' | 'taskState' | 'host'>;

/**
 * Single-server observations kept to correct an older listing (see `syncServer`). A bound, not a
 * working size: entries go as soon as a listing started after them is written (every sync
 * interval); past the bound the oldest go first, and a listing older than them can then only
 * leave one server stale until the next sync.
 */
const MAX_LOOKED_UP = 10_000;

/** One host: its name, driver, store, and the project of servers the hypervisor does not record one for. */
export interface ComputeManagerOptions {
  host: string;
  driver: VirtDriver;
  store: ComputeStore;
  defaultProjectId: string;
  logger: Logger;
}

/** See the module comment. */
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
  /** Single-server syncs: one under way per server, and one queued after it. */
  private readonly serverSyncs = new Coalescer();
  /**
   * Every read of the hypervisor's inventory (a full listing or one server) gets the next number
   * when it starts: the higher number saw the newer state. The store applies inventory writes in
   * the order they are called, so the manager keeps a write from undoing a newer one:
   */
  private observations = 0;
  /** The number of the newest full listing handed to the store, and that write. */
  private listingQueued = 0;
  private listingWrite: Promise<unknown> = Promise.resolve();
  /** The servers of the listing the store is writing now (ids indexed on first need), if any. */
  private listingInStore: { servers: readonly InventoryServer[]; ids?: Set<string> } | undefined;
  /** Single-server observations newer than `listingQueued`, by server id (undefined: gone). */
  private readonly lookedUp = new Map<string, { seq: number; server: InventoryServer | undefined }>();
  /**
   * Servers the driver is spawning now: the store's record (vm_state `building`, kept by the
   * store while the host does not list it) is compute's until the build ends, so inventory reads
   * leave them out (a half-made domain must not turn a `building` server `shutoff`).
   */
  private readonly spawning = new Set<string>();
  /** When a fallback full sync last ran for a server the store did not know (drivers without getServer). */
  private lastFallbackSync = Number.NEGATIVE_INFINITY;

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
    const seq = ++this.observations;
    const servers = await this.driver.listServers();
    let records: InventoryServer[] = [];
    for (const s of servers) {
      if (this.spawning.has(s.id)) continue;
      records.push(this.toInventory(s));
      // A host of thousands of servers: convert them a slice at a time, as the store compares them.
      if (records.length % 250 === 0) await yieldToEventLoop();
    }
    // NOTE: from here to the store call nothing awaits, so no single-server sync slips between
    // the merge below and the write's place in the store's queue.
    // A server looked up alone after this listing started was seen later than the listing saw
    // it: that view wins (a server created or removed since stays as it was looked up). Those
    // looked up before it are covered by the listing from now on.
    const newer: Array<[string, InventoryServer | undefined]> = [];
    for (const [id, o] of this.lookedUp) {
      if (o.seq > seq) newer.push([id, o.server]);
      else this.lookedUp.delete(id);
    }
    if (newer.length > 0) {
      const byId = new Map(records.map((r) => [r.id, r]));
      for (const [id, server] of newer) {
        if (server) byId.set(id, server);
        else byId.delete(id);
      }
      records = [...byId.values()];
    }
    this.listingQueued = seq;
    const inStore = { servers: records };
    this.listingInStore = inStore;
    const write = this.store.syncServers(this.host, records);
    this.listingWrite = write.catch(() => undefined);
    const result = await write.finally(() => {
      if (this.listingInStore === inStore) this.listingInStore = undefined;
    });
    this.log.debug({ host: this.host, servers: servers.length, ...result }, 'inventory synced');
    return result;
  }

  /**
   * Bring one server's record up to date from the hypervisor (the driver's `getServer`): upsert
   * it, or remove it if this host no longer has it, writing only if something changed
   * (ComputeStore.upsertServer / removeServer). Answers the store's record after the write, or
   * undefined if the store has none. As `syncInventory`, resolves once a lookup that started
   * after this call is written; concurrent callers for one server share one queued lookup.
   *
   * Ordering with full syncs (both are writes of the same inventory): whichever read the
   * hypervisor later wins. A lookup that a full listing started after is dropped in favour of
   * the listing; a lookup newer than a listing still converting is merged into it; a write goes
   * after a listing the store is writing. A server found gone that neither the store nor that
   * listing has needs no write at all, so a request naming an unknown id never waits for a sync.
   *
   * A driver without `getServer` gets a full sync instead; for a server the store does not
   * know (a request naming an unknown id) at most one such sync a second, the others answer
   * from the store as it is. Throws what the driver throws (HypervisorUnreachable).
   */
  async syncServer(serverId: string): Promise<ServerRecord | undefined> {
    if (this.driver.getServer) {
      await this.serverSyncs.request(serverId, () => this.syncServerOnce(serverId));
    } else {
      const known = await this.store.getServer(serverId);
      const now = Date.now();
      if (known || now - this.lastFallbackSync >= 1000) {
        if (!known) this.lastFallbackSync = now;
        await this.syncInventory();
      }
    }
    return this.store.getServer(serverId);
  }

  private async syncServerOnce(serverId: string): Promise<void> {
    if (this.spawning.has(serverId)) return;
    const seq = ++this.observations;
    const found = await this.driver.getServer!(serverId);
    if (seq < this.listingQueued) {
      // A full listing that started after this lookup is already in the store's queue: it saw
      // the server later. Wait for it, so the caller reads what it wrote.
      await this.listingWrite;
      return;
    }
    const server = found && this.toInventory(found);
    // Newest first in the map's order, so the bound drops the oldest.
    this.lookedUp.delete(serverId);
    this.lookedUp.set(serverId, { seq, server });
    if (this.lookedUp.size > MAX_LOOKED_UP) this.lookedUp.delete(this.lookedUp.keys().next().value!);
    if (!server && !(await this.recordedHere(serverId))) {
      // Nothing to remove, and nothing on its way in: done, without queueing behind a sync the
      // store may be writing (a request naming an unknown id would otherwise wait for all of it).
      return;
    }
    if (server) {
      const did = await this.store.upsertServer(this.host, server);
      if (did !== 'unchanged') this.log.debug({ host: this.host, serverId, did }, 'server synced');
    } else if (await this.store.removeServer(this.host, serverId)) {
      this.log.debug({ host: this.host, serverId }, 'server gone from the host');
    }
  }

  /** Whether the store has, or the listing it is writing will give it, `serverId` on this host. */
  private async recordedHere(serverId: string): Promise<boolean> {
    if ((await this.store.getServer(serverId))?.host === this.host) return true;
    const listing = this.listingInStore;
    if (!listing) return false;
    listing.ids ??= new Set(listing.servers.map((s) => s.id));
    return listing.ids.has(serverId);
  }

  private toInventory(s: DriverServer): InventoryServer {
    return {
      id: s.id,
      name: s.name,
      projectId: s.projectId ?? this.defaultProjectId,
      state: s.state,
      // What the hypervisor measured, or nothing: never a default (the API says "not measured").
      ...(s.vcpus === undefined ? {} : { vcpus: s.vcpus }),
      ...(s.memoryMb === undefined ? {} : { memoryMb: s.memoryMb }),
      attachments: s.disks.map((d) => ({
        serverId: s.id,
        volumeId: d.volumeId,
        device: d.device,
        kind: d.kind,
        ...(d.format === undefined ? {} : { format: d.format }),
        ...(d.source === undefined ? {} : { source: d.source }),
        readonly: d.readonly ?? false,
      })),
    };
  }

  /** Make the host see the volume's storage size. Duplicate requests coalesce. */
  rescan(serverId: string, volumeId: string): Promise<void> {
    return this.rescans.request(`${serverId}/${volumeId}`, async () => {
      await this.driver.rescan(serverId, volumeId);
      this.log.info({ serverId, volumeId }, 'volume rescanned on host');
    });
  }

  /** The host's size, measured after any rescan of the volume under way has finished. */
  getHostBytes(serverId: string, volumeId: string): Promise<number> {
    // The read hot path: the driver's own promise, none of ours (and no key made when no rescan runs at all).
    if (this.rescans.idle) return this.driver.getHostBytes(serverId, volumeId);
    const key = `${serverId}/${volumeId}`;
    if (!this.rescans.busy(key)) return this.driver.getHostBytes(serverId, volumeId);
    // The caller's request timings are current now, not after the wait (util/timing.ts).
    const timings = currentTimings();
    return this.rescans.settled(key).then(() => withTimings(timings, () => this.driver.getHostBytes(serverId, volumeId)));
  }

  /** Grow the guest's view, one call per volume at a time; returns the measured guest size. */
  extendAttached(serverId: string, volumeId: string, bytes: number): Promise<number> {
    return this.volumeLocks.run(volumeId, async () => {
      const timings = currentTimings();
      const current = await this.driver.getGuestBytes(serverId, volumeId);
      return withTimings(timings, () => this.growGuest(serverId, volumeId, bytes, current));
    });
  }

  /**
   * Nova's compute `extend_volume` (what a `volume-extended` external event asks of the host):
   * rescan the volume, measure the size the host now sees, and grow the guest's view to it,
   * never smaller. All of it under the volume's lock, so it queues behind (and ahead of) the
   * spec's assist_extend, attach and detach of that volume. Answers what was done (see
   * `HostSizeExtend`); a server that does not have the volume attached is an answer
   * (`not_attached`), not an error, as Nova warns and does nothing. Throws
   * ExtendVolumeNotSupported (501) when the driver cannot extend, and what the driver's
   * rescan, getHostBytes, getGuestBytes and extendAttached throw; InstanceNotFound (404) when
   * the host no longer has the server.
   */
  extendToHostSize(serverId: string, volumeId: string): Promise<HostSizeExtend> {
    return this.volumeLocks.run(volumeId, async () => {
      // The hypervisor, not our copy of its inventory, says whether the disk is plugged in.
      const server = await this.syncServer(serverId);
      if (!server) throw errors.instanceNotFound(serverId);
      if (!server.attachments.some((a) => a.volumeId === volumeId)) return { outcome: 'not_attached' };
      if (!this.driver.capabilities.extendVolume) throw errors.extendNotSupported(this.driver.name);
      await this.rescan(serverId, volumeId);
      const hostBytes = await this.getHostBytes(serverId, volumeId);
      let guestBytes: number;
      try {
        guestBytes = await this.driver.getGuestBytes(serverId, volumeId);
      } catch (err) {
        // Shut off: the host side is rescanned, and the guest reads the new size when it next
        // starts (as Nova's libvirt driver skips the live resize of a guest that is not running).
        if (isServiceError(err) && err.code === 'InstanceStopped') return { outcome: 'offline', hostBytes };
        throw err;
      }
      // An encrypted (LUKS) disk's guest sees the host's size minus the header: grow it to that.
      const target = hostBytes - ((await this.driver.getPayloadOffset?.(serverId, volumeId)) ?? 0);
      if (target <= guestBytes) return { outcome: 'unchanged', hostBytes, guestBytes };
      const bytes = await this.growGuest(serverId, volumeId, target, guestBytes);
      return { outcome: 'grown', hostBytes, guestBytes, bytes };
    });
  }

  /** Under the volume's lock: grow the guest from `current` (just measured) to `bytes`; never shrinks. */
  private async growGuest(serverId: string, volumeId: string, bytes: number, current: number): Promise<number> {
    // Never shrink: measured first, refused before the driver is asked to resize anything.
    if (bytes < current) throw errors.shrinkRefused(volumeId, bytes, current);
    if (bytes === current) return current;
    const measured = await this.driver.extendAttached(serverId, volumeId, bytes, { currentGuestBytes: current });
    this.log.info({ serverId, volumeId, bytes, measured }, 'attached volume extended');
    return measured;
  }

  /**
   * Grow what sits on the volume's disk inside the guest (the driver's growGuestFilesystem: the
   * last partition, then the filesystem), one call per volume at a time under the same lock as
   * extendAttached, so it never runs while the disk is being resized. Answers what the guest
   * reported, without `detail`: that operator-only text is logged here, on the host, and never
   * crosses to the API. A not-grown answer is an answer (grown false, a reason), not an error.
   * Throws GuestFilesystemGrowNotSupported (501) when the driver cannot, before anything is
   * asked of the guest; InstanceNotFound, VolumeNotAttached (404), HypervisorUnreachable (503).
   */
  growGuestFilesystem(serverId: string, volumeId: string): Promise<GuestFilesystemGrowth> {
    const grow = this.driver.growGuestFilesystem?.bind(this.driver);
    if (!this.driver.capabilities.growGuestFilesystem || !grow) return Promise.reject(errors.guestFsGrowNotSupported(this.driver.name));
    return this.volumeLocks.run(volumeId, async () => {
      const { detail, ...growth } = await grow(serverId, volumeId);
      this.log.info({ serverId, volumeId, ...growth, ...(detail === undefined ? {} : { detail }) }, 'guest filesystem grow answered');
      return growth;
    });
  }

  async attachVolume(serverId: string, spec: AttachSpec): Promise<string> {
    const timings = currentTimings();
    const device = await this.volumeLocks.run(spec.volumeId, () => this.driver.attachVolume(serverId, spec));
    await withTimings(timings, () => this.syncServer(serverId));
    this.log.info({ serverId, volumeId: spec.volumeId, device }, 'volume attached');
    return device;
  }

  async detachVolume(serverId: string, volumeId: string): Promise<void> {
    const timings = currentTimings();
    await this.volumeLocks.run(volumeId, () => this.driver.detachVolume(serverId, volumeId));
    await withTimings(timings, () => this.syncServer(serverId));
    this.log.info({ serverId, volumeId }, 'volume detached');
  }

  /**
   * Create and start the server (the driver's spawn, CreateServerNotSupported without it);
   * resolves once it runs. Inventory reads leave it out until then (see `spawning`).
   */
  async spawn(spec: SpawnSpec): Promise<DriverServer> {
    if (!this.driver.capabilities.spawnServer || !this.driver.spawn) throw errors.createServerNotSupported(this.driver.name);
    this.spawning.add(spec.id);
    try {
      const server = await this.driver.spawn(spec);
      this.log.info({ serverId: spec.id }, 'server spawned');
      return server;
    } finally {
      this.spawning.delete(spec.id);
    }
  }

  /** Delete the server on the host (the driver's destroy; idempotent), then re-read it, which drops it from the inventory. */
  async destroy(serverId: string): Promise<void> {
    if (!this.driver.capabilities.spawnServer || !this.driver.destroy) throw errors.createServerNotSupported(this.driver.name);
    await this.driver.destroy(serverId);
    this.log.info({ serverId }, 'server destroyed');
  }

  close(): Promise<void> {
    return this.driver.close();
  }
}
