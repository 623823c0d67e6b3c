/**
 * The embedded Keystone v3 of `serve` (in-process startService, real HTTP, real SQLite): discovery,
 * POST /v3/auth/tokens with the password and token methods (a table of bodies → status and body
 * shape), GET/HEAD/DELETE /v3/auth/tokens with Keystone 22's policy, the catalog with the ports
 * the APIs really listen on, tokens usable on the compute and volume APIs and refused there once
 * revoked, and noauth mode on both APIs. Revocation as Keystone does it: a DELETE revokes that
 * token only, never the tokens made from it nor the one it was made from, both in this process at
 * once and through the token caches (the store's and a Keystone-validating one) within their window.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { SqliteStore } from '../../src/db/sqlite.js';
import { SqliteUserStore } from '../../src/db/users.js';
import { hashPassword } from '../../src/identity/password.js';
import { issueToken, TokenAuthenticator } from '../../src/auth/tokens.js';
import { KeystoneAuthenticator } from '../../src/auth/keystone.js';
import { makeService, PROJECT, type ServiceHarness } from '../support/service.js';

/** Cheap scrypt parameters for test users: each hash carries its own, so verification uses these. */
const CHEAP = { N: 2 ** 10, r: 8, p: 1 };
const PASSWORD = 'correct horse battery staple';

interface Res {
  status: number;
  headers: Headers;
  text: string;
  body: Record<string, unknown> | undefined;
}

async function call(base: string, method: string, path: string, opts: { body?: unknown; raw?: string; headers?: Record<string, string> } = {}): Promise<Res> {
  const hasBody = opts.body !== undefined || opts.raw !== undefined;
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { ...(hasBody ? { 'content-type': 'application/json' } : {}), ...opts.headers },
    ...(hasBody ? { body: opts.raw ?? JSON.stringify(opts.body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, body: text ? (JSON.parse(text) as Record<string, unknown>) : undefined };
}

const passwordAuth = (user: Record<string, unknown>, scope: unknown = { project: { name: PROJECT, domain: { name: 'Default' } } }) => ({
  auth: { identity: { methods: ['password'], password: { user } }, ...(scope === null ? {} : { scope }) },
});
const alice = (password = PASSWORD) => ({ name: 'alice', domain: { name: 'Default' }, password });

let h: ServiceHarness;
let users: SqliteUserStore;
let store: SqliteStore;
let idUrl: string;
let aliceId: string;
const KEYSTONE_ERROR = { error: { code: expect.any(Number), message: expect.any(String), title: expect.any(String) } };

async function addUser(name: string, projectId: string, roles: string[]): Promise<string> {
  const id = `${name}-id`.padEnd(32, '0').slice(0, 32);
  const now = new Date().toISOString();
  await users.createUser({ id, name, projectId, roles, passwordHash: await hashPassword(PASSWORD, CHEAP), createdAt: now, updatedAt: now });
  return id;
}

async function login(user: Record<string, unknown> = alice(), scope?: unknown): Promise<{ token: string; body: Record<string, unknown> }> {
  const r = await call(idUrl, 'POST', '/v3/auth/tokens', { body: passwordAuth(user, scope) });
  expect(r.status).toBe(201);
  return { token: r.headers.get('x-subject-token')!, body: (r.body as { token: Record<string, unknown> }).token };
}

beforeAll(async () => {
  h = await makeService();
  store = new SqliteStore(join(h.config.dataDir, 'online-extend.sqlite'));
  users = new SqliteUserStore(store.db);
  aliceId = await addUser('alice', PROJECT, ['admin', 'member']);
  await addUser('bob', PROJECT, ['member']);
  await addUser('carol', 'other-project', ['member']);
  await addUser('svc', 'service', ['service']);
  idUrl = h.service.identityUrl!;
});
afterAll(async () => {
  await store?.close();
  await h?.cleanup();
});

describe('the embedded Keystone v3 discovery', () => {
  it('answers GET / with 300, the v3 version in versions.values and a Location', async () => {
    const r = await call(idUrl, 'GET', '/');
    expect(r.status).toBe(300);
    expect(r.headers.get('location')).toBe(`${idUrl}/v3/`);
    expect(r.body).toEqual({
      versions: {
        values: [
          {
            id: 'v3.14',
            status: 'stable',
            updated: '2020-04-07T00:00:00Z',
            links: [{ rel: 'self', href: `${idUrl}/v3/` }],
            'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.identity-v3+json' }],
          },
        ],
      },
    });
  });

  it.each(['/v3', '/v3/'])('answers GET %s with the v3 version document', async (path) => {
    const r = await call(idUrl, 'GET', path);
    expect(r.status).toBe(200);
    expect((r.body as { version: { id: string; links: unknown } }).version).toMatchObject({ id: 'v3.14', status: 'stable', links: [{ rel: 'self', href: `${idUrl}/v3/` }] });
  });

  it('listens on a real port when configured with port 0', () => {
    expect(idUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(Number(new URL(idUrl).port)).toBeGreaterThan(0);
  });

  it.each([
    ['GET /', 'GET', '/', 300],
    ['an unknown path', 'GET', '/v3/users', 404],
    ['POST /v3/auth/tokens without a body', 'POST', '/v3/auth/tokens', 400],
  ] as const)('puts Server-Timing (total) on its answer to %s', async (_name, method, path, status) => {
    const r = await call(idUrl, method, path, method === 'POST' ? { raw: '{}' } : {});
    expect(r.status).toBe(status);
    expect(r.headers.get('server-timing')).toMatch(/^total;dur=\d+\.\d{3}$/);
  });

  it('answers an unknown path with 404 in Keystone error shape', async () => {
    const r = await call(idUrl, 'GET', '/v3/users');
    expect(r.status).toBe(404);
    expect(r.body).toEqual({ error: { code: 404, message: expect.any(String), title: 'Not Found' } });
  });
});

describe('POST /v3/auth/tokens', () => {
  const ok: Array<[string, () => unknown]> = [
    ['a user and project by name in domain Default (what tempest and openstack send)', () => passwordAuth(alice())],
    ['a user by name in domain id default and a project by id', () => passwordAuth({ name: 'alice', domain: { id: 'default' }, password: PASSWORD }, { project: { id: PROJECT } })],
    ['a user by id and a project by name in domain id default', () => passwordAuth({ id: aliceId, password: PASSWORD }, { project: { name: PROJECT, domain: { id: 'default' } } })],
  ];
  it.each(ok)('issues a project-scoped token for %s: 201 with X-Subject-Token', async (_name, body) => {
    const r = await call(idUrl, 'POST', '/v3/auth/tokens', { body: body() });
    expect(r.status).toBe(201);
    expect(r.headers.get('x-subject-token')).toMatch(/^oe-[A-Za-z0-9_-]{43}$/);
    expect(r.headers.get('content-type')).toMatch(/^application\/json/);
    expect((r.body as { token: { user: unknown; project: unknown } }).token).toMatchObject({ user: { id: aliceId, name: 'alice' }, project: { id: PROJECT, name: PROJECT } });
  });

  const refused: Array<[string, () => { body?: unknown; raw?: string }, number, RegExp]> = [
    ['a wrong password', () => ({ body: passwordAuth(alice('wrong')) }), 401, /^The request you have made requires authentication\.$/],
    ['an unknown user', () => ({ body: passwordAuth({ name: 'nobody', domain: { name: 'Default' }, password: PASSWORD }) }), 401, /^The request you have made requires authentication\.$/],
    ['an unknown user id', () => ({ body: passwordAuth({ id: 'f'.repeat(32), password: PASSWORD }) }), 401, /^The request you have made requires authentication\.$/],
    ['a user in another domain', () => ({ body: passwordAuth({ name: 'alice', domain: { name: 'Other' }, password: PASSWORD }) }), 401, /requires authentication/],
    ['a project the user has no role in', () => ({ body: passwordAuth(alice(), { project: { id: 'other-project' } }) }), 401, /has no access to project other-project/],
    ['an unsupported method', () => ({ body: { auth: { identity: { methods: ['password', 'totp'], password: { user: alice() } }, scope: { project: { id: PROJECT } } } } }), 401, /unsupported method/],
    ['no scope (unscoped tokens are not issued)', () => ({ body: passwordAuth(alice(), null) }), 400, /Unscoped tokens are not issued here/],
    ['a domain scope', () => ({ body: passwordAuth(alice(), { domain: { id: 'default' } }) }), 400, /Only project scope is supported/],
    ['a user by name without a domain', () => ({ body: passwordAuth({ name: 'alice', password: PASSWORD }) }), 400, /needs its domain/],
    ['a project by name without a domain', () => ({ body: passwordAuth(alice(), { project: { name: PROJECT } }) }), 400, /needs its domain/],
    ['no identity', () => ({ body: { auth: { scope: { project: { id: PROJECT } } } } }), 400, /auth\.identity/],
    ['no password', () => ({ body: passwordAuth({ name: 'alice', domain: { name: 'Default' } }) }), 400, /password\.user\.password/],
    ['a password longer than 4096 characters, saying so', () => ({ body: passwordAuth(alice('p'.repeat(4097))) }), 400, /password': longer than 4096 characters/],
    ['malformed JSON', () => ({ raw: '{"auth":' }), 400, /Malformed request body/],
    ['an empty body', () => ({ raw: '' }), 400, /expected a JSON object/],
  ];
  it.each(refused)('refuses %s with its status in Keystone error shape, issuing nothing', async (_name, req, status, message) => {
    const before = (await store.listTokens()).length;
    const r = await call(idUrl, 'POST', '/v3/auth/tokens', req());
    expect(r.status).toBe(status);
    expect(r.body).toEqual({ error: { code: status, message: expect.stringMatching(message), title: status === 401 ? 'Unauthorized' : 'Bad Request' } });
    expect(r.headers.get('x-subject-token')).toBeNull();
    if (status === 401) expect(r.headers.get('www-authenticate')).toBe(`Keystone uri="${idUrl}"`);
    expect((await store.listTokens()).length).toBe(before);
  });

  it('answers a wrong password and an unknown user with the very same body', async () => {
    const wrong = await call(idUrl, 'POST', '/v3/auth/tokens', { body: passwordAuth(alice('wrong')) });
    const unknown = await call(idUrl, 'POST', '/v3/auth/tokens', { body: passwordAuth({ name: 'nobody', domain: { name: 'Default' }, password: 'wrong' }) });
    expect([wrong.status, unknown.status]).toEqual([401, 401]);
    expect(unknown.text).toBe(wrong.text);
  });

  it("renders Keystone's token body: user, project, roles from the store, methods, audit ids, times, is_domain and the catalog", async () => {
    const { body } = await login();
    expect(Object.keys(body).sort()).toEqual(['audit_ids', 'catalog', 'expires_at', 'is_domain', 'issued_at', 'methods', 'project', 'roles', 'user']);
    expect(body).toMatchObject({
      methods: ['password'],
      user: { domain: { id: 'default', name: 'Default' }, id: aliceId, name: 'alice', password_expires_at: null },
      project: { domain: { id: 'default', name: 'Default' }, id: PROJECT, name: PROJECT },
      is_domain: false,
    });
    expect((body.roles as Array<{ name: string; id: string }>).map((r) => r.name)).toEqual(['admin', 'member']);
    for (const r of body.roles as Array<{ id: string }>) expect(r.id).toMatch(/^[0-9a-f]{32}$/);
    expect(body.audit_ids).toEqual([expect.stringMatching(/^[A-Za-z0-9_-]{22}$/)]);
    // Keystone's format, which tempest's auth.py parses (%Y-%m-%dT%H:%M:%S.%fZ).
    expect(body.expires_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    expect(body.issued_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    expect(Date.parse(body.expires_at as string) - Date.parse(body.issued_at as string)).toBe(h.config.identityTokenTtlMs);
  });

  it('omits the catalog with ?nocatalog', async () => {
    const r = await call(idUrl, 'POST', '/v3/auth/tokens?nocatalog', { body: passwordAuth(alice()) });
    expect(r.status).toBe(201);
    expect(Object.keys((r.body as { token: object }).token)).not.toContain('catalog');
  });

  it('issues tokens the compute and volume APIs accept, with the roles from the store', async () => {
    const { token } = await login();
    expect((await h.compute.request('GET', `/v2/${PROJECT}/servers`, undefined, { token })).status).toBe(200);
    expect((await h.volume.request('GET', `/v3/${PROJECT}/volumes`, undefined, { token })).status).toBe(200);
    // bob is a member: he lists his project's servers, but listing every project's is admin-only.
    const bob = await login({ name: 'bob', domain: { name: 'Default' }, password: PASSWORD });
    expect((await h.compute.request('GET', `/v2/${PROJECT}/servers`, undefined, { token: bob.token })).status).toBe(200);
    await expect(h.compute.request('GET', `/v2/${PROJECT}/servers?all_tenants=1`, undefined, { token: bob.token })).rejects.toMatchObject({ status: 403 });
  });

  it('exchanges a token for a new one with the token method: same user, project and expiry, methods token, audit chain', async () => {
    const parent = await login();
    const r = await call(idUrl, 'POST', '/v3/auth/tokens', { body: { auth: { identity: { methods: ['token'], token: { id: parent.token } }, scope: { project: { id: PROJECT } } } } });
    expect(r.status).toBe(201);
    const child = (r.body as { token: Record<string, unknown> }).token;
    expect(r.headers.get('x-subject-token')).not.toBe(parent.token);
    expect(child).toMatchObject({ methods: ['token'], user: { id: aliceId }, project: { id: PROJECT }, expires_at: parent.body.expires_at });
    expect(child.audit_ids).toEqual([expect.any(String), (parent.body.audit_ids as string[])[0]]);
  });

  it('refuses the token method with an unknown, expired or foreign-project token', async () => {
    const { token: expired } = await issueToken(store, { userId: aliceId, projectId: PROJECT, roles: ['admin'], ttlMs: 1, now: new Date(Date.now() - 60_000) });
    const parent = await login();
    const cases: Array<[string, string, number]> = [
      ['oe-unknown', PROJECT, 401],
      [expired, PROJECT, 401],
      [parent.token, 'other-project', 401],
    ];
    for (const [id, project, status] of cases) {
      const r = await call(idUrl, 'POST', '/v3/auth/tokens', { body: { auth: { identity: { methods: ['token'], token: { id } }, scope: { project: { id: project } } } } });
      expect({ status: r.status, body: r.body }).toEqual({ status, body: KEYSTONE_ERROR });
    }
  });
});

describe('GET, HEAD and DELETE /v3/auth/tokens', () => {
  it('validates a token for its own user: 200, X-Subject-Token, the body POST gave', async () => {
    const { token, body } = await login();
    const r = await call(idUrl, 'GET', '/v3/auth/tokens', { headers: { 'x-auth-token': token, 'x-subject-token': token } });
    expect(r.status).toBe(200);
    expect(r.headers.get('x-subject-token')).toBe(token);
    expect((r.body as { token: unknown }).token).toEqual(body);
  });

  it('lets the admin and service roles validate tokens of other users, and refuses other users with 403', async () => {
    const bob = await login({ name: 'bob', domain: { name: 'Default' }, password: PASSWORD });
    const admin = await login();
    const svc = await login({ name: 'svc', domain: { name: 'Default' }, password: PASSWORD }, { project: { id: 'service' } });
    const carol = await login({ name: 'carol', domain: { name: 'Default' }, password: PASSWORD }, { project: { id: 'other-project' } });
    const as = async (caller: string) => (await call(idUrl, 'GET', '/v3/auth/tokens', { headers: { 'x-auth-token': caller, 'x-subject-token': bob.token } })).status;
    expect({ admin: await as(admin.token), service: await as(svc.token), other: await as(carol.token) }).toEqual({ admin: 200, service: 200, other: 403 });
    const forbidden = await call(idUrl, 'GET', '/v3/auth/tokens', { headers: { 'x-auth-token': carol.token, 'x-subject-token': bob.token } });
    expect(forbidden.body).toEqual({ error: { code: 403, message: expect.stringContaining('identity:validate_token'), title: 'Forbidden' } });
  });

  it('answers 401 with WWW-Authenticate when the caller has no valid token, whatever the subject', async () => {
    const { token } = await login();
    const callers: Array<Record<string, string>> = [{ 'x-subject-token': token }, { 'x-auth-token': 'oe-nonsense', 'x-subject-token': token }];
    for (const headers of callers) {
      for (const method of ['GET', 'DELETE']) {
        const r = await call(idUrl, method, '/v3/auth/tokens', { headers });
        expect(r.status).toBe(401);
        expect(r.headers.get('www-authenticate')).toBe(`Keystone uri="${idUrl}"`);
        expect(r.body).toEqual({ error: { code: 401, message: 'The request you have made requires authentication.', title: 'Unauthorized' } });
      }
    }
  });

  it('answers 404 in Keystone shape for an unknown or expired subject, and HEAD 200 or 404 with no body', async () => {
    const { token } = await login();
    const { token: expired } = await issueToken(store, { userId: aliceId, projectId: PROJECT, roles: ['admin'], ttlMs: 1, now: new Date(Date.now() - 60_000) });
    for (const subject of ['oe-unknown', expired]) {
      const r = await call(idUrl, 'GET', '/v3/auth/tokens', { headers: { 'x-auth-token': token, 'x-subject-token': subject } });
      expect({ status: r.status, body: r.body }).toEqual({ status: 404, body: { error: { code: 404, message: 'Could not find token.', title: 'Not Found' } } });
      const head = await call(idUrl, 'HEAD', '/v3/auth/tokens', { headers: { 'x-auth-token': token, 'x-subject-token': subject } });
      expect({ status: head.status, text: head.text }).toEqual({ status: 404, text: '' });
    }
    const head = await call(idUrl, 'HEAD', '/v3/auth/tokens', { headers: { 'x-auth-token': token, 'x-subject-token': token } });
    expect({ status: head.status, text: head.text }).toEqual({ status: 200, text: '' });
  });

  it('revokes with DELETE (204): the token is then 404 here and 401 on the compute and volume APIs at once', async () => {
    const { token } = await login();
    // Used first, so the APIs' token cache holds it.
    expect((await h.compute.request('GET', `/v2/${PROJECT}/servers`, undefined, { token })).status).toBe(200);
    expect((await h.volume.request('GET', `/v3/${PROJECT}/volumes`, undefined, { token })).status).toBe(200);
    const del = await call(idUrl, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': token, 'x-subject-token': token, 'content-type': 'application/json' } });
    expect({ status: del.status, text: del.text }).toEqual({ status: 204, text: '' });
    await expect(h.compute.request('GET', `/v2/${PROJECT}/servers`, undefined, { token })).rejects.toMatchObject({ status: 401 });
    await expect(h.volume.request('GET', `/v3/${PROJECT}/volumes`, undefined, { token })).rejects.toMatchObject({ status: 401 });
    const admin = await login();
    expect((await call(idUrl, 'GET', '/v3/auth/tokens', { headers: { 'x-auth-token': admin.token, 'x-subject-token': token } })).status).toBe(404);
    expect((await call(idUrl, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': admin.token, 'x-subject-token': token } })).status).toBe(404);
  });
});

/** The link of a token chain a test revokes: a password token, one made from it, one made from that. */
type Link = 'password' | 'token from token' | 'token from token from token';
const LINKS: readonly Link[] = ['password', 'token from token', 'token from token from token'];

/** POST /v3/auth/tokens with the token method from `parent`: the new token and its body. */
async function exchange(parent: string): Promise<{ token: string; body: Record<string, unknown> }> {
  const r = await call(idUrl, 'POST', '/v3/auth/tokens', { body: { auth: { identity: { methods: ['token'], token: { id: parent } }, scope: { project: { id: PROJECT } } } } });
  expect(r.status).toBe(201);
  return { token: r.headers.get('x-subject-token')!, body: (r.body as { token: Record<string, unknown> }).token };
}

/** alice's chain of three tokens, by link. */
async function chain(): Promise<Record<Link, { token: string; body: Record<string, unknown> }>> {
  const first = await login();
  const second = await exchange(first.token);
  const third = await exchange(second.token);
  return { password: first, 'token from token': second, 'token from token from token': third };
}

/** `DELETE /v3/auth/tokens` of `subject` by a fresh admin token (never one of the chain). */
async function revoke(subject: string): Promise<void> {
  const admin = await login();
  const r = await call(idUrl, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': admin.token, 'x-subject-token': subject } });
  expect(r.status).toBe(204);
}

const computeStatus = async (token: string) => (await fetch(`${h.service.computeUrl}/v2/${PROJECT}/servers`, { headers: { 'x-auth-token': token } })).status;
const validateStatus = async (token: string) => {
  const admin = await login();
  return (await call(idUrl, 'GET', '/v3/auth/tokens', { headers: { 'x-auth-token': admin.token, 'x-subject-token': token } })).status;
};
const exchangeStatus = async (token: string) =>
  (await call(idUrl, 'POST', '/v3/auth/tokens', { body: { auth: { identity: { methods: ['token'], token: { id: token } }, scope: { project: { id: PROJECT } } } } })).status;

/** Applies `f` to each link's token: `{link: result}`. */
async function each<T>(tokens: Record<Link, { token: string }>, f: (token: string) => Promise<T>): Promise<Record<Link, T>> {
  const out = {} as Record<Link, T>;
  for (const link of LINKS) out[link] = await f(tokens[link].token);
  return out;
}

describe("revoking tokens made from tokens, by Keystone's rules (a DELETE revokes that token only, never its chain)", () => {
  it("gives a token made from a token made from a token the chain's first audit id, as Keystone's audit_chain_id, and the first token's expiry", async () => {
    const c = await chain();
    const [first] = c.password.body.audit_ids as string[];
    expect(c['token from token'].body.audit_ids).toEqual([expect.stringMatching(/^[A-Za-z0-9_-]{22}$/), first]);
    expect(c['token from token from token'].body.audit_ids).toEqual([expect.stringMatching(/^[A-Za-z0-9_-]{22}$/), first]);
    const own = LINKS.map((l) => (c[l].body.audit_ids as string[])[0]);
    expect(new Set(own).size).toBe(3);
    for (const l of LINKS) expect(c[l].body.expires_at).toBe(c.password.body.expires_at);
  });

  // Keystone 22: DELETE /v3/auth/tokens → revoke_token(revoke_chain=False) → one revocation event
  // by the token's own audit id, which no other token of the chain carries as its own.
  const table: Array<[Link, Record<Link, number>]> = [
    ['password', { password: 401, 'token from token': 200, 'token from token from token': 200 }],
    ['token from token', { password: 200, 'token from token': 401, 'token from token from token': 200 }],
    ['token from token from token', { password: 200, 'token from token': 200, 'token from token from token': 401 }],
  ];
  const validation = (compute: Record<Link, number>) => Object.fromEntries(LINKS.map((l) => [l, compute[l] === 200 ? 200 : 404]));
  const exchanges = (compute: Record<Link, number>) => Object.fromEntries(LINKS.map((l) => [l, compute[l] === 200 ? 201 : 401]));

  it.each(table)('revoking the %s token refuses it alone, at once, on the compute API (its cache warm), in validation and in the token method', async (revoked, compute) => {
    const c = await chain();
    // Used first, so the compute API's token cache (the `known` path) holds every one of them.
    expect(await each(c, computeStatus)).toEqual({ password: 200, 'token from token': 200, 'token from token from token': 200 });
    await revoke(c[revoked].token);
    expect(await each(c, computeStatus)).toEqual(compute);
    expect(await each(c, validateStatus)).toEqual(validation(compute));
    expect(await each(c, exchangeStatus)).toEqual(exchanges(compute));
  });

  it.each(table)(
    "revoking the %s token elsewhere (another process on the database) reaches the store's token cache within its window, and only that token",
    async (revoked, compute) => {
      let now = Date.now();
      // The compute and volume APIs' authenticator for auth=token, on the same database, outside
      // the process that revokes (so nobody tells it: it re-reads the store after 2 s).
      const cache = new TokenAuthenticator(store, { now: () => now });
      const c = await chain();
      for (const l of LINKS) await cache.authenticate(c[l].token);
      await revoke(c[revoked].token);
      // Within the window the cached answers stand, the revoked token's too.
      expect(LINKS.filter((l) => cache.known(c[l].token) !== undefined)).toEqual(LINKS);
      now += 2_000;
      expect(LINKS.filter((l) => cache.known(c[l].token) !== undefined)).toEqual([]);
      const status = await each(c, (t) => cache.authenticate(t).then(() => 200, (e: { status: number }) => e.status));
      expect(status).toEqual(compute);
    },
  );

  it.each(table)(
    'revoking the %s token reaches an auth=keystone service validating against this Keystone once its cached answer is older than the cache time, and only that token',
    async (revoked, compute) => {
      let now = Date.now();
      const keystone = new KeystoneAuthenticator({ url: `${idUrl}/v3`, serviceUser: 'svc', serviceProject: 'service', password: PASSWORD, cacheMs: 5_000, now: () => now });
      try {
        const c = await chain();
        for (const l of LINKS) expect((await keystone.authenticate(c[l].token)).userId).toBe(aliceId);
        await revoke(c[revoked].token);
        expect(LINKS.filter((l) => keystone.known(c[l].token) !== undefined)).toEqual(LINKS);
        now += 5_000;
        expect(LINKS.filter((l) => keystone.known(c[l].token) !== undefined)).toEqual([]);
        const status = await each(c, (t) => keystone.authenticate(t).then(() => 200, (e: { status: number }) => e.status));
        expect(status).toEqual(compute);
      } finally {
        keystone.stop();
      }
    },
  );

  it('refuses to make a token from a revoked one, but one made from it before keeps working until the chain expires', async () => {
    const c = await chain();
    await revoke(c['token from token'].token);
    expect(await exchangeStatus(c['token from token'].token)).toBe(401);
    const fourth = await exchange(c['token from token from token'].token);
    expect(fourth.body.expires_at).toBe(c.password.body.expires_at);
    expect(fourth.body.audit_ids).toEqual([expect.any(String), (c.password.body.audit_ids as string[])[0]]);
    expect(await computeStatus(fourth.token)).toBe(200);
  });
});

describe('GET /v3/projects (what clients resolve a project name with)', () => {
  const bob = () => ({ name: 'bob', domain: { name: 'Default' }, password: PASSWORD });
  it('lists the projects its users have roles in to an admin, filtered by name, each named by its id', async () => {
    const { token } = await login();
    const all = await call(idUrl, 'GET', '/v3/projects', { headers: { 'x-auth-token': token } });
    expect(all.status).toBe(200);
    expect((all.body as { projects: Array<{ id: string }> }).projects.map((p) => p.id)).toEqual([PROJECT, 'other-project', 'service'].sort());
    const one = await call(idUrl, 'GET', '/v3/projects?name=other-project', { headers: { 'x-auth-token': token } });
    expect((one.body as { projects: unknown[] }).projects).toEqual([expect.objectContaining({ id: 'other-project', name: 'other-project', domain_id: 'default', enabled: true })]);
    const none = await call(idUrl, 'GET', '/v3/projects?name=nowhere', { headers: { 'x-auth-token': token } });
    expect((none.body as { projects: unknown[] }).projects).toEqual([]);
  });

  it.each([
    ['an admin reads any known project', () => login(), 'other-project', 200],
    ['a member reads its own project', () => login(bob()), PROJECT, 200],
    ['a member may not read another project', () => login(bob()), 'other-project', 403],
    ['an unknown project is 404', () => login(), 'nowhere', 404],
  ] as const)('GET /v3/projects/{id}: %s', async (_name, who, id, status) => {
    const { token } = await who();
    const r = await call(idUrl, 'GET', `/v3/projects/${id}`, { headers: { 'x-auth-token': token } });
    expect(r.status).toBe(status);
    if (status === 200) expect((r.body as { project: { id: string } }).project.id).toBe(id);
    else expect(r.body).toMatchObject({ error: { code: status } });
  });

  it('refuses the list to a member (403) and any read without a token (401)', async () => {
    const { token } = await login(bob());
    expect((await call(idUrl, 'GET', '/v3/projects', { headers: { 'x-auth-token': token } })).status).toBe(403);
    expect((await call(idUrl, 'GET', '/v3/projects')).status).toBe(401);
    expect((await call(idUrl, 'GET', `/v3/projects/${PROJECT}`)).status).toBe(401);
  });
});

describe('the catalog', () => {
  type Entry = { id: string; type: string; name: string; endpoints: Array<{ id: string; interface: string; region: string; region_id: string; url: string }> };
  const catalogOf = async (user = alice(), scope?: unknown) => (await login(user, scope)).body.catalog as Entry[];

  it("lists compute, volumev3, block-storage, identity and image at the ports the APIs really listen on, the project substituted per token", async () => {
    const catalog = await catalogOf();
    const urls = Object.fromEntries(catalog.map((e) => [e.type, e.endpoints.map((p) => p.url)]));
    const one = (u: string) => [u, u, u];
    expect(urls).toEqual({
      compute: one(`${h.service.computeUrl}/v2.1`),
      volumev3: one(`${h.service.volumeUrl}/v3/${PROJECT}`),
      'block-storage': one(`${h.service.volumeUrl}/v3/${PROJECT}`),
      identity: one(`${idUrl}/v3`),
      image: one(h.service.imageUrl),
    });
    for (const u of Object.values(urls).flat()) expect(new URL(u).port).not.toMatch(/^(0|)$/);
    for (const e of catalog) {
      expect(e.endpoints.map((p) => [p.interface, p.region, p.region_id])).toEqual([
        ['public', 'RegionOne', 'RegionOne'],
        ['internal', 'RegionOne', 'RegionOne'],
        ['admin', 'RegionOne', 'RegionOne'],
      ]);
    }
    const carol = await catalogOf({ name: 'carol', domain: { name: 'Default' }, password: PASSWORD }, { project: { id: 'other-project' } });
    expect(carol.find((e) => e.type === 'volumev3')!.endpoints[0]!.url).toBe(`${h.service.volumeUrl}/v3/other-project`);
  });

  it('keeps service and endpoint ids across restarts while the URLs follow the new ports', async () => {
    const ids = (c: Entry[]) => c.map((e) => [e.type, e.id, ...e.endpoints.map((p) => p.id)]);
    const before = await catalogOf();
    const oldCompute = h.service.computeUrl;
    await store.close();
    await h.stop();
    await h.start();
    store = new SqliteStore(join(h.config.dataDir, 'online-extend.sqlite'));
    users = new SqliteUserStore(store.db);
    idUrl = h.service.identityUrl!;
    const after = await catalogOf();
    expect(ids(after)).toEqual(ids(before));
    expect(new Set(ids(after).flat()).size).toBe(ids(after).flat().length);
    expect(h.service.computeUrl).not.toBe(oldCompute);
    expect(after.find((e) => e.type === 'compute')!.endpoints[0]!.url).toBe(`${h.service.computeUrl}/v2.1`);
  });
});

describe('noauth mode', () => {
  let n: ServiceHarness | undefined;
  afterEach(async () => {
    await n?.cleanup();
    n = undefined;
  });

  it('trusts X-Auth-Token USER:PROJECT as an admin of PROJECT on both APIs, and starts no Keystone', async () => {
    n = await makeService({ config: { auth: 'noauth' } });
    expect(n.service.identityUrl).toBeUndefined();
    const token = `alice:${PROJECT}`;
    expect((await n.compute.request('GET', `/v2/${PROJECT}/servers`, undefined, { token })).status).toBe(200);
    expect((await n.volume.request('GET', `/v3/${PROJECT}/volumes`, undefined, { token })).status).toBe(200);
    // A bare USER is its own project, as Cinder's.
    expect((await n.volume.request('GET', '/v3/alice/volumes', undefined, { token: 'alice' })).status).toBe(200);
    // Another project than the token's is still another project.
    await expect(n.volume.request('GET', '/v3/other/volumes', undefined, { token })).rejects.toMatchObject({ status: 400 });
    for (const bad of ['alice:../x', ':', '']) {
      await expect(n.volume.request('GET', `/v3/${PROJECT}/volumes`, undefined, { token: bad })).rejects.toMatchObject({ status: 401 });
    }
  });

  it('still lets the volume service call compute with its own service token (attach works)', async () => {
    n = await makeService({ config: { auth: 'noauth' } });
    const token = `alice:${PROJECT}`;
    const v = await n.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 64 * 2 ** 20 } }, { token });
    const a = await n.compute.request('POST', `/v2/${PROJECT}/servers/${await firstServer(n, token)}/os-volume_attachments`, { volumeAttachment: { volumeId: v.body.volume.id } }, { token });
    expect(a.status).toBe(200);
  });

  it('is refused when the service is not in noauth mode: USER:PROJECT is no token', async () => {
    const token = `alice:${PROJECT}`;
    await expect(h.compute.request('GET', `/v2/${PROJECT}/servers`, undefined, { token })).rejects.toMatchObject({ status: 401 });
    await expect(h.volume.request('GET', `/v3/${PROJECT}/volumes`, undefined, { token })).rejects.toMatchObject({ status: 401 });
  });
});

async function firstServer(s: ServiceHarness, token: string): Promise<string> {
  const r = await s.compute.request<{ servers: Array<{ id: string }> }>('GET', `/v2/${PROJECT}/servers`, undefined, { token });
  return r.body.servers[0]!.id;
}
