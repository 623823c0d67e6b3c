/**
 * What the fake driver reads from the host about the source of a `block` disk, so it can sit on
 * a real block volume backend (loop devices over files, volume/backends/block.ts) and report real
 * sizes instead of the 0 it cannot otherwise know.
 *
 * NOTE: synchronous on purpose: a stat of a device node and two reads of sysfs attributes are a
 * few syscalls answered from kernel memory, and the fake needs the same answer in `setState`,
 * which is synchronous.
 */
import { readFileSync, realpathSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';

/** Sizes in bytes of a block disk's source, as the host has them now. */
export interface BlockSourceSizes {
  /**
   * What the host's kernel sees for the device now: `/sys/class/block/<name>/size` × 512.
   * Absent when the source is a regular file (no kernel device: the fake records the host's view).
   */
  deviceBytes?: number;
  /**
   * The storage under it: a loop device's backing file (`loop/backing_file` in sysfs), which
   * grows before the device sees it (until LOOP_SET_CAPACITY, the host's rescan); the device
   * itself for any other block device; a regular file's size.
   */
  storageBytes: number;
}

/** sysfs `size` is in 512-byte sectors, whatever the device's logical block size. */
const SECTOR = 512;

function readSysfsNumber(path: string): number | undefined {
  const n = Number(readFileSync(path, 'utf8').trim());
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/**
 * The sizes of `source` (a block device node or a regular file), or undefined when the host has
 * no such thing or it cannot be measured (inventory files name sources that need not exist: the
 * caller keeps the sizes it recorded). `sysfsRoot` is `/sys` but for tests.
 */
export function measureBlockSource(source: string, sysfsRoot = '/sys'): BlockSourceSizes | undefined {
  try {
    const st = statSync(source);
    if (st.isFile()) return { storageBytes: st.size };
    if (!st.isBlockDevice()) return undefined;
    // `/dev/disk/by-id/…` and `/dev/mapper/…` are links to the kernel's name (`sda`, `dm-0`).
    const dir = join(sysfsRoot, 'class', 'block', basename(realpathSync(source)));
    const sectors = readSysfsNumber(join(dir, 'size'));
    if (sectors === undefined) return undefined;
    const deviceBytes = sectors * SECTOR;
    return { deviceBytes, storageBytes: Math.max(deviceBytes, loopBackingBytes(dir) ?? 0) };
  } catch {
    return undefined;
  }
}

/** The size of a loop device's backing file, or undefined (not a loop device, file gone). */
function loopBackingBytes(deviceDir: string): number | undefined {
  let backing: string;
  try {
    backing = readFileSync(join(deviceDir, 'loop', 'backing_file'), 'utf8').trim();
  } catch {
    return undefined;
  }
  // The kernel appends " (deleted)" once the file is unlinked: its size no longer matters.
  if (!backing || backing.endsWith(' (deleted)')) return undefined;
  try {
    return statSync(backing).size;
  } catch {
    return undefined;
  }
}
