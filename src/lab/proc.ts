/**
 * Process helpers for the lab (spawning is fine here: the lab is not the hot path). Commands run
 * through the host runner (src/host/exec.ts); the lab's classification is to throw plainly, with
 * the command line and the output in the message (the lab is an operator's tool, not an API).
 */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { CommandFailed, renderCommand, runCommandRaw, type RunOptions } from '../host/exec.js';

/** A command that ran: exit status (127 if it could not start or was killed), stdout, stderr. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of the lab's commands: a timeout (default 60 s) and an environment. */
export type LabRunOptions = Pick<RunOptions, 'timeoutMs' | 'env'>;

/** Run a command to completion; never throws (a command that could not run gets code 127). */
export async function run(cmd: string, args: string[], opts: LabRunOptions = {}): Promise<RunResult> {
  try {
    const r = await runCommandRaw(cmd, args, { timeoutMs: opts.timeoutMs ?? 60_000, ...(opts.env ? { env: opts.env } : {}) });
    return { code: r.code, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const f = err as CommandFailed;
    return { code: 127, stdout: f.result?.stdout ?? '', stderr: f.result?.stderr || `${f.message}: ${f.detail}` };
  }
}

/** Run a command; resolves with stdout, throws an Error naming the command line on any failure. */
export async function mustRun(cmd: string, args: string[], opts: LabRunOptions = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${renderCommand(cmd, args)} failed (${r.code}): ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

/**
 * Run a command with stdout/stderr appended to `logFile`, in its own process group; resolves on
 * exit (not on pipe close, so a daemon that keeps inherited descriptors cannot hang us). Throws
 * on failure with the log's tail. Default timeout 10 min.
 */
export async function runLogged(cmd: string, args: string[], logFile: string, opts: LabRunOptions = {}): Promise<void> {
  let r;
  try {
    r = await runCommandRaw(cmd, args, { timeoutMs: opts.timeoutMs ?? 600_000, logFile, processGroup: true, ...(opts.env ? { env: opts.env } : {}) });
  } catch (err) {
    if (!(err instanceof CommandFailed)) throw err;
    throw new Error(`${renderCommand(cmd, args)} ${err.message.slice(err.program.length + 1)}; log ${logFile}:\n${err.result?.stderr ?? ''}`, { cause: err });
  }
  if (r.code !== 0) throw new Error(`${renderCommand(cmd, args)} failed (${r.code}); log ${logFile}:\n${r.stderr}`);
}

/** The file's text, or '' if it cannot be read. */
export function safeRead(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** True if `pid` names a live process (a zombie is not alive for our purposes). */
export function pidAlive(pid: number | undefined): boolean {
  if (!pid || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const stat = safeRead(`/proc/${pid}/stat`);
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z';
}

/** The process's argv joined by spaces ('' if gone). */
export function cmdlineOf(pid: number): string {
  return safeRead(`/proc/${pid}/cmdline`).split('\0').join(' ').trim();
}

/** True if `pid` is alive and its command line contains `needle` (guards against pid reuse). */
export function pidIs(pid: number | undefined, needle: string): pid is number {
  return pid !== undefined && pidAlive(pid) && cmdlineOf(pid).includes(needle);
}

/** Poll `fn` every `everyMs` until it returns a value; throws after `timeoutMs` naming `what`. */
export async function waitFor<T>(what: string, timeoutMs: number, fn: () => Promise<T | undefined> | T | undefined, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** SIGTERM `pid`, wait up to `timeoutMs`, then SIGKILL it and wait 2 s more. */
export async function killAndWait(pid: number, timeoutMs = 5000): Promise<void> {
  if (!pidAlive(pid)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + timeoutMs;
  while (pidAlive(pid) && Date.now() < deadline) await sleep(50);
  if (pidAlive(pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    const d2 = Date.now() + 2000;
    while (pidAlive(pid) && Date.now() < d2) await sleep(50);
  }
}
