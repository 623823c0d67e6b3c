/**
 * The one way this code base runs a host program (qemu-img, losetup, tgtadm, iscsi-readcapacity16,
 * virsh, the lab's scripts): `spawn` without a shell, a timeout, an optional abort signal, and one
 * typed error, `CommandFailed`, that says how the command did not succeed.
 *
 * This layer does not classify: callers keep their own classification through a small adapter at
 * the call site (the storage backends map to BackendFailed in src/volume/backends/exec.ts, the
 * libvirt driver to DriverFailed in src/virt/libvirt/storage.ts, the lab throws plainly).
 *
 * The error's `message` names the program (its basename) and the outcome only, never the
 * arguments (paths) or the output; `detail` carries the command line and the stderr tail for the
 * operator (errors.ts: `detail` is logged, never sent).
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename } from 'node:path';
import { errnoOf } from '../util/errno.js';

/** Default timeout of a host command: 30 s. */
export const DEFAULT_TIMEOUT_MS = 30_000;
/** How many characters of stderr (or stdout) `detail` keeps: the end, where tools say why. */
export const OUTPUT_TAIL_CHARS = 2000;
/** Output kept per stream; a tool that prints more keeps its first 16 MiB (`truncated`). */
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

/**
 * How a command did not succeed:
 * - `timedOut`: killed after `timeoutMs` (the command may have finished its work, or not);
 * - `exitCode`: it ran and exited non-zero;
 * - `signal`: it was killed by a signal nobody here sent;
 * - `aborted`: the caller's AbortSignal fired, and it was killed;
 * - `errno`: it could not be started (ENOENT: not installed, EACCES…); undefined if Node gave none.
 */
export type CommandOutcome =
  | { timedOut: true }
  | { exitCode: number }
  | { signal: string }
  | { aborted: true }
  | { errno: string | undefined };

/** A host command that did not succeed. `message` is public-safe (program and outcome, no arguments). */
export class CommandFailed extends Error {
  constructor(
    /** The program's basename, e.g. `losetup`. */
    readonly program: string,
    /** The command line and the output's tail, for the operator (`detail`), never for clients. */
    readonly detail: string,
    readonly outcome: CommandOutcome,
    opts: { cause?: unknown; timeoutMs?: number; result?: CommandResult; command?: string; args?: readonly string[] } = {},
  ) {
    super(`${program} ${describeOutcome(outcome, opts.timeoutMs)}`, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'CommandFailed';
    this.timeoutMs = opts.timeoutMs;
    this.result = opts.result;
    this.command = opts.command ?? opts.result?.command ?? program;
    this.args = opts.args ?? opts.result?.args ?? [];
  }

  /** The program as given (path or name); operator-only, like `args`. */
  readonly command: string;
  /** Its arguments (may hold paths: never put them in a public message). */
  readonly args: readonly string[];

  /** The timeout that fired, in ms (only for `timedOut`). */
  readonly timeoutMs: number | undefined;
  /** The output collected before the failure, when there was a run at all. */
  readonly result: CommandResult | undefined;
}

/** `timed out after 100 ms`, `exited with status 3`, … (the public half of a CommandFailed). */
export function describeOutcome(o: CommandOutcome, timeoutMs?: number): string {
  if ('timedOut' in o) return timeoutMs === undefined ? 'timed out' : `timed out after ${timeoutMs} ms`;
  if ('exitCode' in o) return `exited with status ${o.exitCode}`;
  if ('signal' in o) return `was killed by ${o.signal}`;
  if ('aborted' in o) return 'was aborted';
  return `could not be started${o.errno ? ` (${o.errno})` : ''}`;
}

/** The result of a command that ran to completion (whatever its exit status). */
export interface CommandResult {
  /** The program as given (path or name). */
  command: string;
  args: readonly string[];
  /** Exit status; 0 on success. */
  code: number;
  stdout: string;
  /** stderr; with `logFile`, the log file's tail instead. */
  stderr: string;
}

/** Options of runCommandRaw / runCommand. */
export interface RunOptions {
  /** Kill the command after this many ms (default 30 s): outcome `timedOut`. */
  timeoutMs?: number;
  /** Kill the command when this fires: outcome `aborted`. */
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
  /**
   * Written to the command's stdin, which is then closed (default: no stdin). For secrets a
   * command reads from `/dev/stdin`: never on its command line, never in a file.
   */
  input?: string;
  /**
   * Run the command in its own process group and kill the whole group (timeout, abort): for
   * scripts whose children must not outlive them (a shell running a build, a forking daemon's
   * starter).
   */
  processGroup?: boolean;
  /**
   * Append stdout and stderr to this file instead of collecting them, and finish on the command's
   * exit rather than on its pipes closing: a daemon it forks keeps inherited descriptors open.
   * `stderr` of the result (and the error's detail) is then the file's last lines.
   */
  logFile?: string;
}

/** The command line as a shell would take it, for `detail` (operators copy it to reproduce). */
export function renderCommand(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(' ');
}

/** The last OUTPUT_TAIL_CHARS of what a command said: stderr, else stdout, else `(no output)`. */
export function outputTail(r: Pick<CommandResult, 'stdout' | 'stderr'>): string {
  const text = r.stderr.trim() || r.stdout.trim() || '(no output)';
  return text.length > OUTPUT_TAIL_CHARS ? text.slice(-OUTPUT_TAIL_CHARS) : text;
}

async function fileTail(path: string, lines = 15): Promise<string> {
  try {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      const len = Math.min(size, 64 * 1024);
      const buf = Buffer.alloc(len);
      await fh.read(buf, 0, len, size - len);
      return buf.toString('utf8').split('\n').slice(-lines).join('\n');
    } finally {
      await fh.close();
    }
  } catch {
    return '';
  }
}

/**
 * Run `cmd args` to completion and return its exit status and output, whatever the status.
 * Rejects with CommandFailed only when it did not run to completion: it could not start
 * (`errno`), timed out (`timedOut`), was aborted (`aborted`) or killed by a signal (`signal`).
 */
export function runCommandRaw(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<CommandResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const line = renderCommand(cmd, args);
  const program = basename(cmd);
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) {
      reject(new CommandFailed(program, `${line}: aborted before it started`, { aborted: true }, { command: cmd, args }));
      return;
    }
    let fd: number | undefined;
    if (opts.logFile !== undefined) {
      try {
        fd = openSync(opts.logFile, 'a');
      } catch (err) {
        reject(new CommandFailed(program, `${line}: cannot open its log file ${opts.logFile}: ${(err as Error).message}`, { errno: errnoOf(err) }, { cause: err, command: cmd, args }));
        return;
      }
    }
    const child = spawn(cmd, [...args], {
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', fd ?? 'pipe', fd ?? 'pipe'],
      ...(opts.env === undefined ? {} : { env: opts.env }),
      detached: opts.processGroup === true,
    });
    if (fd !== undefined) closeSync(fd);
    if (opts.input !== undefined && child.stdin) {
      // A command that exits before reading all of it closes the pipe: not our error to raise.
      child.stdin.on('error', () => {});
      child.stdin.end(opts.input);
    }
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let errBytes = 0;
    child.stdout?.on('data', (d: Buffer) => {
      if (outBytes < MAX_OUTPUT_BYTES) out.push(d);
      outBytes += d.length;
    });
    child.stderr?.on('data', (d: Buffer) => {
      if (errBytes < MAX_OUTPUT_BYTES) err.push(d);
      errBytes += d.length;
    });
    let killedFor: CommandOutcome | undefined;
    const kill = (why: CommandOutcome): void => {
      killedFor ??= why;
      try {
        if (opts.processGroup === true && child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
        else child.kill('SIGKILL');
      } catch {
        // Already gone.
      }
    };
    const timer = setTimeout(() => kill({ timedOut: true }), timeoutMs);
    const onAbort = (): void => kill({ aborted: true });
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    let settled = false;
    const finish = async (code: number | null, signal: NodeJS.Signals | null): Promise<void> => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = opts.logFile !== undefined ? await fileTail(opts.logFile) : Buffer.concat(err).toString('utf8');
      const result: CommandResult = { command: cmd, args, code: code ?? -1, stdout, stderr };
      if (killedFor === undefined && code !== null) {
        resolve(result);
        return;
      }
      const outcome = killedFor ?? { signal: signal ?? 'a signal' };
      const tail = stderr.trim() ? `: ${outputTail(result)}` : '';
      reject(new CommandFailed(program, `${line}${tail}`, outcome, { ...('timedOut' in outcome ? { timeoutMs } : {}), result }));
    };
    child.once('error', (e) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      reject(new CommandFailed(program, `${line}: ${e.message}`, { errno: errnoOf(e) }, { cause: e, command: cmd, args }));
    });
    // With a log file there are no pipes to wait for: the exit is the end.
    if (fd !== undefined) child.once('exit', (code, signal) => void finish(code, signal));
    else child.once('close', (code, signal) => void finish(code, signal));
  });
}

/**
 * Run `cmd args` and resolve with its stdout; a non-zero exit rejects with CommandFailed
 * (`exitCode`, the output collected in `result`), as do the failures of runCommandRaw.
 */
export async function runCommand(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  const r = await runCommandRaw(cmd, args, opts);
  if (r.code !== 0) throw exitFailed(r);
  return r.stdout;
}

/** The CommandFailed (`exitCode`) for a result that exited non-zero. */
export function exitFailed(r: CommandResult): CommandFailed {
  return new CommandFailed(basename(r.command), `${renderCommand(r.command, r.args)} exited with status ${r.code}: ${outputTail(r)}`, { exitCode: r.code }, { result: r });
}

/**
 * Start a long-lived daemon (tgtd -f, …) that outlives this call: detached in its own process
 * group, stdout and stderr appended to `logFile` (or discarded), not waited for. Resolves with its
 * pid once it has been spawned; the caller records the pid and stops it by pid. Rejects with
 * CommandFailed (`errno`) if it cannot be started.
 */
export function startDaemon(cmd: string, args: readonly string[], opts: { logFile?: string; env?: NodeJS.ProcessEnv } = {}): Promise<number> {
  const line = renderCommand(cmd, args);
  return new Promise((resolve, reject) => {
    let fd: number | undefined;
    try {
      if (opts.logFile !== undefined) fd = openSync(opts.logFile, 'a');
    } catch (err) {
      reject(new CommandFailed(basename(cmd), `${line}: cannot open its log file ${opts.logFile}: ${(err as Error).message}`, { errno: errnoOf(err) }, { cause: err, command: cmd, args }));
      return;
    }
    const child = spawn(cmd, [...args], {
      detached: true,
      stdio: fd === undefined ? 'ignore' : ['ignore', fd, fd],
      ...(opts.env === undefined ? {} : { env: opts.env }),
    });
    if (fd !== undefined) closeSync(fd);
    child.once('error', (e) => reject(new CommandFailed(basename(cmd), `${line}: ${e.message}`, { errno: errnoOf(e) }, { cause: e, command: cmd, args })));
    child.once('spawn', () => {
      child.unref();
      if (child.pid === undefined) reject(new CommandFailed(basename(cmd), `${line}: no pid`, { errno: undefined }, { command: cmd, args }));
      else resolve(child.pid);
    });
  });
}
