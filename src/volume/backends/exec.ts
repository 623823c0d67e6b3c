/**
 * How the storage backends shell out: the host runner (src/host/exec.ts) with the backends'
 * classification into `BackendFailed`, decided here, at the call site:
 * - a timeout is uncertain (the command may still finish, or have finished, its work);
 * - a command that could not start is classified by its errno (src/util/errno.ts);
 * - a command killed by a signal is final;
 * - a non-zero exit is final, unless the caller declares that exit a known transient
 *   (`transient`), e.g. tgtadm's 107 when tgtd is not reachable.
 *
 * The public reason names the operation and the program, never its arguments (paths) or its
 * output; the command line, exit status and stderr go in `detail`, which is logged, never sent.
 */
import { basename } from 'node:path';
import { errors, isServiceError, type ServiceError } from '../../errors.js';
import { CommandFailed, outputTail, renderCommand, runCommandRaw, type CommandResult } from '../../host/exec.js';
import { classifyErrno } from '../../util/errno.js';

export { renderCommand };

/** Options of exec / execRaw: a timeout and the operation in public words. */
export interface ExecOptions {
  /** Kill the command after this many ms (default 30 s). A timeout is an uncertain failure. */
  timeoutMs?: number;
  /** What the command does, in public words (`resize the qcow2 image`); defaults to `run <program>`. */
  what?: string;
  /** Written to the command's stdin (then closed): for a secret it reads from /dev/stdin. */
  input?: string;
}

/** A command that ran to completion: exit status (0 on success), stdout, stderr. */
export type ExecResult = Pick<CommandResult, 'code' | 'stdout' | 'stderr'>;

function describe(cmd: string, what: string | undefined): string {
  return what ?? `run ${basename(cmd)}`;
}

/**
 * The BackendFailed for a host command that did not run to completion (CommandFailed from
 * src/host/exec.ts): timeout and abort uncertain, a signal final, a failed start by errno.
 * Anything else passes through errors it already is, or becomes a final BackendFailed.
 */
export function backendCommandFailed(err: unknown, what: string): ServiceError {
  if (isServiceError(err)) return err;
  if (!(err instanceof CommandFailed)) return errors.backendFailed(`cannot ${what}`, { cause: err, detail: (err as Error)?.message ?? String(err) });
  const o = err.outcome;
  if ('errno' in o) {
    const c = classifyErrno({ code: o.errno });
    return errors.backendFailed(`cannot ${what}: ${err.program} could not be started: ${c.reason}${c.errno ? ` (${c.errno})` : ''}`, { final: c.final, cause: err, detail: err.detail });
  }
  const final = !('timedOut' in o || 'aborted' in o);
  return errors.backendFailed(`cannot ${what}: ${err.message}`, { final, cause: err, detail: err.detail });
}

/**
 * Run a command and return its exit status, stdout and stderr, whatever the status.
 * Throws BackendFailed only when the command could not run to completion: it could not start
 * (classified by errno), was killed by a signal (final), or timed out (uncertain).
 */
export async function execRaw(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  try {
    return await runCommandRaw(cmd, args, { ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }), ...(opts.input === undefined ? {} : { input: opts.input }) });
  } catch (err) {
    throw backendCommandFailed(err, describe(cmd, opts.what));
  }
}

/** Run a command; a non-zero exit throws BackendFailed (final unless `transient` says otherwise). */
export async function exec(cmd: string, args: readonly string[], opts: ExecOptions & { transient?: (r: ExecResult) => boolean } = {}): Promise<string> {
  const r = await execRaw(cmd, args, opts);
  if (r.code !== 0) throw commandFailed(cmd, args, r, { final: !(opts.transient?.(r) ?? false), ...(opts.what ? { what: opts.what } : {}) });
  return r.stdout;
}

/**
 * The BackendFailed error for a command that exited non-zero. Final unless `final: false` (the
 * caller knows this exit to be transient). Public: the operation, the program and its status.
 */
export function commandFailed(cmd: string, args: readonly string[], r: ExecResult, opts: { final?: boolean; what?: string } = {}): ServiceError {
  return errors.backendFailed(`cannot ${describe(cmd, opts.what)}: ${basename(cmd)} exited with status ${r.code}`, {
    final: opts.final ?? true,
    detail: `${renderCommand(cmd, args)} exited with status ${r.code}: ${outputTail(r)}`,
  });
}
