/**
 * Token roles and the volume service's rotating service token, on a real SQLite store and a
 * real token file; the clock is moved by hand (and by vitest's fake timers for the schedule).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../src/db/sqlite.js';
import {
  hashToken,
  issueToken,
  parseRoles,
  rolesInPolicy,
  SERVICE_PROJECT,
  SERVICE_ROLES,
  SERVICE_USER,
  ServiceToken,
  TokenAuthenticator,
} from '../../src/auth/tokens.js';
import { NoAuthAuthenticator } from '../../src/auth/noauth.js';

describe('parseRoles', () => {
  const ok: Array<[string, string, string[], string[]?]> = [
    ['one standard role', 'member', ['member']],
    ['several, trimmed, duplicates dropped', ' admin, reader ,admin', ['admin', 'reader']],
    ['a role a policy file names', 'volume_operator', ['volume_operator'], ['volume_operator']],
  ];
  for (const [name, text, roles, known] of ok) {
    it(`accepts ${name}`, () => expect(parseRoles(text, known)).toEqual(roles));
  }

  const bad: Array<[string, string, RegExp]> = [
    ['an empty list', '', /at least one role/],
    ['only commas', ' , ,', /at least one role/],
    ['a typo of a standard role', 'admni', /unknown role "admni": use admin, member, reader, service/],
    ['a role no policy names', 'member,superuser', /unknown role "superuser"/],
    ['a name with spaces', 'ad min', /invalid role name "ad min"/],
    ['a name a policy rule could not match', 'role:admin', /invalid role name/],
  ];
  for (const [name, text, message] of bad) {
    it(`refuses ${name}`, () => expect(() => parseRoles(text)).toThrow(message));
  }

  it('finds the roles a policy file names', () => {
    expect(rolesInPolicy({ a: 'role:admin or (role:ops and not role:reader)', b: 'rule:a', c: 'project_id:%(project_id)s', d: 42 }).sort()).toEqual(['admin', 'ops', 'reader']);
  });

  it('refuses to issue a token whose role could not be stored', async () => {
    const store = new SqliteStore(':memory:');
    await expect(issueToken(store, { userId: 'u', projectId: 'p', roles: ['a,b'], ttlMs: 1000 })).rejects.toThrow(/invalid role name/);
    expect(await store.listTokens()).toEqual([]);
    await store.close();
  });
});

describe('ServiceToken', () => {
  const HOUR = 3_600_000;
  let dir: string;
  let store: SqliteStore;
  let file: string;
  let now: Date;
  const clock = () => new Date(now);
  const advance = (ms: number) => (now = new Date(now.getTime() + ms));
  const serviceRows = () => store.listTokens({ userId: SERVICE_USER });
  const open = (extra: Partial<Parameters<typeof ServiceToken.open>[0]> = {}) => ServiceToken.open({ store, file, now: clock, ttlMs: 24 * HOUR, ...extra });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'oe-svctoken-'));
    store = new SqliteStore(join(dir, 'db.sqlite'));
    file = join(dir, 'service-token.json');
    now = new Date('2026-06-01T00:00:00.000Z');
  });
  afterEach(async () => {
    vi.useRealTimers();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('issues a 24-hour token for the service user and keeps it in a 0600 file', async () => {
    const t = await open();
    const rows = await serviceRows();
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ hash: hashToken(t.current()), projectId: SERVICE_PROJECT, roles: [...SERVICE_ROLES], expiresAt: '2026-06-02T00:00:00.000Z' });
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual({ token: t.current(), expiresAt: '2026-06-02T00:00:00.000Z' });
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('reuses the kept token across restarts while more than the renewal margin is left', async () => {
    const first = (await open()).current();
    advance(11 * HOUR);
    const second = (await open()).current();
    expect(second).toBe(first);
    expect(await serviceRows()).toHaveLength(1);
  });

  it('rotates at start a token inside its renewal margin, and revokes the old one', async () => {
    const first = (await open()).current();
    advance(13 * HOUR);
    const second = (await open()).current();
    expect(second).not.toBe(first);
    expect((await serviceRows()).map((r) => r.hash)).toEqual([hashToken(second)]);
  });

  it('rotates at start an expired token, and removes it from the store', async () => {
    const first = (await open()).current();
    advance(25 * HOUR);
    const second = (await open()).current();
    expect(second).not.toBe(first);
    expect(await store.getToken(hashToken(first))).toBeUndefined();
    expect(await serviceRows()).toHaveLength(1);
  });

  it('rotates at start a kept token the store no longer holds (revoked, or another database)', async () => {
    const first = (await open()).current();
    await store.deleteToken(hashToken(first));
    const second = (await open()).current();
    expect(second).not.toBe(first);
    expect(await serviceRows()).toHaveLength(1);
  });

  it('revokes at start the service tokens nobody holds (the 365-day ones older versions minted at every start)', async () => {
    for (let i = 0; i < 3; i++) await issueToken(store, { userId: SERVICE_USER, projectId: SERVICE_PROJECT, roles: [...SERVICE_ROLES], ttlMs: 365 * 24 * HOUR, now });
    const user = await issueToken(store, { userId: 'alice', projectId: 'p', roles: ['member'], ttlMs: HOUR, now });
    const t = await open();
    expect((await serviceRows()).map((r) => r.hash)).toEqual([hashToken(t.current())]);
    expect(await store.getToken(user.record.hash)).toBeDefined();
  });

  it('treats an unreadable token file as no token', async () => {
    writeFileSync(file, '{not json');
    const t = await open();
    expect(JSON.parse(readFileSync(file, 'utf8')).token).toBe(t.current());
  });

  it('rotates while running once inside the margin; the previous token stays valid until it expires, then is removed', async () => {
    const auth = new TokenAuthenticator(store);
    const t = await open();
    const first = t.current();
    advance(6 * HOUR);
    expect(await t.refresh()).toBe(false);
    expect(t.current()).toBe(first);
    advance(7 * HOUR); // 13 h old: 11 h left, inside the 12 h margin
    expect(await t.refresh()).toBe(true);
    const second = t.current();
    expect(second).not.toBe(first);
    expect(JSON.parse(readFileSync(file, 'utf8')).token).toBe(second);
    // A call in flight may still carry the first token: it is not revoked.
    expect(await store.getToken(hashToken(first))).toBeDefined();
    expect(await serviceRows()).toHaveLength(2);
    advance(13 * HOUR); // first expired; second is 13 h old
    expect(await t.refresh()).toBe(true);
    expect(await store.getToken(hashToken(first))).toBeUndefined();
    expect(await serviceRows()).toHaveLength(2);
    await expect(auth.authenticate(first)).rejects.toThrow(/invalid or has expired/);
  });

  it('rotates on schedule by itself, before the token expires', async () => {
    vi.useFakeTimers({ now: new Date('2026-06-01T00:00:00.000Z') });
    const t = await ServiceToken.open({ store, file, ttlMs: 24 * HOUR });
    const first = t.current();
    t.start();
    await vi.advanceTimersByTimeAsync(12 * HOUR - 1000);
    expect(t.current()).toBe(first);
    await vi.advanceTimersByTimeAsync(2000);
    const second = t.current();
    expect(second).not.toBe(first);
    expect(t.expiresAt).toBe('2026-06-02T12:00:00.000Z'); // rotated exactly 12 h in
    await vi.advanceTimersByTimeAsync(12 * HOUR);
    expect(t.current()).not.toBe(second);
    t.stop();
    const third = t.current();
    await vi.advanceTimersByTimeAsync(48 * HOUR);
    expect(t.current()).toBe(third);
  });

  it('stops accepting a token deleted from the store once its cache entry is revalidated', async () => {
    vi.useFakeTimers({ now: new Date(), toFake: ['Date'] });
    const auth = new TokenAuthenticator(store, { revalidateMs: 1000 });
    const { token } = await issueToken(store, { userId: 'u-revoked', projectId: 'p', roles: ['member'], ttlMs: HOUR });
    expect((await auth.authenticate(token)).userId).toBe('u-revoked');
    expect(await store.deleteToken(hashToken(token))).toBe(true);
    // Within the window the cached entry answers; after it, the store's answer does.
    expect((await auth.authenticate(token)).userId).toBe('u-revoked');
    vi.setSystemTime(Date.now() + 1001);
    await expect(auth.authenticate(token)).rejects.toThrow(/invalid or has expired/);
    vi.useRealTimers();
  });

  it('knows a token without a store read (Authenticator.known) only while its cache entry is fresh, unexpired and not forgotten', async () => {
    vi.useFakeTimers({ now: new Date(), toFake: ['Date'] });
    const auth = new TokenAuthenticator(store, { revalidateMs: 1000 });
    const { token } = await issueToken(store, { userId: 'u-known', projectId: 'p', roles: ['member'], ttlMs: 5000 });
    expect(auth.known(token)).toBeUndefined();
    expect(auth.known(undefined)).toBeUndefined();
    await auth.authenticate(token);
    expect(auth.known(token)).toMatchObject({ userId: 'u-known', projectId: 'p' });
    vi.setSystemTime(Date.now() + 1000);
    expect(auth.known(token)).toBeUndefined();
    await auth.authenticate(token);
    auth.forget(token);
    expect(auth.known(token)).toBeUndefined();
    await auth.authenticate(token);
    vi.setSystemTime(Date.now() + 5000);
    expect(auth.known(token)).toBeUndefined();
    await expect(auth.authenticate(token)).rejects.toThrow(/invalid or has expired/);
    vi.useRealTimers();
  });

  it('lets noauth know only its stored tokens, never a USER:PROJECT value (made per request)', async () => {
    const stored = new TokenAuthenticator(store);
    const auth = new NoAuthAuthenticator(stored);
    const { token } = await issueToken(store, { userId: 'u-stored', projectId: 'p', roles: ['member'], ttlMs: HOUR });
    await auth.authenticate(token);
    await auth.authenticate('alice:p1');
    expect(auth.known(token)).toMatchObject({ userId: 'u-stored' });
    expect(auth.known('alice:p1')).toBeUndefined();
  });

  it('renews a refused token at once, answers the current one for an older refusal, and issues at most one per 10 s', async () => {
    const t = await open();
    const first = t.current();
    const second = await t.renew(first);
    expect(second).toBeDefined();
    expect(second).not.toBe(first);
    expect(t.current()).toBe(second);
    // A call that still carried the first token learns of the second, with no new token issued.
    expect(await t.renew(first)).toBe(second);
    // The second refused too within 10 s: no token per call.
    expect(await t.renew(second!)).toBeUndefined();
    expect(t.current()).toBe(second);
    advance(10_000);
    const third = await t.renew(second!);
    expect(third).not.toBe(second);
    expect(JSON.parse(readFileSync(file, 'utf8')).token).toBe(third);
    expect((await store.getToken(hashToken(third!)))?.userId).toBe(SERVICE_USER);
    // Each refused token is gone from the store once its successor is in place (a policy refusal
    // leaves it valid otherwise): one valid service token, not one per renewal.
    expect(await store.getToken(hashToken(first))).toBeUndefined();
    expect(await store.getToken(hashToken(second!))).toBeUndefined();
    expect((await store.listTokens({ userId: SERVICE_USER })).map((r) => r.hash)).toEqual([hashToken(third!)]);
  });

  it('refuses a renewal margin that is not shorter than the lifetime', async () => {
    await expect(open({ ttlMs: HOUR, renewBeforeMs: HOUR })).rejects.toThrow(/renewBeforeMs < ttlMs/);
  });
});
