/**
 * The virt driver contract. Every hypervisor driver implements `VirtDriver`; the fake driver in
 * `virt/fake` is the reference implementation and documents these semantics in code. One
 * contract suite (test/contract/driver.contract.ts) runs against every driver.
 *
 * Drivers never import the API, the compute service or the database. They throw errors from the
 * catalogue in `../errors.ts` (which carry their HTTP status), so the layers above map nothing.
 *
 * Concurrency: a driver takes no lock per volume. Its caller, the compute manager, runs one
 * operation per volume at a time (src/compute/locks.ts), as Nova's manager does. Calls on
 * different volumes may overlap, attaches to one server included: a driver keeps those apart
 * where they share something (the server's device names).
 */

/** How the compute host reaches a volume. */
export type DiskKind =
  /** A file (raw or qcow2) that QEMU opens itself; QEMU grows the file on resize (Nova's NFS). */
  | 'file'
  /** A host block device (loop, LVM, SCSI): the host must see the new size before the guest can. */
  | 'block'
  /** A network disk QEMU opens itself (iSCSI, RBD): the target must expose the new size first. */
  | 'network';

/** A server's power and task state as the driver reports it in Nova-like names (libvirt: `toServerState` maps virDomainState). */
export type ServerState =
  | 'active'
  | 'paused'
  | 'shutoff'
  | 'suspended'
  | 'crashed'
  | 'building'
  | 'migrating'
  | 'error'
  | 'unknown';

/** A disk of a server as the hypervisor reports it (libvirt: a `<disk>` of the domain XML). */
export interface DriverDisk {
  /** The volume id (libvirt: the disk's `<serial>`). */
  volumeId: string;
  /** Guest device name, e.g. `vdb`. */
  device: string;
  kind: DiskKind;
  /** Image format for file disks. */
  format?: 'raw' | 'qcow2';
  /** Host path of a file or block device, or `iqn/lun` for iSCSI. */
  source?: string;
  readonly?: boolean;
}

/** A server on this host as the hypervisor reports it (libvirt: a domain, by UUID). */
export interface DriverServer {
  id: string;
  name: string;
  /** Owning project if the hypervisor records it; the compute service fills a default otherwise. */
  projectId?: string;
  state: ServerState;
  disks: DriverDisk[];
  /**
   * vCPUs the server has, as the hypervisor reports them (libvirt: `<vcpu>`, or its `current`
   * attribute when fewer are online); absent when the driver could not read them. Never a guess.
   */
  vcpus?: number;
  /**
   * Memory the server boots with, in MiB (libvirt: `<memory>`, converted from its unit, rounded
   * down to whole MiB); absent when the driver could not read it. Never a guess.
   */
  memoryMb?: number;
}

/** What a driver can do; the compute API refuses what it cannot (e.g. ExtendVolumeNotSupported, 501). */
export interface DriverCapabilities {
  /** Can grow an attached disk live (rescan, get_blockdev, assist_extend). Nova's `supports_extend_volume`. */
  extendVolume: boolean;
  /** Can hot-plug and unplug volumes. */
  attachVolume: boolean;
  /**
   * How many volume disks one server can have (the device names the driver hands out: the fake
   * `vdb`–`vdz`, libvirt `vdb`–`vdzz`). Compute refuses one more with TooManyDiskDevices (403)
   * before the volume is reserved.
   */
  maxVolumesPerServer: number;
  /**
   * Can create and delete servers (`spawn`, `destroy`; Nova's POST and DELETE /servers). Compute
   * refuses a create on a host without it with CreateServerNotSupported (501).
   */
  spawnServer: boolean;
  /** growGuestFilesystem is implemented (libvirt: through the QEMU guest agent). */
  growGuestFilesystem: boolean;
}

/** Why the guest's filesystem was not grown; not an error: the block extend stands. */
export type GuestFsNotGrownReason =
  | 'no_guest_agent'        // no channel, agent not running, or it did not answer guest-ping in time
  | 'disk_not_found'        // no guest disk carries the volume's serial
  | 'no_filesystem'         // nothing the agent can grow on the disk (or its last partition)
  | 'unsupported_filesystem'// a filesystem other than ext2/3/4 or xfs
  | 'not_mounted'           // xfs not mounted (xfs grows only mounted)
  | 'grow_failed';          // a guest command failed; detail says which and its stderr
/** What growGuestFilesystem did, as the guest reports it. Sizes in bytes. */
export interface GuestFilesystemGrowth {
  grown: boolean;
  reason?: GuestFsNotGrownReason;   // set when grown is false
  device?: string;                  // guest block device grown, e.g. /dev/vdb or /dev/vdb1
  partitionGrown?: boolean;         // the last partition was grown first; false in every answer where it was not (no agent too): drivers always set it
  fsType?: string;                  // ext4, ext3, ext2, xfs
  mountpoint?: string;              // when mounted
  fsBytesBefore?: number;           // filesystem size before (df's total: f_blocks × f_frsize)
  fsBytes?: number;                 // filesystem size after, same measure
  detail?: string;                  // operator-only text (logged, never sent to API clients)
}

/**
 * The image a server boots from (Glance's, as the image catalogue records it); paths are host
 * paths the driver reads, never boots in place: `disk` is copied per server (qcow2 or raw);
 * `kernel` boots the kernel with its ramdisk and command line (Glance's kernel_id/ramdisk_id).
 */
export type SpawnImage =
  | { kind: 'disk'; diskPath: string; diskFormat: 'raw' | 'qcow2' }
  | { kind: 'kernel'; kernelPath: string; ramdiskPath: string; cmdline: string };

/** What `spawn` builds: a server's identity, owner, image and size (Nova's flavor; RAM in MiB, the root disk in GiB). */
export interface SpawnSpec {
  id: string;
  name: string;
  projectId: string;
  userId: string;
  image: SpawnImage;
  vcpus: number;
  ramMb: number;
  /**
   * The root disk (`vda`) in GiB: a disk image's copy is grown to it (0: the image's size); a
   * kernel image gets an empty root disk of this size (0: none).
   */
  rootDiskGb: number;
}

/** What the volume service hands the driver to attach a volume (Cinder's connection_info). */
export interface AttachSpec {
  volumeId: string;
  kind: DiskKind;
  format?: 'raw' | 'qcow2';
  /** File or block device path; for network disks `iqn/lun`. */
  source: string;
  /** For network (iSCSI) disks. */
  portal?: string;
  /** Desired device name; the driver picks the next free one if absent. */
  device?: string;
  /** Set for an encrypted volume: QEMU decrypts it (see AttachEncryption). */
  encryption?: AttachEncryption;
}

/**
 * How QEMU opens an encrypted volume (Cinder's encrypted connection_info with the key Nova's key
 * manager would hand out): QEMU-native LUKS, unlocked by `passphrase` (text). The guest sees the
 * LUKS payload: the volume's size minus the header's payload offset. The driver keeps the
 * passphrase only where the hypervisor needs it (libvirt: a private, ephemeral secret, undefined
 * on detach) and never logs or returns it.
 */
export interface AttachEncryption {
  format: 'luks';
  passphrase: string;
}

/** Options of `VirtDriver.extendAttached`; `currentGuestBytes` is the guest size in bytes the caller just measured. */
export interface ExtendOptions {
  currentGuestBytes?: number;
}

/**
 * A hypervisor driver (Nova's ComputeDriver): the operations compute needs to grow an attached volume and to hot-plug it.
 * Sizes are bytes; errors are ServiceErrors from the catalogue, as each method says.
 */
export interface VirtDriver {
  /** Short name used in messages, e.g. `fake`, `libvirt`. */
  readonly name: string;
  readonly capabilities: DriverCapabilities;

  /** Every server on this host, with its attached volumes. Throws HypervisorUnreachable. */
  listServers(): Promise<DriverServer[]>;

  /**
   * One server of this host, read now from the hypervisor, exactly as `listServers` would report
   * it (same id spelling, name, project, state and disks); `undefined` when the host has no such
   * server, including for an id that cannot name one. This is what keeps a request naming a
   * server the inventory does not know yet from costing a listing of the whole host: the fake
   * looks it up in its map, libvirt looks the domain up by UUID and reads its XML and state.
   * Throws HypervisorUnreachable (503), or DriverFailed (500) when the hypervisor fails to
   * answer about a server it has.
   *
   * Optional: the compute manager falls back to a full inventory sync (`listServers`) for a
   * driver without it.
   */
  getServer?(serverId: string): Promise<DriverServer | undefined>;

  /**
   * Make the host see the volume's current storage size (os-brick's extend on the host: loop
   * LOOP_SET_CAPACITY, SCSI sysfs rescan). A no-op for file and network disks. Idempotent.
   * Works whatever the server's state, a shut-off server included (offline extend: its disks
   * stay attached in its persistent definition, and the host side has no QEMU in the way).
   * Throws InstanceNotFound / VolumeNotAttached (404); DriverFailed (500, final or uncertain).
   */
  rescan(serverId: string, volumeId: string): Promise<void>;

  /**
   * The size in bytes the host sees for the volume, measured now (get_blockdev): block device
   * size (what the kernel sees: it changes on `rescan`), file size, qcow2 virtual size, or the
   * iSCSI LUN capacity the target exports now (QEMU's own initiator reads it: it changes when the
   * target re-exports a grown LUN, not on `rescan`). Works on a shut-off server too: it is the
   * size the guest gets when it next starts. Errors as `rescan`.
   */
  getHostBytes(serverId: string, volumeId: string): Promise<number>;

  /**
   * Bytes of the volume's disk in front of what the guest sees: an encrypted (LUKS) disk's
   * payload offset, 0 for a disk without encryption. So the guest can be grown to at most
   * `getHostBytes - getPayloadOffset` (what a `volume-extended` event grows it to). Errors as
   * `rescan`, and DriverFailed (500) when an encrypted disk's header cannot be read. Optional: a
   * driver without it attaches no encrypted volumes (callers take 0).
   */
  getPayloadOffset?(serverId: string, volumeId: string): Promise<number>;

  /**
   * The size in bytes the guest sees now, read live from the hypervisor. A server that is not
   * running or paused has no live size: InstanceStopped (shut off) or InstanceInvalidState (409).
   */
  getGuestBytes(serverId: string, volumeId: string): Promise<number>;

  /**
   * Grow the guest-visible size of an attached volume to `bytes` and return the size measured
   * afterwards (which may be rounded up, never down). Contract:
   * - reads the live guest size first; `bytes` below it throws VolumeShrinkRefused and the disk
   *   is not touched; `bytes` equal to it returns at once without a resize;
   * - a `block` or `network` disk whose host size is below `bytes` throws HostSizeTooSmall (409);
   *   a `file` disk may exceed its file size: QEMU grows the file, but a raw file is refused
   *   with SizeLimitExceeded (400, final) above what its filesystem holds, before any resize;
   * - a shut-off server throws InstanceStopped (409; its volumes are extended offline), any other
   *   state but running or paused InstanceInvalidState (409);
   * - a read-only disk throws DiskReadOnly (500, final);
   * - any other hypervisor failure throws DriverFailed (500), final or uncertain as classified
   *   where it happened; HypervisorUnreachable (503) when the hypervisor cannot be reached.
   *
   * `opts.currentGuestBytes`: the caller measured the guest size with getGuestBytes just now,
   * while holding the volume's lock, and already refused a shrink; the driver may use it instead
   * of a second live read (it still must not shrink below it).
   */
  extendAttached(serverId: string, volumeId: string, bytes: number, opts?: ExtendOptions): Promise<number>;

  /**
   * Hot-plug a volume; returns the device name the guest got. Requires `capabilities.attachVolume`.
   * A server with a persistent definition keeps the disk in it, so it survives a shut-off and
   * start (libvirt: VIR_DOMAIN_AFFECT_LIVE | VIR_DOMAIN_AFFECT_CONFIG). Idempotent.
   */
  attachVolume(serverId: string, spec: AttachSpec): Promise<string>;

  /** Hot-unplug a volume, from the running server and its persistent definition. Requires `capabilities.attachVolume`. */
  detachVolume(serverId: string, volumeId: string): Promise<void>;

  /**
   * Create the server `spec` describes on this host and start it (Nova's spawn); resolves once it
   * runs, with the server as `getServer` reports it (state `active`, no volume disks). Requires
   * `capabilities.spawnServer`. The server is persistent: it survives being shut off, and
   * `listServers` reports it with `spec.projectId`. A failed spawn leaves nothing behind (no
   * definition, no disk copy) and throws DriverFailed (500: an unreadable image, a refused
   * definition), InstanceInvalidState (409: the id is taken on this host) or
   * HypervisorUnreachable (503).
   */
  spawn?(spec: SpawnSpec): Promise<DriverServer>;

  /**
   * Stop and delete the server with everything `spawn` made for it (libvirt: destroy, undefine,
   * the per-server directory). Volume disks still plugged in are unplugged with it; the caller
   * detaches volumes first. Idempotent: a server the host does not have is fine. Requires
   * `capabilities.spawnServer`. Throws DriverFailed (500), HypervisorUnreachable (503).
   */
  destroy?(serverId: string): Promise<void>;

  /**
   * Grow what sits on the volume's disk inside the guest: the last partition when the disk is
   * partitioned, then the filesystem (ext* with resize2fs, online when mounted; xfs with xfs_growfs).
   * Requires capabilities.growGuestFilesystem. A guest without an agent, or a disk with nothing to
   * grow, is an answer with grown=false and a reason, not an error. Throws InstanceNotFound,
   * VolumeNotAttached (404), HypervisorUnreachable (503, uncertain).
   */
  growGuestFilesystem?(serverId: string, volumeId: string): Promise<GuestFilesystemGrowth>;

  /** Release connections. */
  close(): Promise<void>;
}
