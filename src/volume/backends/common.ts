/**
 * Helpers shared by the storage backends: input checks, file sizes, atomic creation, per-volume
 * locks, and the classification of filesystem failures (by errno, src/util/errno.ts) into
 * BackendFailed errors whose public reason names no path (the path goes in `detail`).
 */
import { randomBytes } from 'node:crypto';
import { chmod, link, mkdir, open, stat, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { errors, type ServiceError } from '../../errors.js';
import type { StorageInspection } from './backend.js';
import { growFile as growHostFile } from '../../host/files.js';
import { NotQcow2Image, qcow2VirtualBytes } from '../../host/qcow2.js';
import { classifyErrno, errnoOf, errnoReason } from '../../util/errno.js';
import { maxFileBytes } from '../../util/fsLimits.js';

/**
 * QEMU's qcow2 limit with the default 64 KiB clusters (its L1 table caps at 32 MiB): measured
 * with qemu-img 7.2, 2 PiB is created and 4 PiB refused ("image size is too large").
 */
export const QCOW2_MAX_BYTES = 2 ** 51;

/**
 * A filesystem operation on `path` failed: BackendFailed, final or uncertain by errno, with a
 * public reason (`cannot grow the volume file: no space left on the storage (ENOSPC)`) and the
 * path and the system's message in `detail`.
 */
export function fsFailed(what: string, path: string, err: unknown): ServiceError {
  return errors.backendFailed(errnoReason(what, err), {
    final: classifyErrno(err).final,
    cause: err,
    detail: `${path}: ${(err as Error)?.message ?? String(err)}`,
  });
}

/**
 * EFBIG while making `path` `bytes` long: the file would exceed what its filesystem holds. The
 * limit is measured again to name it (SizeLimitExceeded, 400, final); if the measurement does not
 * explain the refusal, it is a final BackendFailed with the errno.
 */
export async function tooLarge(what: string, path: string, bytes: number, err: unknown, volumeId?: string): Promise<ServiceError> {
  const limit = await maxFileBytes(dirname(path)).catch(() => undefined);
  if (limit !== undefined && bytes > limit) return errors.sizeLimitExceeded(volumeId, bytes, limit, 'the volume pool (its largest file)');
  return fsFailed(what, path, err);
}

/** Create the pool directory (0700) if it is missing. */
export async function ensureDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: VOLUME_DIR_MODE });
  } catch (err) {
    throw fsFailed('create the volume pool directory', dir, err);
  }
}

/** The largest raw file the filesystem of `dir` holds (the directory is created if missing). */
export async function rawFileLimit(dir: string): Promise<number> {
  // The limit is measured once per directory (fsLimits caches it): the directory is made only
  // when the measurement finds it missing, not on every extend (a mkdir on its hot path).
  try {
    return await maxFileBytes(dir);
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw fsFailed('measure the largest volume the storage holds', dir, err);
  }
  await ensureDir(dir);
  try {
    return await maxFileBytes(dir);
  } catch (err) {
    throw fsFailed('measure the largest volume the storage holds', dir, err);
  }
}

/** SizeLimitExceeded (400) when `bytes` is above `limit`; `what` names the storage. */
export function checkFits(volumeId: string, bytes: number, limit: number, what: string): void {
  if (bytes > limit) throw errors.sizeLimitExceeded(volumeId, bytes, limit, what);
}

/** Volume ids become file names (and IQN suffixes): keep them to a safe alphabet. */
const VOLUME_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * InvalidInput (400) unless `volumeId` matches `pattern` (default: 1–128 of `A-Z a-z 0-9 . _ -`, not starting with a
 * punctuation character) and holds no `..`: volume ids become file names and IQN suffixes.
 */
export function checkVolumeId(volumeId: string, pattern: RegExp = VOLUME_ID): void {
  if (typeof volumeId !== 'string' || !pattern.test(volumeId) || volumeId.includes('..')) {
    throw errors.invalidInput(`Invalid volume id ${JSON.stringify(volumeId)}: expected ${pattern.source}.`);
  }
}

/** Sizes are whole 512-byte sectors, positive and exactly representable. */
export function checkBytes(bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % 512 !== 0) {
    throw errors.invalidInput(`Invalid size ${String(bytes)}: bytes must be a positive multiple of 512.`);
  }
}

function isErrno(err: unknown, code: string): boolean {
  return errnoOf(err) === code;
}

/** The size of a file, or undefined if it does not exist. */
export async function fileBytes(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw fsFailed('read the size of the volume file', path, err);
  }
}

/**
 * What is at `path` now (StorageInspection; symlinks followed, a dangling one is `absent`).
 * BackendFailed (by errno) when it cannot be looked at (EACCES, EIO).
 */
export async function inspectPath(path: string): Promise<StorageInspection> {
  try {
    const st = await stat(path);
    if (st.isFile()) return { path, type: 'file', bytes: st.size };
    return { path, type: st.isDirectory() ? 'directory' : 'other', bytes: 0 };
  } catch (err) {
    // ENOTDIR: a file stands where the pool directory should be; the volume's storage is not there either.
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return { path, type: 'absent', bytes: 0 };
    throw fsFailed('look at the storage of the volume', path, err);
  }
}

/** Whether the file exists. Throws BackendFailed (by errno) when it cannot be checked. */
export async function fileExists(path: string): Promise<boolean> {
  return (await fileBytes(path)) !== undefined;
}

/**
 * Unlink, ignoring a file that is already gone, and a directory standing at `path`: that is no
 * volume's storage (storageChecked.ts), someone put it there by hand, and it is left to them (the
 * data dir's check of volume files skips directories too).
 */
export async function removeFile(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'EISDIR')) return;
    throw fsFailed('remove the volume file', path, err);
  }
}

/**
 * Grow (never shrink) the volume file at `path` to `bytes`; sparse (src/host/files.ts).
 * Errors: a file that vanished → final BackendFailed; EFBIG → SizeLimitExceeded (400) when the
 * filesystem's limit explains it; any other errno → BackendFailed by errno (fsFailed).
 */
export async function growVolumeFile(path: string, bytes: number, volumeId?: string): Promise<void> {
  try {
    await growHostFile(path, bytes);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) {
      throw errors.backendFailed('cannot grow the volume file: it vanished while growing it', { cause: err, detail: `${path} is gone` });
    }
    if (isErrno(err, 'EFBIG')) throw await tooLarge('grow the volume file', path, bytes, err, volumeId);
    throw fsFailed('grow the volume file', path, err);
  }
}

/**
 * Create `path` atomically: `build(tmp)` fills a temporary file next to it, which is then
 * hard-linked into place (never overwriting) and unlinked. So the final name exists only once
 * the content is complete: a crash leaves at most a `*.tmp-*` file, never a half-made volume.
 * Returns false if `path` already existed (another creator won).
 *
 * The volume is made 0600 before it appears, whatever made it: guest data is private, and a
 * subprocess such as qemu-img creates files under its own umask.
 */
export async function createAtomically(path: string, build: (tmp: string) => Promise<void>): Promise<boolean> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await build(tmp);
    try {
      await chmod(tmp, VOLUME_FILE_MODE);
    } catch (err) {
      throw fsFailed('restrict the new volume file to its owner', tmp, err);
    }
    try {
      await link(tmp, path);
      return true;
    } catch (err) {
      if (isErrno(err, 'EEXIST')) return false;
      throw fsFailed('put the new volume file in place', `${tmp} -> ${path}`, err);
    }
  } finally {
    await removeFile(tmp).catch(() => undefined);
  }
}

/** Mode of volume files (guest data) and of the pool directories that hold them. */
export const VOLUME_FILE_MODE = 0o600;
export const VOLUME_DIR_MODE = 0o700;

/** A sparse raw file of exactly `bytes`. EFBIG → SizeLimitExceeded. */
export async function makeSparseFile(path: string, bytes: number, volumeId?: string): Promise<void> {
  try {
    const fh = await open(path, 'wx', VOLUME_FILE_MODE);
    try {
      await fh.truncate(bytes);
    } finally {
      await fh.close();
    }
  } catch (err) {
    if (isErrno(err, 'EFBIG')) throw await tooLarge('create the volume file', path, bytes, err, volumeId);
    throw fsFailed('create the volume file', path, err);
  }
}

/**
 * The virtual size in bytes of the qcow2 volume at `path`, from its header (src/host/qcow2.ts: no
 * image lock needed, so it works while QEMU has the image open). Undefined if the file does not
 * exist. Errors: not a qcow2 image → final BackendFailed; another errno → BackendFailed by errno.
 */
export async function qcow2VolumeBytes(path: string): Promise<number | undefined> {
  try {
    return await qcow2VirtualBytes(path);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    if (err instanceof NotQcow2Image) {
      // The file is there and readable, but its header is not qcow2's: final.
      throw errors.backendFailed('cannot read the qcow2 header of the volume: the file is not a qcow2 image', { cause: err, detail: `${path}: ${err.message}` });
    }
    throw fsFailed('read the qcow2 header of the volume', path, err);
  }
}
