/**
 * The fake hypervisor's state: its servers and their disks (each with three sizes, see
 * driver.ts), the `--fake-inventory` file that seeds them, how they are listed as DriverServers,
 * and the JSON file that keeps them across a restart of the service.
 */
import { chmodSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { DiskKind, DriverCapabilities, DriverDisk, DriverServer, ServerState } from '../driver.js';

/**
 * One attached disk of the fake hypervisor. Sizes in bytes: `backingBytes` the storage's (file,
 * loop backing file, the LUN the target exports), `hostBytes` what the host sees, `guestBytes`
 * what the guest sees (see the model in driver.ts).
 */
export interface FakeDisk {
  volumeId: string;
  device: string;
  kind: DiskKind;
  format?: 'raw' | 'qcow2';
  /** File or device path; for network (iSCSI) disks `iqn/lun`. */
  source?: string;
  /** For network (iSCSI) disks: the target's portal, `host:port`, as connection_info had it. */
  portal?: string;
  readonly?: boolean;
  backingBytes: number;
  hostBytes: number;
  guestBytes: number;
  /** An encrypted (LUKS) disk's header bytes: its guest sees the host's view minus these (encryption.ts). */
  payloadOffset?: number;
  /** What the guest has put on the disk (growGuestFilesystem grows it); absent: nothing (a blank disk). */
  guestFs?: FakeGuestFs;
}

/** Byte offset of a fake guest's one partition: 1 MiB, where fdisk and parted put the first partition. */
export const FAKE_PARTITION_START = 1024 * 1024;

/**
 * A filesystem a fake guest has on one of its disks, on the whole disk or on its last (only)
 * partition. Sizes in bytes, as the guest's `df -B1` totals them (f_blocks × f_frsize).
 */
export interface FakeGuestFs {
  /** ext2, ext3, ext4 and xfs can be grown; any other (btrfs, vfat, …) answers unsupported_filesystem. */
  type: string;
  /** Where the guest has it mounted; absent: not mounted (ext* grows offline, xfs refuses: not_mounted). */
  mountpoint?: string;
  /** The partition that holds it (the disk is partitioned: the partition grows first, as growpart does); absent: the whole disk. */
  partition?: { startBytes: number; bytes: number };
  /** The filesystem's size now. */
  bytes: number;
  /** The guest's grow command fails (grow_failed) with this as its stderr; absent: it works. */
  failWith?: string;
}

/** One server (domain) of the fake hypervisor. */
export interface FakeServer {
  id: string;
  name: string;
  projectId?: string;
  state: ServerState;
  disks: FakeDisk[];
  /** vCPUs the domain has; absent: the fake reports none (a driver that could not read them). */
  vcpus?: number;
  /** Memory in MiB; absent: the fake reports none. */
  memoryMb?: number;
  /** Whether the guest runs a QEMU guest agent that answers; absent means it does. */
  guestAgent?: boolean;
}

/** The `--fake-inventory` file format (snake_case, as the issue defines it). */
export interface FakeInventoryFile {
  capabilities?: { extend_volume?: boolean; attach_volume?: boolean; spawn_server?: boolean; grow_guest_filesystem?: boolean };
  servers: Array<{
    id: string;
    name?: string;
    project_id?: string;
    state?: ServerState;
    /**
     * The domain's vCPUs and memory (MiB), positive integers. Each is optional and has no
     * default: a server without them is reported without them, as a driver reports a domain it
     * could not measure (the API then shows the host-defined flavor as unmeasured).
     */
    vcpus?: number;
    memory_mb?: number;
    /** Whether the guest runs an answering QEMU guest agent (default true). */
    guest_agent?: boolean;
    disks?: Array<{
      volume_id: string;
      device: string;
      bytes: number;
      backing_bytes?: number;
      kind?: DiskKind;
      format?: 'raw' | 'qcow2';
      source?: string;
      readonly?: boolean;
      /** A filesystem filling the disk (or its one partition, from 1 MiB), as the guest made it. */
      guest_fs?: { type: string; mountpoint?: string; partitioned?: boolean };
    }>;
  }>;
}

/**
 * A fake guest filesystem that fills a disk of `diskBytes` as the guest just made it: on the
 * whole disk, or on one partition from FAKE_PARTITION_START to the end; its size is rounded down
 * to the 4 KiB block mkfs uses.
 */
export function fakeGuestFs(spec: { type: string; mountpoint?: string; partitioned?: boolean; failWith?: string }, diskBytes: number): FakeGuestFs {
  const partition = spec.partitioned ? { startBytes: FAKE_PARTITION_START, bytes: Math.max(0, diskBytes - FAKE_PARTITION_START) } : undefined;
  return {
    type: spec.type,
    ...(spec.mountpoint === undefined ? {} : { mountpoint: spec.mountpoint }),
    ...(partition ? { partition } : {}),
    bytes: fsBlocksIn(partition ? partition.bytes : diskBytes),
    ...(spec.failWith === undefined ? {} : { failWith: spec.failWith }),
  };
}

/** A filesystem's block: 4 KiB, mkfs.ext4's and mkfs.xfs's default; a grown filesystem ends on a whole block. */
export const FAKE_FS_BLOCK = 4096;

/** The bytes of whole filesystem blocks that fit in `bytes`. */
export function fsBlocksIn(bytes: number): number {
  return Math.floor(bytes / FAKE_FS_BLOCK) * FAKE_FS_BLOCK;
}

/** Device names the fake hands out: vdb … vdz. */
export const FAKE_DEVICE_NAMES = 25;

/** States with a running QEMU: a disk's guest size is live only there. */
export const RUNNING: ReadonlySet<ServerState> = new Set(['active', 'paused']);

/**
 * Parses a `--fake-inventory` file. A disk's `bytes` is what host and guest see, `backing_bytes`
 * (default `bytes`) its storage; a block disk's host view starts at `bytes` (it catches up on
 * rescan), other kinds see their storage. Throws Error naming the bad field.
 */
export function parseFakeInventory(text: string): { capabilities: DriverCapabilities; servers: FakeServer[] } {
  const inv = JSON.parse(text) as FakeInventoryFile;
  if (!inv || !Array.isArray(inv.servers)) throw new Error('fake inventory: "servers" must be an array');
  const servers = inv.servers.map((s, i): FakeServer => {
    if (typeof s.id !== 'string') throw new Error(`fake inventory: servers[${i}].id must be a string`);
    for (const field of ['vcpus', 'memory_mb'] as const) {
      const v = s[field];
      if (v !== undefined && (!Number.isSafeInteger(v) || v <= 0)) throw new Error(`fake inventory: servers[${i}].${field} must be a positive integer`);
    }
    return {
      id: s.id,
      name: s.name ?? `server-${s.id.slice(0, 8)}`,
      ...(s.project_id === undefined ? {} : { projectId: s.project_id }),
      state: s.state ?? 'active',
      ...(s.vcpus === undefined ? {} : { vcpus: s.vcpus }),
      ...(s.memory_mb === undefined ? {} : { memoryMb: s.memory_mb }),
      ...(s.guest_agent === undefined ? {} : { guestAgent: s.guest_agent }),
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
          ...(d.guest_fs === undefined ? {} : { guestFs: fakeGuestFs(d.guest_fs, d.bytes) }),
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
      spawnServer: inv.capabilities?.spawn_server ?? true,
      growGuestFilesystem: inv.capabilities?.grow_guest_filesystem ?? true,
    },
    servers,
  };
}

/** A fake server as the VirtDriver contract lists it. */
export function toDriverServer(s: FakeServer): DriverServer {
  return {
    id: s.id,
    name: s.name,
    ...(s.projectId === undefined ? {} : { projectId: s.projectId }),
    state: s.state,
    ...(s.vcpus === undefined ? {} : { vcpus: s.vcpus }),
    ...(s.memoryMb === undefined ? {} : { memoryMb: s.memoryMb }),
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

interface PersistedState {
  servers: FakeServer[];
}

/** The servers saved at `path`, or undefined if there is no such file. Throws on a bad file. */
export function loadFakeState(path: string): FakeServer[] | undefined {
  try {
    return (JSON.parse(readFileSync(path, 'utf8')) as PersistedState).servers;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return undefined;
  }
}

/** Save the servers at `path` atomically (write, then rename), mode 0600. */
export function saveFakeState(path: string, servers: Iterable<FakeServer>): void {
  const tmp = `${path}.tmp`;
  // 0600: the state names every guest's disks; `mode` only applies to a new file, hence chmod.
  writeFileSync(tmp, JSON.stringify({ servers: [...servers] } satisfies PersistedState), { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}
