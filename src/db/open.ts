/**
 * Opening the store a deployment names: `--database-url` (G). The embedded default (`serve`
 * without a URL) keeps its SQLite file in the data dir, opened through db/dataDir.ts.
 *
 * URLs: `postgresql://USER[:PASSWORD]@HOST[:PORT]/DB` (also `postgres://`; `?host=/dir` for a
 * unix socket directory) → the PostgreSQL store (db/postgres/); `sqlite:///ABSOLUTE/PATH` → a
 * SQLite file (tests, single-host tools). Anything else: ConfigError-style Error naming the URL's
 * scheme (never its password).
 */
import type { Store, UserStore } from './store.js';

/** A store opened from a URL, with the users of the embedded Keystone kept in the same database. */
export interface OpenedStore {
  kind: 'sqlite' | 'postgresql';
  store: Store;
  users: UserStore;
  /** Closes the store (and the pool). */
  close(): Promise<void>;
}

/** Open (creating and migrating) the database `url` names; see the module comment. */
export async function openStoreUrl(url: string): Promise<OpenedStore> {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'sqlite') {
    const path = decodeURIComponent(new URL(url).pathname);
    const { SqliteStore } = await import('./sqlite.js');
    const { SqliteUserStore } = await import('./users.js');
    const store = new SqliteStore(path);
    return { kind: 'sqlite', store, users: new SqliteUserStore(store.db), close: () => store.close() };
  }
  if (scheme === 'postgresql' || scheme === 'postgres') {
    const { openPostgres } = await import('./postgres/index.js');
    const { store, users } = await openPostgres(url);
    return { kind: 'postgresql', store, users, close: () => store.close() };
  }
  throw new Error(`database URL: unknown scheme ${scheme ?? '(none)'}: give postgresql://… or sqlite:///path`);
}
