/** Process helpers for the lab (spawning is fine here: the lab is not the hot path). */
import { spawn, execFile } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';


export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a command to completion; never throws for a non-zero exit. */
export function run(cmd: string, args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((res) => {
    execFile(
      cmd,
      args,
      { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024, env: opts.env ?? process.env, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { code?: unknown }) | null;
        let code = 0;
        if (e) code = typeof e.code === 'number' ? e.code : 127;
        if (e && typeof e.code !== 'number' && !stderr) stderr = e.message;
        res({ code, stdout, stderr });
      },
    );
  });
}

export async function mustRun(cmd: string, args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

/**
 * Run a command with stdout/stderr going to a log file; resolves on exit (not on pipe close, so a
 * daemon that keeps inherited descriptors cannot hang us). Rejects on non-zero exit with the tail.
 */
export function runLogged(cmd: string, args: string[], logFile: string, opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<void> {
  return new Promise((res, rej) => {
    const fd = openSync(logFile, 'a');
    const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], env: opts.env ?? process.env });
    closeSync(fd);
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 600_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      rej(e);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) return res();
      const tail = safeRead(logFile).split('\n').slice(-15).join('\n');
      rej(new Error(`${cmd} ${args.join(' ')} failed (${code ?? signal}); log ${logFile}:\n${tail}`));
    });
  });
}

export function safeRead(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

export function pidAlive(pid: number | undefined): boolean {
  if (!pid || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie is not alive for our purposes.
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

export async function waitFor<T>(what: string, timeoutMs: number, fn: () => Promise<T | undefined> | T | undefined, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

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

