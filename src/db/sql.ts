/**
 * SQL of the store's listings, and statements prepared once per shape of query.
 */
import type Database from 'better-sqlite3';

/**
 * The SQL of the paged listings, keyset-paged on an index so a page reads only its own rows and
 * needs no sort step, whatever the listing's length (test/contract/sqlite-store.test.ts checks
 * the query plans). Actions are listed newest first by request id, on their primary keys:
 * request ids are time-ordered (version-7 UUIDs, api/requestId.ts), so this is the order they
 * came in, as Nova lists by created_at; no index more to maintain on every audited call.
 */
export const PAGE_SQL = {
  actionMarker: 'SELECT 1 FROM instance_actions WHERE server_id = ? AND request_id = ?',
  actionsFirst: 'SELECT * FROM instance_actions WHERE server_id = ? ORDER BY request_id DESC LIMIT ?',
  actionsAfter: 'SELECT * FROM instance_actions WHERE server_id = ? AND request_id < ? ORDER BY request_id DESC LIMIT ?',
  volumeActionMarker: 'SELECT 1 FROM volume_actions WHERE volume_id = ? AND request_id = ?',
  volumeActionsFirst: 'SELECT * FROM volume_actions WHERE volume_id = ? ORDER BY request_id DESC LIMIT ?',
  volumeActionsAfter: 'SELECT * FROM volume_actions WHERE volume_id = ? AND request_id < ? ORDER BY request_id DESC LIMIT ?',
} as const;

/** Servers by name, then id; named parameters @projectId, @marker and @markerName, @limit. */
export function serversSql(o: { project: boolean; marker: boolean; limit: boolean }): string {
  const where = [...(o.project ? ['project_id = @projectId'] : []), ...(o.marker ? ['(name, id) > (@markerName, @marker)'] : [])];
  return `SELECT * FROM servers${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY name, id${o.limit ? ' LIMIT @limit' : ''}`;
}

/** Volumes oldest first; named parameters @projectId, @status, @name, @marker and @markerCreated, @limit. */
export function volumesSql(o: { project: boolean; status: boolean; name?: boolean; marker: boolean; limit: boolean }): string {
  const where = [
    ...(o.project ? ['project_id = @projectId'] : []),
    ...(o.status ? ['status = @status'] : []),
    ...(o.name ? ['name = @name'] : []),
    ...(o.marker ? ['(created_at, id) > (@markerCreated, @marker)'] : []),
  ];
  return `SELECT * FROM volumes${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at, id${o.limit ? ' LIMIT @limit' : ''}`;
}

/**
 * Statements built per shape (which filters and bounds a query has), each prepared on first use
 * and kept: a listing's few shapes are compiled once, not per request.
 */
export class ShapedStatements {
  private readonly shaped = new Map<string, Database.Statement>();

  constructor(private readonly db: Database.Database) {}

  /** The prepared statement for `sql` (throws better-sqlite3's SqliteError for bad SQL). */
  get(sql: string): Database.Statement {
    let st = this.shaped.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.shaped.set(sql, st);
    }
    return st;
  }
}
