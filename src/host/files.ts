/**
 * File operations shared by the virt drivers and the storage backends.
 *
 * Contract: sizes in bytes; failures reject with the Node.js system error (its errno), which the
 * caller classifies with src/util/errno.ts (the backends into BackendFailed or
 * SizeLimitExceeded on EFBIG, the fake driver into DriverFailed).
 */
import { stat, truncate } from 'node:fs/promises';

/**
 * Grow the file at `path` to `bytes` (sparse; never shrinks: a file already that large is left
 * alone). Resolves with the size before and after. Rejects with the system error: ENOENT if the
 * file is missing (truncate never creates one), EFBIG beyond the filesystem's largest file, ….
 */
export async function growFile(path: string, bytes: number): Promise<{ before: number; after: number }> {
  const before = (await stat(path)).size;
  if (before >= bytes) return { before, after: before };
  await truncate(path, bytes);
  return { before, after: bytes };
}
