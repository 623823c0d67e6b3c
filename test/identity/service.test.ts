/** IdentityService without HTTP (identity/keystone.ts): the bound on password checks running at once. */
import { afterEach, describe, expect, it } from 'vitest';
import { SqliteStore } from '../../src/db/sqlite.js';
import { SqliteUserStore } from '../../src/db/users.js';
import { IdentityService } from '../../src/identity/keystone.js';
import { hashPassword } from '../../src/identity/password.js';

let store: SqliteStore | undefined;
afterEach(async () => {
  await store?.close();
  store = undefined;
});

const body = (password: string) => ({
  auth: { identity: { methods: ['password'], password: { user: { name: 'u', domain: { id: 'default' }, password } } }, scope: { project: { id: 'p' } } },
});

describe('IdentityService', () => {
  it('answers 503 to a password check beyond its concurrency and queue, and serves the others', async () => {
    store = new SqliteStore(':memory:');
    const users = new SqliteUserStore(store.db);
    const now = new Date().toISOString();
    await users.createUser({ id: 'a'.repeat(32), name: 'u', projectId: 'p', roles: ['member'], passwordHash: await hashPassword('pw', { N: 2 ** 12, r: 8, p: 1 }), createdAt: now, updatedAt: now });
    const identity = new IdentityService({ store, users, endpoints: { urls: () => ({}) }, tokenTtlMs: 60_000, kdfConcurrency: 1, kdfQueue: 1 });
    const results = await Promise.allSettled([identity.authenticate(body('pw'), { catalog: false }), identity.authenticate(body('pw'), { catalog: false }), identity.authenticate(body('pw'), { catalog: false })]);
    expect(results.map((r) => (r.status === 'fulfilled' ? 201 : (r.reason as { status: number }).status))).toEqual([201, 201, 503]);
    // The gate is free again afterwards.
    await expect(identity.authenticate(body('pw'), { catalog: false })).resolves.toMatchObject({ body: { token: { user: { name: 'u' } } } });
  });

  it("bounds one client's waiting password checks, so a client flooding logins leaves room for the others", async () => {
    store = new SqliteStore(':memory:');
    const users = new SqliteUserStore(store.db);
    const now = new Date().toISOString();
    await users.createUser({ id: 'b'.repeat(32), name: 'u', projectId: 'p', roles: ['member'], passwordHash: await hashPassword('pw', { N: 2 ** 12, r: 8, p: 1 }), createdAt: now, updatedAt: now });
    const identity = new IdentityService({ store, users, endpoints: { urls: () => ({}) }, tokenTtlMs: 60_000, kdfConcurrency: 1, kdfQueue: 10, kdfQueuePerClient: 2 });
    const status = (p: Promise<unknown>) => p.then(() => 201, (e: { status: number }) => e.status);
    // The flooder: one running and two waiting, then refused; another client still gets a place in the queue.
    const flood = Array.from({ length: 5 }, () => status(identity.authenticate(body('pw'), { catalog: false, client: '10.0.0.9' })));
    const other = status(identity.authenticate(body('pw'), { catalog: false, client: '10.0.0.7' }));
    expect(await Promise.all(flood)).toEqual([201, 201, 201, 503, 503]);
    expect(await other).toBe(201);
  });

  it('refuses a non-positive token lifetime at construction', () => {
    store = new SqliteStore(':memory:');
    expect(() => new IdentityService({ store: store!, users: new SqliteUserStore(store!.db), endpoints: { urls: () => ({}) }, tokenTtlMs: 0 })).toThrow(/must be positive/);
  });
});
