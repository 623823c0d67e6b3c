/**
 * SqliteStore: the embedded default store (one process, one host). WAL mode, prepared statements,
 * migrations by `PRAGMA user_version`.
 */
import Database from 'better-sqlite3';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { errors } from '../errors.js';
import type {
  ActionResult,
  InventorySyncResult,
  PageQuery,
  VolumeActionRecord,
  VolumeRecord,
  VolumeStatus,
  VolumeGuard,
  AttachmentRecord,
  InstanceActionRecord,
  ServerRecord,
  Store,
  TokenRecord,
} from './store.js';
import { MIGRATIONS } from './migrations.js';

type Row = Record<string, unknown>;

function nowIso(): string {
  return new Date().toISOString();
}

export function migrate(db: Database.Database): number {
  const current = db.pragma('user_version', { simple: true }) as number;
  // A newer build's schema: running old statements against it could damage it.
  if (current > MIGRATIONS.length) {
    throw new Error(`database schema version ${current} is newer than this build knows (${MIGRATIONS.length}): run the newer online-extend`);
  }
  for (let v = current; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
  return MIGRATIONS.length;
}

/**
 * The database's identity (schema 5 on; a random 32-hex-digit string made with its schema), or
 * undefined where it has none: an older schema, or the row was removed.
 */
export function databaseIdOf(db: Database.Database): string | undefined {
  const hasMeta = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").get() !== undefined;
  if (!hasMeta) return undefined;
  const row = db.prepare("SELECT value FROM meta WHERE key = 'database_id'").get() as { value: string } | undefined;
  return row?.value;
}

/** The database's identity, made now if the row is missing (needs schema 5 or later). */
export function ensureDatabaseId(db: Database.Database): string {
  db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('database_id', lower(hex(randomblob(16))))").run();
  return databaseIdOf(db)!;
}

/** Mode of the database and its -wal/-shm files: they hold token hashes and the volume inventory. */
export const DB_FILE_MODE = 0o600;

export function openSqlite(path: string): Database.Database {
  if (path !== ':memory:') {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    // SQLite creates a database 0644, and its -wal/-shm files with the database file's mode:
    // create the file 0600 first, and fix files an older version made.
    if (!existsSync(path)) closeSync(openSync(path, 'a', DB_FILE_MODE));
    for (const f of [path, `${path}-wal`, `${path}-shm`]) {
      if (existsSync(f)) chmodSync(f, DB_FILE_MODE);
    }
  }
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  // NORMAL in WAL mode: durable across a process crash (kill -9), may lose the last
  // transactions only on power loss.
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  migrate(db);
  return db;
}

function toAttachment(r: Row): AttachmentRecord {
  return {
    serverId: r.server_id as string,
    volumeId: r.volume_id as string,
    device: r.device as string,
    kind: r.kind as AttachmentRecord['kind'],
    ...(r.format == null ? {} : { format: r.format as 'raw' | 'qcow2' }),
    ...(r.source == null ? {} : { source: r.source as string }),
    readonly: r.readonly === 1,
  };
}

function toToken(r: Row): TokenRecord {
  return {
    hash: r.hash as string,
    userId: r.user_id as string,
    projectId: r.project_id as string,
    roles: (r.roles as string).split(',').filter(Boolean),
    createdAt: r.created_at as string,
    expiresAt: r.expires_at as string,
  };
}

function toVolume(r: Row): VolumeRecord {
  return {
    id: r.id as string,
    projectId: r.project_id as string,
    name: r.name as string,
    sizeBytes: r.size_bytes as number,
    status: r.status as VolumeStatus,
    backend: r.backend as string,
    format: (r.format as 'raw' | 'qcow2' | null) ?? null,
    serverId: (r.server_id as string | null) ?? null,
    serverProjectId: (r.server_project_id as string | null) ?? null,
    device: (r.device as string | null) ?? null,
    extend: r.extend ? (JSON.parse(r.extend as string) as VolumeRecord['extend']) : null,
    version: (r.version as number | undefined) ?? 0,
    createdAt: r.created_at as string,
    updatedAt: r.updated_at as string,
  };
}

function isStatusList(g: readonly VolumeStatus[] | VolumeGuard): g is readonly VolumeStatus[] {
  return Array.isArray(g);
}

function toVolumeAction(r: Row): VolumeActionRecord {
  return {
    requestId: r.request_id as string,
    volumeId: r.volume_id as string,
    action: r.action as string,
    userId: r.user_id as string,
    projectId: r.project_id as string,
    startTime: r.start_time as string,
    finishTime: (r.finish_time as string | null) ?? null,
    result: (r.result as ActionResult | null) ?? null,
    message: (r.message as string | null) ?? null,
    computeRequestIds: JSON.parse(r.compute_request_ids as string) as string[],
    details: JSON.parse(r.details as string) as Record<string, unknown>,
  };
}

/** Column order of the positional instance_actions inserts. */
const ACTION_COLUMNS = ['request_id', 'server_id', 'action', 'event', 'user_id', 'project_id', 'start_time', 'finish_time', 'result', 'message', 'details'] as const;

const VOLUME_COLUMNS: Record<string, string> = {
  projectId: 'project_id',
  name: 'name',
  sizeBytes: 'size_bytes',
  status: 'status',
  backend: 'backend',
  format: 'format',
  serverId: 'server_id',
  serverProjectId: 'server_project_id',
  device: 'device',
  extend: 'extend',
};

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

/** Volumes oldest first; named parameters @projectId, @status, @marker and @markerCreated, @limit. */
export function volumesSql(o: { project: boolean; status: boolean; marker: boolean; limit: boolean }): string {
  const where = [
    ...(o.project ? ['project_id = @projectId'] : []),
    ...(o.status ? ['status = @status'] : []),
    ...(o.marker ? ['(created_at, id) > (@markerCreated, @marker)'] : []),
  ];
  return `SELECT * FROM volumes${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at, id${o.limit ? ' LIMIT @limit' : ''}`;
}

function toAction(r: Row): InstanceActionRecord {
  return {
    requestId: r.request_id as string,
    serverId: r.server_id as string,
    action: r.action as string,
    event: r.event as string,
    userId: r.user_id as string,
    projectId: r.project_id as string,
    startTime: r.start_time as string,
    finishTime: (r.finish_time as string | null) ?? null,
    result: (r.result as ActionResult | null) ?? null,
    message: (r.message as string | null) ?? null,
    details: JSON.parse((r.details as string | null) ?? '{}') as Record<string, unknown>,
  };
}

/**
 * Group commit: writes share one transaction (one WAL append) instead of one each. A write is
 * committed at the end of the current event-loop turn, together with every other write queued
 * in that turn.
 */
class GroupCommit {
  private queue: Array<{ run: () => void; resolve: () => void; reject: (e: unknown) => void }> = [];
  private immediate: NodeJS.Immediate | undefined;

  constructor(private readonly db: Database.Database) {}

  write(run: () => void): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ run, resolve, reject });
      this.immediate ??= setImmediate(() => this.flush());
    });
  }

  flush(): void {
    if (this.immediate) clearImmediate(this.immediate);
    this.immediate = undefined;
    const batch = this.queue;
    this.queue = [];
    if (batch.length === 0) return;
    try {
      this.db.transaction(() => batch.forEach((w) => w.run()))();
      batch.forEach((w) => w.resolve());
    } catch {
      // One bad write must not fail its neighbours: retry each alone to attribute the error.
      for (const w of batch) {
        try {
          w.run();
          w.resolve();
        } catch (err) {
          w.reject(err);
        }
      }
    }
  }
}

/**
 * Servers per step of an inventory sync (compared, read at start, or written in one
 * transaction). Between two steps the sync yields to the event loop, so requests never wait
 * behind more than one step.
 */
export const SYNC_CHUNK = 200;

type DesiredServer = Omit<ServerRecord, 'updatedAt' | 'taskState' | 'host'>;

/** What `syncServers` compares: everything the driver reports about a server, in a fixed order. */
function inventoryKey(s: Pick<ServerRecord, 'name' | 'projectId' | 'state'>, attachments: readonly AttachmentRecord[]): string {
  const atts = attachments
    .map((a) => [a.volumeId, a.device, a.kind, a.format ?? null, a.source ?? null, a.readonly])
    .sort((x, y) => (x[0]! < y[0]! ? -1 : x[0]! > y[0]! ? 1 : 0));
  return JSON.stringify([s.name, s.projectId, s.state, atts]);
}

export class SqliteStore implements Store {
  readonly db: Database.Database;
  private readonly stmt;
  private readonly group: GroupCommit;
  /**
   * Servers as last read. This process is the only writer of the inventory tables (the embedded
   * store serves one host), so every write below clears what it changes.
   */
  private readonly serverCache = new Map<string, ServerRecord>();
  /**
   * Inventory writes (syncs, which work through the servers in chunks, and single-server
   * writes) run one after another, in the order they were called.
   */
  private syncQueue: Promise<unknown> = Promise.resolve();
  /** Per host, what the store holds of each server as its `inventoryKey` (see `inventoryOf`). */
  private readonly inventoryKeys = new Map<string, Map<string, string>>();
  /** Statements built per shape (which filters and bounds a query has), prepared once each. */
  private readonly shaped = new Map<string, Database.Statement>();

  constructor(path: string) {
    this.db = openSqlite(path);
    const db = this.db;
    this.group = new GroupCommit(db);
    this.stmt = {
      getServer: db.prepare('SELECT * FROM servers WHERE id = ?'),
      attachmentsOf: db.prepare('SELECT * FROM attachments WHERE server_id = ? ORDER BY device'),
      attachmentsOfMany: db.prepare('SELECT * FROM attachments WHERE server_id IN (SELECT value FROM json_each(?)) ORDER BY server_id, device'),
      upsertServer: db.prepare(
        `INSERT INTO servers (id, name, project_id, host, state, task_state, updated_at)
         VALUES (@id, @name, @projectId, @host, @state, NULL, @now)
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, project_id = excluded.project_id,
           host = excluded.host, state = excluded.state, updated_at = excluded.updated_at`,
      ),
      inventoryFirst: db.prepare('SELECT * FROM servers WHERE host = @host ORDER BY id LIMIT @limit'),
      inventoryAfter: db.prepare('SELECT * FROM servers WHERE host = @host AND id > @after ORDER BY id LIMIT @limit'),
      updateServer: db.prepare('UPDATE servers SET name = @name, project_id = @projectId, state = @state, updated_at = @now WHERE id = @id'),
      deleteServer: db.prepare('DELETE FROM servers WHERE id = ?'),
      deleteServerOnHost: db.prepare('DELETE FROM servers WHERE id = ? AND host = ?'),
      deleteAttachments: db.prepare('DELETE FROM attachments WHERE server_id = ?'),
      insertAttachment: db.prepare(
        `INSERT INTO attachments (server_id, volume_id, device, kind, format, source, readonly)
         VALUES (@serverId, @volumeId, @device, @kind, @format, @source, @readonly)`,
      ),
      setTaskStateFromNull: db.prepare('UPDATE servers SET task_state = ? WHERE id = ? AND task_state IS NULL'),
      setTaskStateFrom: db.prepare('UPDATE servers SET task_state = ? WHERE id = ? AND task_state = ?'),
      startAction: db.prepare(
        `INSERT INTO instance_actions (request_id, server_id, action, event, user_id, project_id, start_time, message, details)
         VALUES (@requestId, @serverId, @action, @event, @userId, @projectId, @startTime, @message, @details)`,
      ),
      finishAction: db.prepare(
        `UPDATE instance_actions SET finish_time = @finishTime, result = @result, message = @message,
           details = COALESCE(@details, details) WHERE request_id = @requestId AND server_id = @serverId`,
      ),
      recordAction: db.prepare(`INSERT INTO instance_actions (${ACTION_COLUMNS.join(', ')}) VALUES (${ACTION_COLUMNS.map(() => '?').join(', ')})`),
      listActions: db.prepare('SELECT * FROM instance_actions WHERE server_id = ? ORDER BY request_id DESC'),
      actionMarker: db.prepare(PAGE_SQL.actionMarker),
      actionsFirst: db.prepare(PAGE_SQL.actionsFirst),
      actionsAfter: db.prepare(PAGE_SQL.actionsAfter),
      getAction: db.prepare('SELECT * FROM instance_actions WHERE server_id = ? AND request_id = ?'),
      putToken: db.prepare(
        `INSERT INTO tokens (hash, user_id, project_id, roles, created_at, expires_at)
         VALUES (@hash, @userId, @projectId, @roles, @createdAt, @expiresAt)`,
      ),
      getToken: db.prepare('SELECT * FROM tokens WHERE hash = ?'),
      deleteToken: db.prepare('DELETE FROM tokens WHERE hash = ?'),
      deleteExpiredTokens: db.prepare('DELETE FROM tokens WHERE expires_at <= ?'),
      insertVolume: db.prepare(
        `INSERT INTO volumes (id, project_id, name, size_bytes, status, backend, format, server_id, server_project_id, device, extend, created_at, updated_at)
         VALUES (@id, @projectId, @name, @sizeBytes, @status, @backend, @format, @serverId, @serverProjectId, @device, @extend, @now, @now)`,
      ),
      getVolume: db.prepare('SELECT * FROM volumes WHERE id = ?'),
      deleteVolume: db.prepare('DELETE FROM volumes WHERE id = ?'),
      startVolumeAction: db.prepare(
        `INSERT INTO volume_actions (request_id, volume_id, action, user_id, project_id, start_time, message, compute_request_ids, details)
         VALUES (@requestId, @volumeId, @action, @userId, @projectId, @startTime, @message, @computeRequestIds, @details)`,
      ),
      getVolumeAction: db.prepare('SELECT * FROM volume_actions WHERE request_id = ? AND volume_id = ?'),
      noteVolumeAction: db.prepare('UPDATE volume_actions SET compute_request_ids = @ids, details = @details WHERE request_id = @requestId AND volume_id = @volumeId'),
      finishVolumeAction: db.prepare(
        'UPDATE volume_actions SET finish_time = @finishTime, result = @result, message = @message WHERE request_id = @requestId AND volume_id = @volumeId',
      ),
      listVolumeActions: db.prepare('SELECT * FROM volume_actions WHERE volume_id = ? ORDER BY request_id DESC'),
      volumeActionMarker: db.prepare(PAGE_SQL.volumeActionMarker),
      volumeActionsFirst: db.prepare(PAGE_SQL.volumeActionsFirst),
      volumeActionsAfter: db.prepare(PAGE_SQL.volumeActionsAfter),
    };
  }

  private toServer(r: Row, attachments: AttachmentRecord[]): ServerRecord {
    return {
      id: r.id as string,
      name: r.name as string,
      projectId: r.project_id as string,
      host: r.host as string,
      state: r.state as ServerRecord['state'],
      taskState: (r.task_state as string | null) ?? null,
      updatedAt: r.updated_at as string,
      attachments,
    };
  }

  /** A statement for one shape of query, prepared on first use. */
  private shapedStatement(sql: string): Database.Statement {
    let st = this.shaped.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.shaped.set(sql, st);
    }
    return st;
  }

  syncServers(host: string, servers: DesiredServer[]): Promise<InventorySyncResult> {
    return this.inventoryWrite(() => this.syncByDifference(host, servers));
  }

  upsertServer(host: string, server: DesiredServer): Promise<'added' | 'updated' | 'unchanged'> {
    return this.inventoryWrite(() => this.upsertOne(host, server));
  }

  removeServer(host: string, serverId: string): Promise<boolean> {
    return this.inventoryWrite(() => {
      const removed = this.stmt.deleteServerOnHost.run(serverId, host).changes === 1; // attachments cascade
      if (removed) {
        this.inventoryKeys.get(host)?.delete(serverId);
        this.serverCache.delete(serverId);
      }
      return removed;
    });
  }

  /** Runs `fn` after every inventory write called before it. */
  private inventoryWrite<T>(fn: () => T | Promise<T>): Promise<T> {
    const run = this.syncQueue.then(fn);
    this.syncQueue = run.catch(() => undefined);
    return run;
  }

  /**
   * One server, by difference: compared with the host's in-memory copy if a sync loaded it, else
   * with its row (one indexed read: a single-server write never loads a whole host), and the
   * copy kept in step with what is written.
   */
  private upsertOne(host: string, s: DesiredServer): 'added' | 'updated' | 'unchanged' {
    const key = inventoryKey(s, s.attachments);
    const held = this.inventoryKeys.get(host);
    let was: string | undefined;
    if (held) was = held.get(s.id);
    else {
      const row = this.stmt.getServer.get(s.id) as Row | undefined;
      if (row && row.host === host) {
        const atts = (this.stmt.attachmentsOf.all(s.id) as Row[]).map(toAttachment);
        was = inventoryKey({ name: row.name as string, projectId: row.project_id as string, state: row.state as ServerRecord['state'] }, atts);
      }
    }
    if (was === key) return 'unchanged';
    const added = was === undefined;
    this.db.transaction(() => this.writeServer(host, s, added, nowIso()))();
    if (added) for (const [h, other] of this.inventoryKeys) if (h !== host) other.delete(s.id); // moved here from another host
    held?.set(s.id, key);
    this.serverCache.delete(s.id);
    return added ? 'added' : 'updated';
  }

  /**
   * Compare the driver's list with what the store holds (`inventoryKeys`, in memory: no read of
   * the database for a server that did not change), then write the differences, SYNC_CHUNK
   * servers a transaction, yielding to the event loop between chunks, so neither the comparison
   * nor the writes of a large host hold requests up for long.
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
    const gone = [...held.keys()].filter((id) => !listed.has(id));
    const now = nowIso();
    for (let i = 0; i < writes.length || i < gone.length; i += SYNC_CHUNK) {
      if (i > 0) await yieldToEventLoop();
      const chunk = writes.slice(i, i + SYNC_CHUNK);
      const drop = gone.slice(i, i + SYNC_CHUNK);
      this.db.transaction(() => {
        for (const { s, added } of chunk) this.writeServer(host, s, added, now);
        for (const id of drop) this.stmt.deleteServer.run(id);
      })();
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
    if (added) {
      // New, or moved here from another host: the upsert keeps its task state.
      this.stmt.upsertServer.run({ id: s.id, name: s.name, projectId: s.projectId, host, state: s.state, now });
    } else {
      this.stmt.updateServer.run({ id: s.id, name: s.name, projectId: s.projectId, state: s.state, now });
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
      const atts = new Map<string, AttachmentRecord[]>();
      for (const a of (this.stmt.attachmentsOfMany.all(JSON.stringify(rows.map((r) => r.id))) as Row[]).map(toAttachment)) {
        const list = atts.get(a.serverId);
        if (list) list.push(a);
        else atts.set(a.serverId, [a]);
      }
      for (const r of rows) {
        const id = r.id as string;
        held.set(id, inventoryKey({ name: r.name as string, projectId: r.project_id as string, state: r.state as ServerRecord['state'] }, atts.get(id) ?? []));
      }
      after = rows.at(-1)!.id as string;
      if (rows.length < SYNC_CHUNK) break;
      await yieldToEventLoop();
    }
    this.inventoryKeys.set(host, held);
    return held;
  }

  async getServer(id: string): Promise<ServerRecord | undefined> {
    const cached = this.serverCache.get(id);
    if (cached) return cached;
    const row = this.stmt.getServer.get(id) as Row | undefined;
    if (!row) return undefined;
    const server = this.toServer(row, (this.stmt.attachmentsOf.all(id) as Row[]).map(toAttachment));
    this.serverCache.set(id, server);
    return server;
  }

  async listServers(filter: { projectId?: string } = {}, page?: PageQuery): Promise<ServerRecord[]> {
    const project = filter.projectId !== undefined;
    const params: Record<string, unknown> = project ? { projectId: filter.projectId } : {};
    if (page?.marker !== undefined) {
      // The marker must be in this listing: another project's server id is "not found" too.
      const m = this.shapedStatement(`SELECT name FROM servers WHERE id = @marker${project ? ' AND project_id = @projectId' : ''}`).get({
        ...params,
        marker: page.marker,
      }) as Row | undefined;
      if (!m) throw errors.markerNotFound(page.marker);
      Object.assign(params, { marker: page.marker, markerName: m.name });
    }
    if (page) params.limit = page.limit;
    const sql = serversSql({ project, marker: page?.marker !== undefined, limit: page !== undefined });
    const rows = this.shapedStatement(sql).all(params) as Row[];
    const bySrv = new Map<string, AttachmentRecord[]>();
    if (rows.length) {
      for (const a of (this.stmt.attachmentsOfMany.all(JSON.stringify(rows.map((r) => r.id))) as Row[]).map(toAttachment)) {
        const list = bySrv.get(a.serverId);
        if (list) list.push(a);
        else bySrv.set(a.serverId, [a]);
      }
    }
    return rows.map((r) => this.toServer(r, bySrv.get(r.id as string) ?? []));
  }

  async setTaskState(serverId: string, task: string | null, expected: string | null): Promise<boolean> {
    this.serverCache.delete(serverId);
    const res = expected === null
      ? this.stmt.setTaskStateFromNull.run(task, serverId)
      : this.stmt.setTaskStateFrom.run(task, serverId, expected);
    return res.changes === 1;
  }

  async startAction(a: Omit<InstanceActionRecord, 'finishTime' | 'result'>): Promise<void> {
    const params = { ...a, details: JSON.stringify(a.details) };
    return this.group.write(() => this.stmt.startAction.run(params));
  }

  async finishAction(requestId: string, serverId: string, result: ActionResult, message: string | null, details?: Record<string, unknown>): Promise<void> {
    const params = {
      requestId,
      serverId,
      result,
      message,
      finishTime: nowIso(),
      details: details === undefined ? null : JSON.stringify(details),
    };
    return this.group.write(() => this.stmt.finishAction.run(params));
  }

  async recordAction(a: InstanceActionRecord): Promise<void> {
    const p = [a.requestId, a.serverId, a.action, a.event, a.userId, a.projectId, a.startTime, a.finishTime, a.result, a.message, JSON.stringify(a.details)];
    return this.group.write(() => this.stmt.recordAction.run(p));
  }

  async listActions(serverId: string, page?: PageQuery): Promise<InstanceActionRecord[]> {
    if (!page) return (this.stmt.listActions.all(serverId) as Row[]).map(toAction);
    if (page.marker === undefined) return (this.stmt.actionsFirst.all(serverId, page.limit) as Row[]).map(toAction);
    if (!this.stmt.actionMarker.get(serverId, page.marker)) throw errors.markerNotFound(page.marker);
    return (this.stmt.actionsAfter.all(serverId, page.marker, page.limit) as Row[]).map(toAction);
  }

  async getAction(serverId: string, requestId: string): Promise<InstanceActionRecord | undefined> {
    const row = this.stmt.getAction.get(serverId, requestId) as Row | undefined;
    return row ? toAction(row) : undefined;
  }

  async putToken(t: TokenRecord): Promise<void> {
    this.stmt.putToken.run({ ...t, roles: t.roles.join(',') });
  }

  async getToken(hash: string): Promise<TokenRecord | undefined> {
    const r = this.stmt.getToken.get(hash) as Row | undefined;
    return r ? toToken(r) : undefined;
  }

  async listTokens(filter: { userId?: string; projectId?: string } = {}): Promise<TokenRecord[]> {
    const where: string[] = [];
    const params: string[] = [];
    if (filter.userId !== undefined) {
      where.push('user_id = ?');
      params.push(filter.userId);
    }
    if (filter.projectId !== undefined) {
      where.push('project_id = ?');
      params.push(filter.projectId);
    }
    const sql = `SELECT * FROM tokens ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at, hash`;
    return (this.db.prepare(sql).all(...params) as Row[]).map(toToken);
  }

  async deleteToken(hash: string): Promise<boolean> {
    return this.stmt.deleteToken.run(hash).changes === 1;
  }

  async deleteExpiredTokens(now: Date = new Date()): Promise<number> {
    return this.stmt.deleteExpiredTokens.run(now.toISOString()).changes;
  }

  // ---- volumes ----

  async createVolume(v: Omit<VolumeRecord, 'createdAt' | 'updatedAt' | 'version'>): Promise<void> {
    this.stmt.insertVolume.run({ ...v, extend: v.extend ? JSON.stringify(v.extend) : null, now: nowIso() });
  }

  async getVolume(id: string): Promise<VolumeRecord | undefined> {
    const r = this.stmt.getVolume.get(id) as Row | undefined;
    return r ? toVolume(r) : undefined;
  }

  async listVolumes(filter: { projectId?: string; status?: VolumeStatus } = {}, page?: PageQuery): Promise<VolumeRecord[]> {
    const project = filter.projectId !== undefined;
    const status = filter.status !== undefined;
    const params: Record<string, unknown> = { ...(project ? { projectId: filter.projectId } : {}), ...(status ? { status: filter.status } : {}) };
    if (page?.marker !== undefined) {
      // The marker must be in this listing: another project's volume id is "not found" too.
      const scope = `${project ? ' AND project_id = @projectId' : ''}${status ? ' AND status = @status' : ''}`;
      const m = this.shapedStatement(`SELECT created_at FROM volumes WHERE id = @marker${scope}`).get({ ...params, marker: page.marker }) as Row | undefined;
      if (!m) throw errors.markerNotFound(page.marker);
      Object.assign(params, { marker: page.marker, markerCreated: m.created_at });
    }
    if (page) params.limit = page.limit;
    const sql = volumesSql({ project, status, marker: page?.marker !== undefined, limit: page !== undefined });
    return (this.shapedStatement(sql).all(params) as Row[]).map(toVolume);
  }

  async updateVolume(
    id: string,
    guard: readonly VolumeStatus[] | VolumeGuard,
    patch: Partial<Omit<VolumeRecord, 'id' | 'createdAt' | 'updatedAt' | 'version'>>,
  ): Promise<boolean> {
    const g: VolumeGuard = isStatusList(guard) ? { status: guard } : guard;
    const sets: string[] = ['updated_at = @updatedAt', 'version = version + 1'];
    const params: Record<string, unknown> = { id, updatedAt: nowIso() };
    for (const [key, value] of Object.entries(patch)) {
      const col = VOLUME_COLUMNS[key];
      if (!col) throw new Error(`updateVolume: unknown field ${key}`);
      sets.push(`${col} = @${key}`);
      params[key] = key === 'extend' ? (value ? JSON.stringify(value) : null) : value;
    }
    const where = ['id = @id'];
    if (g.status) {
      if (g.status.length === 0) return false;
      where.push(`status IN (${g.status.map((st, i) => ((params[`s${i}`] = st), `@s${i}`)).join(', ')})`);
    }
    if (g.version !== undefined) {
      where.push('version = @guardVersion');
      params.guardVersion = g.version;
    }
    if (g.attached !== undefined) where.push(g.attached ? 'server_id IS NOT NULL' : 'server_id IS NULL');
    if (g.sizeBelow !== undefined) {
      where.push('size_bytes < @guardSizeBelow');
      params.guardSizeBelow = g.sizeBelow;
    }
    if (g.extendRequestId !== undefined) {
      where.push("json_extract(extend, '$.requestId') = @guardExtendRequestId");
      params.guardExtendRequestId = g.extendRequestId;
    }
    const sql = `UPDATE volumes SET ${sets.join(', ')} WHERE ${where.join(' AND ')}`;
    return this.shapedStatement(sql).run(params).changes === 1;
  }

  async deleteVolume(id: string): Promise<void> {
    this.stmt.deleteVolume.run(id);
  }

  async startVolumeAction(a: Omit<VolumeActionRecord, 'finishTime' | 'result'>): Promise<void> {
    this.stmt.startVolumeAction.run({ ...a, computeRequestIds: JSON.stringify(a.computeRequestIds), details: JSON.stringify(a.details) });
  }

  async noteVolumeAction(requestId: string, volumeId: string, computeRequestIds: string[], details: Record<string, unknown> = {}): Promise<void> {
    this.db.transaction(() => {
      const row = this.stmt.getVolumeAction.get(requestId, volumeId) as Row | undefined;
      if (!row) return;
      const cur = toVolumeAction(row);
      this.stmt.noteVolumeAction.run({
        requestId,
        volumeId,
        ids: JSON.stringify([...cur.computeRequestIds, ...computeRequestIds]),
        details: JSON.stringify({ ...cur.details, ...details }),
      });
    })();
  }

  async finishVolumeAction(requestId: string, volumeId: string, result: ActionResult, message: string | null): Promise<void> {
    this.stmt.finishVolumeAction.run({ requestId, volumeId, result, message, finishTime: nowIso() });
  }

  async listVolumeActions(volumeId: string, page?: PageQuery): Promise<VolumeActionRecord[]> {
    if (!page) return (this.stmt.listVolumeActions.all(volumeId) as Row[]).map(toVolumeAction);
    if (page.marker === undefined) return (this.stmt.volumeActionsFirst.all(volumeId, page.limit) as Row[]).map(toVolumeAction);
    if (!this.stmt.volumeActionMarker.get(volumeId, page.marker)) throw errors.markerNotFound(page.marker);
    return (this.stmt.volumeActionsAfter.all(volumeId, page.marker, page.limit) as Row[]).map(toVolumeAction);
  }

  async close(): Promise<void> {
    this.group.flush();
    this.db.close();
  }
}
