/**
 * FakeDriver: an in-memory hypervisor that ships with the product. It serves fast tests and users
 * without a hypervisor, and it documents, in code, the semantics every real driver must keep
 * (the same contract suite runs against it and against LibvirtDriver):
 *
 * - Each disk has three sizes: the storage's (`backingBytes`), the host's view (`hostBytes`) and
 *   the guest's view (`guestBytes`). Growing storage changes only `backingBytes`.
 * - `rescan` makes a `block` disk's host view catch up with its storage. `file` and `network`
 *   disks have no host device: the host always sees the storage size.
 * - Disks with a real source follow it: a `file` disk its file (raw size or qcow2 virtual size);
 *   a `block` disk on a real block device what the kernel sees (`/sys/class/block/<name>/size`)
 *   as its host view and, for a loop device, its backing file as its storage (the block volume
 *   backend grows the file; the device sees it after the host's rescan, which the fake records
 *   rather than performs); a `block` disk on a regular file that file as its storage. A source
 *   that does not exist (inventory files) keeps the recorded sizes.
 * - `extendAttached` never shrinks, is a no-op at the current size, and on a `block` or `network`
 *   disk refuses to pass the host's view (as QEMU does: "Cannot grow device files"). On a `file`
 *   disk QEMU grows the file itself, so storage and host views follow the guest's.
 * - Only running or paused servers can be resized, or have a live guest size (a shut-off one
 *   answers InstanceStopped); its host side still rescans and measures. Read-only disks cannot
 *   be resized (DiskReadOnly); a raw file disk not past what its filesystem holds (SizeLimitExceeded).
 *
 * Faults can be injected per method; every method call and every actual resize is counted.
 * State can be kept in a JSON file so it survives a restart of the service, as a real
 * hypervisor's would.
 */
import { chmodSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { errors, type ServiceError } from '../../errors.js';
import { fileDiskBytes, fileDiskBytesSync, growDiskFile as growFile } from '../image.js';
import { maxFileBytes } from '../../util/fsLimits.js';
import { classifyErrno, errnoReason } from '../../util/errno.js';
import { dirname } from 'node:path';
import { measureBlockSource } from './blockSource.js';
import type {
  AttachSpec,
  DiskKind,
  DriverCapabilities,
  DriverDisk,
  DriverServer,
  ExtendOptions,
  ServerState,
  VirtDriver,
} from '../driver.js';

export interface FakeDisk {
  volumeId: string;
  device: string;
  kind: DiskKind;
  format?: 'raw' | 'qcow2';
  source?: string;
  readonly?: boolean;
  backingBytes: number;
  hostBytes: number;
  guestBytes: number;
}

export interface FakeServer {
  id: string;
  name: string;
  projectId?: string;
  state: ServerState;
  disks: FakeDisk[];
}

/** The `--fake-inventory` file format (snake_case, as the issue defines it). */
export interface FakeInventoryFile {
  capabilities?: { extend_volume?: boolean; attach_volume?: boolean };
  servers: Array<{
    id: string;
    name?: string;
    project_id?: string;
    state?: ServerState;
    disks?: Array<{
      volume_id: string;
      device: string;
      bytes: number;
      backing_bytes?: number;
      kind?: DiskKind;
      format?: 'raw' | 'qcow2';
      source?: string;
      readonly?: boolean;
    }>;
  }>;
}

export type FakeMethod = 'listServers' | 'getServer' | 'rescan' | 'getHostBytes' | 'getGuestBytes' | 'extendAttached' | 'attachVolume' | 'detachVolume';

export interface FakeDriverOptions {
  capabilities?: Partial<DriverCapabilities>;
  servers?: FakeServer[];
  /** Persist the hypervisor's state here after every change and load it at start if present. */
  statePath?: string;
  /** Artificial latency of every call, to make concurrency observable in tests. */
  latencyMs?: number;
  /** Where sysfs is mounted (`/sys`); tests point it at a tree of their own. */
  sysfsRoot?: string;
}

interface PersistedState {
  servers: FakeServer[];
}

export function parseFakeInventory(text: string): { capabilities: DriverCapabilities; servers: FakeServer[] } {
  const inv = JSON.parse(text) as FakeInventoryFile;
  if (!inv || !Array.isArray(inv.servers)) throw new Error('fake inventory: "servers" must be an array');
  const servers = inv.servers.map((s, i): FakeServer => {
    if (typeof s.id !== 'string') throw new Error(`fake inventory: servers[${i}].id must be a string`);
    return {
      id: s.id,
      name: s.name ?? `server-${s.id.slice(0, 8)}`,
      ...(s.project_id === undefined ? {} : { projectId: s.project_id }),
      state: s.state ?? 'active',
      disks: (s.disks ?? []).map((d, j): FakeDisk => {
        if (!Number.isSafeInteger(d.bytes) || d.bytes <= 0) {
          throw new Error(`fake inventory: servers[${i}].disks[${j}].bytes must be a positive integer`);
        }
        const backing = d.backing_bytes ?? d.bytes;
        const kind = d.kind ?? 'block';
        return {
          volumeId: d.volume_id,
          device: d.device,
          kind,
          ...(d.format === undefined ? {} : { format: d.format }),
          ...(d.source === undefined ? {} : { source: d.source }),
          ...(d.readonly === undefined ? {} : { readonly: d.readonly }),
          backingBytes: backing,
          hostBytes: kind === 'block' ? d.bytes : backing,
          guestBytes: d.bytes,
        };
      }),
    };
  });
  return {
    capabilities: {
      extendVolume: inv.capabilities?.extend_volume ?? true,
      attachVolume: inv.capabilities?.attach_volume ?? true,
      maxVolumesPerServer: FAKE_DEVICE_NAMES,
    },
    servers,
  };
}

function toDriverServer(s: FakeServer): DriverServer {
  return {
    id: s.id,
    name: s.name,
    ...(s.projectId === undefined ? {} : { projectId: s.projectId }),
    state: s.state,
    disks: s.disks.map((d): DriverDisk => ({
      volumeId: d.volumeId,
      device: d.device,
      kind: d.kind,
      ...(d.format === undefined ? {} : { format: d.format }),
      ...(d.source === undefined ? {} : { source: d.source }),
      ...(d.readonly === undefined ? {} : { readonly: d.readonly }),
    })),
  };
}

/** Device names the fake hands out: vdb … vdz. */
const FAKE_DEVICE_NAMES = 25;

/** States with a running QEMU: a disk's guest size is live only there. */
const RUNNING: ReadonlySet<ServerState> = new Set(['active', 'paused']);

export class FakeDriver implements VirtDriver {
  readonly name = 'fake';
  readonly capabilities: DriverCapabilities;
  /** Calls per method, including calls that failed. */
  readonly calls: Record<FakeMethod, number> = {
    listServers: 0,
    getServer: 0,
    rescan: 0,
    getHostBytes: 0,
    getGuestBytes: 0,
    extendAttached: 0,
    attachVolume: 0,
    detachVolume: 0,
  };
  /** Resizes that actually changed a disk: the call a real driver makes to the hypervisor. */
  resizes = 0;
  /** Highest number of extendAttached calls seen running at once on one volume. */
  maxConcurrentPerVolume = 0;
  /** Highest number of extendAttached calls seen running at once over all volumes. */
  maxConcurrentOverall = 0;
  private running = 0;

  private servers = new Map<string, FakeServer>();
  private faults = new Map<FakeMethod, { error: ServiceError; times: number }>();
  private inFlight = new Map<string, number>();
  private readonly statePath: string | undefined;
  private readonly sysfsRoot: string | undefined;
  /** Artificial latency of every call (a test control, as `injectFault`). */
  latencyMs: number;

  constructor(opts: FakeDriverOptions = {}) {
    this.capabilities = { extendVolume: true, attachVolume: true, maxVolumesPerServer: FAKE_DEVICE_NAMES, ...opts.capabilities };
    this.statePath = opts.statePath;
    this.latencyMs = opts.latencyMs ?? 0;
    this.sysfsRoot = opts.sysfsRoot;
    let initial = opts.servers ?? [];
    if (this.statePath) {
      try {
        initial = (JSON.parse(readFileSync(this.statePath, 'utf8')) as PersistedState).servers;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    for (const s of initial) this.servers.set(s.id, structuredClone(s));
    this.persist();
  }

  static fromInventoryFile(path: string, opts: Omit<FakeDriverOptions, 'servers' | 'capabilities'> = {}): FakeDriver {
    const inv = parseFakeInventory(readFileSync(path, 'utf8'));
    return new FakeDriver({ ...opts, capabilities: inv.capabilities, servers: inv.servers });
  }

  // ---- test and operator controls (not part of VirtDriver) ----

  /** Make the next `times` calls of `method` fail with `error`. */
  injectFault(method: FakeMethod, error: ServiceError, times = 1): void {
    this.faults.set(method, { error, times });
  }

  clearFaults(): void {
    this.faults.clear();
  }

  /** The storage under a volume grew (what a volume backend does). */
  setBackingBytes(volumeId: string, bytes: number): void {
    const disk = this.findDisk(volumeId);
    disk.backingBytes = bytes;
    if (disk.kind !== 'block') disk.hostBytes = bytes;
    this.persist();
  }

  /**
   * Change a server's power state. Starting a stopped server is a boot: the guest reads every
   * disk's size afresh, so it sees what the host sees (that is how an offline extend reaches it).
   */
  setState(serverId: string, state: ServerState): void {
    const server = this.server(serverId);
    if (!RUNNING.has(server.state) && RUNNING.has(state)) {
      for (const disk of server.disks) {
        this.refreshedSync(disk);
        disk.guestBytes = disk.hostBytes;
      }
    }
    server.state = state;
    this.persist();
  }

  addServer(server: FakeServer): void {
    this.servers.set(server.id, structuredClone(server));
    this.persist();
  }

  /** The server was deleted on the host (a domain undefined, in libvirt's words). */
  removeServer(serverId: string): void {
    this.server(serverId);
    this.servers.delete(serverId);
    this.persist();
  }

  snapshot(serverId: string): FakeServer {
    return structuredClone(this.server(serverId));
  }

  // ---- VirtDriver ----

  async listServers(): Promise<DriverServer[]> {
    await this.enter('listServers');
    return [...this.servers.values()].map(toDriverServer);
  }

  /** One server, from the map (what libvirt's lookup by UUID is to the fake). */
  async getServer(serverId: string): Promise<DriverServer | undefined> {
    await this.enter('getServer');
    const s = this.servers.get(serverId);
    return s && toDriverServer(s);
  }

  async rescan(serverId: string, volumeId: string): Promise<void> {
    await this.enter('rescan');
    const disk = await this.refreshed(this.disk(serverId, volumeId));
    disk.hostBytes = disk.backingBytes;
    this.persist();
  }

  async getHostBytes(serverId: string, volumeId: string): Promise<number> {
    await this.enter('getHostBytes');
    return (await this.refreshed(this.disk(serverId, volumeId))).hostBytes;
  }

  async getGuestBytes(serverId: string, volumeId: string): Promise<number> {
    await this.enter('getGuestBytes');
    const disk = this.disk(serverId, volumeId);
    // A guest that does not run sees nothing: its last size is what it saw before it stopped.
    const state = this.server(serverId).state;
    if (!RUNNING.has(state)) throw errors.instanceInvalidState(serverId, state, 'get guest size');
    return disk.guestBytes;
  }

  async extendAttached(serverId: string, volumeId: string, bytes: number, _opts?: ExtendOptions): Promise<number> {
    const server = this.server(serverId);
    const disk = this.disk(serverId, volumeId);
    const key = `${serverId}/${volumeId}`;
    const running = (this.inFlight.get(key) ?? 0) + 1;
    this.inFlight.set(key, running);
    this.maxConcurrentPerVolume = Math.max(this.maxConcurrentPerVolume, running);
    this.maxConcurrentOverall = Math.max(this.maxConcurrentOverall, ++this.running);
    try {
      await this.enter('extendAttached');
      if (server.state !== 'active' && server.state !== 'paused') {
        throw errors.instanceInvalidState(serverId, server.state, 'extend volume');
      }
      if (bytes < disk.guestBytes) throw errors.shrinkRefused(volumeId, bytes, disk.guestBytes);
      if (bytes === disk.guestBytes) return disk.guestBytes;
      if (disk.readonly) throw errors.diskReadOnly(volumeId, disk.device, serverId);
      await this.refreshed(disk);
      if (disk.kind === 'file') {
        // QEMU grows the file itself; a raw file we can grow for real, as QEMU would, within
        // what its filesystem can hold (QEMU would fail with EFBIG half-way).
        if (disk.source && (disk.format ?? 'raw') === 'raw') {
          const limit = await maxFileBytes(dirname(disk.source)).catch(() => Number.MAX_SAFE_INTEGER);
          if (bytes > limit) throw errors.sizeLimitExceeded(volumeId, bytes, limit, `the filesystem holding disk ${disk.device}`);
          await growFile(disk.source, bytes);
        }
        disk.backingBytes = Math.max(disk.backingBytes, bytes);
        disk.hostBytes = disk.backingBytes;
      } else if (bytes > disk.hostBytes) {
        throw errors.hostSizeTooSmall(volumeId, bytes, disk.hostBytes);
      }
      disk.guestBytes = bytes;
      this.resizes++;
      this.persist();
      return disk.guestBytes;
    } finally {
      this.running--;
      this.inFlight.set(key, (this.inFlight.get(key) ?? 1) - 1);
    }
  }

  async attachVolume(serverId: string, spec: AttachSpec): Promise<string> {
    await this.enter('attachVolume');
    const server = this.server(serverId);
    if (!this.capabilities.attachVolume) throw errors.driverFailed('attach is not supported');
    const existing = server.disks.find((d) => d.volumeId === spec.volumeId);
    if (existing) return existing.device;
    const used = new Set(server.disks.map((d) => d.device));
    // As libvirt: a device name is never given twice.
    if (spec.device !== undefined && used.has(spec.device)) throw errors.devicePathInUse(spec.device, serverId);
    let device = spec.device;
    for (let c = 'b'.charCodeAt(0); device === undefined && c <= 'z'.charCodeAt(0); c++) {
      if (!used.has(`vd${String.fromCharCode(c)}`)) device = `vd${String.fromCharCode(c)}`;
    }
    if (device === undefined) throw errors.tooManyDiskDevices(serverId);
    // The guest sees what the host sees when the disk is plugged; the storage may be ahead of it
    // (a loop device not rescanned since its file grew).
    let hostBytes = 0;
    let backingBytes = 0;
    if (spec.kind === 'file') {
      try {
        hostBytes = backingBytes = await fileDiskBytes(spec.source, spec.format);
      } catch (err) {
        throw errors.driverFailed(errnoReason('read the size of the disk file', err), { final: classifyErrno(err).final, cause: err, detail: `${spec.source}: ${(err as Error).message}` });
      }
    } else if (spec.kind === 'block') {
      const sizes = measureBlockSource(spec.source, this.sysfsRoot);
      if (sizes) {
        hostBytes = sizes.deviceBytes ?? sizes.storageBytes;
        backingBytes = Math.max(hostBytes, sizes.storageBytes);
      }
    }
    server.disks.push({
      volumeId: spec.volumeId,
      device,
      kind: spec.kind,
      ...(spec.format === undefined ? {} : { format: spec.format }),
      source: spec.source,
      backingBytes,
      hostBytes,
      guestBytes: hostBytes,
    });
    this.persist();
    return device;
  }

  async detachVolume(serverId: string, volumeId: string): Promise<void> {
    await this.enter('detachVolume');
    const server = this.server(serverId);
    this.disk(serverId, volumeId);
    server.disks = server.disks.filter((d) => d.volumeId !== volumeId);
    this.persist();
  }

  async close(): Promise<void> {}

  // ---- internals ----

  private async enter(method: FakeMethod): Promise<void> {
    this.calls[method]++;
    if (this.latencyMs > 0) await new Promise((r) => setTimeout(r, this.latencyMs));
    const fault = this.faults.get(method);
    if (fault) {
      if (--fault.times <= 0) this.faults.delete(method);
      throw fault.error;
    }
  }

  /** `refreshed`, synchronously (for setState). */
  private refreshedSync(disk: FakeDisk): void {
    this.refreshBlock(disk);
    if (disk.kind === 'file' && disk.source) {
      try {
        disk.backingBytes = Math.max(disk.backingBytes, fileDiskBytesSync(disk.source, disk.format));
        disk.hostBytes = disk.backingBytes;
      } catch {
        // The path is informational only in inventory files; keep the recorded sizes.
      }
    }
  }

  /**
   * A block disk on a real device or file follows it (see the header). Max: the fake records the
   * host's rescan rather than performs it, so its host view may be ahead of the kernel's; and
   * storage never shrinks under an attached volume.
   */
  private refreshBlock(disk: FakeDisk): void {
    if (disk.kind !== 'block' || !disk.source) return;
    const sizes = measureBlockSource(disk.source, this.sysfsRoot);
    if (!sizes) return; // absent (inventory files): keep the recorded sizes
    disk.backingBytes = Math.max(disk.backingBytes, sizes.storageBytes);
    if (sizes.deviceBytes !== undefined) disk.hostBytes = Math.max(disk.hostBytes, sizes.deviceBytes);
  }

  /**
   * A disk with a real source follows it, so the fake can sit on a real file or block backend:
   * a file disk its file, a block disk its device or file (`refreshBlock`).
   */
  private async refreshed(disk: FakeDisk): Promise<FakeDisk> {
    this.refreshBlock(disk);
    if (disk.kind === 'file' && disk.source) {
      try {
        // Max: in the fake, QEMU's own growth of an attached file is recorded, not written.
        disk.backingBytes = Math.max(disk.backingBytes, await fileDiskBytes(disk.source, disk.format));
        disk.hostBytes = disk.backingBytes;
      } catch {
        // The path is informational only in inventory files; keep the recorded sizes.
      }
    }
    return disk;
  }

  private server(serverId: string): FakeServer {
    const s = this.servers.get(serverId);
    if (!s) throw errors.instanceNotFound(serverId);
    return s;
  }

  private disk(serverId: string, volumeId: string): FakeDisk {
    const d = this.server(serverId).disks.find((x) => x.volumeId === volumeId);
    if (!d) throw errors.volumeNotAttached(volumeId, serverId);
    return d;
  }

  private findDisk(volumeId: string): FakeDisk {
    for (const s of this.servers.values()) {
      const d = s.disks.find((x) => x.volumeId === volumeId);
      if (d) return d;
    }
    throw errors.volumeNotFound(volumeId);
  }

  private persist(): void {
    if (!this.statePath) return;
    const tmp = `${this.statePath}.tmp`;
    // 0600: the state names every guest's disks; `mode` only applies to a new file, hence chmod.
    writeFileSync(tmp, JSON.stringify({ servers: [...this.servers.values()] } satisfies PersistedState), { mode: 0o600 });
    chmodSync(tmp, 0o600);
    renameSync(tmp, this.statePath);
  }
}
