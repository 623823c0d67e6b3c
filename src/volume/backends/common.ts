/** Helpers shared by the storage backends: input checks, file sizes, atomic creation, per-volume locks. */
import { qcow2VirtualBytes as qcow2HeaderBytes } from '../../virt/image.js';
import { randomBytes } from 'node:crypto';
import { chmod, link, mkdir, open, stat, truncate, unlink } from 'node:fs/promises';
import { errors } from '../../errors.js';
import { maxFileBytes } from '../../util/fsLimits.js';

/**
 * QEMU's qcow2 limit with the default 64 KiB clusters (its L1 table caps at 32 MiB): measured
 * with qemu-img 7.2, 2 PiB is created and 4 PiB refused ("image size is too large").
 */
export const QCOW2_MAX_BYTES = 2 ** 51;

/** The largest raw file the filesystem of `dir` holds (the directory is created if missing). */
export async function rawFileLimit(dir: string): Promise<number> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return await maxFileBytes(dir);
  } catch (err) {
    throw errors.backendFailed('cannot measure the largest volume the storage holds', { cause: err, detail: `${dir}: ${(err as Error).message}` });
  }
}

/** SizeLimitExceeded (400) when `bytes` is above `limit`; `what` names the storage. */
export function checkFits(volumeId: string, bytes: number, limit: number, what: string): void {
  if (bytes > limit) throw errors.sizeLimitExceeded(volumeId, bytes, limit, what);
}

/** Volume ids become file names (and IQN suffixes): keep them to a safe alphabet. */
const VOLUME_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

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
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}

/** The size of a file, or undefined if it does not exist. */
export async function fileBytes(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw errors.backendFailed(`stat ${path}: ${(err as Error).message}`, { cause: err });
  }
}

export async function fileExists(path: string): Promise<boolean> {
  return (await fileBytes(path)) !== undefined;
}

/** Unlink, ignoring a file that is already gone. */
export async function removeFile(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return;
    throw errors.backendFailed(`unlink ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** Grow (never shrink) a file to `bytes`; sparse. */
export async function growFile(path: string, bytes: number): Promise<void> {
  const now = await fileBytes(path);
  if (now === undefined) throw errors.backendFailed(`${path} vanished while growing it`);
  if (now >= bytes) return;
  try {
    await truncate(path, bytes);
  } catch (err) {
    throw errors.backendFailed(`truncate ${path} to ${bytes}: ${(err as Error).message}`, { cause: err });
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
      throw errors.backendFailed(`chmod ${tmp}: ${(err as Error).message}`, { cause: err });
    }
    try {
      await link(tmp, path);
      return true;
    } catch (err) {
      if (isErrno(err, 'EEXIST')) return false;
      throw errors.backendFailed(`link ${tmp} ${path}: ${(err as Error).message}`, { cause: err });
    }
  } finally {
    await removeFile(tmp).catch(() => undefined);
  }
}

/** Mode of volume files (guest data) and of the pool directories that hold them. */
export const VOLUME_FILE_MODE = 0o600;
export const VOLUME_DIR_MODE = 0o700;

/** A sparse raw file of exactly `bytes`. */
export async function makeSparseFile(path: string, bytes: number): Promise<void> {
  try {
    const fh = await open(path, 'wx', VOLUME_FILE_MODE);
    try {
      await fh.truncate(bytes);
    } finally {
      await fh.close();
    }
  } catch (err) {
    throw errors.backendFailed(`create ${path} (${bytes} bytes): ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The virtual size of a qcow2 image from its header (no image lock needed, so it works while
 * QEMU has the image open). Undefined if the file does not exist.
 */
export async function qcow2VirtualBytes(path: string): Promise<number | undefined> {
  try {
    return await qcow2HeaderBytes(path);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw errors.backendFailed(`${path}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Serialises operations per key inside this process (two requests for the same volume never
 * interleave their steps). Across processes the backends rely on idempotent steps instead.
 */
export { KeyedMutex as KeyedLock } from '../../util/keyedMutex.js';
