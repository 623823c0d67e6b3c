/**
 * File disks as the virt drivers see them: the host's qcow2/raw size reader (src/host/qcow2.ts,
 * re-exported here) and growing a disk file with the drivers' classification into DriverFailed.
 */
import { errors } from '../errors.js';
import { growFile } from '../host/files.js';
import { classifyErrno, errnoOf, errnoReason } from '../util/errno.js';

export { fileDiskBytes, fileDiskBytesSync } from '../host/qcow2.js';

/**
 * Grow the disk file at `path` to `bytes` (never shrinks). A missing file is left alone (the
 * fake driver's inventory paths may be informational only: its recorded sizes stay); any other
 * failure is a DriverFailed, final or uncertain by errno, with the path only in `detail`.
 */
export async function growDiskFile(path: string, bytes: number): Promise<void> {
  try {
    await growFile(path, bytes);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return;
    throw errors.driverFailed(errnoReason('grow the disk file', err), { final: classifyErrno(err).final, cause: err, detail: `${path}: ${(err as Error).message}` });
  }
}
