/**
 * FakeDriver: an in-memory hypervisor that ships with the product. It serves fast tests and users
 * without a hypervisor, and it documents, in code, the semantics every real driver must keep
 * (the same contract suite runs against it and against LibvirtDriver):
 *
 * - Each disk has three sizes, in bytes: the storage's (`backingBytes`), the host's view
 *   (`hostBytes`, what get_blockdev answers) and the guest's view (`guestBytes`). Every kind of
 *   disk is sized, at attach and whenever it is read, from what the volume service handed
 *   compute (connection_info) and what the host has now (diskModel.ts):
 *   - `file`: the file's size, or its qcow2 virtual size. Host view = storage.
 *   - `block`: on a real block device, what the kernel sees (`/sys/class/block/<name>/size`) is
 *     the host view, and a loop device's backing file is its storage (the block volume backend
 *     grows the file; the device sees it after the host's rescan); on a regular file, that file
 *     is the storage and the host view is recorded.
 *   - `network` (iSCSI through QEMU's own initiator, as LibvirtDriver attaches it): the capacity
 *     the target exports for the LUN `iqn/lun` at the portal, read live with the `readLunBytes`
 *     option the way an initiator reads it (LibvirtDriver: `iscsi-readcapacity16`), or, without
 *     a reader, what the fake is told with `setBackingBytes`. Host view = that capacity: the
 *     target, not a host rescan, makes a grown LUN visible (tgt re-exposes it on extend).
 *   A source that does not exist (inventory files) keeps the recorded sizes.
 * - Host view vs storage: `rescan` (os-brick's extend on the host) makes a `block` disk's host
 *   view catch up with its storage, as the kernel sees a grown device only after a rescan
 *   (LOOP_SET_CAPACITY, SCSI rescan); the fake records it rather than performs it. For `file`
 *   and `network` disks rescan changes nothing (LibvirtDriver: a no-op). Idempotent.
 * - `extendAttached` never shrinks (VolumeShrinkRefused), is a no-op at the current size, and on
 *   a `block` or `network` disk refuses to pass the host's view with HostSizeTooSmall (409, the
 *   catalogue's "rescan first and wait until get_blockdev reports the new size"), exactly as
 *   LibvirtDriver does (QEMU: "Cannot grow device files"); the disk is not touched. On a `file`
 *   disk QEMU grows the file itself, so storage and host views follow the guest's.
 * - Encrypted volumes (AttachSpec `encryption`, QEMU-native LUKS; encryption.ts): the guest sees
 *   the host's view minus the LUKS header's payload offset, read from the header when the source
 *   is a readable file or device, else QEMU's default header (FAKE_LUKS_PAYLOAD_OFFSET). Every
 *   guest size (attach, boot, extendAttached's argument and answer) is the payload's; a resize to
 *   N needs N + offset on the host (HostSizeTooSmall names what the guest could get), and a file
 *   disk's file grows to N + offset, as QEMU's LUKS driver grows it.
 * - Only running or paused servers can be resized, or have a live guest size (a shut-off one
 *   answers InstanceStopped); its host side still rescans and measures, and a boot shows the
 *   guest what the host sees (offline extend). Read-only disks cannot be resized (DiskReadOnly);
 *   a raw file disk not past what its filesystem holds (SizeLimitExceeded).
 * - Guest filesystems (`growGuestFilesystem`, what the QEMU guest agent does for LibvirtDriver):
 *   a disk holds nothing until a test puts a filesystem on it (`setGuestFilesystem`: ext2/3/4,
 *   xfs or any other type, mounted or not, on the whole disk or on one partition from 1 MiB).
 *   Growing fills what the guest sees of the disk: the partition first (to the disk's end),
 *   then the filesystem, in whole 4 KiB blocks. Not grown (an answer, not an error): a guest that
 *   is not running or paused, or whose agent is switched off (`setGuestAgent`), no_guest_agent;
 *   a blank disk no_filesystem; a type other than ext* or xfs unsupported_filesystem; an
 *   unmounted xfs not_mounted; a filesystem told to fail (`failWith`) grow_failed. Growing a
 *   filesystem that already fills its disk changes nothing and answers grown (resize2fs's
 *   "Nothing to do!"), so repeating it is harmless. Every answer carries `partitionGrown`, false
 *   unless the partition grew (not-grown answers too, without an agent as well), as LibvirtDriver's.
 * - No locks: the compute manager serializes the operations on one volume (src/compute/locks.ts);
 *   `maxConcurrentPerVolume` shows whether it did.
 *
 * Faults can be injected per method; every method call and every actual resize is counted
 * (faults.ts). State can be kept in a JSON file so it survives a restart of the service, as a
 * real hypervisor's would (state.ts).
 */
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { errors, type ServiceError } from '../../errors.js';
import { maxFileBytes } from '../../util/fsLimits.js';
import type { AttachSpec, DriverCapabilities, DriverServer, ExtendOptions, GuestFilesystemGrowth, ServerState, SpawnSpec, VirtDriver } from '../driver.js';
import { growDiskFile } from '../image.js';
import { FakeDiskModel, type LunReader } from './diskModel.js';
import { FakeCallControls, type FakeMethod } from './faults.js';
import { FAKE_DEVICE_NAMES, RUNNING, fakeGuestFs, fsBlocksIn, loadFakeState, parseFakeInventory, saveFakeState, toDriverServer, type FakeDisk, type FakeServer } from './state.js';
import { readLuksPayloadOffset } from '../../host/luks.js';

export type { FakeDisk, FakeGuestFs, FakeInventoryFile, FakeServer } from './state.js';
export type { FakeMethod } from './faults.js';
export type { IscsiLun, LunReader } from './diskModel.js';
export { parseFakeInventory } from './state.js';

/** The filesystems growGuestFilesystem grows (LibvirtDriver's: resize2fs, xfs_growfs). */
const GROWABLE_FS: ReadonlySet<string> = new Set(['ext2', 'ext3', 'ext4', 'xfs']);

/** How a FakeDriver starts. */
export interface FakeDriverOptions {
  capabilities?: Partial<DriverCapabilities>;
  servers?: FakeServer[];
  /** Persist the hypervisor's state here after every change and load it at start if present. */
  statePath?: string;
  /** Artificial latency of every call, in ms, to make concurrency observable in tests. */
  latencyMs?: number;
  /** Where sysfs is mounted (`/sys`); tests point it at a tree of their own. */
  sysfsRoot?: string;
  /**
   * How the fake reads the capacity of an iSCSI LUN (network disks, source `iqn/lun`), as an
   * initiator would. Without it a network disk has the size it is told (`setBackingBytes`).
   */
  readLunBytes?: LunReader;
}

/** The fake hypervisor (see the file header for its semantics). */
export class FakeDriver implements VirtDriver {
  readonly name = 'fake';
  readonly capabilities: DriverCapabilities;
  /** Resizes that actually changed a disk: the call a real driver makes to the hypervisor. */
  resizes = 0;
  /** Highest number of extendAttached calls seen running at once on one volume. */
  maxConcurrentPerVolume = 0;
  /** Highest number of extendAttached calls seen running at once over all volumes. */
  maxConcurrentOverall = 0;
  private running = 0;

  private readonly controls: FakeCallControls;
  private readonly model: FakeDiskModel;
  private servers = new Map<string, FakeServer>();
  private inFlight = new Map<string, number>();
  private readonly statePath: string | undefined;

  constructor(opts: FakeDriverOptions = {}) {
    this.capabilities = { extendVolume: true, attachVolume: true, maxVolumesPerServer: FAKE_DEVICE_NAMES, spawnServer: true, growGuestFilesystem: true, ...opts.capabilities };
    this.statePath = opts.statePath;
    this.controls = new FakeCallControls(opts.latencyMs ?? 0);
    this.model = new FakeDiskModel(opts.sysfsRoot, opts.readLunBytes);
    const initial = (this.statePath && loadFakeState(this.statePath)) || opts.servers || [];
    for (const s of initial) this.servers.set(s.id, structuredClone(s));
    this.persist();
  }

  /** A FakeDriver seeded from a `--fake-inventory` file (state.ts). Throws on a bad file. */
  static fromInventoryFile(path: string, opts: Omit<FakeDriverOptions, 'servers' | 'capabilities'> = {}): FakeDriver {
    const inv = parseFakeInventory(readFileSync(path, 'utf8'));
    return new FakeDriver({ ...opts, capabilities: inv.capabilities, servers: inv.servers });
  }

  // ---- test and operator controls (not part of VirtDriver) ----

  /** Calls per method, including calls that failed. */
  get calls(): Record<FakeMethod, number> {
    return this.controls.calls;
  }

  /** Artificial latency of every call, in ms (a test control, as `injectFault`). */
  get latencyMs(): number {
    return this.controls.latencyMs;
  }

  set latencyMs(ms: number) {
    this.controls.latencyMs = ms;
  }

  /** Make the next `times` calls of `method` fail with `error`. */
  injectFault(method: FakeMethod, error: ServiceError, times = 1): void {
    this.controls.inject(method, error, times);
  }

  /** Remove every injected fault. */
  clearFaults(): void {
    this.controls.clear();
  }

  /**
   * The storage under a volume grew to `bytes` (what a volume backend does; for a network disk:
   * the target exports the LUN with `bytes`). A block disk's host sees it after `rescan`.
   * Throws VolumeNotFound when no server has the volume.
   */
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
        this.model.refreshSync(disk);
        disk.guestBytes = Math.max(0, disk.hostBytes - (disk.payloadOffset ?? 0));
      }
    }
    server.state = state;
    this.persist();
  }

  /**
   * Change what the hypervisor reports of a server's size (an operator resized the domain on the
   * host): vCPUs and memory in MiB; `undefined` makes the fake report none, as a driver that
   * could not read it.
   */
  setSize(serverId: string, size: { vcpus: number | undefined; memoryMb: number | undefined }): void {
    const server = this.server(serverId);
    if (size.vcpus === undefined) delete server.vcpus;
    else server.vcpus = size.vcpus;
    if (size.memoryMb === undefined) delete server.memoryMb;
    else server.memoryMb = size.memoryMb;
    this.persist();
  }

  /**
   * The guest made a filesystem on the volume's disk (`undefined`: wiped it): `type` (ext4, xfs,
   * btrfs, …), mounted on `mountpoint` or not, on the whole disk or on one partition from 1 MiB
   * (`partitioned`); it fills what the guest sees of the disk now. `failWith`: the guest's grow
   * command will fail with that stderr. Throws InstanceNotFound, VolumeNotAttached.
   */
  setGuestFilesystem(serverId: string, volumeId: string, fs: { type: string; mountpoint?: string; partitioned?: boolean; failWith?: string } | undefined): void {
    const disk = this.disk(serverId, volumeId);
    if (fs === undefined) delete disk.guestFs;
    else disk.guestFs = fakeGuestFs(fs, disk.guestBytes);
    this.persist();
  }

  /** Start (true) or stop (false) the server's QEMU guest agent. Throws InstanceNotFound. */
  setGuestAgent(serverId: string, running: boolean): void {
    this.server(serverId).guestAgent = running;
    this.persist();
  }

  /** A server was created on the host. */
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

  /** A copy of a server with every disk's three sizes. Throws InstanceNotFound. */
  snapshot(serverId: string): FakeServer {
    return structuredClone(this.server(serverId));
  }

  // ---- VirtDriver ----

  async listServers(): Promise<DriverServer[]> {
    await this.controls.enter('listServers');
    return [...this.servers.values()].map(toDriverServer);
  }

  /** One server, from the map (what libvirt's lookup by UUID is to the fake). */
  async getServer(serverId: string): Promise<DriverServer | undefined> {
    await this.controls.enter('getServer');
    const s = this.servers.get(serverId);
    return s && toDriverServer(s);
  }

  async rescan(serverId: string, volumeId: string): Promise<void> {
    await this.controls.enter('rescan');
    await this.model.rescan(this.disk(serverId, volumeId));
    this.persist();
  }

  getHostBytes(serverId: string, volumeId: string): Promise<number> {
    // No promise of its own when nothing is to be waited for (no latency, no file to measure):
    // the fake stands for a driver that costs nothing in the API's benchmark (bench/api.ts).
    try {
      const waiting = this.controls.enter('getHostBytes');
      if (waiting !== undefined) return waiting.then(() => this.model.refresh(this.disk(serverId, volumeId))).then((d) => d.hostBytes);
      const disk = this.disk(serverId, volumeId);
      if (this.model.refreshedNow(disk)) return Promise.resolve(disk.hostBytes);
      return this.model.refresh(disk).then((d) => d.hostBytes);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  async getGuestBytes(serverId: string, volumeId: string): Promise<number> {
    await this.controls.enter('getGuestBytes');
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
      await this.controls.enter('extendAttached');
      if (server.state !== 'active' && server.state !== 'paused') {
        throw errors.instanceInvalidState(serverId, server.state, 'extend volume');
      }
      if (bytes < disk.guestBytes) throw errors.shrinkRefused(volumeId, bytes, disk.guestBytes);
      if (bytes === disk.guestBytes) return disk.guestBytes;
      if (disk.readonly) throw errors.diskReadOnly(volumeId, disk.device, serverId);
      await this.model.refresh(disk);
      // Encrypted: the guest's `bytes` need the LUKS header in front of them on the host.
      const offset = disk.payloadOffset ?? 0;
      if (disk.kind === 'file') {
        // QEMU grows the file itself; a raw file we can grow for real, as QEMU would, within
        // what its filesystem can hold (QEMU would fail with EFBIG half-way).
        if (disk.source && (disk.format ?? 'raw') === 'raw') {
          const limit = await maxFileBytes(dirname(disk.source)).catch(() => Number.MAX_SAFE_INTEGER);
          if (bytes + offset > limit) throw errors.sizeLimitExceeded(volumeId, bytes + offset, limit, `the filesystem holding disk ${disk.device}`);
          await growDiskFile(disk.source, bytes + offset);
        }
        disk.backingBytes = Math.max(disk.backingBytes, bytes + offset);
        disk.hostBytes = disk.backingBytes;
      } else if (bytes + offset > disk.hostBytes) {
        throw errors.hostSizeTooSmallFor(volumeId, bytes, disk.hostBytes, offset);
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

  /** An encrypted disk's LUKS payload offset (see the file header); 0 unencrypted. */
  async getPayloadOffset(serverId: string, volumeId: string): Promise<number> {
    return this.disk(serverId, volumeId).payloadOffset ?? 0;
  }

  async attachVolume(serverId: string, spec: AttachSpec): Promise<string> {
    await this.controls.enter('attachVolume');
    const server = this.server(serverId);
    if (!this.capabilities.attachVolume) throw errors.driverFailed('attach is not supported');
    const existing = server.disks.find((d) => d.volumeId === spec.volumeId);
    if (existing) return existing.device;
    this.chooseDevice(server, spec); // refuse a taken or missing device name before reading anything
    // The guest sees what the host sees when the disk is plugged.
    const sizes = await this.model.atAttach(spec);
    // Chosen again after the await, with nothing awaited until the disk is in: another attach to
    // this server may have taken the name meanwhile (libvirt's driver locks the domain for this).
    const raced = server.disks.find((d) => d.volumeId === spec.volumeId);
    if (raced) return raced.device;
    const device = this.chooseDevice(server, spec);
    const payloadOffset = spec.encryption ? await fakePayloadOffset(spec) : 0;
    const disk: FakeDisk = {
      volumeId: spec.volumeId,
      device,
      kind: spec.kind,
      ...(spec.format === undefined ? {} : { format: spec.format }),
      source: spec.source,
      ...(spec.portal === undefined ? {} : { portal: spec.portal }),
      ...sizes,
      // A disk not sized yet (a network disk the fake is told about later) shows the guest nothing.
      guestBytes: Math.max(0, sizes.hostBytes - payloadOffset),
      ...(spec.encryption ? { payloadOffset } : {}),
    };
    server.disks.push(disk);
    this.persist();
    return device;
  }

  async detachVolume(serverId: string, volumeId: string): Promise<void> {
    await this.controls.enter('detachVolume');
    const server = this.server(serverId);
    this.disk(serverId, volumeId);
    server.disks = server.disks.filter((d) => d.volumeId !== volumeId);
    this.persist();
  }

  /**
   * A server in memory, with no disks: `building` while the call runs (its latency), `active`
   * when it returns; an injected fault leaves nothing behind. The image and flavor are recorded
   * as given (`spawned`), not read: the fake has no disks of its own.
   */
  async spawn(spec: SpawnSpec): Promise<DriverServer> {
    if (!this.capabilities.spawnServer) throw errors.createServerNotSupported(this.name);
    if (this.servers.has(spec.id)) throw errors.instanceInvalidState(spec.id, this.servers.get(spec.id)!.state, 'spawn');
    // The domain gets the flavor's size, as a real hypervisor's would: listed back as measured.
    const server: FakeServer = { id: spec.id, name: spec.name, projectId: spec.projectId, state: 'building', disks: [], vcpus: spec.vcpus, memoryMb: spec.ramMb };
    this.servers.set(spec.id, server);
    try {
      await this.controls.enter('spawn');
    } catch (err) {
      this.servers.delete(spec.id);
      throw err;
    }
    server.state = 'active';
    this.spawned.set(spec.id, structuredClone(spec));
    this.persist();
    return toDriverServer(server);
  }

  /** Removes the server and its disks; a server the fake does not have is fine. */
  async destroy(serverId: string): Promise<void> {
    if (!this.capabilities.spawnServer) throw errors.createServerNotSupported(this.name);
    await this.controls.enter('destroy');
    this.servers.delete(serverId);
    this.spawned.delete(serverId);
    this.persist();
  }

  /**
   * Grows the partition, then the filesystem, on the volume's disk to what the guest sees of it
   * (see the file header). Throws InstanceNotFound, VolumeNotAttached (404),
   * GuestFilesystemGrowNotSupported (501) when the capability is off, and injected faults.
   */
  async growGuestFilesystem(serverId: string, volumeId: string): Promise<GuestFilesystemGrowth> {
    await this.controls.enter('growGuestFilesystem');
    if (!this.capabilities.growGuestFilesystem) throw errors.guestFsGrowNotSupported(this.name);
    const server = this.server(serverId);
    const disk = this.disk(serverId, volumeId);
    // A paused guest's vCPUs are stopped: its agent cannot answer guest-ping either.
    // Every answer says whether a partition grew, as the libvirt driver's do: false until one has
    // (an answer without an agent too: nothing was grown).
    if (server.state !== 'active' || server.guestAgent === false) {
      return { grown: false, reason: 'no_guest_agent', partitionGrown: false, detail: `the guest agent did not answer (server ${server.state}${server.guestAgent === false ? ', agent not running' : ''})` };
    }
    const fs = disk.guestFs;
    const whole = `/dev/${disk.device}`;
    if (!fs) return { grown: false, reason: 'no_filesystem', partitionGrown: false, device: whole, detail: `no filesystem on ${whole}` };
    const device = fs.partition ? `${whole}1` : whole;
    const seen = { device, partitionGrown: false, fsType: fs.type, ...(fs.mountpoint === undefined ? {} : { mountpoint: fs.mountpoint }), fsBytesBefore: fs.bytes };
    if (!GROWABLE_FS.has(fs.type)) return { grown: false, reason: 'unsupported_filesystem', ...seen, fsBytes: fs.bytes, detail: `${fs.type} on ${device}` };
    if (fs.type === 'xfs' && fs.mountpoint === undefined) return { grown: false, reason: 'not_mounted', ...seen, fsBytes: fs.bytes, detail: `xfs on ${device} is not mounted` };
    let partitionGrown = false;
    if (fs.partition) {
      const room = Math.max(0, disk.guestBytes - fs.partition.startBytes);
      if (room > fs.partition.bytes) {
        fs.partition.bytes = room;
        partitionGrown = true;
      }
    }
    if (fs.failWith !== undefined) {
      this.persist();
      return { grown: false, reason: 'grow_failed', ...seen, partitionGrown, fsBytes: fs.bytes, detail: `${fs.type === 'xfs' ? 'xfs_growfs' : 'resize2fs'} ${device}: ${fs.failWith}` };
    }
    fs.bytes = Math.max(fs.bytes, fsBlocksIn(fs.partition ? fs.partition.bytes : disk.guestBytes));
    this.persist();
    return { grown: true, ...seen, partitionGrown, fsBytes: fs.bytes };
  }

  /** What `spawn` was asked to build, by server id (a test control: the fake reads no image). */
  readonly spawned = new Map<string, SpawnSpec>();

  async close(): Promise<void> {}

  // ---- internals ----

  /** The device name a new disk gets: the one asked for if free, else the first free `vdb`…`vdz`. */
  private chooseDevice(server: FakeServer, spec: AttachSpec): string {
    const used = new Set(server.disks.map((d) => d.device));
    // As libvirt: a device name is never given twice.
    if (spec.device !== undefined && used.has(spec.device)) throw errors.devicePathInUse(spec.device, server.id);
    let device = spec.device;
    for (let c = 'b'.charCodeAt(0); device === undefined && c <= 'z'.charCodeAt(0); c++) {
      if (!used.has(`vd${String.fromCharCode(c)}`)) device = `vd${String.fromCharCode(c)}`;
    }
    if (device === undefined) throw errors.tooManyDiskDevices(server.id);
    return device;
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
    if (this.statePath) saveFakeState(this.statePath, this.servers.values());
  }
}

/** QEMU 7.2's LUKS payload offset with its defaults (aes-256-xts, 8 slots × 4000 stripes): 2,068,480 bytes. */
export const FAKE_LUKS_PAYLOAD_OFFSET = 2_068_480;

/** An encrypted disk's payload offset: from the LUKS header of a readable file or device, else QEMU's default. */
async function fakePayloadOffset(spec: AttachSpec): Promise<number> {
  if (spec.kind === 'network') return FAKE_LUKS_PAYLOAD_OFFSET;
  return (await readLuksPayloadOffset(spec.source).catch(() => undefined)) ?? FAKE_LUKS_PAYLOAD_OFFSET;
}
