/**
 * The PostgreSQL connection pool (npm `pg`), its transactions, and the migrations applied at open.
 */
import pg from 'pg';
import { markDatabaseConnectFailure } from '../../errors.js';
import { PG_MIGRATIONS, PG_SCHEMA_VERSION } from './migrations.js';

/** Connections per pool: enough for a service's concurrent requests, few enough for many processes on one server. */
export const PG_POOL_SIZE = 10;

/**
 * Key of the advisory lock the migrations run under (a constant of this application: "oe-schema"
 * in ASCII), so two processes opening the same database at once migrate it one after the other.
 */
const MIGRATION_LOCK_KEY = 0x6f652d736368656dn;

/** OID of `bigint` (int8): sizes in bytes and versions, read back as JavaScript numbers (exact below 2^53). */
const INT8_OID = 20;

const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (oid === INT8_OID && format !== 'binary') return (v: string) => Number(v);
    return format === 'binary' ? pg.types.getTypeParser(oid, 'binary') : pg.types.getTypeParser(oid, 'text');
  }) as pg.CustomTypesConfig['getTypeParser'],
};

/**
 * pg's Client, whose failed connects are marked as the database's (a refused or reset socket while
 * the server restarts carries no SQLSTATE): DatabaseUnavailable (503, uncertain), not InternalError.
 */
class PgClient extends pg.Client {
  override connect(): Promise<pg.Client>;
  override connect(callback: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): void;
  override connect(callback?: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): Promise<pg.Client> | void {
    if (callback) {
      const cb = callback as (err: Error | null, c?: pg.Client) => void;
      super.connect(((err: Error | null) => (err ? cb(markDatabaseConnectFailure(err)) : cb(null, this))) as (err: Error) => void);
      return;
    }
    return super.connect().catch((err: unknown) => {
      throw markDatabaseConnectFailure(err);
    });
  }
}

/**
 * A pool on the database `url` names (`postgresql://USER[:PASSWORD]@HOST[:PORT]/DB`; `?host=/dir`
 * for a unix socket directory, as `pg` reads it). Connects lazily: the first query connects.
 */
export function createPool(url: string, max = PG_POOL_SIZE): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max, types, idleTimeoutMillis: 30_000, Client: PgClient });
  // An idle client whose server went away (a restart) emits 'error' on the pool: the pool drops
  // that client by itself; without a listener the error would end the process.
  pool.on('error', () => undefined);
  return pool;
}

/**
 * Run `fn` in one transaction on one connection of `pool`: committed if it resolves, rolled back
 * if it throws (and the error rethrown). `begin` may name the isolation (e.g. a read-only snapshot).
 */
export async function inTransaction<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>, begin = 'BEGIN'): Promise<T> {
  const c = await pool.connect();
  let broken: Error | undefined;
  // While a client is checked out, pg-pool listens to none of its errors: a server that goes
  // away between two queries of the transaction (a restart: 57P01, a cut connection) would emit
  // 'error' with no listener and end the process. Kept here, the next query fails with it and
  // the client is dropped on release.
  const onError = (err: Error): void => {
    broken ??= err;
  };
  c.on('error', onError);
  try {
    await c.query(begin);
    const out = await fn(c);
    await c.query('COMMIT');
    return out;
  } catch (e) {
    try {
      await c.query('ROLLBACK');
    } catch (rollbackError) {
      broken = rollbackError as Error; // the connection is unusable: drop it from the pool
    }
    throw e;
  } finally {
    c.off('error', onError);
    c.release(broken);
  }
}

/**
 * Bring the database to the newest schema this build knows, in one transaction under
 * `pg_advisory_xact_lock`: a second process opening the same database at the same moment waits,
 * then finds it migrated. Returns the schema version reached. Throws `Error` when the database's
 * schema is newer than this build knows, and `pg`'s errors (connection refused, no such database).
 */
export async function migratePg(pool: pg.Pool): Promise<number> {
  return inTransaction(pool, async (c) => {
    await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK_KEY.toString()]);
    await c.query('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)');
    const { rows } = await c.query<{ v: number | null }>('SELECT max(version) AS v FROM schema_migrations');
    const current = rows[0]?.v ?? 0;
    if (current > PG_SCHEMA_VERSION) {
      throw new Error(`database schema version ${current} is newer than this build knows (${PG_SCHEMA_VERSION}): run the newer online-extend`);
    }
    for (const m of PG_MIGRATIONS) {
      if (m.version <= current) continue;
      await c.query(m.sql);
      await c.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)', [m.version, new Date().toISOString()]);
    }
    return PG_SCHEMA_VERSION;
  });
}
