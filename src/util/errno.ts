/**
 * Host failures by errno: the one table that says, for every layer touching files, devices or
 * sockets (the storage backends, the virt drivers, the lab), whether an operating-system error is
 * final or uncertain (errors.ts) and how to name it publicly, without a path.
 *
 * Why each class:
 * - ENOSPC, EDQUOT: uncertain. Space can be freed (or a quota raised) without changing the
 *   request, and every storage step here is idempotent (truncate, link, stat), so trying again is
 *   safe; the extend's deadline ends it with this as the last cause if nobody frees space.
 * - EFBIG: final. The file would exceed what its filesystem can hold; the same size fails again.
 *   Callers that know the requested size turn it into SizeLimitExceeded (400) with the limit.
 * - EACCES, EPERM, EROFS: final. Permissions and read-only mounts do not change by retrying.
 * - ENOENT, ENOTDIR, ENODEV, ENXIO: final. What the operation needs is gone.
 * - EIO: uncertain (decided): on network storage (NFS soft mounts, iSCSI, multipath) it is what a
 *   path that flaps returns, and it passes; on a local disk that is failing it repeats, and then
 *   the deadline reports EIO as the last cause. No operation here leaves a half-done state behind
 *   on EIO (a truncate or a stat either happened or did not), so a retry cannot make things worse.
 * - EBUSY, EAGAIN, EINTR, ETIMEDOUT, EMFILE, ENFILE, ENOMEM: uncertain (a busy device, a full fd
 *   table, a signal): they depend on the moment, not on the request.
 * - ECONNREFUSED, ECONNRESET, EPIPE: uncertain: a daemon (libvirtd, tgtd) that is restarting.
 * - Anything else: final, as in external-resizer: retrying what nobody understood only hides it.
 */

/** How a host failure is classified (see the table above): final or uncertain, and a public reason without a path. */
export interface ErrnoClass {
  final: boolean;
  /** A public reason: what went wrong, never where (no path). */
  reason: string;
}

export const ERRNO_CLASSES: Readonly<Record<string, ErrnoClass>> = {
  ENOSPC: { final: false, reason: 'no space left on the storage' },
  EDQUOT: { final: false, reason: 'the storage quota is exhausted' },
  EFBIG: { final: true, reason: 'the file would be larger than its filesystem can hold' },
  EACCES: { final: true, reason: 'permission denied' },
  EPERM: { final: true, reason: 'operation not permitted' },
  EROFS: { final: true, reason: 'the storage is mounted read-only' },
  ENOENT: { final: true, reason: 'a file or device it needs does not exist' },
  ENOTDIR: { final: true, reason: 'a directory it needs is not a directory' },
  ENODEV: { final: true, reason: 'the device does not exist' },
  ENXIO: { final: true, reason: 'the device does not exist' },
  EIO: { final: false, reason: 'an I/O error on the storage' },
  EBUSY: { final: false, reason: 'the device or resource is busy' },
  EAGAIN: { final: false, reason: 'the resource is temporarily unavailable' },
  EINTR: { final: false, reason: 'the operation was interrupted' },
  ETIMEDOUT: { final: false, reason: 'the operation timed out' },
  EMFILE: { final: false, reason: 'too many open files in the service' },
  ENFILE: { final: false, reason: 'too many open files on the host' },
  ENOMEM: { final: false, reason: 'the host is out of memory' },
  ECONNREFUSED: { final: false, reason: 'the connection was refused (is the daemon running?)' },
  ECONNRESET: { final: false, reason: 'the connection was reset' },
  EPIPE: { final: false, reason: 'the connection was closed' },
};

/** What an error with an unknown or no errno is: final. */
export const UNKNOWN_ERRNO_CLASS: ErrnoClass = { final: true, reason: 'the host refused the operation' };

/** The errno name (`ENOSPC`) of a Node.js system error, if it has one. */
export function errnoOf(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = (err as NodeJS.ErrnoException).code;
  return typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) ? code : undefined;
}

/** The class of a failure by its errno, with the errno itself when there is one. */
export function classifyErrno(err: unknown): ErrnoClass & { errno?: string } {
  const errno = errnoOf(err);
  if (errno === undefined) return UNKNOWN_ERRNO_CLASS;
  const known = Object.hasOwn(ERRNO_CLASSES, errno) ? ERRNO_CLASSES[errno] : undefined;
  return { ...(known ?? UNKNOWN_ERRNO_CLASS), errno };
}

/** `what` failed, in public words: `cannot grow the volume file: no space left on the storage (ENOSPC)`. */
export function errnoReason(what: string, err: unknown): string {
  const c = classifyErrno(err);
  return `cannot ${what}: ${c.reason}${c.errno ? ` (${c.errno})` : ''}`;
}
