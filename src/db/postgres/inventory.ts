/**
 * The compute inventory on PostgreSQL: servers and their attachments as the hypervisor reports
 * them (`syncServers`, `upsertServer`, `removeServer`), the servers compute builds, and task
 * states. One part of PgStore.
 *
 * Several processes share the database (the API's, one compute agent per host), so nothing of
 * the inventory is cached in memory: a sync reads what the store holds of its host, compares, and
 * writes only the servers that differ, SYNC_CHUNK servers a transaction (a few statements each,
 * the rows passed as arrays). Inventory writes of one host apply one after another in the order
 * this process called them (a promise chain per host).
 */
import type pg from 'pg';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { errors } from '../../errors.js';
import type { AttachmentRecord, InventorySyncResult, NewServerRecord, PageQuery, ServerRecord, ServerStatePatch } from '../store.js';
import { nowIso, toAttachment, toServer, type Row } from '../rows.js';
import { SYNC_CHUNK, type DesiredServer } from '../inventory.js';
import { inTransaction } from './pool.js';

/** What a sync compares: everything the driver reports about a server, in a fixed order (as the SQLite store's). */
function inventoryKey(s: Pick<ServerRecord, 'name' | 'projectId' | 'state' | 'vcpus' | 'memoryMb'>, attachments: readonly AttachmentRecord[]): string {
  const atts = attachments
    .map((a) => [a.volumeId, a.device, a.kind, a.format ?? null, a.source ?? null, a.readonly])
    .sort((x, y) => (x[0]! < y[0]! ? -1 : x[0]! > y[0]! ? 1 : 0));
  return JSON.stringify([s.name, s.projectId, s.state, s.vcpus ?? null, s.memoryMb ?? null, atts]);
}

/**
 * `inventoryKey` of a row and its attachments, as compared with `desired`: a server the API put
 * in ERROR with a fault keeps that state whatever the host reports (KEEP_FAULTED_ERROR), so its
 * state is not a difference a sync could write.
 */
function rowKey(r: Row, attachments: readonly AttachmentRecord[], desired: DesiredServer): string {
  const keptError = r.state === 'error' && r.fault != null;
  return inventoryKey(
    {
      name: r.name as string,
      projectId: r.project_id as string,
      state: keptError ? desired.state : (r.state as ServerRecord['state']),
      ...(r.vcpus == null ? {} : { vcpus: r.vcpus as number }),
      ...(r.memory_mb == null ? {} : { memoryMb: r.memory_mb as number }),
    },
    attachments,
  );
}

/** The state a write leaves: the host's, except that a server in ERROR with a fault stays in ERROR (see SqliteInventory). */
const KEEP_FAULTED_ERROR = (reported: string) => `CASE WHEN servers.state = 'error' AND servers.fault IS NOT NULL THEN servers.state ELSE ${reported} END`;

/** A server compute builds is its own record while building or failed: a host that does not list it does not remove it. */
const NOT_KEPT_WITHOUT_DOMAIN = `NOT (created_at IS NOT NULL AND state IN ('building', 'error'))`;

const SQL = {
  getServer: `
    SELECT s.*, COALESCE((SELECT json_agg(a ORDER BY a.device) FROM attachments a WHERE a.server_id = s.id), '[]'::json) AS attachments_json
      FROM servers s WHERE s.id = $1`,
  upsertServers: `
    INSERT INTO servers (id, name, project_id, host, state, task_state, updated_at, vcpus, memory_mb, discovered_at)
    SELECT u.id, u.name, u.project_id, $1, u.state, NULL, $2, u.vcpus, u.memory_mb, $2
      FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::int[]) AS u (id, name, project_id, state, vcpus, memory_mb)
    ON CONFLICT (id) DO UPDATE SET name = excluded.name, project_id = excluded.project_id, host = excluded.host,
      state = ${KEEP_FAULTED_ERROR('excluded.state')}, updated_at = excluded.updated_at, vcpus = excluded.vcpus, memory_mb = excluded.memory_mb`,
  deleteAttachments: 'DELETE FROM attachments WHERE server_id = ANY($1::text[])',
  insertAttachments: `
    INSERT INTO attachments (server_id, volume_id, device, kind, format, source, readonly)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[])`,
  removeGone: `DELETE FROM servers WHERE id = ANY($1::text[]) AND host = $2 AND ${NOT_KEPT_WITHOUT_DOMAIN} RETURNING id`,
} as const;

/** The inventory tables of one PostgreSQL database; see the module comment. */
export class PgInventory {
  /** Per host, the last inventory write this process called (each waits for the one before). */
  private readonly lanes = new Map<string, Promise<unknown>>();

  constructor(private readonly pool: pg.Pool) {}

  /** Run `job` after the inventory writes of `host` called before it. */
  private inLane<T>(host: string, job: () => Promise<T>): Promise<T> {
    const prev = this.lanes.get(host) ?? Promise.resolve();
    const run = prev.then(job, job);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.lanes.set(host, tail);
    void tail.then(() => {
      if (this.lanes.get(host) === tail) this.lanes.delete(host);
    });
    return run;
  }

  /** See Store.syncServers. */
  syncServers(host: string, servers: DesiredServer[]): Promise<InventorySyncResult> {
    return this.inLane(host, () => this.syncByDifference(host, servers));
  }

  /** See Store.upsertServer. */
  upsertServer(host: string, server: DesiredServer): Promise<'added' | 'updated' | 'unchanged'> {
    return this.inLane(host, async () => {
      const { rows } = await this.pool.query('SELECT * FROM servers WHERE id = $1', [server.id]);
      const row = rows[0] as Row | undefined;
      let was: string | undefined;
      if (row && row.host === host) was = rowKey(row, await this.attachmentsOf(server.id), server);
      if (was === inventoryKey(server, server.attachments)) return 'unchanged';
      await inTransaction(this.pool, (c) => writeServers(c, host, [server], nowIso()));
      return was === undefined ? 'added' : 'updated';
    });
  }

  /** See Store.removeServer. */
  removeServer(host: string, serverId: string): Promise<boolean> {
    return this.inLane(host, async () => {
      const res = await this.pool.query(SQL.removeGone, [[serverId], host]); // attachments cascade
      return res.rowCount === 1;
    });
  }

  /**
   * Read what the store holds of `host` (two queries on one snapshot: servers and attachments
   * agree even while another process writes), compare with the driver's list (yielding every
   * SYNC_CHUNK servers), then write the differences SYNC_CHUNK servers a transaction.
   */
  private async syncByDifference(host: string, servers: DesiredServer[]): Promise<InventorySyncResult> {
    const [held, atts] = await inTransaction(
      this.pool,
      async (c) => [
        await c.query('SELECT * FROM servers WHERE host = $1', [host]),
        await c.query('SELECT a.* FROM attachments a JOIN servers s ON s.id = a.server_id WHERE s.host = $1 ORDER BY a.server_id, a.device', [host]),
      ],
      'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY',
    );
    const heldRows = new Map((held.rows as Row[]).map((r) => [r.id as string, r]));
    const heldAtts = groupAttachments(atts.rows as Row[]);
    const result: InventorySyncResult = { added: 0, updated: 0, removed: 0, unchanged: 0 };
    // A server listed twice counts once (the last listing), as the SQLite store has it.
    const listed = new Map(servers.map((s) => [s.id, s]));
    const writes: Array<{ s: DesiredServer; added: boolean }> = [];
    let n = 0;
    for (const s of listed.values()) {
      const row = heldRows.get(s.id);
      const was = row ? rowKey(row, heldAtts.get(s.id) ?? [], s) : undefined;
      if (was === inventoryKey(s, s.attachments)) result.unchanged++;
      else writes.push({ s, added: was === undefined });
      if (++n % SYNC_CHUNK === 0) await yieldToEventLoop();
    }
    const gone = [...heldRows.keys()].filter((id) => !listed.has(id));
    const now = nowIso();
    for (let i = 0; i < writes.length || i < gone.length; i += SYNC_CHUNK) {
      const chunk = writes.slice(i, i + SYNC_CHUNK);
      const drop = gone.slice(i, i + SYNC_CHUNK);
      const removed = await inTransaction(this.pool, async (c) => {
        await writeServers(
          c,
          host,
          chunk.map((w) => w.s),
          now,
        );
        if (drop.length === 0) return 0;
        return (await c.query(SQL.removeGone, [drop, host])).rowCount ?? 0;
      });
      for (const w of chunk) {
        if (w.added) result.added++;
        else result.updated++;
      }
      result.removed += removed;
    }
    return result;
  }

  private async attachmentsOf(serverId: string): Promise<AttachmentRecord[]> {
    const { rows } = await this.pool.query('SELECT * FROM attachments WHERE server_id = $1 ORDER BY device', [serverId]);
    return (rows as Row[]).map(toAttachment);
  }

  /** See Store.getServer. */
  async getServer(id: string): Promise<ServerRecord | undefined> {
    // The hot path of every server-scoped request: one round trip (the attachments as a JSON
    // array beside the row), a prepared statement (parsed and planned once per connection).
    const { rows } = await this.pool.query({ name: 'oe-get-server', text: SQL.getServer, values: [id] });
    const row = rows[0] as (Row & { attachments_json: Row[] }) | undefined;
    return row ? toServer(row, row.attachments_json.map(toAttachment)) : undefined;
  }

  /** See Store.listServers. Throws errors.markerNotFound for a marker not in the listing. */
  async listServers(filter: { projectId?: string } = {}, page?: PageQuery): Promise<ServerRecord[]> {
    const params: unknown[] = [];
    const where: string[] = [];
    if (filter.projectId !== undefined) {
      params.push(filter.projectId);
      where.push(`project_id = $${params.length}`);
    }
    if (page?.marker !== undefined) {
      // The marker must be in this listing: another project's server id is "not found" too.
      const m = await this.pool.query(`SELECT name FROM servers WHERE id = $${params.length + 1}${where.length ? ` AND ${where.join(' AND ')}` : ''}`, [
        ...params,
        page.marker,
      ]);
      if (m.rows.length === 0) throw errors.markerNotFound(page.marker);
      params.push((m.rows[0] as Row).name, page.marker);
      where.push(`(name, id) > ($${params.length - 1}, $${params.length})`);
    }
    let sql = `SELECT * FROM servers${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY name, id`;
    if (page) {
      params.push(page.limit);
      sql += ` LIMIT $${params.length}`;
    }
    const rows = (await this.pool.query(sql, params)).rows as Row[];
    if (rows.length === 0) return [];
    const atts = await this.pool.query('SELECT * FROM attachments WHERE server_id = ANY($1::text[]) ORDER BY server_id, device', [rows.map((r) => r.id)]);
    const bySrv = groupAttachments(atts.rows as Row[]);
    return rows.map((r) => toServer(r, bySrv.get(r.id as string) ?? []));
  }

  /** See Store.createServer. */
  createServer(host: string, s: NewServerRecord): Promise<boolean> {
    return this.inLane(host, async () => {
      const res = await this.pool.query(
        `INSERT INTO servers (id, name, project_id, host, state, task_state, updated_at, user_id, created_at, image_ref, flavor_ref, metadata)
         VALUES ($1, $2, $3, $4, 'building', $5, $6, $7, $6, $8, $9, $10) ON CONFLICT (id) DO NOTHING`,
        [s.id, s.name, s.projectId, host, s.taskState, s.createdAt, s.userId, s.imageRef, s.flavorRef, JSON.stringify(s.metadata)],
      );
      return res.rowCount === 1;
    });
  }

  /**
   * See Store.setServerState. One conditional statement, so it needs no place in a host's lane:
   * a sync under way that compared before it writes the host's state over it (as it would a
   * moment later), never a half of it.
   */
  async setServerState(serverId: string, patch: ServerStatePatch, expectedTask: string | null): Promise<boolean> {
    const res = await this.pool.query(
      `UPDATE servers SET state = $2, task_state = $3, fault = CASE WHEN $4 THEN $5 ELSE fault END, updated_at = $6
       WHERE id = $1 AND task_state IS NOT DISTINCT FROM $7`,
      [serverId, patch.state, patch.taskState, patch.fault !== undefined, patch.fault ? JSON.stringify(patch.fault) : null, nowIso(), expectedTask],
    );
    return res.rowCount === 1;
  }

  /** See Store.deleteServer (one statement; attachments cascade). */
  async deleteServer(serverId: string): Promise<boolean> {
    return (await this.pool.query('DELETE FROM servers WHERE id = $1', [serverId])).rowCount === 1;
  }

  /** See Store.setTaskState: true when the server's task state was `expected` and is now `task`. */
  async setTaskState(serverId: string, task: string | null, expected: string | null): Promise<boolean> {
    const res = await this.pool.query('UPDATE servers SET task_state = $2 WHERE id = $1 AND task_state IS NOT DISTINCT FROM $3', [serverId, task, expected]);
    return res.rowCount === 1;
  }
}

/** Attachment rows by server id, in the rows' order. */
function groupAttachments(rows: Row[]): Map<string, AttachmentRecord[]> {
  const bySrv = new Map<string, AttachmentRecord[]>();
  for (const a of rows.map(toAttachment)) {
    const list = bySrv.get(a.serverId);
    if (list) list.push(a);
    else bySrv.set(a.serverId, [a]);
  }
  return bySrv;
}

/**
 * Write `servers` of `host` as the driver reports them (new ones, or moved here from another
 * host, keep their task state), replacing their attachments: three statements whatever their
 * number, inside the caller's transaction.
 */
async function writeServers(c: pg.PoolClient, host: string, servers: readonly DesiredServer[], now: string): Promise<void> {
  if (servers.length === 0) return;
  const ids = servers.map((s) => s.id);
  await c.query(SQL.upsertServers, [
    host,
    now,
    ids,
    servers.map((s) => s.name),
    servers.map((s) => s.projectId),
    servers.map((s) => s.state),
    servers.map((s) => s.vcpus ?? null),
    servers.map((s) => s.memoryMb ?? null),
  ]);
  await c.query(SQL.deleteAttachments, [ids]);
  const atts = servers.flatMap((s) => s.attachments.map((a) => ({ ...a, serverId: s.id })));
  if (atts.length === 0) return;
  await c.query(SQL.insertAttachments, [
    atts.map((a) => a.serverId),
    atts.map((a) => a.volumeId),
    atts.map((a) => a.device),
    atts.map((a) => a.kind),
    atts.map((a) => a.format ?? null),
    atts.map((a) => a.source ?? null),
    atts.map((a) => (a.readonly ? 1 : 0)),
  ]);
}
