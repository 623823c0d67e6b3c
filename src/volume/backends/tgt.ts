/**
 * The iSCSI backend's view of tgt: the host's tgtadm client (src/host/tgt.ts) and LUN capacity
 * reader (src/host/iscsi.ts) with the backends' classification into BackendFailed:
 * a tgtadm that cannot reach tgtd (exit 107) is uncertain, any other refusal final; a capacity
 * read that fails is uncertain (see readCapacity).
 */
import { errors, type ServiceError } from '../../errors.js';
import { CommandFailed, type CommandResult } from '../../host/exec.js';
import { UnexpectedReadCapacityOutput, readCapacityArgs, readLunCapacity } from '../../host/iscsi.js';
import { TGTADM_UNREACHABLE, Tgtadm, parseTargets, tgtRequest, type TgtLun, type TgtTarget } from '../../host/tgt.js';
import { backendCommandFailed, commandFailed, type ExecResult } from './exec.js';

export { TGTADM_UNREACHABLE, parseTargets, type TgtLun, type TgtTarget };

/** tgtadm for the backend: every failure is a BackendFailed, uncertain only when tgtd is unreachable. */
export class Tgt {
  private readonly adm: Tgtadm;

  /** `controlPort`: tgtd's `-C` (default 0); `timeoutMs`: per call (default 15 s). */
  constructor(opts: { controlPort?: number; timeoutMs?: number } = {}) {
    this.adm = new Tgtadm(opts);
  }

  /** Run tgtadm; returns the raw result (callers decide which failures are fine, by looking again). */
  async raw(rest: string[], what = 'configure the iSCSI target'): Promise<CommandResult> {
    try {
      return await this.adm.raw(rest);
    } catch (err) {
      throw backendCommandFailed(err, what);
    }
  }

  /** Run tgtadm; throw BackendFailed on failure (uncertain when tgtd is unreachable). */
  async run(rest: string[], what = 'configure the iSCSI target'): Promise<string> {
    const r = await this.raw(rest, what);
    if (r.code !== 0) throw this.failed(rest, r, what);
    return r.stdout;
  }

  /** The BackendFailed for a failed tgtadm call: uncertain only when tgtd could not be reached. */
  failed(rest: string[], r: ExecResult, what = 'configure the iSCSI target', opts: { final?: boolean } = {}): ServiceError {
    return commandFailed('tgtadm', this.adm.args(rest), r, { final: opts.final ?? !Tgt.unreachable(r), what });
  }

  /** tgtd did not answer (by exit status, see TGTADM_UNREACHABLE): trying again later may work. */
  static unreachable(r: Pick<ExecResult, 'code'>): boolean {
    return Tgtadm.unreachable(r);
  }

  /** The targets tgtd has now; BackendFailed if tgtadm fails. */
  async show(): Promise<TgtTarget[]> {
    return parseTargets(await this.run(tgtRequest.showTargets(), 'list the iSCSI targets'));
  }
}

/**
 * The LUN's capacity in bytes as an initiator sees it (src/host/iscsi.ts, ~7 ms).
 * A failed read is uncertain: the initiator's login fails while the target or its LUN is being
 * (re-)created, which is what a concurrent extend or ensure_export does for ~25 ms; a target
 * that is really missing is found by the caller looking at `tgtadm --op show`. A tool that could
 * not start is classified by its errno; output without a size is final.
 */
export async function readCapacity(portal: string, iqn: string, lun: number, timeoutMs = 10_000): Promise<number> {
  const source = `${iqn}/${lun}`;
  const what = 'read the capacity of the iSCSI LUN';
  try {
    return await readLunCapacity(portal, source, { timeoutMs });
  } catch (err) {
    if (err instanceof UnexpectedReadCapacityOutput) {
      throw errors.backendFailed(`cannot ${what}: iscsi-readcapacity16 printed no size`, { detail: `iscsi-readcapacity16 ${readCapacityArgs(portal, source).join(' ')} printed ${JSON.stringify(err.output)}` });
    }
    if (err instanceof CommandFailed && 'exitCode' in err.outcome && err.result) {
      throw commandFailed('iscsi-readcapacity16', readCapacityArgs(portal, source), err.result, { final: false, what });
    }
    throw backendCommandFailed(err, what);
  }
}
