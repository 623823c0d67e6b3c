/**
 * The PostgreSQL store (G): PgStore (ComputeStore and VolumeStore) and PgUserStore on one pool.
 */
import { PgStore } from './store.js';
import { PgUserStore } from './users.js';

export { PgStore } from './store.js';
export { PgUserStore } from './users.js';
export { PG_MIGRATIONS, PG_SCHEMA_VERSION } from './migrations.js';
export { PG_POOL_SIZE, migratePg } from './pool.js';

/** `url` with its password (if any) replaced by `***`: what an error may show. */
export function redactDatabaseUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    // libpq's `?password=` too.
    for (const k of [...u.searchParams.keys()]) if (k.toLowerCase() === 'password') u.searchParams.set(k, '***');
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:/@]*):[^@]*@/, '//$1:***@').replace(/([?&]password=)[^&#]*/gi, '$1***');
  }
}

/**
 * Open the store and the users on the database `url` names (migrating it). Throws `Error`
 * naming the URL without its password when the database cannot be reached or migrated.
 */
export async function openPostgres(url: string, poolSize?: number): Promise<{ store: PgStore; users: PgUserStore }> {
  let store: PgStore;
  try {
    store = await PgStore.open(url, poolSize);
  } catch (e) {
    const password = safePassword(url);
    let message = (e as Error).message;
    if (password) message = message.split(password).join('***');
    throw new Error(`database ${redactDatabaseUrl(url)}: ${message}`, { cause: e });
  }
  return { store, users: new PgUserStore(store.pool) };
}

function safePassword(url: string): string | undefined {
  try {
    const u = new URL(url);
    const p = decodeURIComponent(u.password) || u.searchParams.get('password') || '';
    return p.length > 0 ? p : undefined;
  } catch {
    return undefined;
  }
}
