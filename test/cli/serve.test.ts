/**
 * The real `online-extend` command (bin/, built) on a real data dir: one `serve` per data dir,
 * restarts right after kill -9, `token create` while serve runs, explicit roles, the service
 * token reused across restarts and rotated when expired, a damaged data dir refused, and every
 * file private. Processes are ended by pid; temp dirs removed.
 */
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { createServer, type AddressInfo } from 'node:net';
import { ApiClient, VOLUME_LATEST } from '../../src/rpc/httpClient.js';
import { fakeInventory, PROJECT, SERVER } from '../support/service.js';
import { describeReal } from '../support/real.js';

const BIN = resolve(import.meta.dirname, '../../bin/online-extend.js');
const MiB = 2 ** 20;
const SERVICE_USER = 'online-extend-volume';

let root: string;
let data: string;
const children = new Set<ChildProcess>();

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'oe-cli-'));
  data = join(root, 'data');
  writeFileSync(join(root, 'inv.json'), JSON.stringify(fakeInventory()));
});
afterEach(async () => {
  for (const c of children) {
    c.kill('SIGKILL');
    await new Promise((r) => c.once('exit', r));
  }
  rmSync(root, { recursive: true, force: true });
});
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
});

interface Serve {
  child: ChildProcess;
  computeUrl: string;
  compute: ApiClient;
  volume: ApiClient;
  /** Its stdout so far, line by line (the JSON log lines among them). */
  stdout: string[];
}

function serveArgs(...extra: string[]): string[] {
  return ['serve', '--fake-inventory', join(root, 'inv.json'), '--data-dir', data, '--port', '0', '--volume-port', '0', '--identity-port', '0', '--image-port', '0', '--sync-interval', '0', ...extra];
}

/** Start `serve` and wait until both APIs listen. `umask` 022 shows serve narrows it itself. */
async function serve(token: string, opts: { args?: string[]; logLevel?: string } = {}): Promise<Serve> {
  const child = spawn('/bin/sh', ['-c', 'umask 022 && exec "$0" "$@"', process.execPath, BIN, ...serveArgs(...(opts.args ?? []))], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ONLINE_EXTEND_LOG_LEVEL: opts.logLevel ?? 'warn' },
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const urls: string[] = [];
  const stdout: string[] = [];
  await new Promise<void>((res, rej) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      stdout.push(line);
      const m = /API listening on (http:\/\/\S+)/.exec(line);
      if (m) urls.push(m[1]!);
      if (urls.length === 2) res();
    });
    child.once('exit', (code) => rej(new Error(`serve exited with ${code}: ${stderr}`)));
  });
  return { child, computeUrl: urls[0]!, compute: new ApiClient({ url: urls[0]!, token }), volume: new ApiClient({ url: urls[1]!, token, headers: VOLUME_LATEST }), stdout };
}

/** The first JSON log line of `p` whose message starts with `msg`, waiting for it (pino writes asynchronously). */
async function logLine(p: Serve, msg: string): Promise<Record<string, unknown> | undefined> {
  const until = Date.now() + 5_000;
  for (;;) {
    const found = p.stdout.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => String(l.msg).startsWith(msg));
    if (found || Date.now() > until) return found;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Stop `serve` with `signal`; SIGTERM must end it cleanly (exit status 0). */
async function stop(p: Serve, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const exited = new Promise<[number | null, string | null]>((r) => p.child.once('exit', (code, sig) => r([code, sig])));
  p.child.kill(signal);
  const [code, sig] = await exited;
  if (signal === 'SIGTERM') expect({ code, sig }).toEqual({ code: 0, sig: null });
}

/** Run the CLI to completion: its exit status, stdout and stderr. */
function cli(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, ONLINE_EXTEND_LOG_LEVEL: 'warn', ...env }, timeout: 30_000 });
  return { status: r.status, stdout: r.stdout.trim(), stderr: r.stderr.trim() };
}

function tokenCreate(...extra: string[]): string {
  return execFileSync(process.execPath, [BIN, 'token', 'create', '--project', PROJECT, '--user', 'u', '--data-dir', data, ...extra], { encoding: 'utf8' }).trim();
}

/** Rows of the tokens table, read directly from the database file. */
function tokenRows(userId?: string): Array<{ hash: string; user_id: string; expires_at: string }> {
  const db = new Database(join(data, 'online-extend.sqlite'), { readonly: true, fileMustExist: true });
  try {
    return (userId === undefined ? db.prepare('SELECT * FROM tokens').all() : db.prepare('SELECT * FROM tokens WHERE user_id = ?').all(userId)) as Array<{
      hash: string;
      user_id: string;
      expires_at: string;
    }>;
  } finally {
    db.close();
  }
}

function savedServiceToken(): string {
  return (JSON.parse(readFileSync(join(data, 'service-token.json'), 'utf8')) as { token: string }).token;
}

type Vol = { id: string; status: string; size_bytes: number };

/** An in-use extend: the volume service calls compute with its service token at every step. */
async function extendInUse(p: Serve, name: string): Promise<Vol> {
  const v = (await p.volume.request<{ volume: Vol }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name, size_bytes: 64 * MiB } })).body.volume;
  await p.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: v.id } });
  await p.volume.request('POST', `/v3/${PROJECT}/volumes/${v.id}/action`, { 'os-extend-bytes': { new_bytes: 128 * MiB } });
  const until = Date.now() + 15_000;
  let cur = v;
  do {
    await new Promise((r) => setTimeout(r, 20));
    cur = (await p.volume.request<{ volume: Vol }>('GET', `/v3/${PROJECT}/volumes/${v.id}/os-online-extend`)).body.volume;
  } while (cur.status === 'extending' && Date.now() < until);
  return cur;
}

describe('one serve per data dir', () => {
  it('refuses a second serve on the same data dir, naming the pid that holds it, and the first keeps serving', async () => {
    const token = tokenCreate('--roles', 'admin');
    const first = await serve(token);
    const second = cli(serveArgs());
    expect(second.status).toBe(1);
    expect(second.stderr).toContain(`is in use by process ${first.child.pid}`);
    expect(second.stderr).toContain('only one serve may use a data dir');
    expect((await first.compute.request<{ servers: unknown[] }>('GET', `/v2/${PROJECT}/servers`)).body.servers).toHaveLength(1);
    await stop(first);
  });

  it.each([
    { given: true, says: true },
    { given: false, says: false },
  ])('says that a database URL in the environment is not used by serve (given: $given)', async ({ given, says }) => {
    const first = await serve(tokenCreate('--roles', 'admin'));
    // A second serve on the same data dir stops at its lock, after reading its settings.
    const second = cli(serveArgs(), given ? { ONLINE_EXTEND_DATABASE_URL: 'postgresql://u@127.0.0.1:1/db' } : {});
    expect(second.status).toBe(1);
    expect(/^note: serve keeps its database in its data dir \(.+\); the database URL given \(ONLINE_EXTEND_DATABASE_URL or databaseUrl\) is for `api` and `compute-agent`, and is not used$/m.test(second.stderr)).toBe(says);
    expect(second.stderr).not.toContain('postgresql://');
    await stop(first);
  });

  it('creates tokens while serve runs, and serve accepts them', async () => {
    const first = await serve(tokenCreate('--roles', 'admin'));
    const late = tokenCreate('--roles', 'admin');
    const client = new ApiClient({ url: first.computeUrl, token: late });
    expect((await client.request('GET', `/v2/${PROJECT}/servers`)).status).toBe(200);
    await stop(first);
  });

  it('starts again at once after the holder is killed with SIGKILL, and again after a clean stop', async () => {
    const token = tokenCreate('--roles', 'admin');
    const first = await serve(token);
    await stop(first, 'SIGKILL');
    const second = await serve(token);
    expect(readFileSync(join(data, 'serve.pid'), 'utf8').trim()).toBe(String(second.child.pid));
    await stop(second);
    expect(existsSync(join(data, 'serve.pid'))).toBe(false);
    const third = await serve(token);
    await stop(third);
  });
});

describe('a port that is taken', () => {
  it.each([['--port'], ['--volume-port'], ['--identity-port']])('makes serve exit non-zero with the error when %s is taken, leaving nothing listening, and the data dir free', async (flag) => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as AddressInfo).port;
    try {
      const r = cli(serveArgs(flag, String(port)));
      expect(r.status).not.toBe(0);
      expect(r.status).not.toBeNull(); // exited by itself, not by the 30 s timeout
      expect(r.stderr).toMatch(/EADDRINUSE/);
    } finally {
      await new Promise((r) => taken.close(r));
    }
    // The lock went with the process: the next serve starts.
    const token = tokenCreate('--roles', 'admin');
    const s = await serve(token);
    expect((await s.compute.request('GET', `/v2/${PROJECT}/servers`)).status).toBe(200);
  });
});

describe('token create', () => {
  it('fails without --roles, saying roles must be named, and creates nothing', () => {
    const r = cli(['token', 'create', '--project', PROJECT, '--user', 'u', '--data-dir', data]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/--roles is required: name the token's roles, e\.g\. --roles member \(standard roles: admin, member, reader, service/);
    expect(r.stdout).toBe('');
    expect(existsSync(join(data, 'online-extend.sqlite'))).toBe(false);
  });

  it('fails on an unknown role, and creates no token', () => {
    tokenCreate('--roles', 'reader');
    const r = cli(['token', 'create', '--project', PROJECT, '--user', 'u', '--roles', 'member,admni', '--data-dir', data]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('unknown role "admni"');
    expect(tokenRows('u')).toHaveLength(1);
  });

  it('accepts a role the policy file names, with exactly the roles given', async () => {
    const policy = join(root, 'policy.json');
    writeFileSync(policy, JSON.stringify({ 'volume:get': 'role:volume_viewer' }));
    const token = tokenCreate('--roles', 'volume_viewer', '--policy', policy);
    expect(token).toMatch(/^oe-/);
    const db = new Database(join(data, 'online-extend.sqlite'), { readonly: true });
    expect(db.prepare('SELECT roles FROM tokens WHERE user_id = ?').get('u')).toEqual({ roles: 'volume_viewer' });
    db.close();
  });
});

describe('the volume service token', () => {
  it('is one token, reused across two restarts', async () => {
    const token = tokenCreate('--roles', 'admin');
    let p = await serve(token);
    const kept = savedServiceToken();
    await stop(p);
    p = await serve(token);
    await stop(p, 'SIGKILL');
    p = await serve(token);
    expect(savedServiceToken()).toBe(kept);
    const rows = tokenRows(SERVICE_USER);
    expect(rows).toHaveLength(1);
    expect(Date.parse(rows[0]!.expires_at) - Date.now()).toBeLessThanOrEqual(24 * 3_600_000);
    expect((await extendInUse(p, 'reused')).status).toBe('in-use');
    await stop(p);
  });

  it('is rotated at start once expired, the old one removed, and the new one works', async () => {
    const token = tokenCreate('--roles', 'admin');
    let p = await serve(token);
    const old = savedServiceToken();
    await stop(p);
    const db = new Database(join(data, 'online-extend.sqlite'));
    db.prepare('UPDATE tokens SET expires_at = ? WHERE user_id = ?').run('2020-01-01T00:00:00.000Z', SERVICE_USER);
    db.close();
    p = await serve(token);
    expect(savedServiceToken()).not.toBe(old);
    const rows = tokenRows(SERVICE_USER);
    expect(rows).toHaveLength(1);
    expect(Date.parse(rows[0]!.expires_at)).toBeGreaterThan(Date.now());
    const v = await extendInUse(p, 'rotated');
    expect(v).toMatchObject({ status: 'in-use', size_bytes: 128 * MiB });
    await stop(p);
  });
});

describe('a data dir whose database is gone', () => {
  it('refuses to start on a zero-length database while volume files remain, and leaves it as it was', async () => {
    const token = tokenCreate('--roles', 'admin');
    const p = await serve(token);
    await p.volume.request('POST', `/v3/${PROJECT}/volumes`, { volume: { name: 'kept', size_bytes: 8 * MiB } });
    await stop(p);
    for (const f of ['online-extend.sqlite-wal', 'online-extend.sqlite-shm']) rmSync(join(data, f), { force: true });
    writeFileSync(join(data, 'online-extend.sqlite'), '');
    const r = cli(serveArgs());
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/online-extend\.sqlite is empty \(0 bytes\), but this data dir was in use: found .*1 volume file\(s\) in .*volumes\/file/);
    expect(r.stderr).toMatch(/Restore the database from a backup/);
    expect(statSync(join(data, 'online-extend.sqlite')).size).toBe(0);
    // token create refuses it too, rather than building a fresh database over the traces.
    const t = cli(['token', 'create', '--project', PROJECT, '--user', 'u', '--roles', 'admin', '--data-dir', data]);
    expect(t.status).toBe(1);
    expect(t.stderr).toMatch(/is empty \(0 bytes\)/);
  });
});

/** Every file under `dir` with its bytes, to show a refusal changed nothing (SQLite's -wal/-shm and the lock aside). */
function contents(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (p: string) => {
    for (const n of readdirSync(p)) {
      const f = join(p, n);
      if (statSync(f).isDirectory()) walk(f);
      else if (!/-(wal|shm)$|serve\.lock$/.test(n)) out[f.slice(dir.length)] = readFileSync(f).toString('base64');
    }
  };
  walk(dir);
  return out;
}

describe('a data dir whose database is not its own, or lost volumes', () => {
  it('refuses to start on a fresh database copied over a used data dir, naming both identities, and changes nothing', async () => {
    const token = tokenCreate('--roles', 'admin');
    const p = await serve(token);
    for (const name of ['a', 'b', 'c']) await p.volume.request('POST', `/v3/${PROJECT}/volumes`, { volume: { name, size_bytes: 8 * MiB } });
    await stop(p);
    const marker = JSON.parse(readFileSync(join(data, 'data-dir.json'), 'utf8')) as { databaseId: string };
    // A fresh data dir's database (token create makes one), copied in as an operator would.
    const fresh = join(root, 'fresh');
    expect(cli(['token', 'create', '--project', PROJECT, '--user', 'u', '--roles', 'admin', '--data-dir', fresh]).status).toBe(0);
    for (const f of ['online-extend.sqlite-wal', 'online-extend.sqlite-shm']) rmSync(join(data, f), { force: true });
    copyFileSync(join(fresh, 'online-extend.sqlite'), join(data, 'online-extend.sqlite'));
    const before = contents(data);
    const r = cli(serveArgs());
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`is not this data dir's: the marker ${join(data, 'data-dir.json')} records database ${marker.databaseId}`);
    expect(r.stderr).toMatch(/but this one is database [0-9a-f]{32}\. It was replaced/);
    expect(contents(data)).toEqual(before);
  });

  it('refuses volume files the database lost, then starts with --allow-orphan-volumes, logging them and the counts', async () => {
    const token = tokenCreate('--roles', 'admin');
    let p = await serve(token);
    const ids: string[] = [];
    for (const name of ['a', 'b', 'c']) ids.push((await p.volume.request<{ volume: Vol }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name, size_bytes: 8 * MiB } })).body.volume.id);
    await stop(p);
    const lost = ids[1]!;
    const db = new Database(join(data, 'online-extend.sqlite'));
    db.prepare('DELETE FROM volumes WHERE id = ?').run(lost);
    db.close();
    const before = contents(data);
    const r = cli(serveArgs());
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`1 volume file(s) under ${join(data, 'volumes')} belong to no volume in the database`);
    expect(r.stderr).toContain(`(file/${lost}.raw); it knows 2 volume(s)`);
    expect(r.stderr).toContain('--allow-orphan-volumes');
    expect(contents(data)).toEqual(before);

    p = await serve(token, { args: ['--allow-orphan-volumes'], logLevel: 'info' });
    expect(await logLine(p, 'data dir checked')).toMatchObject({ level: 30, volumes: 2, volumeFiles: 3, orphanVolumeFiles: 1 });
    expect(await logLine(p, 'volume files belong to no volume')).toMatchObject({ level: 50, count: 1, volumeIds: [lost], files: [`file/${lost}.raw`] });
    expect(existsSync(join(data, 'volumes', 'file', `${lost}.raw`))).toBe(true);
    expect((await p.volume.request('GET', `/v3/${PROJECT}/volumes/${lost}/os-online-extend`).catch((e: { status: number }) => e)).status).toBe(404);
    await stop(p);
  });
});

/** Every directory and file under `dir` with its permission bits (symlinks and sockets aside). */
function modes(dir: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  const walk = (p: string) => {
    const st = lstatSync(p);
    if (st.isDirectory() || st.isFile()) out.push([p.slice(root.length), (st.mode & 0o777).toString(8)]);
    if (st.isDirectory()) for (const n of readdirSync(p)) walk(join(p, n));
  };
  walk(dir);
  return out;
}

function expectPrivate(dir: string): void {
  const all = modes(dir);
  const want = all.map(([p]) => [p, statSync(join(root, p)).isDirectory() ? '700' : '600']);
  expect(all).toEqual(want);
}

const qemuImg = spawnSync('qemu-img', ['--version']).status === 0;

describeReal(qemuImg ? undefined : 'qemu-img is not installed (apt-get install qemu-utils)')('file modes in the data dir', () => {
  it('makes every file 0600 and every directory 0700 after serve, raw and qcow2 volumes and token create', async () => {
    const token = tokenCreate('--roles', 'admin');
    const p = await serve(token);
    const raw = (await p.volume.request<{ volume: Vol }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: 'r', size_bytes: 8 * MiB, format: 'raw' } })).body.volume;
    const qcow2 = (await p.volume.request<{ volume: Vol }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: 'q', size_bytes: 8 * MiB, format: 'qcow2' } })).body.volume;
    await p.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: raw.id } });
    tokenCreate('--roles', 'member');
    const names = modes(data).map(([f]) => f.slice('/data'.length));
    for (const f of ['', '/online-extend.sqlite', '/online-extend.sqlite-wal', '/online-extend.sqlite-shm', '/fake-hypervisor.json', '/service-token.json', '/data-dir.json', '/serve.lock', '/serve.pid', '/volumes', '/volumes/file', `/volumes/file/${raw.id}.raw`, `/volumes/file/${qcow2.id}.qcow2`]) {
      expect(names).toContain(f);
    }
    expectPrivate(data);
    await stop(p);
    expectPrivate(data);
  });

  it('narrows at start the files and directories an older version left readable', async () => {
    const token = tokenCreate('--roles', 'admin');
    let p = await serve(token);
    const q = (await p.volume.request<{ volume: Vol }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: 'q', size_bytes: 8 * MiB, format: 'qcow2' } })).body.volume;
    await stop(p);
    // As an older version left them.
    for (const d of [data, join(data, 'volumes'), join(data, 'volumes', 'file')]) chmodSync(d, 0o755);
    for (const f of ['online-extend.sqlite', 'fake-hypervisor.json', `volumes/file/${q.id}.qcow2`]) chmodSync(join(data, f), 0o644);
    mkdirSync(join(data, 'volumes', 'block'), { mode: 0o755 });
    // A half-made file (what a crash during create leaves): a volume file with no volume would be refused.
    writeFileSync(join(data, 'volumes', 'block', 'old.raw.tmp-1-ab'), '', { mode: 0o666 });
    chmodSync(join(data, 'volumes', 'block', 'old.raw.tmp-1-ab'), 0o666);
    expect(modes(data).some(([, m]) => m !== '600' && m !== '700')).toBe(true);
    p = await serve(token);
    expectPrivate(data);
    await stop(p);
  });
});
