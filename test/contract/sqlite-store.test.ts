import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../src/db/sqlite.js';
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
