/** A small client for tgt's admin tool (`tgtadm`), used by the iSCSI backend. */
import { errors } from '../../errors.js';
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

export class Tgt {
  constructor(private readonly opts: { controlPort?: number; timeoutMs?: number } = {}) {}

  private args(rest: string[]): string[] {
    const base = ['--lld', 'iscsi'];
    if (this.opts.controlPort !== undefined) base.push('-C', String(this.opts.controlPort));
    return [...base, ...rest];
  }

  /** Run tgtadm; returns the raw result (callers decide which failures are fine). */
  raw(rest: string[]): Promise<ExecResult> {
    return execRaw('tgtadm', this.args(rest), { timeoutMs: this.opts.timeoutMs ?? 15_000 });
  }

  /** Run tgtadm; throw BackendFailed on failure (retryable when the daemon is unreachable). */
  async run(rest: string[]): Promise<string> {
    const r = await this.raw(rest);
    if (r.code !== 0) throw this.failed(rest, r);
    return r.stdout;
  }

  failed(rest: string[], r: ExecResult): Error {
    return commandFailed('tgtadm', this.args(rest), r, Tgt.daemonDown(r));
  }

  static daemonDown(r: ExecResult): boolean {
    return /can't connect|not running|connection refused|No such file/i.test(r.stderr);
  }

  static alreadyExists(r: ExecResult): boolean {
    return /already exists/i.test(r.stderr);
  }

  static notFound(r: ExecResult): boolean {
    return /can't find/i.test(r.stderr);
  }

  async show(): Promise<TgtTarget[]> {
    return parseTargets(await this.run(['--op', 'show', '--mode', 'target']));
  }
}

/** `iscsi-readcapacity16 -s`: the LUN's capacity in bytes as an initiator sees it (~7 ms). */
export async function readCapacity(portal: string, iqn: string, lun: number, timeoutMs = 10_000): Promise<number> {
  const args = ['-s', `iscsi://${portal}/${iqn}/${lun}`];
  const out = await exec('iscsi-readcapacity16', args, { timeoutMs, retryable: true });
  const m = /(\d+)/.exec(out.trim());
  const n = m?.[1] === undefined ? NaN : Number(m[1]);
  if (!Number.isSafeInteger(n)) {
    throw errors.backendFailed(`iscsi-readcapacity16 ${args.join(' ')} printed ${JSON.stringify(out)}`);
  }
  return n;
}
