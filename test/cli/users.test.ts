/**
 * `online-extend user create|list|delete` as real processes on a real data dir, and the users
 * they make logging in to a real `serve`'s embedded Keystone: the password comes from standard
 * input only (never argv or the environment) and is stored as a scrypt hash; an existing user is
 * refused unless --update, which replaces the password and revokes the user's tokens; delete
 * revokes too. `serve --auth noauth` warns and starts no Keystone. Processes ended by pid.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { spawn, type ChildProcess } from 'node:child_process';
import { BIN, runBin } from '../support/build.js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fakeInventory, PROJECT } from '../support/service.js';

const PASSWORD = 'pa ss:wörd-1';

let root: string;
let data: string;
const children = new Set<ChildProcess>();

/** Run the CLI to completion with `stdin` as its standard input. */
const cli = (args: string[], stdin?: string) => runBin(args, stdin === undefined ? {} : { stdin });

const userCreate = (user: string, stdin: string | undefined, ...extra: string[]) =>
  cli(['user', 'create', '--project', PROJECT, '--user', user, '--roles', 'admin,member', '--password-stdin', '--data-dir', data, '-f', 'json', ...extra], stdin);

interface Serve {
  child: ChildProcess;
  stdout: string[];
  identity: string | undefined;
  compute: string;
}

async function serve(...extra: string[]): Promise<Serve> {
  const args = ['serve', '--fake-inventory', join(root, 'inv.json'), '--data-dir', data, '--port', '0', '--volume-port', '0', '--identity-port', '0', '--image-port', '0', '--sync-interval', '0', ...extra];
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ONLINE_EXTEND_LOG_LEVEL: 'warn' } });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const stdout: string[] = [];
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  return new Promise<Serve>((res, rej) => {
    let compute = '';
    createInterface({ input: child.stdout! }).on('line', (line) => {
      stdout.push(line);
      compute ||= /compute API listening on (http:\/\/\S+)/.exec(line)?.[1] ?? '';
      const id = /identity \(Keystone v3\) listening on (http:\/\/\S+)\/v3/.exec(line)?.[1];
      if (id) res({ child, stdout, identity: id, compute });
      else if (/volume API listening/.test(line) && extra.includes('noauth')) res({ child, stdout, identity: undefined, compute });
    });
    child.once('exit', (code) => rej(new Error(`serve exited with ${code}: ${stderr}`)));
  });
}

async function stop(s: Serve): Promise<void> {
  const exited = new Promise((r) => s.child.once('exit', r));
  s.child.kill('SIGTERM');
  await exited;
}

async function login(s: Serve, user: string, password: string): Promise<{ status: number; token: string | null; body: unknown }> {
  const res = await fetch(`${s.identity}/v3/auth/tokens`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      auth: {
        identity: { methods: ['password'], password: { user: { name: user, domain: { name: 'Default' }, password } } },
        scope: { project: { name: PROJECT, domain: { name: 'Default' } } },
      },
    }),
  });
  return { status: res.status, token: res.headers.get('x-subject-token'), body: await res.json() };
}

const computeStatus = async (s: Serve, token: string) => (await fetch(`${s.compute}/v2/${PROJECT}/servers`, { headers: { 'x-auth-token': token } })).status;

function userRows(): Array<Record<string, string>> {
  const db = new Database(join(data, 'online-extend.sqlite'), { readonly: true, fileMustExist: true });
  try {
    return db.prepare('SELECT * FROM users ORDER BY name').all() as Array<Record<string, string>>;
  } finally {
    db.close();
  }
}

/** How many tokens `userId` holds in the store. */
function tokensOf(userId: string): number {
  const db = new Database(join(data, 'online-extend.sqlite'), { readonly: true, fileMustExist: true });
  try {
    return (db.prepare('SELECT count(*) AS n FROM tokens WHERE user_id = ?').get(userId) as { n: number }).n;
  } finally {
    db.close();
  }
}

let s: Serve;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'oe-users-'));
  data = join(root, 'data');
  writeFileSync(join(root, 'inv.json'), JSON.stringify(fakeInventory()));
  s = await serve();
});
afterAll(async () => {
  for (const c of children) {
    c.kill('SIGKILL');
    await new Promise((r) => c.once('exit', r));
  }
  rmSync(root, { recursive: true, force: true });
});

describe('user create', () => {
  it('reads the password from standard input only: it is never in the command line or the environment, and is stored as a scrypt hash', async () => {
    const child = spawn(process.execPath, [BIN, 'user', 'create', '--project', PROJECT, '--user', 'alice', '--roles', 'admin,member', '--password-stdin', '--data-dir', data], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ONLINE_EXTEND_LOG_LEVEL: 'warn' },
    });
    children.add(child);
    let stdout = '';
    child.stdout!.on('data', (b: Buffer) => (stdout += b.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', r));
    // While it waits for the password: what `ps` and /proc show of it.
    await new Promise((r) => setTimeout(r, 300));
    const cmdline = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8');
    const environ = readFileSync(`/proc/${child.pid}/environ`, 'utf8');
    expect(cmdline).toContain('--password-stdin');
    child.stdin!.end(`${PASSWORD}\n`);
    expect(await exited).toBe(0);
    children.delete(child);
    expect(cmdline).not.toContain(PASSWORD);
    expect(environ).not.toContain(PASSWORD);
    expect(stdout).toMatch(/^id\s+name\s+project_id\s+roles/);
    const [row] = userRows();
    expect(row).toMatchObject({ name: 'alice', project_id: PROJECT, roles: 'admin,member', id: expect.stringMatching(/^[0-9a-f]{32}$/) });
    expect(row!.password_hash).toMatch(/^scrypt\$N=32768,r=8,p=3\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]{44}$/);
    expect(JSON.stringify(row)).not.toContain(PASSWORD);
  });

  it("lets the user log in to serve's Keystone with that password (the trailing newline dropped), and answers a wrong password and an unknown user alike", async () => {
    const ok = await login(s, 'alice', PASSWORD);
    expect(ok.status).toBe(201);
    expect(await computeStatus(s, ok.token!)).toBe(200);
    const wrong = await login(s, 'alice', `${PASSWORD}\n`);
    const unknown = await login(s, 'mallory', PASSWORD);
    expect([wrong.status, unknown.status]).toEqual([401, 401]);
    expect(unknown.body).toEqual(wrong.body);
  });

  it('refuses an existing user without --update, changing nothing', async () => {
    const before = userRows();
    const r = await userCreate('alice', 'another');
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/user "alice" already exists \(id [0-9a-f]{32}, project .*\): pass --update to replace its password, project and roles/);
    expect(userRows()).toEqual(before);
  });

  it.each([
    ['without --password-stdin', ['user', 'create', '--project', PROJECT, '--user', 'x', '--roles', 'member'], 'pw', /--password-stdin is required: the password is read from standard input, never from arguments or the environment/],
    ['with an empty password', ['user', 'create', '--project', PROJECT, '--user', 'x', '--roles', 'member', '--password-stdin'], '\n', /the password is empty/],
    ['with an unknown role', ['user', 'create', '--project', PROJECT, '--user', 'x', '--roles', 'root', '--password-stdin'], 'pw', /unknown role "root"/],
    ['with an invalid project', ['user', 'create', '--project', '..', '--user', 'x', '--roles', 'member', '--password-stdin'], 'pw', /invalid project id/],
  ])('fails %s, saying why, and creates nothing', async (_name, args, stdin, message) => {
    const before = userRows();
    const r = await cli([...args, '--data-dir', data], stdin);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(userRows()).toEqual(before);
  });

  it("with --update replaces the password and revokes the user's tokens, those made from tokens too (Keystone revokes by user id)", async () => {
    const old = await login(s, 'alice', PASSWORD);
    expect(old.status).toBe(201);
    const child = await fetch(`${s.identity}/v3/auth/tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ auth: { identity: { methods: ['token'], token: { id: old.token } }, scope: { project: { id: PROJECT } } } }),
    });
    expect(child.status).toBe(201);
    const childToken = child.headers.get('x-subject-token')!;
    expect(await computeStatus(s, childToken)).toBe(200);
    const [before] = userRows();
    const r = await userCreate('alice', 'new password', '--update');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ user: { id: before!.id, name: 'alice', updated: true, tokens_revoked: expect.any(Number) } });
    expect((JSON.parse(r.stdout) as { user: { tokens_revoked: number } }).user.tokens_revoked).toBeGreaterThanOrEqual(3);
    expect(userRows()[0]!.id).toBe(before!.id);
    expect((await login(s, 'alice', PASSWORD)).status).toBe(401);
    expect((await login(s, 'alice', 'new password')).status).toBe(201);
    // serve re-reads a cached token from the store within 2 s.
    const until = Date.now() + 5_000;
    for (const t of [old.token!, childToken]) {
      while ((await computeStatus(s, t)) !== 401 && Date.now() < until) await new Promise((res) => setTimeout(res, 200));
      expect(await computeStatus(s, t)).toBe(401);
    }
  });
});

describe('user list and user delete', () => {
  it('lists users without any password hash', async () => {
    const r = await cli(['user', 'list', '--data-dir', data, '-f', 'json']);
    expect(r.status).toBe(0);
    const list = (JSON.parse(r.stdout) as { users: Array<Record<string, unknown>> }).users;
    expect(list.map((u) => Object.keys(u).sort())).toEqual([['created_at', 'id', 'name', 'project_id', 'roles']]);
    expect(list[0]).toMatchObject({ name: 'alice', project_id: PROJECT, roles: ['admin', 'member'] });
    expect(r.stdout).not.toMatch(/scrypt/);
  });

  it('deletes a user, who can then no longer log in, and refuses an unknown one', async () => {
    expect((await login(s, 'alice', 'new password')).status).toBe(201);
    const held = tokensOf(userRows()[0]!.id!);
    expect(held).toBeGreaterThanOrEqual(1);
    const r = await cli(['user', 'delete', '--user', 'alice', '--data-dir', data, '-f', 'json']);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ user: { name: 'alice', deleted: true, tokens_revoked: held } });
    expect(userRows()).toEqual([]);
    expect(tokensOf(JSON.parse(r.stdout).user.id)).toBe(0);
    expect((await login(s, 'alice', 'new password')).status).toBe(401);
    const again = await cli(['user', 'delete', '--user', 'alice', '--data-dir', data]);
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/no user "alice"/);
  });
});

describe('serve --auth noauth', () => {
  it('logs a warning, starts no Keystone and trusts USER:PROJECT', async () => {
    await stop(s);
    const n = await serve('--auth', 'noauth');
    try {
      expect(n.identity).toBeUndefined();
      expect(n.stdout.some((l) => /identity/.test(l) && !l.startsWith('{'))).toBe(false);
      const until = Date.now() + 5_000;
      let warning: Record<string, unknown> | undefined;
      while (!warning && Date.now() < until) {
        warning = n.stdout.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => String(l.msg).startsWith('noauth:'));
        if (!warning) await new Promise((r) => setTimeout(r, 50));
      }
      expect(warning).toMatchObject({ level: 40, auth: 'noauth' });
      expect(await computeStatus(n, `someone:${PROJECT}`)).toBe(200);
    } finally {
      await stop(n);
    }
  });
});
