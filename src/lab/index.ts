/**
 * The test lab: a private libvirtd, a userspace iSCSI target (tgtd) and a tiny test guest that
 * reports the size of every disk it sees. Used by the real tests, CI, the benchmark and the demo.
 *
 * Nothing here touches the host's /etc or /var: libvirtd runs in a private mount namespace with
 * private directories bound over its own (scripts/lab/start-libvirtd.sh). Everything labUp starts
 * is recorded by pid in `<dir>/lab.json`; labDown stops exactly that.
 *
 * See /work/shared/notes/environment.md for the measured facts this relies on.
 */
import { spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, openSync, closeSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Guest } from './guest.js';
import { cmdlineOf, killAndWait, mustRun, pidAlive, pidIs, run, runLogged, safeRead, waitFor } from './proc.js';

export { Guest, GuestExecError, WaitForSizeTimeout, parseSizes, type GuestInit } from './guest.js';
export { run, pidAlive, waitFor, type RunResult } from './proc.js';

/** Repository root: this file is src/lab/index.ts or dist/lab/index.js, two levels down. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SCRIPTS = join(repoRoot, 'scripts', 'lab');

/** Debian packages the lab needs (all installed with --no-install-recommends). */
export const LAB_PACKAGES = [
  'qemu-system-x86',
  'qemu-utils',
  'libvirt-daemon',
  'libvirt-daemon-driver-qemu',
  'libvirt-clients',
  'libvirt-dev',
  'pkg-config',
  'tgt',
  'qemu-block-extra',
  'libiscsi-bin',
  'python3-libvirt',
  'busybox-static',
  'xz-utils',
  'cpio',
] as const;

/** Kernel command line of the test guest. `quiet` keeps boot fast (serial output is slow under
 * TCG); the guest's /init sets /proc/sys/kernel/printk to 7 so resize messages still show. */
export const GUEST_CMDLINE = 'console=ttyS0 panic=-1 quiet';

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
}

export interface LabUpOptions {
  dir?: string;
  /** Install missing Debian packages (default true). */
  install?: boolean;
  log?: (msg: string) => void;
  /** Cache for the guest kernel/initramfs and libvirt's QEMU capabilities. */
  cacheDir?: string;
}

export const defaultLabDir = (): string => join(repoRoot, '.lab');

/** `$OE_LAB_CACHE`, else `$XDG_CACHE_HOME/online-extend`, else `~/.cache/online-extend`. */
export function defaultCacheDir(): string {
  const env = process.env.OE_LAB_CACHE;
  if (env) return resolve(env);
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg ? resolve(xdg) : join(homedir(), '.cache'), 'online-extend');
}

// ---------------------------------------------------------------------------------------------
// Packages and the guest image

const aptEnv = (): NodeJS.ProcessEnv => ({ ...process.env, DEBIAN_FRONTEND: 'noninteractive' });
let aptUpdated = false;

async function aptUpdate(log: (m: string) => void): Promise<void> {
  if (aptUpdated) return;
  log('apt-get update');
  await mustRun('apt-get', ['-o', 'DPkg::Lock::Timeout=300', 'update'], { timeoutMs: 600_000, env: aptEnv() });
  aptUpdated = true;
}

/** The packages of LAB_PACKAGES that dpkg does not report as installed. */
export async function missingPackages(pkgs: readonly string[] = LAB_PACKAGES): Promise<string[]> {
  const r = await run('dpkg-query', ['-W', '-f=${Package} ${db:Status-Status}\n', ...pkgs]);
  const installed = new Set(
    r.stdout
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter((p) => p[1] === 'installed')
      .map((p) => p[0]),
  );
  return pkgs.filter((p) => !installed.has(p));
}

export async function installPackages(log: (m: string) => void): Promise<void> {
  const missing = await missingPackages();
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) throw new Error(`missing packages (need root to install): ${missing.join(' ')}`);
  await aptUpdate(log);
  log(`apt-get install ${missing.join(' ')}`);
  await mustRun(
    'apt-get',
    ['install', '-y', '--no-install-recommends', '-o', 'DPkg::Lock::Timeout=300', ...missing],
    { timeoutMs: 1_200_000, env: aptEnv() },
  );
}

/** sha256 of the guest build scripts (a change means a new initramfs). */
export function guestSourceHash(): string {
  const h = createHash('sha256');
  for (const f of ['build-guest.sh', 'guest-init.sh']) h.update(safeRead(join(SCRIPTS, f)));
  return h.digest('hex').slice(0, 16);
}

export interface GuestImage {
  kernelVersion: string;
  kernel: string;
  initrd: string;
}

/** Build the guest kernel + initramfs once into `<cacheDir>/guest/<kver>/` (reused when present). */
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
    await runLogged('sh', [join(SCRIPTS, 'build-guest.sh'), guestCache, resultFile], logFile, { timeoutMs: 900_000 });
    last = safeRead(resultFile).trim();
  } finally {
    rmSync(resultFile, { force: true });
  }
  if (!/^\S+ \/\S+ \/\S+$/.test(last)) throw new Error(`build-guest.sh gave no result; see ${logFile}`);
  const [kernelVersion, kernel, initrd] = last.split(' ') as [string, string, string];
  log(`guest image ${kernelVersion} ready in ${Date.now() - started} ms`);
  return { kernelVersion, kernel, initrd };
}

// ---------------------------------------------------------------------------------------------
// libvirtd

export function libvirtUriFor(socket: string): string {
  return `qemu+unix:///system?socket=${socket}`;
}

async function libvirtAnswers(uri: string): Promise<boolean> {
  const r = await run('virsh', ['-c', uri, 'version'], { timeoutMs: 15_000 });
  return r.code === 0;
}

async function startLibvirtd(dir: string, cacheDir: string, log: (m: string) => void): Promise<{ pid: number; socket: string; uri: string }> {
  const started = Date.now();
  const pidFile = join(dir, 'libvirt', 'libvirtd.pid');
  const socket = join(dir, 'libvirt', 'run', 'libvirt-sock');
  if (socket.length > 107) throw new Error(`lab dir too long for a unix socket path: ${socket}`);
  await runLogged('sh', [join(SCRIPTS, 'start-libvirtd.sh'), dir, join(cacheDir, 'libvirt-cache')], join(dir, 'start-libvirtd.log'), {
    timeoutMs: 60_000,
  });
  const pid = await waitFor('libvirtd pid file', 10_000, () => {
    const n = Number.parseInt(safeRead(pidFile).trim(), 10);
    return Number.isFinite(n) && n > 0 ? n : undefined;
  });
  const uri = libvirtUriFor(socket);
  await waitFor('libvirtd to answer', 60_000, async () => {
    if (!pidAlive(pid)) throw new Error(`libvirtd (pid ${pid}) exited; see ${join(dir, 'libvirt', 'log', 'libvirtd.log')}`);
    return (await libvirtAnswers(uri)) ? true : undefined;
  }, 100);
  log(`libvirtd pid ${pid} answering after ${Date.now() - started} ms`);
  return { pid, socket, uri };
}

// ---------------------------------------------------------------------------------------------
// tgtd

export function tgtadmArgs(controlPort: number, ...args: string[]): string[] {
  return ['-C', String(controlPort), '--lld', 'iscsi', ...args];
}

function portFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const srv = createServer();
    srv.once('error', () => res(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => res(true)));
  });
}

function controlFree(control: number): boolean {
  // tgtd holds an flock on socket.N.lock; a leftover file from a dead tgtd is harmless, but a
  // live tgtd answering on it means taken.
  return !existsSync(`/var/run/tgtd/socket.${control}`);
}

async function tgtControlAnswers(control: number): Promise<boolean> {
  const r = await run('tgtadm', tgtadmArgs(control, '--op', 'show', '--mode', 'system'), { timeoutMs: 5000 });
  return r.code === 0;
}

async function startTgtd(dir: string, log: (m: string) => void): Promise<{ pid: number; portal: string; control: number }> {
  const started = Date.now();
  // Preferred: the standard portal and control channel, so plain `tgtadm` works too. If another
  // tgtd (not ours) holds them, use a private pair: portal port P, control port P.
  const candidates: Array<[number, number]> = [[3260, 0]];
  for (let p = 3261; p < 3300; p++) candidates.push([p, p]);
  for (const [port, control] of candidates) {
    if (!(await portFree(port))) continue;
    if (!controlFree(control) && (await tgtControlAnswers(control))) continue;
    const logFile = join(dir, `tgtd.log`);
    const fd = openSync(logFile, 'a');
    const child = spawn('tgtd', ['-f', '--iscsi', `portal=127.0.0.1:${port}`, '-C', String(control)], {
      detached: true,
      stdio: ['ignore', fd, fd],
    });
    closeSync(fd);
    child.unref();
    const pid = child.pid;
    if (!pid) throw new Error('could not spawn tgtd');
    let ok = false;
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (!pidAlive(pid)) break;
      const r = await run('tgtadm', tgtadmArgs(control, '--op', 'show', '--mode', 'portal'), { timeoutMs: 5000 });
      if (r.code === 0) {
        ok = r.stdout.includes(`127.0.0.1:${port}`);
        break;
      }
      await sleep(50);
    }
    if (ok) {
      log(`tgtd pid ${pid} on 127.0.0.1:${port} (control ${control}) after ${Date.now() - started} ms`);
      return { pid, portal: `127.0.0.1:${port}`, control };
    }
    // Lost a race for the port or the control socket: stop this one and try the next pair.
    await stopTgtd(pid, control);
  }
  throw new Error('no free iSCSI portal port in 3260-3299 for tgtd');
}

async function stopTgtd(pid: number, control: number): Promise<void> {
  if (pidIs(pid, 'tgtd')) {
    const show = await run('tgtadm', tgtadmArgs(control, '--op', 'show', '--mode', 'target'), { timeoutMs: 5000 });
    for (const m of show.stdout.matchAll(/^Target (\d+):/gm)) {
      await run('tgtadm', tgtadmArgs(control, '--op', 'delete', '--mode', 'target', '--tid', m[1] ?? '', '--force'), { timeoutMs: 10_000 });
    }
    await run('tgtadm', tgtadmArgs(control, '--op', 'delete', '--mode', 'system'), { timeoutMs: 5000 });
    const deadline = Date.now() + 5000;
    while (pidAlive(pid) && Date.now() < deadline) await sleep(50);
    if (pidAlive(pid)) await killAndWait(pid, 1000);
  }
  if (control !== 0 && !pidAlive(pid)) {
    rmSync(`/var/run/tgtd/socket.${control}`, { force: true });
    rmSync(`/var/run/tgtd/socket.${control}.lock`, { force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// labUp / labDown

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

export async function labUp(opts: LabUpOptions = {}): Promise<LabInfo> {
  const dir = resolve(opts.dir ?? defaultLabDir());
  return withLabLock(dir, () => labUpLocked(dir, opts));
}

async function labUpLocked(dir: string, opts: LabUpOptions): Promise<LabInfo> {
  const log = opts.log ?? (() => {});
  const cacheDir = resolve(opts.cacheDir ?? defaultCacheDir());
  const t0 = Date.now();

  const existing = readLab(dir);
  if (existing) {
    if (await labHealthy(existing)) {
      if (existing.guestSourceHash === guestSourceHash()) {
        log(`lab already up in ${dir}`);
        return existing;
      }
      // The guest's scripts changed since this lab came up: rebuild the image (the daemons stay).
      const image = await buildGuestImage(existing.cacheDir, { install: opts.install, log });
      const info: LabInfo = { ...existing, ...image, guestSourceHash: guestSourceHash() };
      writeFileSync(labJsonPath(dir), JSON.stringify(info, null, 2) + '\n');
      log(`lab already up in ${dir}; guest image refreshed`);
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
  let libvirtd: { pid: number; socket: string; uri: string } | undefined;
  let tgtd: { pid: number; portal: string; control: number } | undefined;
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

  const info: LabInfo = {
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
  writeFileSync(labJsonPath(dir), JSON.stringify(info, null, 2) + '\n');
  log(`lab up in ${dir} after ${Date.now() - t0} ms`);
  return info;
}

function writePartial(dir: string, libvirtdPid: number | undefined, tgtd: { pid: number; control: number } | undefined): void {
  const partial = { dir, libvirtdPid: libvirtdPid ?? 0, tgtdPid: tgtd?.pid ?? 0, tgtControlPort: tgtd?.control ?? 0 };
  try {
    writeFileSync(labJsonPath(dir), JSON.stringify(partial, null, 2) + '\n');
  } catch {
    /* dir gone */
  }
}

/** QEMU processes whose command line mentions the lab dir (left over if libvirtd died first). */
function labQemuPids(dir: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    const cmd = cmdlineOf(pid);
    if (cmd.startsWith('/usr/bin/qemu-system') || cmd.includes('qemu-system-')) {
      if (cmd.includes(`${dir}/`)) out.push(pid);
    }
  }
  return out;
}

/** Loop devices whose backing file lives under `dir`. */
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

  // 1. Domains, then libvirtd.
  const libvirtdPid = info?.libvirtdPid;
  if (pidIs(libvirtdPid, 'libvirtd')) {
    const uri = libvirtUriFor(join(dir, 'libvirt', 'run', 'libvirt-sock'));
    const list = await run('virsh', ['-c', uri, 'list', '--name'], { timeoutMs: 15_000 });
    for (const name of list.stdout.split('\n').map((s) => s.trim()).filter(Boolean)) {
      log(`destroying domain ${name}`);
      await run('virsh', ['-c', uri, 'destroy', name], { timeoutMs: 30_000 });
    }
    await killAndWait(libvirtdPid);
  }
  for (const pid of labQemuPids(dir)) await killAndWait(pid, 2000);

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

// ---------------------------------------------------------------------------------------------
// Guests

export interface DomainXmlOptions {
  name: string;
  uuid: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  consoleLog: string;
  shellSocket: string;
  memoryMiB?: number;
  /** Extra `<disk>` (or other device) XML fragments, placed inside `<devices>`. */
  disks?: string[];
  projectId?: string;
}

export const OE_XMLNS = 'https://online-extend.dev/xmlns/1';

export function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** The test guest's domain XML: TCG, direct kernel boot, ACPI (for hot-plug), two serial ports. */
export function domainXml(o: DomainXmlOptions): string {
  const e = xmlEscape;
  const metadata =
    o.projectId === undefined
      ? ''
      : `  <metadata>\n    <oe:project xmlns:oe="${OE_XMLNS}">${e(o.projectId)}</oe:project>\n  </metadata>\n`;
  const disks = (o.disks ?? []).map((d) => `    ${d.trim()}\n`).join('');
  return `<domain type='qemu'>
  <name>${e(o.name)}</name>
  <uuid>${e(o.uuid)}</uuid>
${metadata}  <memory unit='MiB'>${o.memoryMiB ?? 256}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${e(o.kernel)}</kernel>
    <initrd>${e(o.initrd)}</initrd>
    <cmdline>${e(o.cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <serial type='file'>
      <source path='${e(o.consoleLog)}' append='off'/>
      <target port='0'/>
    </serial>
    <serial type='unix'>
      <source mode='bind' path='${e(o.shellSocket)}'/>
      <target port='1'/>
    </serial>
${disks}    <memballoon model='none'/>
  </devices>
</domain>
`;
}

/** Size of the placeholder vda bootGuest adds (the guest reports it as `vda=1048576`). */
export const PLACEHOLDER_VDA_BYTES = 1024 * 1024;

export interface BootGuestOptions {
  name: string;
  /** Extra `<disk>` XML fragments (e.g. `<disk type='file' device='disk'>…<target dev='vdb' bus='virtio'/>…</disk>`). */
  disks?: string[];
  memoryMiB?: number;
  projectId?: string;
  /**
   * Add a 1 MiB read-only `vda` (default true, unless a fragment already targets vda): the guest
   * names virtio disks in PCI order, so with vda present the guest's names match libvirt's
   * targets (vdb, vdc, …) as long as they are contiguous.
   */
  placeholderVda?: boolean;
  /** Wait until the guest is ready (default true). */
  waitReady?: boolean;
  readyTimeoutMs?: number;
  /**
   * Define the domain (`virsh define` + `start`) instead of creating a transient one: it can then
   * be shut off and started again with its disks, as a cloud's servers are.
   */
  persistent?: boolean;
}

/** Run virsh against the lab's libvirtd; throws on failure. */
export function virsh(lab: Pick<LabInfo, 'libvirtUri'>, args: string[], timeoutMs = 60_000): Promise<string> {
  return mustRun('virsh', ['-c', lab.libvirtUri, ...args], { timeoutMs });
}

/**
 * Start a domain of the test guest, transient (`virsh create`) or defined (`persistent`), and,
 * by default, wait until it is ready.
 */
export async function bootGuest(lab: LabInfo, opts: BootGuestOptions): Promise<Guest> {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(opts.name)) throw new Error(`bad guest name: ${opts.name}`);
  const guestsDir = join(lab.dir, 'guests');
  mkdirSync(guestsDir, { recursive: true });
  const consoleLog = join(guestsDir, `${opts.name}.console.log`);
  const shellSocket = join(guestsDir, `${opts.name}.sock`);
  if (shellSocket.length > 107) throw new Error(`unix socket path too long: ${shellSocket}`);
  rmSync(consoleLog, { force: true });
  rmSync(shellSocket, { force: true });
  const disks = [...(opts.disks ?? [])];
  if (opts.placeholderVda !== false && !disks.some((d) => /dev=['"]vda['"]/.test(d))) {
    const vda = join(guestsDir, `${opts.name}.vda.raw`);
    writeFileSync(vda, Buffer.alloc(0));
    truncateSync(vda, PLACEHOLDER_VDA_BYTES);
    disks.unshift(
      `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${xmlEscape(vda)}'/>` +
        `<target dev='vda' bus='virtio'/><readonly/></disk>`,
    );
  }
  const uuid = randomUUID();
  const xml = domainXml({
    name: opts.name,
    uuid,
    kernel: lab.kernel,
    initrd: lab.initrd,
    cmdline: lab.cmdline,
    consoleLog,
    shellSocket,
    memoryMiB: opts.memoryMiB,
    disks,
    projectId: opts.projectId,
  });
  const xmlFile = join(guestsDir, `${opts.name}.xml`);
  writeFileSync(xmlFile, xml);
  // A leftover domain of the same name (a crashed earlier run in this lab) is ours: replace it.
  await run('virsh', ['-c', lab.libvirtUri, 'destroy', opts.name], { timeoutMs: 60_000 });
  await run('virsh', ['-c', lab.libvirtUri, 'undefine', opts.name], { timeoutMs: 60_000 });
  if (opts.persistent) {
    await virsh(lab, ['define', xmlFile]);
    await virsh(lab, ['start', uuid]);
  } else {
    await virsh(lab, ['create', xmlFile]);
  }
  const guest = new Guest({ libvirtUri: lab.libvirtUri, uuid, name: opts.name, consoleLog, shellSocket, persistent: opts.persistent ?? false });
  if (opts.waitReady !== false) {
    try {
      await guest.waitReady(opts.readyTimeoutMs ?? 60_000);
    } catch (err) {
      await guest.destroy().catch(() => {});
      throw err;
    }
  }
  return guest;
}

