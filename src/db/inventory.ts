/**
 * The compute inventory in SQLite: servers (with the vCPUs and memory the driver measured) and
 * their attachments as the hypervisor reports them (`syncServers`, `upsertServer`,
 * `removeServer`), read by the compute API (`getServer`, `listServers`), and a server's task
 * state. One part of SqliteStore.
 */
import type Database from 'better-sqlite3';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { errors } from '../errors.js';
import type { AttachmentRecord, InventorySyncResult, NewServerRecord, PageQuery, ServerRecord, ServerStatePatch } from './store.js';
import { nowIso, toAttachment, toServer, type Row } from './rows.js';
import { serversSql, type ShapedStatements } from './sql.js';
import type { WriteQueue } from './writeQueue.js';

/**
 * Servers per step of an inventory sync (compared, read at start, or written in one
 * transaction). Between two steps the sync yields to the event loop, so requests never wait
 * behind more than one step.
 */
export const SYNC_CHUNK = 200;

/** A server as the driver reports it: what `syncServers` and `upsertServer` write. */
export type DesiredServer = Omit<ServerRecord, 'updatedAt' | 'taskState' | 'host'>;

/** What `syncServers` compares: everything the driver reports about a server, in a fixed order. */
function inventoryKey(s: Pick<ServerRecord, 'name' | 'projectId' | 'state' | 'vcpus' | 'memoryMb'>, attachments: readonly AttachmentRecord[]): string {
  const atts = attachments
    .map((a) => [a.volumeId, a.device, a.kind, a.format ?? null, a.source ?? null, a.readonly])
    .sort((x, y) => (x[0]! < y[0]! ? -1 : x[0]! > y[0]! ? 1 : 0));
  return JSON.stringify([s.name, s.projectId, s.state, s.vcpus ?? null, s.memoryMb ?? null, atts]);
}

/** `inventoryKey` of a `servers` row and its attachments. */
function rowKey(r: Row, attachments: readonly AttachmentRecord[]): string {
  return inventoryKey(
    {
      name: r.name as string,
      projectId: r.project_id as string,
      state: r.state as ServerRecord['state'],
      ...(r.vcpus == null ? {} : { vcpus: r.vcpus as number }),
      ...(r.memory_mb == null ? {} : { memoryMb: r.memory_mb as number }),
    },
    attachments,
  );
}

/**
 * The state a sync writes: the hypervisor's, except that a server the API put in ERROR with a
 * fault (a failed build or delete) stays in ERROR, as Nova's vm_state ERROR stays until the
 * server is deleted, whatever the guest's power state.
 */
const KEEP_FAULTED_ERROR = (reported: string) => `CASE WHEN servers.state = 'error' AND servers.fault IS NOT NULL THEN servers.state ELSE ${reported} END`;

function prepare(db: Database.Database) {
  return {
    getServer: db.prepare('SELECT * FROM servers WHERE id = ?'),
    attachmentsOf: db.prepare('SELECT * FROM attachments WHERE server_id = ? ORDER BY device'),
    attachmentsOfMany: db.prepare('SELECT * FROM attachments WHERE server_id IN (SELECT value FROM json_each(?)) ORDER BY server_id, device'),
    upsertServer: db.prepare(
      `INSERT INTO servers (id, name, project_id, host, state, task_state, updated_at, vcpus, memory_mb, discovered_at)
       VALUES (@id, @name, @projectId, @host, @state, NULL, @now, @vcpus, @memoryMb, @now)
       ON CONFLICT(id) DO UPDATE SET name = excluded.name, project_id = excluded.project_id,
         host = excluded.host, state = ${KEEP_FAULTED_ERROR('excluded.state')}, updated_at = excluded.updated_at,
         vcpus = excluded.vcpus, memory_mb = excluded.memory_mb`,
    ),
    inventoryFirst: db.prepare('SELECT * FROM servers WHERE host = @host ORDER BY id LIMIT @limit'),
    inventoryAfter: db.prepare('SELECT * FROM servers WHERE host = @host AND id > @after ORDER BY id LIMIT @limit'),
    updateServer: db.prepare(
      `UPDATE servers SET name = @name, project_id = @projectId, state = ${KEEP_FAULTED_ERROR('@state')}, vcpus = @vcpus, memory_mb = @memoryMb, updated_at = @now WHERE id = @id`,
    ),
    deleteServer: db.prepare('DELETE FROM servers WHERE id = ?'),
    deleteServerOnHost: db.prepare('DELETE FROM servers WHERE id = ? AND host = ?'),
    deleteAttachments: db.prepare('DELETE FROM attachments WHERE server_id = ?'),
    insertAttachment: db.prepare(
      `INSERT INTO attachments (server_id, volume_id, device, kind, format, source, readonly)
       VALUES (@serverId, @volumeId, @device, @kind, @format, @source, @readonly)`,
    ),
    createServer: db.prepare(
      `INSERT INTO servers (id, name, project_id, host, state, task_state, updated_at, user_id, created_at, image_ref, flavor_ref, metadata)
       VALUES (@id, @name, @projectId, @host, 'building', @taskState, @createdAt, @userId, @createdAt, @imageRef, @flavorRef, @metadata)
       ON CONFLICT(id) DO NOTHING`,
    ),
    setStateFromNull: db.prepare(
      `UPDATE servers SET state = @state, task_state = @taskState, fault = CASE WHEN @setFault THEN @fault ELSE fault END, updated_at = @now
       WHERE id = @id AND task_state IS NULL`,
    ),
    setStateFrom: db.prepare(
      `UPDATE servers SET state = @state, task_state = @taskState, fault = CASE WHEN @setFault THEN @fault ELSE fault END, updated_at = @now
       WHERE id = @id AND task_state = @expected`,
    ),
    // A server compute builds is its own record while building or failed (see ComputeStore).
    keptWithoutDomain: db.prepare(`SELECT 1 FROM servers WHERE id = ? AND created_at IS NOT NULL AND state IN ('building', 'error')`),
    setTaskStateFromNull: db.prepare('UPDATE servers SET task_state = ? WHERE id = ? AND task_state IS NULL'),
    setTaskStateFrom: db.prepare('UPDATE servers SET task_state = ? WHERE id = ? AND task_state = ?'),
  };
}

/**
 * The inventory tables of one SQLite database. Inventory writes (syncs, which work through the
 * servers in chunks, and single-server writes) are jobs of the store's WriteQueue: they run one
 * after another, in the order they were called, and their writes are group-committed.
 */
export class SqliteInventory {
  private readonly stmt: ReturnType<typeof prepare>;
  /**
   * Servers as last read. This process is the only writer of the inventory tables (the embedded
   * store serves one host), so every write below clears what it changes.
   */
  private readonly serverCache = new Map<string, ServerRecord>();
  /** Per host, what the store holds of each server as its `inventoryKey` (see `inventoryOf`). */
  private readonly inventoryKeys = new Map<string, Map<string, string>>();

  constructor(
    db: Database.Database,
    private readonly writes: WriteQueue,
    private readonly shaped: ShapedStatements,
  ) {
    this.stmt = prepare(db);
  }

  /** See Store.syncServers. */
  syncServers(host: string, servers: DesiredServer[]): Promise<InventorySyncResult> {
    return this.writes.sequence(() => this.syncByDifference(host, servers));
  }

  /** See Store.upsertServer. */
  upsertServer(host: string, server: DesiredServer): Promise<'added' | 'updated' | 'unchanged'> {
    return this.writes.sequence(() => this.upsertOne(host, server));
  }

  /** See Store.removeServer. */
  removeServer(host: string, serverId: string): Promise<boolean> {
    return this.writes.sequence(async () => {
      if (this.stmt.keptWithoutDomain.get(serverId)) return false;
      const removed = (await this.writes.write(() => this.stmt.deleteServerOnHost.run(serverId, host).changes)) === 1; // attachments cascade
      if (removed) {
        this.inventoryKeys.get(host)?.delete(serverId);
        this.serverCache.delete(serverId);
      }
      return removed;
    });
  }

  /**
   * One server, by difference: compared with the host's in-memory copy if a sync loaded it, else
   * with its row (one indexed read: a single-server write never loads a whole host), and the
   * copy kept in step with what is written.
   */
  private async upsertOne(host: string, s: DesiredServer): Promise<'added' | 'updated' | 'unchanged'> {
    const key = inventoryKey(s, s.attachments);
    const held = this.inventoryKeys.get(host);
    let was: string | undefined;
    if (held) was = held.get(s.id);
    else {
      const row = this.stmt.getServer.get(s.id) as Row | undefined;
      if (row && row.host === host) {
        const atts = (this.stmt.attachmentsOf.all(s.id) as Row[]).map(toAttachment);
        was = rowKey(row, atts);
      }
    }
    if (was === key) return 'unchanged';
    const added = was === undefined;
    const now = nowIso();
    await this.writes.write(() => this.writeServer(host, s, added, now));
    if (added) for (const [h, other] of this.inventoryKeys) if (h !== host) other.delete(s.id); // moved here from another host
    held?.set(s.id, key);
    this.serverCache.delete(s.id);
    return added ? 'added' : 'updated';
  }

  /**
   * Compare the driver's list with what the store holds (`inventoryKeys`, in memory: no read of
   * the database for a server that did not change), then write the differences, SYNC_CHUNK
   * servers a transaction, each committed at the end of its own event-loop turn, so neither the
   * comparison nor the writes of a large host hold requests up for long.
   */
  private async syncByDifference(host: string, servers: DesiredServer[]): Promise<InventorySyncResult> {
    const held = await this.inventoryOf(host);
    const result: InventorySyncResult = { added: 0, updated: 0, removed: 0, unchanged: 0 };
    // A server listed twice counts once (the last listing), as the old full rewrite had it.
    const listed = new Map(servers.map((s) => [s.id, s]));
    const writes: Array<{ s: DesiredServer; key: string; added: boolean }> = [];
    let n = 0;
    for (const s of listed.values()) {
      const key = inventoryKey(s, s.attachments);
      const was = held.get(s.id);
      if (was === key) result.unchanged++;
      else writes.push({ s, key, added: was === undefined });
      if (++n % SYNC_CHUNK === 0) await yieldToEventLoop();
    }
    const gone = [...held.keys()].filter((id) => !listed.has(id) && !this.stmt.keptWithoutDomain.get(id));
    const now = nowIso();
    for (let i = 0; i < writes.length || i < gone.length; i += SYNC_CHUNK) {
      const chunk = writes.slice(i, i + SYNC_CHUNK);
      const drop = gone.slice(i, i + SYNC_CHUNK);
      // Committed at the end of this turn (a yield between chunks): one transaction per chunk at least.
      await this.writes.write(() => {
        for (const { s, added } of chunk) this.writeServer(host, s, added, now);
        for (const id of drop) this.stmt.deleteServer.run(id);
      });
      // Committed: now the in-memory copies follow.
      for (const { s, key, added } of chunk) {
        if (added) for (const other of this.inventoryKeys.values()) other.delete(s.id); // moved here from another host
        held.set(s.id, key);
        this.serverCache.delete(s.id);
        if (added) result.added++;
        else result.updated++;
      }
      for (const id of drop) {
        held.delete(id);
        this.serverCache.delete(id);
        result.removed++;
      }
    }
    return result;
  }

  private writeServer(host: string, s: DesiredServer, added: boolean, now: string): void {
    const size = { vcpus: s.vcpus ?? null, memoryMb: s.memoryMb ?? null };
    if (added) {
      // New, or moved here from another host: the upsert keeps its task state.
      this.stmt.upsertServer.run({ id: s.id, name: s.name, projectId: s.projectId, host, state: s.state, now, ...size });
    } else {
      this.stmt.updateServer.run({ id: s.id, name: s.name, projectId: s.projectId, state: s.state, now, ...size });
    }
    this.stmt.deleteAttachments.run(s.id);
    for (const a of s.attachments) {
      this.stmt.insertAttachment.run({
        serverId: s.id,
        volumeId: a.volumeId,
        device: a.device,
        kind: a.kind,
        format: a.format ?? null,
        source: a.source ?? null,
        readonly: a.readonly ? 1 : 0,
      });
    }
  }

  /**
   * What the store holds for `host`, as inventory keys by server id: read from the database on
   * the first sync of the host (SYNC_CHUNK servers a query, by id on servers_host_id, yielding
   * in between), then kept in step by every sync. Sound because this process is the only writer
   * of the inventory (the embedded store serves one host) and only syncServers writes what the
   * keys cover (task states are not part of them).
   */
  private async inventoryOf(host: string): Promise<Map<string, string>> {
    let held = this.inventoryKeys.get(host);
    if (held) return held;
    held = new Map();
    let after: string | undefined;
    for (;;) {
      const rows = (after === undefined
        ? this.stmt.inventoryFirst.all({ host, limit: SYNC_CHUNK })
        : this.stmt.inventoryAfter.all({ host, after, limit: SYNC_CHUNK })) as Row[];
      if (rows.length === 0) break;
      const atts = this.attachmentsByServer(rows);
      for (const r of rows) {
        const id = r.id as string;
        held.set(id, rowKey(r, atts.get(id) ?? []));
      }
      after = rows.at(-1)!.id as string;
      if (rows.length < SYNC_CHUNK) break;
      await yieldToEventLoop();
    }
    this.inventoryKeys.set(host, held);
    return held;
  }

  /** The attachments of the servers `rows`, by server id, in one query. */
  private attachmentsByServer(rows: Row[]): Map<string, AttachmentRecord[]> {
    const bySrv = new Map<string, AttachmentRecord[]>();
    if (rows.length === 0) return bySrv;
    for (const a of (this.stmt.attachmentsOfMany.all(JSON.stringify(rows.map((r) => r.id))) as Row[]).map(toAttachment)) {
      const list = bySrv.get(a.serverId);
      if (list) list.push(a);
      else bySrv.set(a.serverId, [a]);
    }
    return bySrv;
  }

  /** See Store.getServer (served from the cache when this process read it since its last write). */
  /** See Store.cachedServer: the record getServer keeps in memory, if any. */
  cachedServer(id: string): ServerRecord | undefined {
    return this.serverCache.get(id);
  }

  async getServer(id: string): Promise<ServerRecord | undefined> {
    const cached = this.serverCache.get(id);
    if (cached) return cached;
    const row = this.stmt.getServer.get(id) as Row | undefined;
    if (!row) return undefined;
    const server = toServer(row, (this.stmt.attachmentsOf.all(id) as Row[]).map(toAttachment));
    this.serverCache.set(id, server);
    return server;
  }

  /** See Store.listServers. Throws errors.markerNotFound for a marker not in the listing. */
  async listServers(filter: { projectId?: string } = {}, page?: PageQuery): Promise<ServerRecord[]> {
    const project = filter.projectId !== undefined;
    const params: Record<string, unknown> = project ? { projectId: filter.projectId } : {};
    if (page?.marker !== undefined) {
      // The marker must be in this listing: another project's server id is "not found" too.
      const m = this.shaped.get(`SELECT name FROM servers WHERE id = @marker${project ? ' AND project_id = @projectId' : ''}`).get({
        ...params,
        marker: page.marker,
      }) as Row | undefined;
      if (!m) throw errors.markerNotFound(page.marker);
      Object.assign(params, { marker: page.marker, markerName: m.name });
    }
    if (page) params.limit = page.limit;
    const sql = serversSql({ project, marker: page?.marker !== undefined, limit: page !== undefined });
    const rows = this.shaped.get(sql).all(params) as Row[];
    const bySrv = this.attachmentsByServer(rows);
    return rows.map((r) => toServer(r, bySrv.get(r.id as string) ?? []));
  }

  /** See Store.createServer. */
  createServer(host: string, s: NewServerRecord): Promise<boolean> {
    return this.writes.sequence(async () => {
      const params = {
        id: s.id,
        name: s.name,
        projectId: s.projectId,
        host,
        taskState: s.taskState,
        userId: s.userId,
        createdAt: s.createdAt,
        imageRef: s.imageRef,
        flavorRef: s.flavorRef,
        metadata: JSON.stringify(s.metadata),
      };
      const created = (await this.writes.write(() => this.stmt.createServer.run(params).changes)) === 1;
      if (created) this.refreshKey(s.id);
      return created;
    });
  }

  /** See Store.setServerState. */
  setServerState(serverId: string, patch: ServerStatePatch, expectedTask: string | null): Promise<boolean> {
    return this.writes.sequence(async () => {
      const params = {
        id: serverId,
        state: patch.state,
        taskState: patch.taskState,
        setFault: patch.fault === undefined ? 0 : 1,
        fault: patch.fault ? JSON.stringify(patch.fault) : null,
        now: nowIso(),
        ...(expectedTask === null ? {} : { expected: expectedTask }),
      };
      const st = expectedTask === null ? this.stmt.setStateFromNull : this.stmt.setStateFrom;
      const applied = (await this.writes.write(() => st.run(params).changes)) === 1;
      // The state moved outside a sync: the host's copy follows what the store now holds.
      if (applied) this.refreshKey(serverId);
      return applied;
    });
  }

  /** See Store.deleteServer. */
  deleteServer(serverId: string): Promise<boolean> {
    return this.writes.sequence(async () => {
      const removed = (await this.writes.write(() => this.stmt.deleteServer.run(serverId).changes)) === 1; // attachments cascade
      this.forget(serverId);
      return removed;
    });
  }

  /** Bring the server's entry in its host's copy (if loaded) in step with its row, after a write outside a sync. */
  private refreshKey(serverId: string): void {
    this.forget(serverId);
    const row = this.stmt.getServer.get(serverId) as Row | undefined;
    const held = row && this.inventoryKeys.get(row.host as string);
    if (!row || !held) return;
    const atts = (this.stmt.attachmentsOf.all(serverId) as Row[]).map(toAttachment);
    held.set(serverId, rowKey(row, atts));
  }

  /** Drop a server from the cache and every host's copy (its next sync compares it afresh). */
  private forget(serverId: string): void {
    this.serverCache.delete(serverId);
    for (const held of this.inventoryKeys.values()) held.delete(serverId);
  }

  /** See Store.setTaskState: true when the server's task state was `expected` and is now `task`. */
  async setTaskState(serverId: string, task: string | null, expected: string | null): Promise<boolean> {
    this.serverCache.delete(serverId);
    const res = expected === null
      ? this.stmt.setTaskStateFromNull.run(task, serverId)
      : this.stmt.setTaskStateFrom.run(task, serverId, expected);
    return res.changes === 1;
  }
}
