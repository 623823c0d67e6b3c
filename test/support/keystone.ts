/**
 * A real Keystone for tests: Debian's python3-keystone (22.x) on 127.0.0.1, a free port, in a
 * temp dir (SQLite, Fernet tokens), with a service user (`service` and `admin` roles on project
 * `service`, as devstack gives Cinder's and Nova's service users), a member user in its own
 * project, and the bootstrap admin. Users, projects and role assignments are made through
 * Keystone's REST API. `stop()` ends the process by pid and removes the dir.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, openSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

const PYTHON = '/usr/bin/python3';
const MANAGE = '/usr/bin/keystone-manage';
const WSGI = '/usr/bin/keystone-wsgi-public';

/** Why a real Keystone cannot run here, or undefined when it can. */
export function keystoneMissing(): string | undefined {
  for (const f of [PYTHON, MANAGE, WSGI]) if (!existsSync(f)) return `${f} not found (apt-get install --no-install-recommends python3-keystone)`;
  return undefined;
}

/** A Keystone user with a project-scoped role. */
export interface KeystoneUser {
  name: string;
  id: string;
  password: string;
  projectName: string;
  projectId: string;
}

export interface KeystoneHarness {
  /** `http://127.0.0.1:PORT/v3` */
  url: string;
  port: number;
  dir: string;
  admin: KeystoneUser;
  member: KeystoneUser;
  service: KeystoneUser & { passwordFile: string };
  /** Time to set up the database and keys (keystone-manage) and to serve, ms. */
  timings: { setupMs: number; serveMs: number };
  /** A project-scoped token for `user` (password auth). */
  token(user: KeystoneUser): Promise<string>;
  /** Revoke `token` (DELETE /v3/auth/tokens as the admin). */
  revoke(token: string): Promise<void>;
  /** End the Keystone process (its data stays: `restart` serves it again on the same port). */
  kill(): Promise<void>;
  /**
   * Serve again (after `kill`, or ending it first), on the same port with the same data and keys:
   * tokens issued before stay valid. `tokenExpirationS` changes the life of tokens issued from now on.
   */
  restart(opts?: { tokenExpirationS?: number }): Promise<void>;
  /** End the process and remove the dir. */
  stop(): Promise<void>;
}

/** Debian's Python, without the caller's Python environment, with a private HOME. */
function pyEnv(dir: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: '/usr/bin:/bin', HOME: dir, LANG: 'C.UTF-8', ...extra };
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

/** `keystone-manage ARGS` (each run costs ~2 s of Python start-up). */
async function manage(dir: string, conf: string, ...args: string[]): Promise<void> {
  const c = spawn(PYTHON, [MANAGE, '--config-file', conf, ...args], { cwd: dir, env: pyEnv(dir), stdio: ['ignore', 'ignore', 'pipe'], timeout: 120_000 });
  let stderr = '';
  c.stderr!.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-2000)));
  const [code, signal] = (await once(c, 'exit')) as [number | null, string | null];
  if (code !== 0) throw new Error(`keystone-manage ${args[0]} failed (${code ?? signal}): ${stderr}`);
}

async function json(res: Response, what: string): Promise<Record<string, unknown>> {
  const text = await res.text();
  if (!res.ok) throw new Error(`${what}: HTTP ${res.status}: ${text.slice(0, 500)}`);
  return text ? (JSON.parse(text) as Record<string, unknown>) : {};
}

/**
 * Start a Keystone. `tokenExpirationS`: its `[token] expiration` (default 3600): every token it
 * issues, the service's included, lives that long.
 */
export async function startKeystone(opts: { tokenExpirationS?: number } = {}): Promise<KeystoneHarness> {
  const dir = mkdtempSync(join(tmpdir(), 'oe-keystone-'));
  let child: ChildProcess | undefined;
  try {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}/v3`;
    const conf = join(dir, 'keystone.conf');
    const writeConf = (expirationS: number) =>
      writeFileSync(
        conf,
        [
          '[DEFAULT]',
          'use_stderr = true',
          '[database]',
          `connection = sqlite:///${join(dir, 'keystone.db')}`,
          '[token]',
          'provider = fernet',
          `expiration = ${expirationS}`,
          // bcrypt's fewest rounds: Keystone hashes every password it sets and checks (12 rounds cost ~0.3 s each here).
          '[identity]',
          'password_hash_rounds = 4',
          '[fernet_tokens]',
          `key_repository = ${join(dir, 'fernet')}`,
          '[fernet_receipts]',
          `key_repository = ${join(dir, 'fernet-receipts')}`,
          '[credential]',
          `key_repository = ${join(dir, 'credential')}`,
          '',
        ].join('\n'),
      );
    writeConf(opts.tokenExpirationS ?? 3600);
    // The key repositories belong to whoever runs the tests (keystone-manage wants names).
    const owner = ['--keystone-user', userInfo().username, '--keystone-group', execFileSync('id', ['-gn'], { encoding: 'utf8' }).trim()];
    const adminPassword = randomBytes(12).toString('hex');
    const t0 = performance.now();
    // The key repositories do not need the database: set them up while it is made.
    await Promise.all([
      manage(dir, conf, 'db_sync'),
      manage(dir, conf, 'fernet_setup', ...owner),
      manage(dir, conf, 'credential_setup', ...owner),
    ]);
    await manage(dir, conf, 'bootstrap', '--bootstrap-password', adminPassword, '--bootstrap-public-url', url, '--bootstrap-region-id', 'RegionOne');
    const setupMs = performance.now() - t0;

    const serve = async (): Promise<number> => {
      const t = performance.now();
      const log = openSync(join(dir, 'keystone.log'), 'a');
      child = spawn(PYTHON, [WSGI, '--host', '127.0.0.1', '--port', String(port)], {
        cwd: dir,
        env: pyEnv(dir, { OS_KEYSTONE_CONFIG_FILES: conf }),
        stdio: ['ignore', log, log],
      });
      closeSync(log);
      const c = child;
      let exited = false;
      c.once('exit', () => (exited = true));
      const deadline = Date.now() + 60_000;
      for (;;) {
        if (exited) throw new Error(`keystone exited at start; see ${join(dir, 'keystone.log')}`);
        const ok = await fetch(`${url}`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.status === 200, () => false);
        if (ok) return performance.now() - t;
        if (Date.now() > deadline) throw new Error('keystone did not answer within 60 s');
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const serveMs = await serve();

    const adminUser = { name: 'admin', password: adminPassword, projectName: 'admin' };
    const issue = async (u: { name: string; password: string; projectName: string }): Promise<{ token: string; body: Record<string, unknown> }> => {
      const res = await fetch(`${url}/auth/tokens?nocatalog`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          auth: {
            identity: { methods: ['password'], password: { user: { name: u.name, domain: { id: 'default' }, password: u.password } } },
            scope: { project: { name: u.projectName, domain: { id: 'default' } } },
          },
        }),
      });
      const body = await json(res, `token for ${u.name}`);
      return { token: res.headers.get('x-subject-token')!, body };
    };
    const first = await issue(adminUser);
    const t = first.body.token as { user: { id: string }; project: { id: string } };
    const admin: KeystoneUser = { ...adminUser, id: t.user.id, projectId: t.project.id };
    // The harness's own admin token, renewed each second (a test may make tokens live seconds).
    let own = { token: first.token, at: Date.now() };
    const adminToken = async (): Promise<string> => {
      if (Date.now() - own.at > 1_000) own = { token: (await issue(adminUser)).token, at: Date.now() };
      return own.token;
    };
    const api = async (method: string, path: string, body?: unknown): Promise<Record<string, unknown>> =>
      json(
        await fetch(`${url}${path}`, { method, headers: { 'x-auth-token': await adminToken(), 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) }),
        `${method} ${path}`,
      );
    const roles = ((await api('GET', '/roles')).roles as { id: string; name: string }[]).reduce<Record<string, string>>((m, r) => ({ ...m, [r.name]: r.id }), {});
    roles.service ??= ((await api('POST', '/roles', { role: { name: 'service' } })).role as { id: string }).id;
    const makeUser = async (name: string, projectName: string, roleNames: string[]): Promise<KeystoneUser> => {
      const project = (await api('POST', '/projects', { project: { name: projectName, domain_id: 'default' } })).project as { id: string };
      const password = randomBytes(12).toString('hex');
      const user = (await api('POST', '/users', { user: { name, password, domain_id: 'default', default_project_id: project.id } })).user as { id: string };
      for (const r of roleNames) await api('PUT', `/projects/${project.id}/users/${user.id}/roles/${roles[r]!}`);
      return { name, id: user.id, password, projectName, projectId: project.id };
    };
    const svc = await makeUser('online-extend', 'service', ['service', 'admin']);
    const passwordFile = join(dir, 'service-password');
    writeFileSync(passwordFile, `${svc.password}\n`, { mode: 0o600 });
    const member = await makeUser('demo', 'demo', ['member']);

    const kill = async (): Promise<void> => {
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 3_000);
      await gone;
      clearTimeout(t);
    };
    return {
      url,
      port,
      dir,
      admin,
      member,
      service: { ...svc, passwordFile },
      timings: { setupMs, serveMs },
      token: async (u) => (await issue(u)).token,
      revoke: async (token) => {
        const res = await fetch(`${url}/auth/tokens`, { method: 'DELETE', headers: { 'x-auth-token': await adminToken(), 'x-subject-token': token } });
        if (res.status !== 204) throw new Error(`revoke: HTTP ${res.status}: ${await res.text()}`);
      },
      kill,
      restart: async (o = {}) => {
        await kill();
        if (o.tokenExpirationS !== undefined) writeConf(o.tokenExpirationS);
        await serve();
      },
      stop: async () => {
        await kill();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    const c = child as ChildProcess | undefined;
    if (c && c.exitCode === null) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
