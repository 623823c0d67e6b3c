/**
 * The host side of a volume (os-brick's part): how big the host sees it, and making the host
 * see a grown LUN or loop device ("rescan").
 */
import { execFile } from 'node:child_process';
import { readFile, readdir, realpath, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fileDiskBytes } from '../image.js';
import { DEFAULT_ISCSI_PORTAL } from './domxml.js';

/** Runs a program, resolves with its stdout; rejects with its stderr in the message. */
export type RunCommand = (file: string, args: string[], opts?: { timeoutMs?: number }) => Promise<string>;

export const runCommand: RunCommand = (file, args, opts = {}) =>
  new Promise((resolve, reject) => {
    execFile(file, args, { timeout: opts.timeoutMs ?? 30_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) {
        const detail = (stderr || stdout || '').trim() || err.message;
        reject(new Error(`${file} ${args.join(' ')} failed: ${detail}`, { cause: err }));
      } else {
        resolve(stdout);
      }
    });
  });

export interface HostStorageOptions {
  /** Where sysfs is mounted; tests point it at a fake tree. */
  sysfsRoot?: string;
  run?: RunCommand;
}

export class HostStorage {
  readonly sysfsRoot: string;
  private readonly run: RunCommand;

  constructor(opts: HostStorageOptions = {}) {
    this.sysfsRoot = opts.sysfsRoot ?? '/sys';
    this.run = opts.run ?? runCommand;
  }

  /** Kernel name of a block device node (`/dev/loop3` → `loop3`, `/dev/mapper/x` → `dm-0`). */
  async blockDeviceName(path: string): Promise<string> {
    let resolved = path;
    try {
      resolved = await realpath(path);
    } catch {
      // A path that does not resolve (fake sysfs in tests): use its name as is.
    }
    return basename(resolved);
  }

  /** Size of a block device as the host kernel sees it now (sysfs size is in 512-byte sectors). */
  async blockDeviceBytes(path: string): Promise<number> {
    const name = await this.blockDeviceName(path);
    const text = await readFile(join(this.sysfsRoot, 'class', 'block', name, 'size'), 'utf8');
    const sectors = Number(text.trim());
    if (!Number.isSafeInteger(sectors)) throw new Error(`unreadable size for block device ${name}: ${text.trim()}`);
    return sectors * 512;
  }

  /** File size (raw) or virtual size from the header (qcow2). */
  fileBytes(path: string, format: 'raw' | 'qcow2' = 'raw'): Promise<number> {
    return fileDiskBytes(path, format);
  }

  /**
   * The LUN capacity an initiator reads now (READ CAPACITY(16) through libiscsi).
   * `source` is `iqn/lun` as in the domain XML.
   */
  async iscsiLunBytes(source: string, portal: string | undefined): Promise<number> {
    const url = `iscsi://${portal ?? DEFAULT_ISCSI_PORTAL}/${source}`;
    const out = await this.run('iscsi-readcapacity16', ['-s', url], { timeoutMs: 15_000 });
    const bytes = Number(out.trim().split(/\s+/).pop());
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new Error(`unexpected iscsi-readcapacity16 output for ${url}: ${out.trim()}`);
    return bytes;
  }

  /**
   * Make the host see the current size of a block device:
   * loop → LOOP_SET_CAPACITY (`losetup -c`); sdX → SCSI rescan; dm-N → rescan every path,
   * then `multipathd resize map` when multipathd is there. Anything else: nothing to do.
   * Returns the sysfs rescan files written (for tests and logs).
   */
  async rescanBlockDevice(path: string): Promise<string[]> {
    const name = await this.blockDeviceName(path);
    if (/^loop\d+$/.test(name)) {
      await this.run('losetup', ['-c', `/dev/${name}`], { timeoutMs: 15_000 });
      return [];
    }
    if (/^dm-\d+$/.test(name)) {
      const written = await this.rescanScsiPaths(name);
      await this.multipathResize(name);
      return written;
    }
    if (/^sd[a-z]+$/.test(name)) return this.rescanScsiPaths(name);
    return [];
  }

  /** Writes `1` to the rescan file of every SCSI path under `name` (a disk or a dm map). */
  async rescanScsiPaths(name: string): Promise<string[]> {
    const disks = await this.scsiDisksUnder(name, new Set());
    const written: string[] = [];
    for (const disk of disks) {
      const hctls = await this.hctlOf(disk);
      for (const hctl of hctls) {
        const file = join(this.sysfsRoot, 'class', 'scsi_device', hctl, 'device', 'rescan');
        await writeFile(file, '1');
        written.push(file);
      }
    }
    return written;
  }

  /** SCSI disks (sdX) a device is made of: itself, or a dm map's slaves, recursively. */
  private async scsiDisksUnder(name: string, seen: Set<string>): Promise<string[]> {
    if (seen.has(name)) return [];
    seen.add(name);
    if (/^sd[a-z]+$/.test(name)) return [name];
    let slaves: string[];
    try {
      slaves = await readdir(join(this.sysfsRoot, 'block', name, 'slaves'));
    } catch {
      return [];
    }
    const out: string[] = [];
    for (const s of slaves.sort()) out.push(...(await this.scsiDisksUnder(s, seen)));
    return out;
  }

  private async hctlOf(disk: string): Promise<string[]> {
    try {
      const entries = await readdir(join(this.sysfsRoot, 'block', disk, 'device', 'scsi_device'));
      return entries.filter((e) => /^\d+:\d+:\d+:\d+$/.test(e));
    } catch {
      return [];
    }
  }

  private async multipathResize(dmName: string): Promise<void> {
    if (this.sysfsRoot !== '/sys') return;
    let mapName: string;
    try {
      mapName = (await readFile(join(this.sysfsRoot, 'block', dmName, 'dm', 'name'), 'utf8')).trim();
      await stat('/sbin/multipathd');
    } catch {
      return;
    }
    await this.run('/sbin/multipathd', ['resize', 'map', mapName], { timeoutMs: 30_000 });
  }
}
