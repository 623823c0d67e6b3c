import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CommandFailed, renderCommand, runCommand, runCommandRaw, startDaemon } from '../../src/host/exec.js';

const failure = async (p: Promise<unknown>): Promise<CommandFailed> => {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CommandFailed);
  return err as CommandFailed;
};

/** Alive and not a zombie (a killed orphan stays a zombie until init reaps it). */
const alive = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
};

describe('the host command runner', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oe-host-exec-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('returns the exit status, stdout and stderr of a command whatever its status', async () => {
    const r = await runCommandRaw('sh', ['-c', 'echo out; echo err >&2; exit 4']);
    expect(r).toMatchObject({ command: 'sh', code: 4, stdout: 'out\n', stderr: 'err\n' });
    expect(r.args).toEqual(['-c', 'echo out; echo err >&2; exit 4']);
  });

  it('resolves with stdout, and rejects a non-zero exit with its status, the command line and the stderr tail', async () => {
    expect(await runCommand('echo', ['hello'])).toBe('hello\n');
    const err = await failure(runCommand('sh', ['-c', 'echo boom >&2; exit 3', '/tmp/secret/vol.raw']));
    expect(err.outcome).toEqual({ exitCode: 3 });
    expect(err.program).toBe('sh');
    expect(err.message).toBe('sh exited with status 3');
    expect(err.detail).toContain('/tmp/secret/vol.raw');
    expect(err.detail).toContain('boom');
    expect(err.result?.code).toBe(3);
    expect(err.command).toBe('sh');
    expect(err.args).toEqual(['-c', 'echo boom >&2; exit 3', '/tmp/secret/vol.raw']);
  });

  it('never puts arguments or output in the message of any failure', async () => {
    const path = '/tmp/secret-dir/vol-1.raw';
    const errs = await Promise.all([
      failure(runCommand('sh', ['-c', `echo ${path} >&2; exit 1`, path])),
      failure(runCommand('sleep', ['5', path].slice(0, 1), { timeoutMs: 50 })),
      failure(runCommand(`/nonexistent${path}`, [path])),
    ]);
    for (const e of errs) expect(e.message).not.toContain('/tmp');
  });

  it('kills a command at its timeout and says so, with the timeout in ms', async () => {
    const t0 = Date.now();
    const err = await failure(runCommand('sleep', ['5'], { timeoutMs: 100 }));
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(err.outcome).toEqual({ timedOut: true });
    expect(err.timeoutMs).toBe(100);
    expect(err.message).toBe('sleep timed out after 100 ms');
    expect(err.detail).toContain('sleep 5');
  });

  it('kills the whole process group of a command that forks, when asked to', async () => {
    const pidFile = join(dir, 'grandchild.pid');
    // The shell starts a grandchild that would outlive it, and then waits.
    const err = await failure(runCommand('sh', ['-c', `sleep 30 & echo $! > ${pidFile}; wait`], { timeoutMs: 300, processGroup: true }));
    expect(err.outcome).toEqual({ timedOut: true });
    const grandchild = Number((await readFile(pidFile, 'utf8')).trim());
    expect(grandchild).toBeGreaterThan(0);
    for (let i = 0; i < 40 && alive(grandchild); i++) await sleep(25);
    expect(alive(grandchild)).toBe(false);
  });

  it('kills a command when the caller aborts, and reports it as aborted', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    const err = await failure(runCommand('sleep', ['5'], { signal: ac.signal }));
    expect(err.outcome).toEqual({ aborted: true });
    expect(err.message).toBe('sleep was aborted');
    const already = await failure(runCommand('sleep', ['5'], { signal: AbortSignal.abort() }));
    expect(already.outcome).toEqual({ aborted: true });
  });

  it('reports a command killed by a signal nobody here sent', async () => {
    const err = await failure(runCommand('sh', ['-c', 'kill -TERM $$']));
    expect(err.outcome).toEqual({ signal: 'SIGTERM' });
    expect(err.message).toBe('sh was killed by SIGTERM');
  });

  it('reports a program that cannot start by its errno', async () => {
    const err = await failure(runCommand('no-such-program-oe', ['/some/path']));
    expect(err.outcome).toEqual({ errno: 'ENOENT' });
    expect(err.message).toBe('no-such-program-oe could not be started (ENOENT)');
    expect(err.command).toBe('no-such-program-oe');
    expect(err.args).toEqual(['/some/path']);
    expect(err.detail).toContain('/some/path');
  });

  it('writes output to a log file and finishes on exit even when a forked child keeps the descriptors', async () => {
    const log = join(dir, 'daemon.log');
    const pidFile = join(dir, 'daemon.pid');
    const t0 = Date.now();
    // The "daemon" inherits stdout/stderr and lives 30 s: waiting for the pipes would hang.
    const r = await runCommandRaw('sh', ['-c', `echo starting; sleep 30 & echo $! > ${pidFile}; echo started >&2`], { logFile: log, timeoutMs: 5000 });
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('started');
    expect(await readFile(log, 'utf8')).toBe('starting\nstarted\n');
    process.kill(Number((await readFile(pidFile, 'utf8')).trim()), 'SIGKILL');
    const bad = await failure(runCommand('sh', ['-c', 'echo why-it-failed; exit 2'], { logFile: log }));
    expect(bad.detail).toContain('why-it-failed');
  });

  it('starts a daemon in its own process group, logging to a file, and hands back its pid to stop it by', async () => {
    const log = join(dir, 'started-daemon.log');
    const pid = await startDaemon('sh', ['-c', 'echo up; exec sleep 30'], { logFile: log });
    try {
      expect(alive(pid)).toBe(true);
      // Its own process group: the group id is its pid.
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      expect(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2])).toBe(pid);
      for (let i = 0; i < 40 && !(await readFile(log, 'utf8')).includes('up'); i++) await sleep(25);
      expect(await readFile(log, 'utf8')).toBe('up\n');
    } finally {
      process.kill(pid, 'SIGKILL');
    }
    for (let i = 0; i < 40 && alive(pid); i++) await sleep(25);
    expect(alive(pid)).toBe(false);
    const missing = await failure(startDaemon('no-such-daemon-oe', []));
    expect(missing.outcome).toEqual({ errno: 'ENOENT' });
  });

  it.each([
    [['qemu-img', 'resize', '/a/b.qcow2', '2G'], 'qemu-img resize /a/b.qcow2 2G'],
    [['sh', '-c', "echo 'x' y"], `sh -c 'echo '\\''x'\\'' y'`],
    [['tgtadm', '-T', 'iqn.2026-11.dev:vol a'], "tgtadm -T 'iqn.2026-11.dev:vol a'"],
  ])('renders %j as a shell would take it', (argv, line) => {
    const [cmd, ...args] = argv as [string, ...string[]];
    expect(renderCommand(cmd, args)).toBe(line);
  });
});
