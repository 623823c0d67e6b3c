/**
 * BlockBackend: a host block device per volume, made here as a loop device over a sparse raw
 * file `<dir>/<volumeId>.raw` (what an LVM logical volume is on a real host; this machine has no
 * device-mapper). AttachSpec kind `block`, source `/dev/loopN`.
 *
 * The extend split (as with SAN/LVM + os-brick): `extend()` grows the STORAGE only (the file,
 * i.e. "lvextend") and returns the file size. The loop device keeps its old capacity until the
 * compute host rescans it (`losetup -c /dev/loopN`, LOOP_SET_CAPACITY; VirtDriver.rescan), after
 * which the guest can be grown. So `getBytes` reports the storage (file) size, not the device's.
 *
 * The loop device is never recorded: it is found again with `losetup -j FILE`. Loop devices are
 * global to the machine, so this backend only ever detaches devices whose backing file is one of
 * its own volume files. `connection()` re-attaches a loop device if the volume has none (after a
 * host reboot or a crash between the two steps of create), like Cinder's ensure_export.
 */
import { resolve } from 'node:path';
import { errors } from '../../errors.js';
import type { AttachSpec } from '../../virt/driver.js';
import type { BackendVolume, CreateOptions, StorageInspection, VolumeBackend } from './backend.js';
import { checkEncrypted, makeRawVolume } from './luks.js';
import { checkBytes, checkFits, checkVolumeId, rawFileLimit, createAtomically, fileBytes, growVolumeFile, makeSparseFile, removeFile, ensureDir, inspectPath } from './common.js';
import { exec, execRaw, commandFailed } from './exec.js';
import { KeyedMutex } from '../../util/keyedMutex.js';

/** `/dev/loopN`: the only thing `losetup -f --show` may print. */
const LOOP_DEVICE = /^\/dev\/loop\d+$/;

/** Where BlockBackend keeps its backing files, and losetup's timeout in ms. */
export interface BlockBackendOptions {
  /** The pool directory holding the backing files (created if missing). */
  dir: string;
  /** Timeout for losetup (default 15 s). */
  timeoutMs?: number;
}

/**
 * Block volumes (see the file header): a loop device over `<dir>/<volumeId>.raw`, attached as a `block` disk. Errors as
 * VolumeBackend's; losetup failures are BackendFailed. One operation per volume at a time (KeyedMutex).
 */
export class BlockBackend implements VolumeBackend {
  readonly name = 'block';
  readonly attachedGrowth = 'storage' as const;
  readonly dir: string;
  private readonly timeoutMs: number;
  private readonly lock = new KeyedMutex();

  constructor(opts: BlockBackendOptions) {
    this.dir = resolve(opts.dir);
    this.timeoutMs = opts.timeoutMs ?? 15_000;
  }

  /** The backing file of a volume. */
  pathOf(volumeId: string): string {
    checkVolumeId(volumeId);
    return `${this.dir}/${volumeId}.raw`;
  }

  /** Loop devices backed by this file (`losetup -j`, matched by device and inode), lowest first. */
  async loopDevices(file: string): Promise<string[]> {
    const out = await exec('losetup', ['-j', file], { timeoutMs: this.timeoutMs, what: 'list the loop devices of the volume' });
    const devs: string[] = [];
    for (const line of out.split('\n')) {
      const m = /^(\/dev\/loop\d+):/.exec(line);
      if (m?.[1]) devs.push(m[1]);
    }
    return devs.sort((a, b) => Number(a.slice(9)) - Number(b.slice(9)));
  }

  private async detach(dev: string, file: string): Promise<void> {
    const args = ['-d', dev];
    const what = 'detach the loop device of the volume';
    const r = await execRaw('losetup', args, { timeoutMs: this.timeoutMs, what });
    if (r.code === 0) return;
    // Decided by looking again, not by losetup's words: already gone (another caller detached
    // it)? Then that is fine. Still there: the kernel refuses LOOP_CLR_FD only while the device
    // is being set up or torn down by someone else (EBUSY/ENXIO), which passes: uncertain.
    if (!(await this.loopDevices(file)).includes(dev)) return;
    throw commandFailed('losetup', args, r, { final: false, what });
  }

  /** The loop device of a volume, attaching one if it has none. The file must exist. */
  private async ensureLoop(volumeId: string): Promise<string> {
    const file = this.pathOf(volumeId);
    const existing = await this.loopDevices(file);
    if (existing[0]) return existing[0];
    const args = ['-f', '--show', file];
    const what = 'attach a loop device to the volume';
    const r = await execRaw('losetup', args, { timeoutMs: this.timeoutMs, what });
    if (r.code !== 0) {
      // A concurrent caller may have attached the file first (and taken the free device we were
      // given): look again rather than read losetup's message.
      const now = await this.loopDevices(file);
      if (now[0]) return now[0];
      throw commandFailed('losetup', args, r, { what });
    }
    const dev = r.stdout.trim();
    if (!LOOP_DEVICE.test(dev)) {
      throw errors.backendFailed(`cannot ${what}: losetup printed no loop device`, { detail: `losetup -f --show ${file} printed ${JSON.stringify(dev)}` });
    }
    // Another process may have attached the same file at the same moment: keep the lowest one.
    const all = await this.loopDevices(file);
    const keep = all[0] ?? dev;
    if (keep !== dev) await this.detach(dev, file);
    return keep;
  }

  private spec(volumeId: string, dev: string): AttachSpec {
    return { volumeId, kind: 'block', source: dev };
  }

  /** The largest backing file the pool's filesystem holds. */
  maxBytes(): Promise<number> {
    return rawFileLimit(this.dir);
  }

  /**
   * Create the sparse backing file of exactly `bytes` (atomically, 0600) and a loop device over it. Idempotent for the same
   * size; another size throws VolumeInvalidState (409). Also InvalidInput, SizeLimitExceeded (400), BackendFailed.
   */
  async create(volumeId: string, bytes: number, opts: CreateOptions = {}): Promise<BackendVolume> {
    checkVolumeId(volumeId);
    checkBytes(bytes);
    checkFits(volumeId, bytes, await this.maxBytes(), 'the volume pool (its largest file)');
    return this.lock.run(volumeId, async () => {
      await ensureDir(this.dir);
      const file = this.pathOf(volumeId);
      if ((await fileBytes(file)) === undefined) {
        await createAtomically(file, (tmp) => makeRawVolume(tmp, bytes, { encryption: opts.encryption, timeoutMs: 60_000, volumeId }, makeSparseFile));
      }
      const have = await fileBytes(file);
      if (have !== bytes) {
        throw errors.volumeInvalidState(volumeId, `already created with ${String(have)} bytes`, `create with ${bytes} bytes`);
      }
      const encryption = await checkEncrypted(volumeId, file, opts.encryption);
      const dev = await this.ensureLoop(volumeId);
      return { volumeId, bytes, connection: this.spec(volumeId, dev), ...(encryption ? { encryption } : {}) };
    });
  }

  /** Grow the backing storage (the file) only; the host makes the loop device see it (rescan). */
  async extend(volumeId: string, bytes: number): Promise<number> {
    checkVolumeId(volumeId);
    checkBytes(bytes);
    checkFits(volumeId, bytes, await this.maxBytes(), 'the volume pool (its largest file)');
    return this.lock.run(volumeId, async () => {
      const file = this.pathOf(volumeId);
      const current = await fileBytes(file);
      if (current === undefined) throw errors.volumeNotFound(volumeId);
      if (bytes < current) throw errors.shrinkRefused(volumeId, bytes, current, 'the volume has');
      if (bytes > current) await growVolumeFile(file, bytes, volumeId);
      const after = await fileBytes(file);
      if (after === undefined) throw errors.volumeNotFound(volumeId);
      return after;
    });
  }

  /**
   * The storage size in bytes: the backing file's, not the loop device's (which changes only on the host's rescan).
   * VolumeNotFound (404) without a file.
   */
  async getBytes(volumeId: string): Promise<number> {
    const bytes = await fileBytes(this.pathOf(volumeId));
    if (bytes === undefined) throw errors.volumeNotFound(volumeId);
    return bytes;
  }

  /**
   * A `block` AttachSpec with the volume's loop device, attaching one if it has none (Cinder's ensure_export).
   * VolumeNotFound (404) without a file; BackendFailed if losetup fails.
   */
  async connection(volumeId: string): Promise<AttachSpec> {
    checkVolumeId(volumeId);
    return this.lock.run(volumeId, async () => {
      if ((await fileBytes(this.pathOf(volumeId))) === undefined) throw errors.volumeNotFound(volumeId);
      return this.spec(volumeId, await this.ensureLoop(volumeId));
    });
  }

  /** What is at the volume's backing file (StorageInspection). InvalidInput (400) for a bad id, BackendFailed when it cannot be looked at. */
  async inspectStorage(volumeId: string): Promise<StorageInspection> {
    return inspectPath(this.pathOf(volumeId));
  }

  /** Detach the volume's loop devices, then remove its file. Idempotent. */
  async delete(volumeId: string): Promise<void> {
    checkVolumeId(volumeId);
    return this.lock.run(volumeId, async () => {
      const file = this.pathOf(volumeId);
      if ((await fileBytes(file)) !== undefined) {
        for (const dev of await this.loopDevices(file)) await this.detach(dev, file);
      }
      await removeFile(file);
    });
  }

  /** Whether the backing file exists. InvalidInput (400) for an id that cannot name one. */
  async exists(volumeId: string): Promise<boolean> {
    return (await fileBytes(this.pathOf(volumeId))) !== undefined;
  }
}
