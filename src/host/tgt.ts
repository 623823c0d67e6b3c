/**
 * tgt, the userspace iSCSI target: the one module that speaks `tgtadm` (its arguments, its exit
 * statuses, the parse of `--op show`). Used by the iSCSI storage backend (through its BackendFailed
 * adapter, src/volume/backends/tgt.ts), the lab (starting and stopping its tgtd) and the tests.
 *
 * Facts measured here (tgt 1.0.85, /work/shared/notes/environment.md): tgtadm exits 107
 * (ENOTCONN) when no tgtd answers on the control channel, and 22 (EINVAL) for every other refusal;
 * tgt caches a LUN's size when the LUN is added (delete and re-add it to publish a grown file);
 * tgtd ignores SIGTERM while targets exist.
 */
import { runCommand, runCommandRaw, type CommandResult } from './exec.js';

/** One logical unit of a target, as `tgtadm --op show --mode target` lists it. */
export interface TgtLun {
  lun: number;
  /** tgt's own rounded size line, e.g. "1074 MB" (decimal megabytes; too coarse to measure with). */
  sizeText: string;
  /** The backing file or device; absent for LUN 0 (the controller, `None`). */
  backingPath?: string;
}

/** One target, as `tgtadm --op show --mode target` lists it. */
export interface TgtTarget {
  /** Target id (tgt's `--tid`). */
  tid: number;
  iqn: string;
  luns: TgtLun[];
  /** Initiator ACLs (`ALL` when bound to every initiator). */
  acls: string[];
}

/** Parse `tgtadm --lld iscsi --op show --mode target` into targets (unknown lines are ignored). */
export function parseTargets(text: string): TgtTarget[] {
  const targets: TgtTarget[] = [];
  let target: TgtTarget | undefined;
  let lun: TgtLun | undefined;
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    const t = /^Target (\d+): (\S+)$/.exec(line);
    if (t) {
      target = { tid: Number(t[1]), iqn: t[2] ?? '', luns: [], acls: [] };
      targets.push(target);
      lun = undefined;
      section = '';
      continue;
    }
    if (!target) continue;
    const s = /^ {4}(\S.*):\s*$/.exec(line);
    if (s) {
      section = s[1] ?? '';
      lun = undefined;
      continue;
    }
    const item = line.trim();
    if (section === 'LUN information') {
      const l = /^LUN: (\d+)$/.exec(item);
      if (l) {
        lun = { lun: Number(l[1]), sizeText: '' };
        target.luns.push(lun);
      } else if (lun) {
        const size = /^Size: ([^,]*)/.exec(item);
        if (size) lun.sizeText = size[1] ?? '';
        const bs = /^Backing store path: (.*)$/.exec(item);
        if (bs && bs[1] !== 'None') lun.backingPath = bs[1];
      }
    } else if (section === 'ACL information' && item) {
      target.acls.push(item);
    }
  }
  return targets;
}

/**
 * tgtadm's exit status when it cannot reach tgtd (ENOTCONN: no daemon behind the control
 * socket, or it is restarting). Every other failure exits 22 (EINVAL) whatever the reason
 * ("already exists", "can't find the target", "LUN is still active"…), so those are told
 * apart by reading `--op show` again after the failure, never by tgtadm's words.
 */
export const TGTADM_UNREACHABLE = 107;

/** The default control channel (`/var/run/tgtd/socket.0`); others are `-C N`. */
export const DEFAULT_TGT_CONTROL_PORT = 0;

/** The arguments of the tgtadm requests used here (after `--lld iscsi [-C N]`). */
export const tgtRequest = {
  showTargets: (): string[] => ['--op', 'show', '--mode', 'target'],
  showSystem: (): string[] => ['--op', 'show', '--mode', 'system'],
  showPortals: (): string[] => ['--op', 'show', '--mode', 'portal'],
  newTarget: (tid: number, iqn: string): string[] => ['--op', 'new', '--mode', 'target', '--tid', String(tid), '-T', iqn],
  deleteTarget: (tid: number, opts: { force?: boolean } = {}): string[] => ['--op', 'delete', '--mode', 'target', '--tid', String(tid), ...(opts.force ? ['--force'] : [])],
  newLun: (tid: number, lun: number, backingPath: string): string[] => ['--op', 'new', '--mode', 'logicalunit', '--tid', String(tid), '--lun', String(lun), '-b', backingPath],
  deleteLun: (tid: number, lun: number): string[] => ['--op', 'delete', '--mode', 'logicalunit', '--tid', String(tid), '--lun', String(lun)],
  bindAll: (tid: number): string[] => ['--op', 'bind', '--mode', 'target', '--tid', String(tid), '-I', 'ALL'],
  /** Ask tgtd to exit (it refuses while targets exist). */
  stopDaemon: (): string[] => ['--op', 'delete', '--mode', 'system'],
} as const;

/** The whole tgtadm argument list: `--lld iscsi`, the control port unless it is the default, the request. */
export function tgtadmArgs(controlPort: number | undefined, request: readonly string[]): string[] {
  const base = ['--lld', 'iscsi'];
  if (controlPort !== undefined && controlPort !== DEFAULT_TGT_CONTROL_PORT) base.push('-C', String(controlPort));
  return [...base, ...request];
}

/** A tgtd reached through its control channel. No classification: callers judge the results. */
export class Tgtadm {
  /** `controlPort`: tgtd's `-C` (default 0); `timeoutMs`: per call (default 15 s). */
  constructor(readonly opts: { controlPort?: number; timeoutMs?: number } = {}) {}

  /** The full argument list for `request` on this tgtd. */
  args(request: readonly string[]): string[] {
    return tgtadmArgs(this.opts.controlPort, request);
  }

  /** Run tgtadm; resolves with the result whatever its exit status. Rejects with CommandFailed only if it could not run. */
  raw(request: readonly string[], opts: { timeoutMs?: number } = {}): Promise<CommandResult> {
    return runCommandRaw('tgtadm', this.args(request), { timeoutMs: opts.timeoutMs ?? this.opts.timeoutMs ?? 15_000 });
  }

  /** Run tgtadm; resolves with stdout, rejects with CommandFailed on any failure. */
  run(request: readonly string[], opts: { timeoutMs?: number } = {}): Promise<string> {
    return runCommand('tgtadm', this.args(request), { timeoutMs: opts.timeoutMs ?? this.opts.timeoutMs ?? 15_000 });
  }

  /** tgtd did not answer (by exit status, see TGTADM_UNREACHABLE): trying again later may work. */
  static unreachable(r: Pick<CommandResult, 'code'>): boolean {
    return r.code === TGTADM_UNREACHABLE;
  }

  /** True if a tgtd answers on this control channel. Never throws. */
  async answers(): Promise<boolean> {
    const r = await this.raw(tgtRequest.showSystem(), { timeoutMs: 5000 }).catch(() => undefined);
    return r?.code === 0;
  }

  /** The targets tgtd has now. Rejects with CommandFailed. */
  async show(): Promise<TgtTarget[]> {
    return parseTargets(await this.run(tgtRequest.showTargets()));
  }

  /**
   * Delete targets (with `--force`: their sessions go too) whose tids `which` selects, or all of
   * them; failures are ignored (the target is gone, or tgtd is). Returns the tids asked for.
   */
  async deleteTargets(which: (t: TgtTarget) => boolean = () => true): Promise<number[]> {
    const targets = await this.show().catch((): TgtTarget[] => []);
    const tids = targets.filter(which).map((t) => t.tid);
    for (const tid of tids) await this.raw(tgtRequest.deleteTarget(tid, { force: true }), { timeoutMs: 10_000 }).catch(() => undefined);
    return tids;
  }

  /** Delete every target, then ask tgtd to exit (it ignores SIGTERM while targets exist). Never throws. */
  async shutdown(): Promise<void> {
    await this.deleteTargets();
    await this.raw(tgtRequest.stopDaemon(), { timeoutMs: 5000 }).catch(() => undefined);
  }
}
