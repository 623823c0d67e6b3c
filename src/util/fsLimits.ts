/**
 * The largest file a filesystem can hold, measured: ext4 with 4 KiB blocks stops at 16 TiB − 4 KiB
 * (EFBIG, "File too large"), XFS and tmpfs go far beyond any volume we accept. Knowing the limit
 * lets a backend or driver refuse a size it cannot hold with a clear 400 *before* it creates or
 * grows anything, instead of failing half-way with EFBIG.
 *
 * Measured by growing a sparse, empty temporary file with truncate(2) (no blocks are allocated)
 * and bisecting on EFBIG: ~45 syscalls, once per directory and process.
 */
import { randomBytes } from 'node:crypto';
import { open, unlink } from 'node:fs/promises';
import { join } from 'node:path';

/** Sizes are probed up to here (4 PiB): far above the API's 1 PiB maximum. */
export const PROBE_CEILING = 2 ** 52;

const cache = new Map<string, Promise<number>>();

/**
 * The largest size in bytes (a multiple of 512) a file in `dir` can be truncated to, capped at
 * PROBE_CEILING. `dir` must exist. Errors other than EFBIG/EINVAL (no permission, no space for the
 * inode) reject the promise, and are not cached.
 */
export function maxFileBytes(dir: string): Promise<number> {
  let p = cache.get(dir);
  if (!p) {
    p = probe(dir);
    cache.set(dir, p);
    p.catch(() => cache.delete(dir));
  }
  return p;
}

async function probe(dir: string): Promise<number> {
  const path = join(dir, `.size-probe-${process.pid}-${randomBytes(4).toString('hex')}`);
  const fh = await open(path, 'wx', 0o600);
  try {
    const fits = async (bytes: number): Promise<boolean> => {
      try {
        await fh.truncate(bytes);
        return true;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EFBIG' || code === 'EINVAL') return false;
        throw err;
      }
    };
    if (await fits(PROBE_CEILING)) return PROBE_CEILING;
    // Invariant: lo fits, hi does not; both multiples of 512.
    let lo = 0;
    let hi = PROBE_CEILING / 512;
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (await fits(mid * 512)) lo = mid;
      else hi = mid;
    }
    return lo * 512;
  } finally {
    await fh.close();
    await unlink(path).catch(() => undefined);
  }
}
