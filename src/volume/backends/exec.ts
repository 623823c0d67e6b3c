/**
 * The one way the storage backends shell out: `execFile` (no shell), a timeout, and a
 * `BackendFailed` error classified at its source:
 * - a timeout is uncertain (the command may still finish, or have finished, its work);
 * - a command that could not start is classified by its errno (src/util/errno.ts);
 * - a non-zero exit is final, unless the caller declares that exit a known transient
 *   (`transient`), e.g. tgtadm's 107 when tgtd is not reachable.
 *
 * The public reason names the operation and the program, never its arguments (paths) or its
 * output; the command line, exit status and stderr go in `detail`, which is logged, never sent.
 */
import { execFile } from 'node:child_process';
import { basename } from 'node:path';
import { errors, type ServiceError } from '../../errors.js';
import { classifyErrno } from '../../util/errno.js';

export interface ExecOptions {
  /** Kill the command after this many ms (default 30 s). A timeout is an uncertain failure. */
  timeoutMs?: number;
  /** What the command does, in public words (`resize the qcow2 image`); defaults to `run <program>`. */
  what?: string;
}

export interface ExecResult {
  /** Exit status; 0 on success. */
  code: number;
  stdout: string;
  stderr: string;
}

const DEFAULT_TIMEOUT_MS = 30_000;

/** The command line as a shell would take it, for `detail` (operators copy it to reproduce). */
export function renderCommand(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(' ');
}

function describe(cmd: string, what: string | undefined): string {
  return what ?? `run ${basename(cmd)}`;
}

function outputOf(r: Pick<ExecResult, 'stdout' | 'stderr'>): string {
  return (r.stderr.trim() || r.stdout.trim() || '(no output)').slice(0, 2000);
}

/**
 * Run a command and return its exit status, stdout and stderr, whatever the status.
 * Throws BackendFailed only when the command could not run to completion: it could not start
 * (classified by errno), was killed by a signal (final), or timed out (uncertain).
 */
export function execRaw(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const timeout = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const what = describe(cmd, opts.what);
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { timeout, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (!err) {
          resolve({ code: 0, stdout, stderr });
          return;
        }
        const e = err as NodeJS.ErrnoException & { code?: unknown; killed?: boolean; signal?: string | null };
        if (typeof e.code === 'number') {
          resolve({ code: e.code, stdout, stderr });
          return;
        }
        const line = renderCommand(cmd, args);
        if (e.killed === true || e.signal) {
          const timedOut = e.killed === true;
          reject(
            errors.backendFailed(timedOut ? `cannot ${what}: ${basename(cmd)} timed out after ${timeout} ms` : `cannot ${what}: ${basename(cmd)} was killed by ${e.signal ?? 'a signal'}`, {
              final: !timedOut,
              cause: err,
              detail: `${line}${stderr ? `: ${stderr.trim().slice(0, 2000)}` : ''}`,
            }),
          );
          return;
        }
        const c = classifyErrno(err);
        reject(
          errors.backendFailed(`cannot ${what}: ${basename(cmd)} could not be started: ${c.reason}${c.errno ? ` (${c.errno})` : ''}`, {
            final: c.final,
            cause: err,
            detail: `${line}: ${e.message}`,
          }),
        );
      },
    );
  });
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
    detail: `${renderCommand(cmd, args)} exited with status ${r.code}: ${outputOf(r)}`,
  });
}
