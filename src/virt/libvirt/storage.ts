/**
 * The host side of a volume (os-brick's part): how big the host sees it, and making the host
 * see a grown LUN or loop device ("rescan").
 *
 * Failures are classified here, where they happen (`hostFailed`): a host tool that timed out is
 * uncertain, one that exited non-zero is final, a file or device error goes by its errno
 * (src/util/errno.ts). The public reason names the operation, never the path or command line;
 * those go in `detail`.
 */
import { readFile, readdir, realpath, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { errors, isServiceError, type ServiceError } from '../../errors.js';
import { CommandFailed, runCommand } from '../../host/exec.js';
import { UnexpectedReadCapacityOutput, iscsiUrl, readLunCapacity } from '../../host/iscsi.js';
import { classifyErrno } from '../../util/errno.js';
import { fileDiskBytes } from '../image.js';

/**
 * Runs a program, resolves with its stdout; rejects with a CommandFailed (src/host/exec.ts's
 * runCommand, or a test's stand-in).
 */
export type RunCommand = (file: string, args: string[], opts?: { timeoutMs?: number }) => Promise<string>;

/**
 * A host-side step (`what`, public words) failed: DriverFailed, final or uncertain at its
 * source. `detail` receives paths and command lines; the message never does.
 */
export function hostFailed(what: string, err: unknown, opts: { detail?: string; transientExit?: boolean } = {}): ServiceError {
  if (isServiceError(err)) return err;
  if (err instanceof CommandFailed) {
    const o = err.outcome;
    if ('timedOut' in o) return errors.driverFailed(`cannot ${what}: ${err.program} timed out`, { final: false, cause: err, detail: err.detail });
    if ('exitCode' in o) {
      return errors.driverFailed(`cannot ${what}: ${err.program} exited with status ${o.exitCode}`, { final: !opts.transientExit, cause: err, detail: err.detail });
    }
    if ('errno' in o) {
      const c = classifyErrno({ code: o.errno });
      return errors.driverFailed(`cannot ${what}: ${err.program} could not be started: ${c.reason}${c.errno ? ` (${c.errno})` : ''}`, { final: c.final, cause: err, detail: err.detail });
    }
    // Killed by a signal nobody here sent: final; aborted by the caller: uncertain.
    return errors.driverFailed(`cannot ${what}: ${err.message}`, { final: !('aborted' in o), cause: err, detail: err.detail });
  }
  const c = classifyErrno(err);
  return errors.driverFailed(`cannot ${what}: ${c.reason}${c.errno ? ` (${c.errno})` : ''}`, {
    final: c.final,
    cause: err,
    detail: `${opts.detail ? `${opts.detail}: ` : ''}${(err as Error)?.message ?? String(err)}`,
  });
}

/** Where HostStorage finds sysfs and how it runs host tools (losetup, multipathd, iscsi-readcapacity16); tests replace both. */
export interface HostStorageOptions {
  /** Where sysfs is mounted; tests point it at a fake tree. */
  sysfsRoot?: string;
  run?: RunCommand;
}

/**
 * The host side of a volume (os-brick's part): sizes in bytes as the host sees them, and rescans. Methods reject with the
 * raw failure (an fs error, CommandFailed) for the caller to classify with `hostFailed`, or with DriverFailed (500) where
 * noted.
 */
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
    if (!Number.isSafeInteger(sectors)) {
      throw errors.driverFailed('cannot read the size of the host block device: sysfs gave no number', { detail: `${name}: ${text.trim()}` });
    }
    return sectors * 512;
  }

  /** File size (raw) or virtual size from the header (qcow2). */
  fileBytes(path: string, format: 'raw' | 'qcow2' = 'raw'): Promise<number> {
    return fileDiskBytes(path, format);
  }

  /**
   * The LUN capacity in bytes an initiator reads now (READ CAPACITY(16) through libiscsi,
   * src/host/iscsi.ts). `source` is `iqn/lun` as in the domain XML. Rejects with CommandFailed
   * (classified by the caller with hostFailed) or a DriverFailed for output without a size.
   */
  async iscsiLunBytes(source: string, portal: string | undefined): Promise<number> {
    try {
      return await readLunCapacity(portal, source, { timeoutMs: 15_000, run: this.run });
    } catch (err) {
      if (!(err instanceof UnexpectedReadCapacityOutput)) throw err;
      throw errors.driverFailed('cannot read the capacity of the iSCSI LUN: unexpected iscsi-readcapacity16 output', { detail: `${iscsiUrl(portal, source)}: ${err.output.trim()}` });
    }
  }

  /**
   * The payload offset in bytes of the LUKS header at the start of an iSCSI LUN, as QEMU's own
   * initiator reads it (`qemu-img info` over `iscsi://`, which needs no key to read a header);
   * undefined when the LUN holds no LUKS header. Throws what the command throws.
   */
  async iscsiLuksPayloadOffset(source: string, portal: string | undefined): Promise<number | undefined> {
    const out = await this.run('qemu-img', ['info', '-U', '--output=json', iscsiUrl(portal, source)], { timeoutMs: 15_000 });
    const info = JSON.parse(out) as { format?: string; 'format-specific'?: { type?: string; data?: { 'payload-offset'?: unknown } } };
    const offset = info['format-specific']?.data?.['payload-offset'];
    return info.format === 'luks' && typeof offset === 'number' ? offset : undefined;
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
