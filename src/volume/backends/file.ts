/**
 * FileBackend: a volume is one file, `<dir>/<volumeId>.raw` (sparse) or `<dir>/<volumeId>.qcow2`,
 * that QEMU opens itself (Nova's NFS/remotefs way, AttachSpec kind `file`).
 *
 * Growing: `extend()` is for DETACHED volumes only (truncate for raw, `qemu-img resize` for qcow2).
 * While a file volume is attached to a running QEMU, QEMU holds the image lock and must grow the
 * file itself (`block_resize` / `virsh blockresize`): the volume service then skips the backend
 * and lets the compute driver's `extendAttached` do it. An attempt to `extend()` a locked qcow2
 * fails with BackendFailed (qemu-img cannot take the write lock); a raw file would be truncated
 * under QEMU's feet, which is exactly what must not happen, hence the rule.
 *
 * `getBytes` reads the qcow2 virtual size from the image header (no lock needed), so it measures
 * correctly while QEMU has the image open and after QEMU grew it.
 */
import { resolve } from 'node:path';
import { errors } from '../../errors.js';
import type { AttachSpec } from '../../virt/driver.js';
import type { BackendVolume, CreateOptions, StorageInspection, VolumeBackend } from './backend.js';
import { checkEncrypted, makeRawVolume } from './luks.js';
import {
  QCOW2_MAX_BYTES,
  checkBytes,
  checkFits,
  rawFileLimit,
  checkVolumeId,
  createAtomically,
  fileBytes,
  growVolumeFile,
  makeSparseFile,
  qcow2VolumeBytes,
  removeFile,
  ensureDir,
  inspectPath,
} from './common.js';
import { exec } from './exec.js';
import { KeyedMutex } from '../../util/keyedMutex.js';

/** The image format of a file volume: raw (sparse) or qcow2. */
export type FileFormat = 'raw' | 'qcow2';

/** Where FileBackend keeps its files, the default format, and qemu-img's timeout in ms. */
export interface FileBackendOptions {
  /** The pool directory (created if missing). */
  dir: string;
  /** Format for `create` without an explicit one (default raw). */
  defaultFormat?: FileFormat;
  /** Timeout for qemu-img (default 60 s). */
  timeoutMs?: number;
}

const FORMATS: readonly FileFormat[] = ['raw', 'qcow2'];

/**
 * File volumes (see the file header): `<dir>/<volumeId>.raw` or `.qcow2`, attached as a `file` disk QEMU opens itself.
 * Errors as VolumeBackend's; one operation per volume at a time (KeyedMutex).
 */
export class FileBackend implements VolumeBackend {
  readonly name = 'file';
  readonly attachedGrowth = 'hypervisor' as const;
  readonly dir: string;
  readonly defaultFormat: FileFormat;
  private readonly timeoutMs: number;
  private readonly lock = new KeyedMutex();

  constructor(opts: FileBackendOptions) {
    this.dir = resolve(opts.dir);
    this.defaultFormat = opts.defaultFormat ?? 'raw';
    this.timeoutMs = opts.timeoutMs ?? 60_000;
  }

  /**
   * The largest volume in bytes: QCOW2_MAX_BYTES (2 PiB) for qcow2, else the largest file the pool's filesystem holds
   * (measured; BackendFailed if it cannot be).
   */
  async maxBytes(opts: { format?: FileFormat } = {}): Promise<number> {
    return (opts.format ?? this.defaultFormat) === 'qcow2' ? QCOW2_MAX_BYTES : rawFileLimit(this.dir);
  }

  private async checkFits(volumeId: string, bytes: number, format: FileFormat): Promise<void> {
    checkFits(volumeId, bytes, await this.maxBytes({ format }), format === 'qcow2' ? 'a qcow2 image' : 'the file volume pool (its largest file)');
  }

  /** The file a volume of the given format lives in. */
  pathOf(volumeId: string, format: FileFormat): string {
    return `${this.dir}/${volumeId}.${format}`;
  }

  /** Which file holds the volume, if any (derived from the file names, no database). */
  async locate(volumeId: string): Promise<{ format: FileFormat; path: string } | undefined> {
    checkVolumeId(volumeId);
    for (const format of FORMATS) {
      const path = this.pathOf(volumeId, format);
      if ((await fileBytes(path)) !== undefined) return { format, path };
    }
    return undefined;
  }

  private async mustLocate(volumeId: string): Promise<{ format: FileFormat; path: string }> {
    const found = await this.locate(volumeId);
    if (!found) throw errors.volumeNotFound(volumeId);
    return found;
  }

  private async measure(path: string, format: FileFormat): Promise<number | undefined> {
    return format === 'qcow2' ? qcow2VolumeBytes(path) : fileBytes(path);
  }

  private spec(volumeId: string, format: FileFormat, path: string): AttachSpec {
    return { volumeId, kind: 'file', format, source: path };
  }

  /**
   * Create the file of exactly `bytes` (raw: sparse; qcow2: `qemu-img create`), atomically and 0600. Idempotent for the same
   * size and format; another one throws VolumeInvalidState (409). Also InvalidInput, SizeLimitExceeded (400), BackendFailed.
   */
  async create(volumeId: string, bytes: number, opts: CreateOptions = {}): Promise<BackendVolume> {
    checkVolumeId(volumeId);
    checkBytes(bytes);
    const format = opts.format ?? (opts.encryption ? 'raw' : this.defaultFormat);
    if (!FORMATS.includes(format)) throw errors.invalidInput(`Unknown volume format ${String(format)}.`);
    if (opts.encryption && format !== 'raw') throw errors.invalidInput('An encrypted volume is raw underneath: format must be raw.');
    await this.checkFits(volumeId, bytes, format);
    return this.lock.run(volumeId, async () => {
      await ensureDir(this.dir);
      let found = await this.locate(volumeId);
      if (!found) {
        const path = this.pathOf(volumeId, format);
        await createAtomically(path, async (tmp) => {
          if (format === 'raw') await makeRawVolume(tmp, bytes, { encryption: opts.encryption, timeoutMs: this.timeoutMs, volumeId }, makeSparseFile);
          else await exec('qemu-img', ['create', '-q', '-f', 'qcow2', tmp, String(bytes)], { timeoutMs: this.timeoutMs, what: 'create the qcow2 image' });
        });
        found = await this.mustLocate(volumeId);
      }
      const have = await this.measure(found.path, found.format);
      if (found.format !== format || have !== bytes) {
        throw errors.volumeInvalidState(
          volumeId,
          `already created as ${found.format} with ${String(have)} bytes`,
          `create as ${format} with ${bytes} bytes`,
        );
      }
      const encryption = await checkEncrypted(volumeId, found.path, opts.encryption);
      return { volumeId, bytes, connection: this.spec(volumeId, found.format, found.path), ...(encryption ? { encryption } : {}) };
    });
  }

  /** Grow a DETACHED file volume (see the module comment for attached ones). */
  async extend(volumeId: string, bytes: number): Promise<number> {
    checkVolumeId(volumeId);
    checkBytes(bytes);
    return this.lock.run(volumeId, async () => {
      const { format, path } = await this.mustLocate(volumeId);
      await this.checkFits(volumeId, bytes, format);
      const current = await this.measure(path, format);
      if (current === undefined) throw errors.volumeNotFound(volumeId);
      if (bytes < current) throw errors.shrinkRefused(volumeId, bytes, current, 'the volume has');
      if (bytes === current) return current;
      if (format === 'raw') {
        await growVolumeFile(path, bytes, volumeId);
      } else {
        // Final on failure: qemu-img exits 1 for a locked image and for a bad one alike (the
        // workflow looks at the server's state itself when an offline image turns out locked).
        await exec('qemu-img', ['resize', '-q', '-f', 'qcow2', path, String(bytes)], { timeoutMs: this.timeoutMs, what: 'resize the qcow2 image' });
      }
      const after = await this.measure(path, format);
      if (after === undefined) throw errors.volumeNotFound(volumeId);
      return after;
    });
  }

  /**
   * The volume's size in bytes now: the raw file's size or the qcow2 virtual size from its header. VolumeNotFound (404) if
   * no file holds it.
   */
  async getBytes(volumeId: string): Promise<number> {
    const { format, path } = await this.mustLocate(volumeId);
    const bytes = await this.measure(path, format);
    if (bytes === undefined) throw errors.volumeNotFound(volumeId);
    return bytes;
  }

  /** A `file` AttachSpec with the file's path and format. VolumeNotFound (404) if no file holds it. */
  async connection(volumeId: string): Promise<AttachSpec> {
    const { format, path } = await this.mustLocate(volumeId);
    return this.spec(volumeId, format, path);
  }

  /**
   * What is at the volume's file (StorageInspection): at `<dir>/<volumeId>.<format>` when the format is given, else the
   * first of `.raw`, `.qcow2` that holds anything (the default format's path when neither does). InvalidInput (400) for a
   * bad id, BackendFailed when the path cannot be looked at.
   */
  async inspectStorage(volumeId: string, opts: { format?: FileFormat } = {}): Promise<StorageInspection> {
    checkVolumeId(volumeId);
    if (opts.format) return inspectPath(this.pathOf(volumeId, opts.format));
    for (const format of FORMATS) {
      const found = await inspectPath(this.pathOf(volumeId, format));
      if (found.type !== 'absent') return found;
    }
    return { path: this.pathOf(volumeId, this.defaultFormat), type: 'absent', bytes: 0 };
  }

  /** Remove the volume's file (either format). Idempotent: a missing file is no error. */
  async delete(volumeId: string): Promise<void> {
    checkVolumeId(volumeId);
    return this.lock.run(volumeId, async () => {
      for (const format of FORMATS) await removeFile(this.pathOf(volumeId, format));
    });
  }

  /** Whether a file holds the volume. InvalidInput (400) for an id that cannot name one. */
  async exists(volumeId: string): Promise<boolean> {
    return (await this.locate(volumeId)) !== undefined;
  }
}
