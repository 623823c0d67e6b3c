/**
 * tgtd for the iSCSI backend tests: uses one that already answers (e.g. the lab's), otherwise
 * starts `tgtd -f --iscsi portal=127.0.0.1:3260` and stops it by pid afterwards.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { Tgtadm } from '../../src/host/tgt.js';

export const PORTAL = '127.0.0.1:3260';

export function tgtdUnavailable(): string | undefined {
  for (const bin of ['tgtd', 'tgtadm', 'iscsi-readcapacity16', 'qemu-io']) {
    try {
      execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'pipe' });
    } catch {
      return `${bin} not available (apt-get install tgt libiscsi-bin qemu-utils qemu-block-extra)`;
    }
  }
  return undefined;
}

const tgt = new Tgtadm();
const answers = (): Promise<boolean> => tgt.answers();

export interface TgtdHandle {
  /** True if this handle started tgtd (and will stop it). */
  started: boolean;
  pid?: number;
  /** Delete targets whose LUNs live under `dir`, then stop tgtd if we started it. */
  stop(dirs: string[]): Promise<void>;
}

export async function useTgtd(): Promise<TgtdHandle> {
  let child: ChildProcess | undefined;
  if (!(await answers())) {
    child = spawn('tgtd', ['-f', '--iscsi', `portal=${PORTAL}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const deadline = Date.now() + 10_000;
    while (!(await answers())) {
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`tgtd did not come up: ${stderr}`);
      }
      await sleep(50);
    }
  }
  return {
    started: child !== undefined,
    pid: child?.pid,
    async stop(dirs: string[]) {
      await tgt.deleteTargets((t) => t.luns.some((l) => l.backingPath && dirs.some((d) => l.backingPath?.startsWith(`${d}/`))));
      if (!child) return;
      // tgtd ignores SIGTERM while targets exist; targets are ours only if we started it.
      await tgt.shutdown();
      const exited = new Promise<void>((resolve) => {
        if (child?.exitCode !== null) resolve();
        else child.once('exit', () => resolve());
      });
      const killed = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
      if (!killed) child.kill('SIGKILL');
    },
  };
}
