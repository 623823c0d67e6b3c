/**
 * PgStore on a real PostgreSQL 15 (test/support/postgres.ts): the same store contract as
 * SqliteStore, plus what only a shared database has (concurrent migrations, claims from two
 * pools, i.e. two processes) and the users store.
 */
import { afterAll, expect, it } from 'vitest';
import { openStoreUrl } from '../../src/db/open.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import type { Store } from '../../src/db/store.js';
import { PG_MIGRATIONS, PG_SCHEMA_VERSION, PgStore, PgUserStore } from '../../src/db/postgres/index.js';
import { createPool, inTransaction } from '../../src/db/postgres/pool.js';
import { unexpectedError } from '../../src/errors.js';
import { describeReal } from '../support/real.js';
import { postgresMissing, startPostgres, type PostgresHarness } from '../support/postgres.js';
import { describeStoreContract } from './store.contract.js';

const describePg = describeReal(postgresMissing());

let server: Promise<PostgresHarness> | undefined;
/** The one cluster of this file, started by the first suite that needs it. */
const cluster = () => (server ??= startPostgres());
let dbs = 0;
const freshDb = async () => (await cluster()).createDatabase(`oe_test_${++dbs}`);

afterAll(async () => {
  if (server) await (await server).stop();
});

describePg('PostgreSQL 15', () => {
  describeStoreContract('PgStore (PostgreSQL 15)', async () => {
    const store = await PgStore.open(await freshDb());
    return { store, teardown: () => store.close() };
  });

  describeStoreContract('PgStore (PostgreSQL 15, unix socket, opened by URL)', async () => {
    const h = await cluster();
    await h.createDatabase('oe_socket');
    const opened = await openStoreUrl(h.socketUrl('oe_socket'));
    expect(opened.kind).toBe('postgresql');
    return { store: opened.store, teardown: () => opened.close() };
  });

  it('answers records identical in shape and value to SqliteStore for the same writes (times the store stamps aside)', async () => {
    const pgStore = await PgStore.open(await freshDb());
    const lite = new SqliteStore(':memory:');
    /** The same writes on `s`, then every kind of record read back. */
    const scenario = async (s: Store) => {
      const big = 5 * 2 ** 40 + 3; // beyond 32 bits: a BIGINT read back as a number
      const extend = { requestId: 'r-x', targetBytes: big, step: 'storage' as const, startedAt: 't0', deadline: 't1', attempts: 2, hostBytes: null, error: null, mode: 'online' as const };
      await s.createVolume({ id: 'x-v1', projectId: 'p', name: 'n', sizeBytes: big, status: 'extending', backend: 'iscsi', format: null, serverId: 'x-s1', serverProjectId: 'p', device: 'vdb', extend, userId: 'u', description: 'd', metadata: { k: 'v' }, attachedAt: '2026-01-01T00:00:00.000Z' });
      await s.createVolume({ id: 'x-v2', projectId: 'p', name: 'm', sizeBytes: 1, status: 'available', backend: 'file', format: 'qcow2', serverId: null, serverProjectId: null, device: null, extend: null });
      await s.updateVolume('x-v2', { status: ['available'], version: 0 }, { metadata: {}, description: null, sizeBytes: 2 });
      await s.createServer('x-h', { id: 'x-s2', name: 'b', projectId: 'p', userId: 'u', createdAt: '2026-01-01T00:00:00.000Z', imageRef: 'i', flavorRef: null, metadata: { a: 'b' }, taskState: 'scheduling' });
      await s.setServerState('x-s2', { state: 'error', taskState: null, fault: { code: 500, message: 'm', created: '2026-01-01T00:00:01.000Z' } }, 'scheduling');
      await s.syncServers('x-h', [
        { id: 'x-s1', name: 'a', projectId: 'p', state: 'active', vcpus: 2, memoryMb: 512, attachments: [{ serverId: 'x-s1', volumeId: 'x-v1', device: 'vdb', kind: 'block', format: 'raw', source: 'iqn/1', readonly: true }, { serverId: 'x-s1', volumeId: 'x-v0', device: 'vda', kind: 'file', readonly: false }] },
      ]);
      await s.setTaskState('x-s1', 'migrating', null);
      await s.recordAction({ requestId: 'x-r1', serverId: 'x-s1', action: 'a', event: 'e', userId: 'u', projectId: 'p', startTime: 't', finishTime: null, result: null, message: null, details: { n: 1, nested: { x: [1, 'y'] } } });
      await s.startVolumeAction({ requestId: 'x-r2', volumeId: 'x-v1', action: 'extend', userId: 'u', projectId: 'p', startTime: 't', message: null, computeRequestIds: ['c1'], details: { a: 1 } });
      await s.noteVolumeAction('x-r2', 'x-v1', ['c2'], { b: 2 });
      await s.putToken({ hash: 'x-t', userId: 'u', projectId: 'p', roles: ['member'], createdAt: 'c', expiresAt: 'e' });
      await s.putFlavor({ id: 'x-f', name: 'f', vcpus: 1, ramMb: 64, diskGb: 1, ephemeralGb: 0, swapMb: 0, isPublic: false, description: 'small' });
      await s.putImage({ id: 'x-i', name: 'i', kind: 'disk', diskPath: '/d', diskFormat: 'raw', kernelPath: null, ramdiskPath: null, cmdline: null, minDiskGb: 1, minRamMb: 2, createdAt: 'c' });
      const svc = await s.serviceHeartbeat('x-h', 'nova-compute', 'compute', new Date('2026-01-01T00:00:00.000Z'));
      await s.setServiceDisabled('x-h', 'nova-compute', true, 'why');
      const stamped = ({ updatedAt: _u, createdAt: _c, discoveredAt: _d, ...rest }: Record<string, unknown>) => rest;
      const volumes = (await s.listVolumes()).map((v) => stamped(v as unknown as Record<string, unknown>));
      const servers = (await s.listServers()).map((v) => ({ ...stamped(v as unknown as Record<string, unknown>), hasDiscovered: 'discoveredAt' in v, createdAt: v.createdAt }));
      return {
        volumes,
        servers,
        action: await s.getAction('x-s1', 'x-r1'),
        volumeActions: await s.listVolumeActions('x-v1'),
        token: await s.getToken('x-t'),
        flavor: await s.getFlavor('x-f'),
        image: await s.getImage('x-i'),
        services: (await s.listServices()).map((x) => ({ ...x, id: x.id - svc.id })),
        claimed: await s.claimExtend('x-v1', 'w', 1000, new Date(0)),
        renewed: await s.renewExtendLeases('w', 1000, new Date(1)),
      };
    };
    try {
      const fromPg = await scenario(pgStore);
      const fromSqlite = await scenario(lite);
      expect(fromPg.volumes[0]).toMatchObject({ sizeBytes: 5 * 2 ** 40 + 3, version: 0 });
      expect(fromPg).toEqual(fromSqlite);
      // Key order too: what a client sees serialized is the same.
      expect(JSON.stringify(fromPg)).toBe(JSON.stringify(fromSqlite));
    } finally {
      await pgStore.close();
      await lite.close();
    }
  });

  it('reads every page of a paged listing through an index, with no sort step (query plans)', async () => {
    const store = await PgStore.open(await freshDb());
    try {
      await store.createVolume({ id: 'pl-v1', projectId: 'p', name: 'v', sizeBytes: 1, status: 'available', backend: 'file', format: 'raw', serverId: null, serverProjectId: null, device: null, extend: null });
      await store.syncServers('pl-h', [{ id: 'pl-s1', name: 'vm', projectId: 'p', state: 'active', attachments: [] }]);
      await store.recordAction({ requestId: 'pl-r1', serverId: 'pl-s1', action: 'a', event: 'e', userId: 'u', projectId: 'p', startTime: 't', finishTime: 't', result: 'Success', message: null, details: {} });
      await store.startVolumeAction({ requestId: 'pl-r2', volumeId: 'pl-v1', action: 'a', userId: 'u', projectId: 'p', startTime: 't', message: null, computeRequestIds: [], details: {} });
      // Record what the listings send, then ask PostgreSQL how it would run each page's query.
      const sent: Array<{ sql: string; params: unknown[] }> = [];
      const query = store.pool.query.bind(store.pool);
      store.pool.query = ((sql: string, params?: unknown[]) => (sent.push({ sql, params: params ?? [] }), query(sql, params))) as typeof store.pool.query;
      const pages: Array<{ name: string; list: () => Promise<unknown>; index: RegExp }> = [
        { name: "a server's actions, first page", list: () => store.listActions('pl-s1', { limit: 5 }), index: /instance_actions_pkey/ },
        { name: "a server's actions, after a marker", list: () => store.listActions('pl-s1', { limit: 5, marker: 'pl-r1' }), index: /instance_actions_pkey/ },
        { name: "a volume's actions, after a marker", list: () => store.listVolumeActions('pl-v1', { limit: 5, marker: 'pl-r2' }), index: /volume_actions_pkey/ },
        { name: "a project's servers, first page", list: () => store.listServers({ projectId: 'p' }, { limit: 5 }), index: /servers_project_by_name/ },
        { name: "a project's servers, after a marker", list: () => store.listServers({ projectId: 'p' }, { limit: 5, marker: 'pl-s1' }), index: /servers_project_by_name/ },
        { name: 'all servers, after a marker', list: () => store.listServers({}, { limit: 5, marker: 'pl-s1' }), index: /servers_by_name/ },
        { name: "a project's volumes, after a marker", list: () => store.listVolumes({ projectId: 'p' }, { limit: 5, marker: 'pl-v1' }), index: /volumes_project_by_created/ },
        { name: 'all volumes, after a marker', list: () => store.listVolumes({}, { limit: 5, marker: 'pl-v1' }), index: /volumes_by_created/ },
      ];
      const c = await store.pool.connect();
      try {
        // Tables of a few rows are cheapest to scan whole: plan as for large ones.
        await c.query('SET enable_seqscan = off');
        for (const page of pages) {
          sent.length = 0;
          await page.list();
          const listing = sent.find((q) => /LIMIT/.test(q.sql))!;
          const plan = ((await c.query(`EXPLAIN ${listing.sql}`, listing.params)).rows as Array<{ 'QUERY PLAN': string }>).map((r) => r['QUERY PLAN']).join('\n');
          // The page's bounds are the index scan's own conditions (not a filter after it), and no sort follows.
          expect(plan, page.name).toMatch(new RegExp(`Index Scan (Backward )?using ${page.index.source} `));
          expect(plan, page.name).not.toMatch(/Sort|Filter/);
        }
      } finally {
        c.release();
      }
    } finally {
      await store.close();
    }
  });

  it('migrates an empty database once when two stores open it at the same moment', async () => {
    const url = await freshDb();
    const [a, b] = await Promise.all([PgStore.open(url), PgStore.open(url)]);
    try {
      const rows = (await a.pool.query('SELECT version FROM schema_migrations ORDER BY version')).rows as Array<{ version: number }>;
      // Each migration once, up to this build's schema.
      expect(rows.map((r) => r.version)).toEqual(PG_MIGRATIONS.map((m) => m.version));
      expect(rows.at(-1)?.version).toBe(PG_SCHEMA_VERSION);
      // Both work on the one schema.
      await a.createVolume({ id: 'mig-v', projectId: 'p', name: 'v', sizeBytes: 1, status: 'available', backend: 'file', format: 'raw', serverId: null, serverProjectId: null, device: null, extend: null });
      expect((await b.getVolume('mig-v'))?.sizeBytes).toBe(1);
      // A third open finds the schema current and changes nothing.
      const c = await PgStore.open(url);
      await c.close();
      expect((await a.pool.query('SELECT count(*)::int AS n FROM schema_migrations')).rows[0]).toEqual({ n: PG_MIGRATIONS.length });
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('refuses a database whose schema is newer than this build knows, and names no password', async () => {
    const url = await freshDb();
    const a = await PgStore.open(url);
    await a.pool.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)', [PG_SCHEMA_VERSION + 1, 'later']);
    await a.close();
    const withPassword = url.replace('postgres@', 'postgres:s3cret-pw@');
    const err = (await openStoreUrl(withPassword).then(
      () => undefined,
      (e: unknown) => e as Error,
    ))!;
    expect(err.message).toMatch(/newer than this build knows/);
    expect(err.message).not.toContain('s3cret-pw');
  });

  it('names no password when the server cannot be reached', async () => {
    const h = await cluster();
    const err = (await openStoreUrl(`postgresql://postgres:s3cret-pw@127.0.0.1:${h.port}/no_such_db`).then(
      () => undefined,
      (e: unknown) => e as Error,
    ))!;
    expect(err.message).toMatch(/no_such_db/);
    expect(err.message).not.toContain('s3cret-pw');
  });

  it('lets exactly one of two pools (two processes) win concurrent claims of the same extend, many times over', async () => {
    const url = await freshDb();
    const [a, b] = await Promise.all([PgStore.open(url), PgStore.open(url)]);
    try {
      const extend = { requestId: 'r', targetBytes: 2, step: 'storage' as const, startedAt: 't', deadline: 't', attempts: 0, hostBytes: null, error: null };
      const n = 50;
      for (let i = 0; i < n; i++) {
        await a.createVolume({ id: `race-${i}`, projectId: 'p', name: 'v', sizeBytes: 1, status: 'extending', backend: 'file', format: 'raw', serverId: null, serverProjectId: null, device: null, extend });
      }
      const now = new Date('2026-01-01T00:00:00.000Z');
      const results = await Promise.all(
        Array.from({ length: n }, async (_, i) => {
          const [wa, wb] = await Promise.all([a.claimExtend(`race-${i}`, 'worker-a', 10_000, now), b.claimExtend(`race-${i}`, 'worker-b', 10_000, now)]);
          return [wa, wb] as const;
        }),
      );
      for (const [wa, wb] of results) expect(wa !== wb).toBe(true);
      const owners = (await a.pool.query('SELECT owner, count(*)::int AS n FROM extend_leases GROUP BY owner')).rows as Array<{ owner: string; n: number }>;
      expect(owners.reduce((s, o) => s + o.n, 0)).toBe(n);
      const wonByA = results.filter(([wa]) => wa).length;
      expect(owners.find((o) => o.owner === 'worker-a')?.n ?? 0).toBe(wonByA);
      // What one worker holds the other cannot list as claimable until it expires.
      expect(await b.listClaimableExtends(new Date(now.getTime() + 9_999))).toEqual([]);
      expect((await b.listClaimableExtends(new Date(now.getTime() + 10_000), 1000)).length).toBe(n);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it("compares a host's sync with what other processes wrote since (no inventory cached in a process)", async () => {
    const url = await freshDb();
    const [agent, api] = await Promise.all([PgStore.open(url), PgStore.open(url)]);
    try {
      const vm = (id: string, state: 'active' | 'paused' = 'active') => ({ id, name: id, projectId: 'p', state, attachments: [] });
      expect(await agent.syncServers('mp-h', [vm('mp-1'), vm('mp-2')])).toEqual({ added: 2, updated: 0, removed: 0, unchanged: 0 });
      // The API process builds a server on the host and deletes another.
      expect(await api.createServer('mp-h', { id: 'mp-3', name: 'mp-3', projectId: 'p', userId: 'u', createdAt: '2026-01-01T00:00:00.000Z', imageRef: 'i', flavorRef: 'f', metadata: {}, taskState: 'scheduling' })).toBe(true);
      expect(await api.deleteServer('mp-2')).toBe(true);
      // The agent's next sync: mp-2 is still on the host (added back), the building mp-3 is kept.
      expect(await agent.syncServers('mp-h', [vm('mp-1'), vm('mp-2')])).toEqual({ added: 1, updated: 0, removed: 0, unchanged: 1 });
      expect(await api.getServer('mp-3')).toMatchObject({ state: 'building', host: 'mp-h' });
      // Another process moved mp-1 to another host: for this host's sync it is new again.
      expect(await api.upsertServer('mp-h2', vm('mp-1', 'paused'))).toBe('added');
      expect(await agent.syncServers('mp-h', [vm('mp-1'), vm('mp-2')])).toEqual({ added: 1, updated: 0, removed: 0, unchanged: 1 });
      expect(await api.getServer('mp-1')).toMatchObject({ host: 'mp-h', state: 'active' });
    } finally {
      await Promise.all([agent.close(), api.close()]);
    }
  });

  it('keeps users and token auth records: create, read, update, list, delete, a taken name refused, auth gone with its token', async () => {
    const store = await PgStore.open(await freshDb());
    const users = new PgUserStore(store.pool);
    try {
      const alice = { id: 'a'.repeat(32), name: 'alice', projectId: 'p1', roles: ['member', 'reader'], passwordHash: 'scrypt$x', createdAt: '2026-01-01T00:00:00.000Z', updatedAt: '2026-01-01T00:00:00.000Z' };
      const bob = { ...alice, id: 'b'.repeat(32), name: 'bob', roles: [] };
      await users.createUser(bob);
      await users.createUser(alice);
      await expect(users.createUser({ ...alice, id: 'c'.repeat(32) })).rejects.toThrow(Error);
      await expect(users.createUser({ ...alice, name: 'carol' })).rejects.toThrow(Error);
      expect(await users.getUserByName('alice')).toEqual(alice);
      expect(await users.getUserById(bob.id)).toEqual(bob);
      expect((await users.listUsers()).map((u) => u.name)).toEqual(['alice', 'bob']);
      const changed = { id: alice.id, projectId: 'p2', roles: ['admin'], passwordHash: 'scrypt$y', updatedAt: '2026-01-02T00:00:00.000Z' };
      expect(await users.updateUser(changed)).toBe(true);
      expect(await users.getUserById(alice.id)).toEqual({ ...alice, ...changed });
      expect(await users.updateUser({ ...changed, id: 'f'.repeat(32) })).toBe(false);
      expect(await users.deleteUser(bob.id)).toBe(true);
      expect(await users.deleteUser(bob.id)).toBe(false);
      expect(await users.getUserByName('bob')).toBeUndefined();

      await store.putToken({ hash: 'tok', userId: alice.id, projectId: 'p2', roles: ['admin'], createdAt: '2026-01-01T00:00:00.000Z', expiresAt: '2026-01-02T00:00:00.000Z' });
      await users.putTokenAuth({ hash: 'tok', methods: ['password'], auditIds: ['aud-1'] });
      await users.putTokenAuth({ hash: 'tok', methods: ['token'], auditIds: ['aud-2', 'aud-1'] });
      expect(await users.getTokenAuth('tok')).toEqual({ hash: 'tok', methods: ['token'], auditIds: ['aud-2', 'aud-1'] });
      expect(await users.getTokenAuth('nope')).toBeUndefined();
      expect(await store.deleteToken('tok')).toBe(true);
      expect(await users.getTokenAuth('tok')).toBeUndefined();
    } finally {
      await store.close();
    }
  });

  it('keeps working across a PostgreSQL restart (the pool reconnects)', async () => {
    const h = await cluster();
    const store = await PgStore.open(await freshDb());
    try {
      await store.putFlavor({ id: 'f1', name: 'f1', vcpus: 1, ramMb: 64, diskGb: 1, ephemeralGb: 0, swapMb: 0, isPublic: true, description: null });
      const before = h.pid;
      await h.restart();
      expect(h.pid).not.toBe(before);
      // The pool dropped the connections the server cut while they were idle: the next query connects afresh.
      expect((await store.getFlavor('f1'))?.name).toBe('f1');
    } finally {
      await store.close();
    }
  });

  it('survives a restart in the middle of transactions: each fails with a database error, none ends the process, and work goes on after', async () => {
    const h = await cluster();
    const url = await freshDb();
    const pool = createPool(url, 6);
    await pool.query('CREATE TABLE counter (id int PRIMARY KEY, n int NOT NULL)');
    await pool.query('INSERT INTO counter VALUES (1, 0)');
    const failures: unknown[] = [];
    let committed = 0;
    let stop = false;
    // Transactions that hold their connection across a pause: the restart lands between two of their queries.
    const loop = async () => {
      while (!stop) {
        try {
          await inTransaction(pool, async (c) => {
            await c.query('SELECT n FROM counter WHERE id = 1 FOR UPDATE');
            await new Promise((r) => setTimeout(r, 20));
            await c.query('UPDATE counter SET n = n + 1 WHERE id = 1');
          });
          committed++;
        } catch (err) {
          failures.push(err);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    };
    try {
      const loops = Array.from({ length: 6 }, loop);
      await new Promise((r) => setTimeout(r, 500));
      await h.restart();
      await new Promise((r) => setTimeout(r, 1500));
      stop = true;
      await Promise.all(loops);
      // Had an 'error' event gone unheard, the process (this test run) would have ended here.
      expect(failures.length).toBeGreaterThan(0);
      for (const err of failures) expect(unexpectedError(err)).toMatchObject({ code: 'DatabaseUnavailable', status: 503, final: false });
      const { rows } = await pool.query('SELECT n FROM counter WHERE id = 1');
      expect(rows[0].n).toBe(committed);
    } finally {
      stop = true;
      await pool.end();
    }
  });
});
