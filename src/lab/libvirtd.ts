/**
 * The lab's private libvirtd: started by scripts/lab/start-libvirtd.sh in a private mount
 * namespace (nothing of the host's /etc or /var is touched), stopped by pid.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { LAB_SCRIPTS } from './dirs.js';
import { cmdlineOf, killAndWait, pidAlive, pidIs, run, runLogged, safeRead, waitFor } from './proc.js';

/** A running lab libvirtd: its pid, its unix socket and the URI clients use. */
export interface LabLibvirtd {
  pid: number;
  socket: string;
  uri: string;
}

/** The libvirt URI of a system-mode libvirtd listening on `socket`. */
export function libvirtUriFor(socket: string): string {
  return `qemu+unix:///system?socket=${socket}`;
}

/** The socket of the libvirtd of lab dir `dir`. */
export function libvirtSocketOf(dir: string): string {
  return join(dir, 'libvirt', 'run', 'libvirt-sock');
}

/** True if a libvirtd answers at `uri` (`virsh version` within 15 s). */
export async function libvirtAnswers(uri: string): Promise<boolean> {
  const r = await run('virsh', ['-c', uri, 'version'], { timeoutMs: 15_000 });
  return r.code === 0;
}

/** Options of startLibvirtd. */
export interface StartLibvirtdOptions {
  /**
   * Run libvirtd (and so its QEMUs) inside this named network namespace (`ip netns exec NAME`):
   * a simulated hypervisor host. Clients still reach it by its unix socket path.
   */
  netns?: string;
}

/**
 * Start the lab's libvirtd for `dir` (its QEMU capability cache under `cacheDir`) and wait until
 * it answers. Throws if it does not come up (the message names its log).
 */
export async function startLibvirtd(dir: string, cacheDir: string, log: (m: string) => void, opts: StartLibvirtdOptions = {}): Promise<LabLibvirtd> {
  const started = Date.now();
  const pidFile = join(dir, 'libvirt', 'libvirtd.pid');
  const socket = libvirtSocketOf(dir);
  if (socket.length > 107) throw new Error(`lab dir too long for a unix socket path: ${socket}`);
  const script = [join(LAB_SCRIPTS, 'start-libvirtd.sh'), dir, join(cacheDir, 'libvirt-cache')];
  const [cmd, args] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, 'sh', ...script]] : ['sh', script];
  await runLogged(cmd, args, join(dir, 'start-libvirtd.log'), { timeoutMs: 60_000 });
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

/**
 * Destroy the lab's running domains, stop its libvirtd (recorded `pid`, checked to be libvirtd),
 * then any QEMU of the lab dir left behind. Never throws for what is already gone.
 */
export async function stopLibvirtd(dir: string, pid: number | undefined, log: (m: string) => void): Promise<void> {
  if (pidIs(pid, 'libvirtd')) {
    const uri = libvirtUriFor(libvirtSocketOf(dir));
    const list = await run('virsh', ['-c', uri, 'list', '--name'], { timeoutMs: 15_000 });
    for (const name of list.stdout.split('\n').map((s) => s.trim()).filter(Boolean)) {
      log(`destroying domain ${name}`);
      await run('virsh', ['-c', uri, 'destroy', name], { timeoutMs: 30_000 });
    }
    await killAndWait(pid);
  }
  for (const qemu of labQemuPids(dir)) await killAndWait(qemu, 2000);
}
