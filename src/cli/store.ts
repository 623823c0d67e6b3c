/**
 * The store a CLI command works on: the database `--database-url` names (a deployment's shared
 * one, db/open.ts), or else the data dir's SQLite file, opened as `token create` always opened it
 * (checked, not locked: it works while serve runs).
 */
import type { Config } from '../config.js';
import { openDataDir } from '../db/dataDir.js';
import { openStoreUrl } from '../db/open.js';
import { SqliteUserStore } from '../db/users.js';
import type { Store, UserStore } from '../db/store.js';

/** A store opened for one command, with the embedded Keystone's users; `close` when done. */
export interface CommandStore {
  store: Store;
  users: UserStore;
  close(): Promise<void>;
}

/** Opens `config.databaseUrl` if set, else `config.dataDir`'s database (see the module comment). Throws what either opener throws. */
export async function openCommandStore(config: Pick<Config, 'databaseUrl' | 'dataDir'>): Promise<CommandStore> {
  if (config.databaseUrl) return openStoreUrl(config.databaseUrl);
  const dataDir = openDataDir(config.dataDir, { lock: false });
  return { store: dataDir.store, users: new SqliteUserStore(dataDir.store.db), close: () => dataDir.close() };
}

/** The `--database-url` option's help, the same on every command that has it. */
export const DATABASE_URL_HELP = 'the shared database: postgresql://… or sqlite:///PATH (env ONLINE_EXTEND_DATABASE_URL; default: the data dir\'s SQLite file)';
