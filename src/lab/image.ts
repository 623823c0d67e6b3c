/** The test guest's image: a Debian kernel and a busybox initramfs, built once into the cache. */
import { createHash, randomUUID } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { LAB_SCRIPTS } from './dirs.js';
import { aptUpdate } from './packages.js';
import { run, runLogged, safeRead } from './proc.js';

/** Kernel command line of the test guest. `quiet` keeps boot fast (serial output is slow under
 * TCG); the guest's /init sets /proc/sys/kernel/printk to 7 so resize messages still show. */
export const GUEST_CMDLINE = 'console=ttyS0 panic=-1 quiet';

/** sha256 (16 hex digits) of the guest build scripts: a change means a new initramfs. */
export function guestSourceHash(): string {
  const h = createHash('sha256');
  for (const f of ['build-guest.sh', 'guest-init.sh']) h.update(safeRead(join(LAB_SCRIPTS, f)));
  return h.digest('hex').slice(0, 16);
}

/** A built guest image: kernel version, and absolute paths of the kernel and the initramfs. */
export interface GuestImage {
  kernelVersion: string;
  kernel: string;
  initrd: string;
}

/**
 * Build the guest kernel + initramfs once into `<cacheDir>/guest/<kver>/` (reused when present).
 * Throws if the build fails (the message names its log).
 */
export async function buildGuestImage(cacheDir: string, opts: { install?: boolean; log?: (m: string) => void } = {}): Promise<GuestImage> {
  const log = opts.log ?? (() => {});
  const guestCache = join(cacheDir, 'guest');
  mkdirSync(guestCache, { recursive: true });
  // apt-cache needs package lists to resolve linux-image-amd64 (a fresh container has none).
  const known = await run('apt-cache', ['depends', 'linux-image-amd64']);
  if (!/Depends: linux-image-\d/.test(known.stdout) && opts.install !== false && process.getuid?.() === 0) {
    await aptUpdate(log);
  }
  const logFile = join(guestCache, 'build.log');
  const resultFile = join(guestCache, `.result.${process.pid}.${randomUUID()}`);
  const started = Date.now();
  let last = '';
  try {
    await runLogged('sh', [join(LAB_SCRIPTS, 'build-guest.sh'), guestCache, resultFile], logFile, { timeoutMs: 900_000 });
    last = safeRead(resultFile).trim();
  } finally {
    rmSync(resultFile, { force: true });
  }
  if (!/^\S+ \/\S+ \/\S+$/.test(last)) throw new Error(`build-guest.sh gave no result; see ${logFile}`);
  const [kernelVersion, kernel, initrd] = last.split(' ') as [string, string, string];
  log(`guest image ${kernelVersion} ready in ${Date.now() - started} ms`);
  return { kernelVersion, kernel, initrd };
}
