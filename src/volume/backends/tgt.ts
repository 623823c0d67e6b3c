/** A small client for tgt's admin tool (`tgtadm`), used by the iSCSI backend. */
import { errors, type ServiceError } from '../../errors.js';
import { commandFailed, exec, execRaw, type ExecResult } from './exec.js';

export interface TgtLun {
  lun: number;
  /** tgt's own rounded size line, e.g. "1074 MB" (decimal megabytes; too coarse to measure with). */
  sizeText: string;
  backingPath?: string;
}

export interface TgtTarget {
  tid: number;
  iqn: string;
  luns: TgtLun[];
  acls: string[];
}

/** Parse `tgtadm --lld iscsi --op show --mode target`. */
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

export class Tgt {
  constructor(private readonly opts: { controlPort?: number; timeoutMs?: number } = {}) {}

  private args(rest: string[]): string[] {
    const base = ['--lld', 'iscsi'];
    if (this.opts.controlPort !== undefined) base.push('-C', String(this.opts.controlPort));
    return [...base, ...rest];
  }

  /** Run tgtadm; returns the raw result (callers decide which failures are fine, by looking again). */
  raw(rest: string[], what = 'configure the iSCSI target'): Promise<ExecResult> {
    return execRaw('tgtadm', this.args(rest), { timeoutMs: this.opts.timeoutMs ?? 15_000, what });
  }

  /** Run tgtadm; throw BackendFailed on failure (uncertain when tgtd is unreachable). */
  async run(rest: string[], what = 'configure the iSCSI target'): Promise<string> {
    const r = await this.raw(rest, what);
    if (r.code !== 0) throw this.failed(rest, r, what);
    return r.stdout;
  }

  /** The BackendFailed for a failed tgtadm call: uncertain only when tgtd could not be reached. */
  failed(rest: string[], r: ExecResult, what = 'configure the iSCSI target', opts: { final?: boolean } = {}): ServiceError {
    return commandFailed('tgtadm', this.args(rest), r, { final: opts.final ?? !Tgt.unreachable(r), what });
  }

  /** tgtd did not answer (by exit status, see TGTADM_UNREACHABLE): trying again later may work. */
  static unreachable(r: ExecResult): boolean {
    return r.code === TGTADM_UNREACHABLE;
  }

  async show(): Promise<TgtTarget[]> {
    return parseTargets(await this.run(['--op', 'show', '--mode', 'target'], 'list the iSCSI targets'));
  }
}

/**
 * `iscsi-readcapacity16 -s`: the LUN's capacity in bytes as an initiator sees it (~7 ms).
 * A failure is uncertain: the initiator's login fails while the target or its LUN is being
 * (re-)created, which is what a concurrent extend or ensure_export does for ~25 ms; a target
 * that is really missing is found by the caller looking at `tgtadm --op show`.
 */
export async function readCapacity(portal: string, iqn: string, lun: number, timeoutMs = 10_000): Promise<number> {
  const args = ['-s', `iscsi://${portal}/${iqn}/${lun}`];
  const what = 'read the capacity of the iSCSI LUN';
  const out = await exec('iscsi-readcapacity16', args, { timeoutMs, what, transient: () => true });
  const m = /(\d+)/.exec(out.trim());
  const n = m?.[1] === undefined ? NaN : Number(m[1]);
  if (!Number.isSafeInteger(n)) {
    throw errors.backendFailed(`cannot ${what}: iscsi-readcapacity16 printed no size`, { detail: `iscsi-readcapacity16 ${args.join(' ')} printed ${JSON.stringify(out)}` });
  }
  return n;
}
