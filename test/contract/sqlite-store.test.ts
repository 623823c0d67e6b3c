import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PAGE_SQL, SqliteStore, SYNC_CHUNK, serversSql, volumesSql } from '../../src/db/sqlite.js';
import { describeStoreContract } from './store.contract.js';

describeStoreContract('SqliteStore (in memory)', async () => {
  const store = new SqliteStore(':memory:');
  return { store, teardown: () => store.close() };
});

describeStoreContract('SqliteStore (file, WAL)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'oe-store-'));
  const store = new SqliteStore(join(dir, 'db.sqlite'));
  return {
    store,
    teardown: async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

describe('SqliteStore specifics', () => {
  /** The plan SQLite picks for `sql`, one step a line (every parameter bound to NULL). */
  function queryPlan(store: SqliteStore, sql: string): string {
    const named = [...sql.matchAll(/@(\w+)/g)].map((m) => m[1]!);
    const st = store.db.prepare(`EXPLAIN QUERY PLAN ${sql}`);
    const rows = (named.length
      ? st.all(Object.fromEntries(named.map((n) => [n, null])))
      : st.all(...Array.from({ length: (sql.match(/\?/g) ?? []).length }, () => null))) as Array<{ detail: string }>;
    return rows.map((r) => r.detail).join('\n');
  }

  const paged: Array<{ name: string; sql: string; index: string }> = [
    { name: 'instance actions, first page', sql: PAGE_SQL.actionsFirst, index: 'sqlite_autoindex_instance_actions_1' },
    { name: 'instance actions, after a marker', sql: PAGE_SQL.actionsAfter, index: 'sqlite_autoindex_instance_actions_1' },
    { name: 'volume actions, first page', sql: PAGE_SQL.volumeActionsFirst, index: 'sqlite_autoindex_volume_actions_1' },
    { name: 'volume actions, after a marker', sql: PAGE_SQL.volumeActionsAfter, index: 'sqlite_autoindex_volume_actions_1' },
    { name: "a project's servers, first page", sql: serversSql({ project: true, marker: false, limit: true }), index: 'servers_project_by_name' },
    { name: "a project's servers, after a marker", sql: serversSql({ project: true, marker: true, limit: true }), index: 'servers_project_by_name' },
    { name: 'all servers, after a marker', sql: serversSql({ project: false, marker: true, limit: true }), index: 'servers_by_name' },
    { name: "a project's volumes, first page", sql: volumesSql({ project: true, status: false, marker: false, limit: true }), index: 'volumes_project_by_created' },
    { name: "a project's volumes, after a marker", sql: volumesSql({ project: true, status: false, marker: true, limit: true }), index: 'volumes_project_by_created' },
    { name: 'all volumes, after a marker', sql: volumesSql({ project: false, status: false, marker: true, limit: true }), index: 'volumes_by_created' },
  ];

  it.each(paged)('reads a page of $name through its index, with no sort step', ({ sql, index }) => {
    const store = new SqliteStore(':memory:');
    try {
      const plan = queryPlan(store, sql);
      expect(plan).toMatch(new RegExp(`^(SEARCH|SCAN) \\w+ USING (COVERING )?INDEX ${index} `));
      expect(plan).not.toMatch(/TEMP B-TREE/);
    } finally {
      void store.close();
    }
  });

  it('writes no row at all when it syncs an unchanged inventory (total_changes)', async () => {
    const store = new SqliteStore(':memory:');
    const inv = Array.from({ length: 3 * SYNC_CHUNK + 7 }, (_, i) => ({
      id: `srv-${i}`,
      name: `vm-${i}`,
      projectId: 'p',
      state: 'active' as const,
      attachments: [{ serverId: `srv-${i}`, volumeId: `vol-${i}`, device: 'vdb', kind: 'block' as const, readonly: false }],
    }));
    const changes = () => (store.db.prepare('SELECT total_changes() AS n').get() as { n: number }).n;
    try {
      await store.syncServers('h', inv);
      const before = changes();
      await store.syncServers('h', inv);
      expect(changes()).toBe(before);
      // One changed attachment: its server row, its old attachment row out, its new one in.
      await store.syncServers('h', inv.map((s, i) => (i === 5 ? { ...s, attachments: [{ ...s.attachments[0]!, device: 'vdc' }] } : s)));
      expect(changes() - before).toBe(3);
    } finally {
      await store.close();
    }
  });

  it('compares a single-server write with the row when no sync loaded the host (a reopened store): unchanged writes nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'oe-store-'));
    const file = join(dir, 'db.sqlite');
    const srv = (state: 'active' | 'paused') => ({
      id: 'srv-1',
      name: 'vm-1',
      projectId: 'p',
      state,
      attachments: [{ serverId: 'srv-1', volumeId: 'vol-1', device: 'vdb', kind: 'block' as const, readonly: false }],
    });
    let store = new SqliteStore(file);
    try {
      await store.syncServers('h', [srv('active'), { ...srv('active'), id: 'srv-2', attachments: [] }]);
      await store.close();
      store = new SqliteStore(file);
      const changes = () => (store.db.prepare('SELECT total_changes() AS n').get() as { n: number }).n;
      expect(await store.upsertServer('h', srv('active'))).toBe('unchanged');
      expect(await store.upsertServer('other-host', { ...srv('active'), id: 'srv-2', attachments: [] })).toBe('added');
      expect(changes()).toBe(1);
      expect(await store.upsertServer('h', srv('paused'))).toBe('updated');
      // The first sync of the host after them loads it from the database and finds nothing to do.
      expect(await store.syncServers('h', [srv('paused')])).toEqual({ added: 0, updated: 0, removed: 0, unchanged: 1 });
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('lets other work run between the chunks of a large sync', async () => {
    const store = new SqliteStore(':memory:');
    const inv = Array.from({ length: 5 * SYNC_CHUNK }, (_, i) => ({ id: `srv-${i}`, name: `vm-${i}`, projectId: 'p', state: 'active' as const, attachments: [] }));
    try {
      let turns = 0;
      let done = false;
      const tick = () => {
        turns++;
        if (!done) setImmediate(tick);
      };
      setImmediate(tick);
      await store.syncServers('h', inv);
      done = true;
      // 5 chunks: the event loop ran other callbacks at least between each two of them.
      expect(turns).toBeGreaterThanOrEqual(4);
    } finally {
      await store.close();
    }
  });
});
