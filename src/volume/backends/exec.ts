/**
 * The one way the storage backends shell out: `execFile` (no shell), a timeout, and a
 * `BackendFailed` error that names the command, its exit status and its stderr.
 */
import { execFile } from 'node:child_process';
import { errors } from '../../errors.js';

export interface ExecOptions {
  /** Kill the command after this many ms (default 30 s). A timeout is a retryable failure. */
  timeoutMs?: number;
}

export interface ExecResult {
  /** Exit status; 0 on success. */
  code: number;
  stdout: string;
  stderr: string;
}

const DEFAULT_TIMEOUT_MS = 30_000;

function render(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(' ');
}

/**
 * Run a command and return its exit status, stdout and stderr, whatever the status.
 * Throws BackendFailed only when the command could not run to completion: not found,
 * killed by a signal, or timed out (retryable).
 */
export function execRaw(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const timeout = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
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
        const what = render(cmd, args);
        if (e.killed === true || e.signal) {
          const timedOut = e.killed === true;
          reject(
            errors.backendFailed(
              timedOut
                ? `\`${what}\` timed out after ${timeout} ms${stderr ? `: ${stderr.trim()}` : ''}`
                : `\`${what}\` was killed by ${e.signal ?? 'a signal'}${stderr ? `: ${stderr.trim()}` : ''}`,
              { retryable: timedOut, cause: err },
            ),
          );
          return;
        }
        reject(errors.backendFailed(`\`${what}\` could not run: ${e.message}`, { cause: err }));
      },
    );
  });
}

/** Run a command; a non-zero exit throws BackendFailed with the command and its stderr. */
export async function exec(cmd: string, args: readonly string[], opts: ExecOptions & { retryable?: boolean } = {}): Promise<string> {
  const r = await execRaw(cmd, args, opts);
  if (r.code !== 0) throw commandFailed(cmd, args, r, opts.retryable ?? false);
  return r.stdout;
}

/** The BackendFailed error for a command that exited non-zero. */
export function commandFailed(cmd: string, args: readonly string[], r: ExecResult, retryable = false): Error {
  const detail = (r.stderr.trim() || r.stdout.trim() || '(no output)').slice(0, 2000);
  return errors.backendFailed(`\`${render(cmd, args)}\` exited with status ${r.code}: ${detail}`, { retryable });
}
