/**
 * Bringing the lab up and down: a private libvirtd, a tgtd and the guest image, recorded by pid
 * in `<dir>/lab.json`; labDown stops exactly that. Serialised per lab dir across processes.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { accelModeFromEnv, describeAccel, type AccelChoice, type AccelMode } from './accel.js';
import { labAccel } from './accelProbe.js';
import { defaultCacheDir, defaultLabDir } from './dirs.js';
import { GUEST_CMDLINE, buildGuestImage, guestSourceHash, type GuestImage } from './image.js';
import { libvirtAnswers, startLibvirtd, stopLibvirtd, type LabLibvirtd } from './libvirtd.js';
import { installPackages } from './packages.js';
import { pidAlive, pidIs, run, safeRead } from './proc.js';
import { startTgtd, stopTgtd, tgtControlAnswers, type LabTgtd } from './tgtd.js';

/** A running lab, as recorded in `<dir>/lab.json`. */
export interface LabInfo {
  dir: string;
  libvirtUri: string;
  libvirtSocket: string;
  libvirtdPid: number;
  tgtdPid: number;
  /** `127.0.0.1:3260` unless another (not ours) tgtd holds that port. */
  tgtPortal: string;
  /** tgtd's management channel (`tgtadm -C N`); 0 = the default /var/run/tgtd/socket.0. */
  tgtControlPort: number;
  kernel: string;
  initrd: string;
  cmdline: string;
  kernelVersion: string;
  cacheDir: string;
  /** Hash of the scripts that build the guest: a healthy lab whose hash differs gets a fresh image. */
  guestSourceHash: string;
  /** The accelerator the lab's guests run under, and why (src/lab/accel.ts). */
  accel: AccelChoice;
}

/** Options of labUp. */
export interface LabUpOptions {
  /** Lab directory (default `<repo>/.lab`). */
  dir?: string;
  /** Install missing Debian packages (default true). */
  install?: boolean;
  log?: (msg: string) => void;
  /** Cache for the guest kernel/initramfs and libvirt's QEMU capabilities. */
  cacheDir?: string;
  /** KVM, TCG, or probe once per lab dir (default: `$ONLINE_EXTEND_ACCEL`, else auto). */
  accel?: AccelMode;
}

const MARKER = '.oe-lab';

function labJsonPath(dir: string): string {
  return join(dir, 'lab.json');
}

/** The lab recorded in `dir` (default `<repo>/.lab`), or undefined. Does not check health. */
export function readLab(dir: string = defaultLabDir()): LabInfo | undefined {
  const text = safeRead(labJsonPath(resolve(dir)));
  if (!text) return undefined;
  try {
    return JSON.parse(text) as LabInfo;
  } catch {
    return undefined;
  }
}

/** True if every part of the lab answers. */
export async function labHealthy(info: LabInfo): Promise<boolean> {
  if (!pidIs(info.libvirtdPid, 'libvirtd') || !pidIs(info.tgtdPid, 'tgtd')) return false;
  if (!existsSync(info.kernel) || !existsSync(info.initrd)) return false;
  if (!(await tgtControlAnswers(info.tgtControlPort))) return false;
  return libvirtAnswers(info.libvirtUri);
}

/**
 * Serialise labUp/labDown on one lab dir across processes: an atomic mkdir under the cache
 * (not next to the dir, so nothing appears in the repo). A lock whose holder died is taken over.
 */
async function withLabLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const locks = join(defaultCacheDir(), 'locks');
  mkdirSync(locks, { recursive: true });
  const lock = join(locks, createHash('sha256').update(dir).digest('hex').slice(0, 16));
  const deadline = Date.now() + 15 * 60_000;
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(join(lock, 'pid'), `${process.pid}\n${dir}\n`);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number.parseInt(safeRead(join(lock, 'pid')), 10);
      if (Number.isFinite(holder) && !pidAlive(holder)) {
        rmSync(lock, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`lab dir ${dir} is locked by pid ${holder} (${lock})`);
      await sleep(100);
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

/**
 * Bring the lab up in `opts.dir` (idempotent: a healthy lab is reused, its guest image refreshed
 * if the guest scripts changed; an unhealthy one is restarted). Throws if a part does not start;
 * what did start is stopped again.
 */
export async function labUp(opts: LabUpOptions = {}): Promise<LabInfo> {
  const dir = resolve(opts.dir ?? defaultLabDir());
  return withLabLock(dir, () => labUpLocked(dir, opts));
}

async function labUpLocked(dir: string, opts: LabUpOptions): Promise<LabInfo> {
  const log = opts.log ?? (() => {});
  const cacheDir = resolve(opts.cacheDir ?? defaultCacheDir());
  const mode = opts.accel ?? accelModeFromEnv();
  const t0 = Date.now();

  const existing = readLab(dir);
  if (existing) {
    if (await labHealthy(existing)) {
      if (existing.guestSourceHash === guestSourceHash() && existing.accel?.mode === mode) {
        log(`lab already up in ${dir}`);
        return existing;
      }
      // The guest's scripts changed since this lab came up: rebuild the image (the daemons stay).
      // A lab from before the accelerator probe, or asked for another mode, gets its accelerator.
      const image = existing.guestSourceHash === guestSourceHash() ? {} : await buildGuestImage(existing.cacheDir, { install: opts.install, log });
      const next = { ...existing, ...image, guestSourceHash: guestSourceHash() };
      const info: LabInfo = { ...next, accel: await labAccel(next, mode, { log }) };
      writeFileSync(labJsonPath(dir), JSON.stringify(info, null, 2) + '\n');
      log(`lab already up in ${dir}; guest image and accelerator checked: ${describeAccel(info.accel)}`);
      return info;
    }
    log(`lab in ${dir} is not healthy; restarting it`);
    await labDownLocked(dir, log);
  }

  if (opts.install !== false) await installPackages(log);

  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, MARKER), 'online-extend lab directory; removed by `lab down`\n');
  mkdirSync(join(dir, 'guests'), { recursive: true });

  // The guest build (cold: ~15 s, mostly the kernel download) and libvirtd's cold start (~4 s,
  // QEMU capability probe) are independent: run all three at once.
  let libvirtd: LabLibvirtd | undefined;
  let tgtd: LabTgtd | undefined;
  let image: GuestImage | undefined;
  try {
    const [i, l, t] = await Promise.allSettled([
      buildGuestImage(cacheDir, { install: opts.install, log }),
      startLibvirtd(dir, cacheDir, log),
      startTgtd(dir, log),
    ]);
    if (i.status === 'fulfilled') image = i.value;
    if (l.status === 'fulfilled') libvirtd = l.value;
    if (t.status === 'fulfilled') tgtd = t.value;
    for (const r of [i, l, t]) if (r.status === 'rejected') throw r.reason;
  } catch (err) {
    // Record what did start so labDown can stop it, then clean up.
    writePartial(dir, libvirtd?.pid, tgtd);
    await labDownLocked(dir, log).catch(() => {});
    throw err;
  }
  if (!libvirtd || !tgtd || !image) throw new Error('unreachable');

  const base = {
    dir,
    libvirtUri: libvirtd.uri,
    libvirtSocket: libvirtd.socket,
    libvirtdPid: libvirtd.pid,
    tgtdPid: tgtd.pid,
    tgtPortal: tgtd.portal,
    tgtControlPort: tgtd.control,
    kernel: image.kernel,
    initrd: image.initrd,
    cmdline: GUEST_CMDLINE,
    kernelVersion: image.kernelVersion,
    cacheDir,
    guestSourceHash: guestSourceHash(),
  };
  // Needs libvirtd and the guest image: after both are up. Never throws (falls back to TCG).
  const accel = await labAccel(base, mode, { log });
  const info: LabInfo = { ...base, accel };
  writeFileSync(labJsonPath(dir), JSON.stringify(info, null, 2) + '\n');
  log(`lab up in ${dir} after ${Date.now() - t0} ms; guests run under ${describeAccel(accel)}`);
  return info;
}

function writePartial(dir: string, libvirtdPid: number | undefined, tgtd: LabTgtd | undefined): void {
  const partial = { dir, libvirtdPid: libvirtdPid ?? 0, tgtdPid: tgtd?.pid ?? 0, tgtControlPort: tgtd?.control ?? 0 };
  try {
    writeFileSync(labJsonPath(dir), JSON.stringify(partial, null, 2) + '\n');
  } catch {
    /* dir gone */
  }
}

/** Loop devices (`/dev/loopN`) whose backing file lives under `dir`. */
export async function labLoopDevices(dir: string): Promise<string[]> {
  const r = await run('losetup', ['-l', '-n', '--raw', '-O', 'NAME,BACK-FILE']);
  if (r.code !== 0) return [];
  const prefix = `${resolve(dir)}/`;
  const out: string[] = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^(\S+)\s+(.*)$/.exec(line.trim());
    if (!m) continue;
    const back = (m[2] ?? '').replace(/ \(deleted\)$/, '');
    if (back.startsWith(prefix)) out.push(m[1] ?? '');
  }
  return out;
}

/** Stop what labUp started (by recorded pid), detach the lab's loop devices, remove the dir. Idempotent. */
export async function labDown(opts: { dir?: string; log?: (msg: string) => void } = {}): Promise<void> {
  const dir = resolve(opts.dir ?? defaultLabDir());
  if (!existsSync(dir)) return;
  await withLabLock(dir, () => labDownLocked(dir, opts.log ?? (() => {})));
}

async function labDownLocked(dir: string, log: (msg: string) => void): Promise<void> {
  if (!existsSync(dir)) return;
  const info = readLab(dir) as Partial<LabInfo> | undefined;

  // 1. Domains, then libvirtd, then any QEMU it left.
  await stopLibvirtd(dir, info?.libvirtdPid, log);

  // 2. tgtd (ignores SIGTERM while targets exist).
  if (info?.tgtdPid) await stopTgtd(info.tgtdPid, info.tgtControlPort ?? 0);

  // 3. Loop devices backed by files in the lab dir.
  for (const dev of await labLoopDevices(dir)) {
    log(`detaching ${dev}`);
    await run('losetup', ['-d', dev]);
  }

  // 4. The directory itself, only if it is recognisably a lab dir.
  if (existsSync(join(dir, MARKER)) || existsSync(labJsonPath(dir))) {
    rmSync(dir, { recursive: true, force: true });
  } else {
    log(`not removing ${dir}: no ${MARKER} marker`);
  }
}
