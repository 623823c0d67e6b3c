/**
 * The lab's tgtd (userspace iSCSI target), through the host's tgtadm module (src/host/tgt.ts):
 * on 127.0.0.1:3260 with the default control channel when free, else on a private pair.
 */
import { existsSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDaemon } from '../host/exec.js';
import { Tgtadm, tgtRequest } from '../host/tgt.js';
import { killAndWait, pidAlive, pidIs } from './proc.js';

/** A running lab tgtd: its pid, its portal (`127.0.0.1:PORT`) and control port (`tgtadm -C`). */
export interface LabTgtd {
  pid: number;
  portal: string;
  control: number;
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

/** True if a tgtd answers on control port `control`. */
export function tgtControlAnswers(control: number): Promise<boolean> {
  return new Tgtadm({ controlPort: control }).answers();
}

/**
 * Start a tgtd for the lab in `dir` (log `<dir>/tgtd.log`). Preferred: the standard portal and
 * control channel, so plain `tgtadm` works too; if another tgtd (not ours) holds them, a private
 * pair: portal port P, control port P (3261–3299). Throws if none is free.
 */
export async function startTgtd(dir: string, log: (m: string) => void): Promise<LabTgtd> {
  const started = Date.now();
  const candidates: Array<[number, number]> = [[3260, 0]];
  for (let p = 3261; p < 3300; p++) candidates.push([p, p]);
  for (const [port, control] of candidates) {
    if (!(await portFree(port))) continue;
    if (!controlFree(control) && (await tgtControlAnswers(control))) continue;
    // A daemon that outlives this process: recorded by pid, stopped by stopTgtd.
    const pid = await startDaemon('tgtd', ['-f', '--iscsi', `portal=127.0.0.1:${port}`, '-C', String(control)], { logFile: join(dir, 'tgtd.log') });
    const adm = new Tgtadm({ controlPort: control, timeoutMs: 5000 });
    let ok = false;
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (!pidAlive(pid)) break;
      const r = await adm.raw(tgtRequest.showPortals()).catch(() => undefined);
      if (r?.code === 0) {
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

/**
 * Stop the lab's tgtd (recorded `pid`, checked to be tgtd): delete its targets, ask it to exit
 * (it ignores SIGTERM while targets exist), kill it if it does not; remove its private control
 * socket files. Never throws.
 */
export async function stopTgtd(pid: number, control: number): Promise<void> {
  if (pidIs(pid, 'tgtd')) {
    await new Tgtadm({ controlPort: control, timeoutMs: 10_000 }).shutdown();
    const deadline = Date.now() + 5000;
    while (pidAlive(pid) && Date.now() < deadline) await sleep(50);
    if (pidAlive(pid)) await killAndWait(pid, 1000);
  }
  if (control !== 0 && !pidAlive(pid)) {
    rmSync(`/var/run/tgtd/socket.${control}`, { force: true });
    rmSync(`/var/run/tgtd/socket.${control}.lock`, { force: true });
  }
}
