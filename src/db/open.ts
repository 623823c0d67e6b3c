/**
 * Opening the store a deployment names: `--database-url` (G). The embedded default (`serve`
 * without a URL) keeps its SQLite file in the data dir, opened through db/dataDir.ts.
 *
 * URLs: `postgresql://USER[:PASSWORD]@HOST[:PORT]/DB` (also `postgres://`; `?host=/dir` for a
 * unix socket directory) → the PostgreSQL store (db/postgres/); `sqlite:///ABSOLUTE/PATH` → a
 * SQLite file (tests, single-host tools; other `sqlite:` forms refused: sqliteUrlPath). Anything
 * else: ConfigError-style Error naming the URL's scheme (never its password).
 */
import type { Store, UserStore } from './store.js';

/** A store opened from a URL, with the users of the embedded Keystone kept in the same database. */
export interface OpenedStore {
  kind: 'sqlite' | 'postgresql';
  store: Store;
  users: UserStore;
  /** SQLite: the database's files whose wider mode opening narrowed to 0600; PostgreSQL: none. */
  narrowed: readonly string[];
  /** Closes the store (and the pool). */
  close(): Promise<void>;
}

/** Open (creating and migrating) the database `url` names; see the module comment. */
export async function openStoreUrl(url: string): Promise<OpenedStore> {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'sqlite') {
    const path = sqliteUrlPath(url);
    const { SqliteStore } = await import('./sqlite.js');
    const { SqliteUserStore } = await import('./users.js');
    const store = new SqliteStore(path);
    return { kind: 'sqlite', store, users: new SqliteUserStore(store.db), narrowed: store.narrowed, close: () => store.close() };
  }
  if (scheme === 'postgresql' || scheme === 'postgres') {
    const { openPostgres } = await import('./postgres/index.js');
    const { store, users } = await openPostgres(url);
    return { kind: 'postgresql', store, users, narrowed: [], close: () => store.close() };
  }
  throw new Error(`database URL: unknown scheme ${scheme ?? '(none)'}: give postgresql://… or sqlite:///path`);
}

/**
 * The file a `sqlite:///ABSOLUTE/PATH` URL names (percent-decoded). Throws an Error naming the
 * right form, before anything is opened or created, for a URL with a host (`sqlite://tmp/x`: two
 * slashes make `tmp` a host and the file `/x`), a relative path (`sqlite:x`), no file
 * (`sqlite://`, `sqlite:///`), or a `?query` or `#fragment` (nothing reads them: they would be
 * dropped without a word). Messages never repeat the URL (it could hold a password).
 */
export function sqliteUrlPath(url: string): string {
  const form = 'sqlite:///ABSOLUTE/PATH (three slashes)';
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`database URL: not a URL: give ${form}; nothing opened`);
  }
  // What was most likely meant: the "host" was the path's first directory.
  if (u.host !== '') throw new Error(`database URL: sqlite://${u.host}/… names a host (${u.host}), not a file on this one: give ${form}, e.g. sqlite:///${u.host}${u.pathname}; nothing opened`);
  if (u.search !== '' || u.hash !== '') throw new Error(`database URL: a SQLite URL takes no ?query or #fragment: give ${form} (write ? as %3F and # as %23 in a file name); nothing opened`);
  const path = decodeURIComponent(u.pathname);
  if (!path.startsWith('/') || path.endsWith('/')) throw new Error(`database URL: a SQLite URL names a file by its absolute path: give ${form}, e.g. sqlite:///var/lib/online-extend/db.sqlite; nothing opened`);
  return path;
}
