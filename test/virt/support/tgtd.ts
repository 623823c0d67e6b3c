/** iSCSI targets for the libvirt driver's real tests, on the lab's tgtd. */
import { execFileSync, spawnSync } from 'node:child_process';
import { tgtRequest, tgtadmArgs } from '../../../src/host/tgt.js';

export interface TestTgt {
  portal: string;
  /** Export `file` as LUN 1 of a new target; returns `iqn/1` (the libvirt source name). */
  export(iqn: string, file: string): string;
  /** tgt caches a LUN's size: delete and re-add the logical unit so initiators see the file's new size. */
  reexpose(iqn: string): void;
  stop(): Promise<void>;
}

/**
 * Targets on a tgtd someone else runs (the lab's), reached through its control port. `stop()`
 * removes only the targets made here.
 */
export function tgtOn(portal: string, control: number): TestTgt {
  // Synchronous on purpose: the tests call export/reexpose between awaits of their own.
  const adm = (request: string[]): string => execFileSync('tgtadm', tgtadmArgs(control, request), { encoding: 'utf8', stdio: 'pipe' });
  const targets = new Map<string, { tid: number; file: string }>();
  const firstTid = 500 + Math.floor(Math.random() * 10000);
  return {
    portal,
    export(iqn, file) {
      const tid = firstTid + targets.size;
      adm(tgtRequest.newTarget(tid, iqn));
      adm(tgtRequest.newLun(tid, 1, file));
      adm(tgtRequest.bindAll(tid));
      targets.set(iqn, { tid, file });
      return `${iqn}/1`;
    },
    reexpose(iqn) {
      const t = targets.get(iqn);
      if (!t) throw new Error(`no target ${iqn}`);
      adm(tgtRequest.deleteLun(t.tid, 1));
      adm(tgtRequest.newLun(t.tid, 1, t.file));
    },
    async stop() {
      for (const { tid } of targets.values()) {
        try {
          adm(tgtRequest.deleteTarget(tid, { force: true }));
        } catch {
          // gone
        }
      }
      targets.clear();
    },
  };
}

export function tgtdMissing(): string | undefined {
  for (const bin of ['tgtd', 'tgtadm', 'iscsi-readcapacity16']) {
    if (spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0) return `${bin} is not installed`;
  }
  return undefined;
}
