/**
 * How the fake hypervisor sizes its disks, per kind, from what the volume service hands compute
 * (connection_info: AttachSpec) and from what the host has now. The semantics are documented in
 * driver.ts; this file is where they are computed.
 *
 * - `file`: the file's size (raw) or its qcow2 virtual size; host and storage are the same thing.
 * - `block`: a block device node follows the kernel (sysfs `size`), a loop device's storage is
 *   its backing file (blockSource.ts); a regular file named as a block device is the storage,
 *   and the host's view of it is recorded (it catches up on rescan).
 * - `network` (iSCSI, QEMU's own initiator): the capacity the target exports for the LUN
 *   `iqn/lun` at the portal, read with `readLunBytes` the way an initiator's READ CAPACITY
 *   reads it; without a reader, what the fake is told (`FakeDriver.setBackingBytes`).
 * A source that does not exist or cannot be read (inventory files name paths that need not
 * exist) keeps the recorded sizes. Sizes never shrink under an attached volume.
 */
import { errors } from '../../errors.js';
import { classifyErrno, errnoReason } from '../../util/errno.js';
import type { AttachSpec } from '../driver.js';
import { fileDiskBytes, fileDiskBytesSync } from '../image.js';
import { measureBlockSource } from './blockSource.js';
import type { FakeDisk } from './state.js';

/** An iSCSI LUN as connection_info names it: `source` `iqn/lun`, and the target's portal. */
export interface IscsiLun {
  iqn: string;
  lun: number;
  /** `host:port`; absent when connection_info gave none. */
  portal?: string;
}

/**
 * Reads the capacity in bytes the target exports now for a LUN (what `iscsi-readcapacity16`
 * prints), or undefined when it cannot be known (the fake then keeps what it recorded).
 */
export type LunReader = (lun: IscsiLun) => Promise<number | undefined>;

/** The LUN named by a network disk's source `iqn/lun`, or undefined if it names none. */
export function parseIscsiSource(source: string, portal?: string): IscsiLun | undefined {
  const m = /^([^/\s]+)\/(\d+)$/.exec(source);
  if (!m) return undefined;
  return { iqn: m[1]!, lun: Number(m[2]), ...(portal === undefined ? {} : { portal }) };
}

/** The sizes a disk starts with when it is plugged: the guest sees what the host sees. */
export interface AttachSizes {
  backingBytes: number;
  hostBytes: number;
}

/** Sizes the fake's disks (see the file header). */
export class FakeDiskModel {
  /**
   * @param sysfsRoot where sysfs is mounted (`/sys`, tests use a tree of their own).
   * @param readLunBytes how the capacity of an iSCSI LUN is read; none: network disks have the
   *   size the fake is told.
   */
  constructor(
    private readonly sysfsRoot: string | undefined,
    private readonly readLunBytes: LunReader | undefined,
  ) {}

  /**
   * The sizes of a disk about to be attached. The storage may be ahead of the host (a loop
   * device not rescanned since its file grew); the guest gets the host's view. Throws
   * DriverFailed when a file disk's file cannot be read (final or not, by errno).
   */
  async atAttach(spec: AttachSpec): Promise<AttachSizes> {
    switch (spec.kind) {
      case 'file':
        try {
          const bytes = await fileDiskBytes(spec.source, spec.format);
          return { backingBytes: bytes, hostBytes: bytes };
        } catch (err) {
          throw errors.driverFailed(errnoReason('read the size of the disk file', err), { final: classifyErrno(err).final, cause: err, detail: `${spec.source}: ${(err as Error).message}` });
        }
      case 'block': {
        const sizes = measureBlockSource(spec.source, this.sysfsRoot);
        if (!sizes) return { backingBytes: 0, hostBytes: 0 };
        const host = sizes.deviceBytes ?? sizes.storageBytes;
        return { backingBytes: Math.max(host, sizes.storageBytes), hostBytes: host };
      }
      case 'network': {
        const bytes = (await this.lunBytes(spec.source, spec.portal)) ?? 0;
        return { backingBytes: bytes, hostBytes: bytes };
      }
    }
  }

  /** Bring a disk's recorded sizes up to what its source has now (see the file header). */
  async refresh(disk: FakeDisk): Promise<FakeDisk> {
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
    if (disk.kind === 'network' && disk.source) {
      const bytes = await this.lunBytes(disk.source, disk.portal);
      if (bytes !== undefined) {
        // The host reads the LUN's capacity live (no host rescan for QEMU's own initiator).
        disk.backingBytes = Math.max(disk.backingBytes, bytes);
        disk.hostBytes = disk.backingBytes;
      }
    }
    return disk;
  }

  /**
   * `refresh` without a promise when it needs no asynchronous read (no file or LUN source to
   * measure: the read hot path's disks): true when done; false when `refresh` must be awaited.
   */
  refreshedNow(disk: FakeDisk): boolean {
    if ((disk.kind === 'file' || disk.kind === 'network') && disk.source) return false;
    this.refreshBlock(disk);
    return true;
  }

  /**
   * `refresh`, synchronously, for a server's boot (FakeDriver.setState): file and block sources
   * only; a network disk keeps the LUN capacity last read.
   */
  refreshSync(disk: FakeDisk): void {
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
   * The host's rescan (os-brick's extend): a block device's host view catches up with its
   * storage. File and network disks have nothing to rescan: their host view is their storage.
   * The fake records the rescan; it does not perform it on a real device.
   */
  async rescan(disk: FakeDisk): Promise<void> {
    await this.refresh(disk);
    disk.hostBytes = disk.backingBytes;
  }

  /**
   * A block disk on a real device or file follows it. Max: the fake records the host's rescan
   * rather than performs it, so its host view may be ahead of the kernel's; and storage never
   * shrinks under an attached volume.
   */
  private refreshBlock(disk: FakeDisk): void {
    if (disk.kind !== 'block' || !disk.source) return;
    const sizes = measureBlockSource(disk.source, this.sysfsRoot);
    if (!sizes) return; // absent (inventory files): keep the recorded sizes
    disk.backingBytes = Math.max(disk.backingBytes, sizes.storageBytes);
    if (sizes.deviceBytes !== undefined) disk.hostBytes = Math.max(disk.hostBytes, sizes.deviceBytes);
  }

  /** The LUN's capacity through the reader; undefined without one, or when it cannot tell. */
  private async lunBytes(source: string, portal: string | undefined): Promise<number | undefined> {
    const lun = parseIscsiSource(source, portal);
    if (!lun || !this.readLunBytes) return undefined;
    const bytes = await this.readLunBytes(lun).catch(() => undefined);
    return bytes !== undefined && Number.isSafeInteger(bytes) && bytes >= 0 ? bytes : undefined;
  }
}
