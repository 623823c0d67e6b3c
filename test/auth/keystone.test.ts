/**
 * KeystoneAuthenticator against a small Keystone stand-in served over real HTTP in the test (the
 * token routes only): what it caches (valid and invalid answers, for the cache time, never past a
 * token's expiry), what it shares (concurrent validations), how it keeps its own service token,
 * and how Keystone's absence shows (503 IdentityUnreachable, never 401). The clock is moved by hand.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { BIN } from '../support/build.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { KeystoneAuthenticator, type KeystoneOptions } from '../../src/auth/keystone.js';
import { ConfigError, loadConfig } from '../../src/config.js';
import { keystoneFrom } from '../../src/app.js';
import { ServiceError } from '../../src/errors.js';

const HOUR = 3_600_000;

/** A Keystone stand-in: tokens it knows, what it answers, and what it was asked. */
class FakeKeystone {
  server!: Server;
  url = '';
  /** Subject tokens it knows: the token body it answers with. */
  tokens = new Map<string, { user: { id: string }; project?: { id: string }; roles: { id: string; name: string }[]; expires_at: string }>();
  /** Service tokens it issued and still accepts. */
  serviceTokens = new Set<string>();
  password = '';
  serviceLifeMs = HOUR;
  /** Answer every validation with this status instead (e.g. 500). */
  validateStatus: number | undefined;
  /** Never answer validations. */
  hang = false;
  delayMs = 0;
  issued = 0;
  validations: string[] = [];
  /** Subject tokens of DELETE /v3/auth/tokens (revocations asked for). */
  revocations: string[] = [];
  passwordsSeen: string[] = [];
  private hung: ServerResponse[] = [];

  constructor(private readonly clock: () => number) {}

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v3`;
  }

  async stop(): Promise<void> {
    for (const r of this.hung) r.destroy();
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const send = (status: number, body?: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(body === undefined ? '' : JSON.stringify(body));
    };
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/v3/auth/tokens') return send(404, { error: { code: 404 } });
    if (req.method === 'POST') {
      const body = JSON.parse(Buffer.concat(chunks).toString()) as { auth: { identity: { password: { user: { password: string } } } } };
      const pw = body.auth.identity.password.user.password;
      this.passwordsSeen.push(pw);
      if (pw !== this.password) return send(401, { error: { code: 401, message: 'The request you have made requires authentication.' } });
      const token = `svc-${++this.issued}`;
      this.serviceTokens.add(token);
      return send(201, { token: { expires_at: new Date(this.clock() + this.serviceLifeMs).toISOString() } }, { 'x-subject-token': token });
    }
    const subject = String(req.headers['x-subject-token']);
    if (req.method === 'DELETE') {
      if (!this.serviceTokens.has(String(req.headers['x-auth-token']))) return send(401, { error: { code: 401 } });
      this.revocations.push(subject);
      return send(this.serviceTokens.delete(subject) ? 204 : 404);
    }
    this.validations.push(subject);
    if (this.hang) return void this.hung.push(res);
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.validateStatus) return send(this.validateStatus, { error: { code: this.validateStatus } });
    if (!this.serviceTokens.has(String(req.headers['x-auth-token']))) return send(401, { error: { code: 401 } }, { 'www-authenticate': 'Keystone uri="x"' });
    const t = this.tokens.get(subject);
    if (!t) return send(404, { error: { code: 404, message: `Could not find token: ${subject}.`, title: 'Not Found' } });
    send(200, { token: t }, { 'x-subject-token': subject });
  }
}

let clock: number;
let ks: FakeKeystone;
let auth: KeystoneAuthenticator | undefined;

beforeEach(async () => {
  clock = Date.UTC(2026, 10, 30, 4, 0, 0);
  ks = new FakeKeystone(() => clock);
  ks.password = 's3cret-service-password';
  await ks.start();
});
afterEach(async () => {
  auth?.stop();
  auth = undefined;
  await ks.stop();
});

function make(opts: Partial<KeystoneOptions> = {}): KeystoneAuthenticator {
  auth = new KeystoneAuthenticator({ url: ks.url, serviceUser: 'online-extend', serviceProject: 'service', password: ks.password, cacheMs: 5_000, timeoutMs: 2_000, now: () => clock, ...opts });
  return auth;
}

function known(token: string, opts: { project?: string | null; roles?: string[]; lifeMs?: number } = {}): void {
  ks.tokens.set(token, {
    user: { id: `u-${token}` },
    ...(opts.project === null ? {} : { project: { id: opts.project ?? 'p-1' } }),
    roles: (opts.roles ?? ['member']).map((name, i) => ({ id: `r${i}`, name })),
    expires_at: new Date(clock + (opts.lifeMs ?? HOUR)).toISOString().replace('Z', '000Z'),
  });
}

/** The ServiceError `p` rejects with. */
async function failure(p: Promise<unknown>): Promise<ServiceError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ServiceError);
  return err as ServiceError;
}

describe('KeystoneAuthenticator: validating tokens', () => {
  it("maps Keystone's user id, project id and role names (microsecond expires_at) to the caller", async () => {
    known('t1', { project: 'abc123', roles: ['member', 'reader'] });
    const ctx = await make().authenticate('t1');
    expect(ctx).toEqual({ userId: 'u-t1', projectId: 'abc123', roles: ['member', 'reader'], expiresAt: clock + HOUR });
  });

  it('caches a valid answer for the cache time, then asks Keystone again', async () => {
    known('t1');
    const a = make({ cacheMs: 5_000 });
    await a.authenticate('t1');
    clock += 4_999;
    await a.authenticate('t1');
    expect(ks.validations).toEqual(['t1']);
    clock += 1;
    await a.authenticate('t1');
    expect(ks.validations).toEqual(['t1', 't1']);
  });

  it('caches an invalid answer too (401 each time, one question to Keystone), and learns of a token that became valid after the cache time', async () => {
    const a = make({ cacheMs: 5_000 });
    for (let i = 0; i < 3; i++) expect((await failure(a.authenticate('nope'))).code).toBe('Unauthorized');
    expect(ks.validations).toEqual(['nope']);
    known('nope');
    clock += 5_000;
    await expect(a.authenticate('nope')).resolves.toMatchObject({ userId: 'u-nope' });
  });

  it("never trusts a cached validation past the token's expires_at", async () => {
    known('short', { lifeMs: 2_000 });
    const a = make({ cacheMs: 60_000 });
    await a.authenticate('short');
    clock += 2_000;
    const err = await failure(a.authenticate('short'));
    expect(err.code).toBe('Unauthorized');
  });

  it('knows a token without asking (no I/O) only while its valid answer is cached and it has not expired', async () => {
    known('t1', { lifeMs: 10_000 });
    const a = make({ cacheMs: 5_000 });
    expect(a.known('t1')).toBeUndefined();
    await a.authenticate('t1');
    expect(a.known('t1')).toMatchObject({ userId: 'u-t1', projectId: 'p-1' });
    clock += 5_000;
    expect(a.known('t1')).toBeUndefined();
    expect(a.known(undefined)).toBeUndefined();
    expect(ks.validations).toEqual(['t1']);
  });

  it('never knows a refused token (the refusal is authenticate’s to give)', async () => {
    const a = make({ cacheMs: 5_000 });
    await failure(a.authenticate('nope'));
    expect(a.known('nope')).toBeUndefined();
  });

  it('asks every time with a cache time of 0', async () => {
    known('t1');
    const a = make({ cacheMs: 0 });
    await a.authenticate('t1');
    await a.authenticate('t1');
    expect(ks.validations).toEqual(['t1', 't1']);
  });

  it('shares one request to Keystone among concurrent validations of one token', async () => {
    known('t1');
    ks.delayMs = 100;
    const a = make();
    const all = await Promise.all(Array.from({ length: 10 }, () => a.authenticate('t1')));
    expect(all.every((c) => c.userId === 'u-t1')).toBe(true);
    expect(ks.validations).toEqual(['t1']);
  });

  it.each([
    { name: 'no token', token: undefined },
    { name: 'an empty token', token: '' },
    { name: 'a token with a space', token: 'a b' },
    { name: 'a token with a non-ASCII character', token: 't\u00e9' },
    { name: 'a token longer than 8 KiB', token: 'x'.repeat(8193) },
  ])('refuses $name with 401 without asking Keystone', async ({ token }) => {
    const err = await failure(make().authenticate(token));
    expect(err).toMatchObject({ code: 'Unauthorized', status: 401 });
    expect(ks.validations).toEqual([]);
  });

  it('refuses a token that is not scoped to a project with 401', async () => {
    known('unscoped', { project: null });
    const err = await failure(make().authenticate('unscoped'));
    expect(err).toMatchObject({ code: 'Unauthorized', message: 'The token is not scoped to a project.' });
  });
});

describe('KeystoneAuthenticator: Keystone away', () => {
  it.each([
    { name: 'answers 500', set: () => (ks.validateStatus = 500), reason: /HTTP 500/ },
    { name: 'answers 503', set: () => (ks.validateStatus = 503), reason: /HTTP 503/ },
    { name: 'never answers (timeout)', set: () => (ks.hang = true), reason: /no answer within 300 ms/ },
  ])('answers 503 IdentityUnreachable, uncertain, and caches nothing when Keystone $name', async ({ set, reason }) => {
    known('t1');
    const a = make({ timeoutMs: 300 });
    await a.start();
    set();
    const err = await failure(a.authenticate('t1'));
    expect(err).toMatchObject({ code: 'IdentityUnreachable', status: 503, final: false });
    expect(err.reason).toMatch(reason);
    expect(err.message).not.toContain('127.0.0.1');
    ks.validateStatus = undefined;
    ks.hang = false;
    await expect(a.authenticate('t1')).resolves.toMatchObject({ userId: 'u-t1' });
  });

  it('answers 503 IdentityUnreachable when nothing listens at the Keystone URL', async () => {
    const url = ks.url;
    await ks.stop();
    ks.server = createServer();
    ks.server.listen(0, '127.0.0.1');
    const err = await failure(make({ url }).authenticate('t1'));
    expect(err).toMatchObject({ code: 'IdentityUnreachable', final: false, reason: 'no answer (connection failed)' });
  });
});

describe("KeystoneAuthenticator: this service's own token", () => {
  it('gets a service token with the password and sends it as X-Auth-Token', async () => {
    known('t1');
    const a = make();
    await a.start();
    expect(a.serviceToken()).toBe('svc-1');
    await a.authenticate('t1');
    expect(ks.passwordsSeen).toEqual([ks.password]);
    expect(ks.issued).toBe(1);
  });

  it('gets a new service token once when Keystone refuses the current one (401), and validates with it', async () => {
    known('t1');
    const a = make();
    await a.start();
    ks.serviceTokens.clear();
    await expect(a.authenticate('t1')).resolves.toMatchObject({ userId: 'u-t1' });
    expect(ks.issued).toBe(2);
    expect(a.serviceToken()).toBe('svc-2');
    expect(ks.validations).toEqual(['t1', 't1']);
  });

  it('gives, while it has no valid service token, a placeholder that its own check answers with 503 (uncertain), never asking Keystone', async () => {
    ks.serviceLifeMs = 60_000;
    const a = make();
    const before = a.serviceToken();
    expect((await failure(a.authenticate(before))).code).toBe('IdentityUnreachable');
    await a.start();
    expect(a.serviceToken()).toBe('svc-1');
    ks.validateStatus = 503;
    clock += 60_000;
    expect(a.serviceToken()).toBe(before);
    const err = await failure(a.authenticate(a.serviceToken()));
    expect(err).toMatchObject({ code: 'IdentityUnreachable', final: false, reason: 'this service has no valid Keystone token yet' });
    expect(ks.validations).toEqual([]);
  });

  it("asks Keystone for a service token at most once per retry delay while it refuses the service's credentials (a deleted service user)", async () => {
    for (const t of ['t1', 't2', 't3', 't4', 't5']) known(t);
    const a = make({ password: 'wrong', cacheMs: 0 });
    // Five different users' requests within the first retry delay (1 s): one login, five 503s.
    for (const t of ['t1', 't2', 't3', 't4', 't5']) expect((await failure(a.authenticate(t))).code).toBe('IdentityUnreachable');
    expect(ks.passwordsSeen).toHaveLength(1);
    clock += 999;
    await failure(a.authenticate('t1'));
    expect(ks.passwordsSeen).toHaveLength(1);
    // Past the delay: one more login (and the next delay is longer: 2 s).
    clock += 2;
    await failure(a.authenticate('t1'));
    await failure(a.authenticate('t2'));
    expect(ks.passwordsSeen).toHaveLength(2);
    clock += 1_999;
    await failure(a.authenticate('t1'));
    expect(ks.passwordsSeen).toHaveLength(2);
    // Mended (the operator fixed the password Keystone expects): the next login after the delay works.
    ks.password = 'wrong';
    clock += 2;
    await expect(a.authenticate('t1')).resolves.toMatchObject({ userId: 'u-t1' });
    expect(ks.passwordsSeen).toHaveLength(3);
  });

  it('stops sending Keystone a service token it refused while no new one can be had, and never names the service user to API clients', async () => {
    for (const t of ['t1', 't2', 't3']) known(t);
    const a = make({ cacheMs: 0 });
    await a.start();
    // The service user is deleted at Keystone: its token refused, its password too.
    ks.serviceTokens.clear();
    ks.password = 'no-longer';
    const err = await failure(a.authenticate('t1'));
    expect(err).toMatchObject({ code: 'IdentityUnreachable', final: false });
    expect(`${err.message} ${err.reason ?? ''}`).not.toMatch(/online-extend|service,? project/);
    expect(err.detail).toMatch(/online-extend/);
    expect(ks.validations).toEqual(['t1']);
    // Within the retry delay: 503 at once, no validation sent with the refused token, no login.
    for (const t of ['t2', 't3']) expect((await failure(a.authenticate(t))).code).toBe('IdentityUnreachable');
    expect(ks.validations).toEqual(['t1']);
    expect(ks.passwordsSeen).toHaveLength(2);
    // Mended and past the refused-token limit (10 s): a new token, and validations go on with it.
    ks.password = 's3cret-service-password';
    clock += 10_001;
    await expect(a.authenticate('t2')).resolves.toMatchObject({ userId: 'u-t2' });
    expect(ks.validations).toEqual(['t1', 't2']);
  });

  it('treats a 403 on its validations (the service user may not validate: its roles) as a refused token: one renewal, the refused token revoked at Keystone, then 503s at once for 10 s', async () => {
    for (const t of ['t1', 't2', 't3']) known(t);
    const a = make({ cacheMs: 0 });
    await a.start();
    ks.validateStatus = 403;
    expect((await failure(a.authenticate('t1'))).code).toBe('IdentityUnreachable');
    expect(ks.validations).toEqual(['t1', 't1']);
    expect(ks.issued).toBe(2);
    await new Promise((r) => setTimeout(r, 50));
    expect(ks.revocations).toEqual(['svc-1']);
    // Within 10 s: no validation with the refused token, no login.
    for (const t of ['t2', 't3']) expect((await failure(a.authenticate(t))).code).toBe('IdentityUnreachable');
    expect(ks.validations).toEqual(['t1', 't1']);
    expect(ks.issued).toBe(2);
    // Mended (the role given back) and past 10 s: a new token, validations again.
    ks.validateStatus = undefined;
    clock += 10_001;
    await expect(a.authenticate('t2')).resolves.toMatchObject({ userId: 'u-t2' });
    expect(ks.issued).toBe(3);
  });

  it('renews a service token an API refused at most once per 10 s, answering the current token at once when it already changed', async () => {
    const a = make();
    await a.start();
    expect(a.serviceToken()).toBe('svc-1');
    await expect(a.renewRefusedServiceToken('svc-1')).resolves.toBe('svc-2');
    // Another caller saw the same refusal: the token that replaced it, no new request.
    await expect(a.renewRefusedServiceToken('svc-1')).resolves.toBe('svc-2');
    expect(ks.issued).toBe(2);
    // The new one refused too, within 10 s: no new token (a refusal a new token does not cure).
    clock += 9_999;
    await expect(a.renewRefusedServiceToken('svc-2')).resolves.toBeUndefined();
    expect(ks.issued).toBe(2);
    clock += 1;
    await expect(a.renewRefusedServiceToken('svc-2')).resolves.toBe('svc-3');
    expect(ks.issued).toBe(3);
  });

  it("answers 503 (not 401) when Keystone refuses this service's credentials", async () => {
    known('t1');
    const a = make({ password: 'wrong' });
    const err = await failure(a.authenticate('t1'));
    expect(err).toMatchObject({ code: 'IdentityUnreachable', status: 503, final: false });
    expect(err.reason).toMatch(/refused this service's credentials/);
  });

  it('renews the service token before it expires', async () => {
    known('t1');
    ks.serviceLifeMs = 600_000;
    const a = make({ cacheMs: 0 });
    await a.start();
    clock += 600_000 - 300_001;
    await a.authenticate('t1');
    expect(ks.issued).toBe(1);
    clock += 2;
    await a.authenticate('t1');
    expect(ks.issued).toBe(2);
    expect(a.serviceToken()).toBe('svc-2');
  });

  it('never writes the service password to its logs, even when Keystone refuses it', async () => {
    let logged = '';
    const logger = pino({ level: 'trace' }, new Writable({ write: (c: Buffer, _e, cb) => ((logged += c.toString()), cb()) }));
    ks.password = 'the-right-one';
    const a = make({ password: 'a-wrong-password-123', logger });
    await a.startInBackground();
    await failure(a.authenticate('t1'));
    expect(logged).toContain('cannot get a service token');
    expect(logged).not.toContain('a-wrong-password-123');
  });
});

describe('auth=keystone configuration', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'oe-ksconf-'));
    writeFileSync(join(dir, 'inv.json'), '{"servers":[]}');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const base = () => ({ driver: 'fake', fakeInventory: join(dir, 'inv.json'), dataDir: join(dir, 'data') });

  it.each([
    { name: 'without keystoneUrl', flags: { keystoneServicePasswordFile: '/x' }, key: 'keystoneUrl' },
    { name: 'with a keystoneUrl that is not an http(s) URL', flags: { keystoneUrl: 'keystone:5000', keystoneServicePasswordFile: '/x' }, key: 'keystoneUrl' },
    { name: 'without keystoneServicePasswordFile', flags: { keystoneUrl: 'http://127.0.0.1:5000/v3' }, key: 'keystoneServicePasswordFile' },
  ])('is refused $name (ConfigError naming the key)', ({ flags, key }) => {
    const err = (() => {
      try {
        loadConfig({}, { ...base(), auth: 'keystone', ...flags });
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).key).toBe(key);
  });

  it('reads the service password from its file once, without the trailing newline', async () => {
    const file = join(dir, 'pw');
    writeFileSync(file, `${ks.password}\n`);
    const config = loadConfig({}, { ...base(), auth: 'keystone', keystoneUrl: ks.url, keystoneServicePasswordFile: file });
    auth = keystoneFrom(config)!;
    writeFileSync(file, 'changed later\n');
    await auth.start();
    expect(ks.passwordsSeen).toEqual([ks.password]);
  });

  it('refuses an unreadable password file with a ConfigError that names the file and not its content', () => {
    const config = loadConfig({}, { ...base(), auth: 'keystone', keystoneUrl: ks.url, keystoneServicePasswordFile: join(dir, 'missing') });
    expect(() => keystoneFrom(config)).toThrow(ConfigError);
    expect(() => keystoneFrom(config)).toThrow(/missing: ENOENT/);
  });

  it('makes `serve --auth keystone` without --keystone-url exit 2 naming the setting, before touching the data dir', () => {
    const data = join(dir, 'data');
    const r = spawnSync(process.execPath, [BIN, 'serve', '--driver', 'fake', '--fake-inventory', join(dir, 'inv.json'), '--data-dir', data, '--auth', 'keystone'], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/keystoneUrl: auth keystone needs the Keystone URL/);
    expect(existsSync(data)).toBe(false);
  });

  it('builds no Keystone authenticator for auth=token', () => {
    expect(keystoneFrom(loadConfig({}, base()))).toBeUndefined();
  });
});
