/**
 * SqliteStore: the embedded default store (one process, one host). WAL mode, prepared statements,
 * migrations by `PRAGMA user_version`.
 */
import Database from 'better-sqlite3';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import type {
  ActionResult,
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
 * Group commit: writes share one transaction (one WAL append) instead of one each. A write the
 * caller waits for is committed at the end of the current event-loop turn; a write nobody waits
 * for (the audit record of a read) may wait up to `LAZY_FLUSH_MS` to share its commit with more.
 */
const LAZY_FLUSH_MS = 5;
const MAX_BATCH = 512;

class GroupCommit {
  private queue: Array<{ run: () => void; resolve: () => void; reject: (e: unknown) => void }> = [];
  private immediate: NodeJS.Immediate | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly db: Database.Database) {}

  write(run: () => void): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ run, resolve, reject });
      this.immediate ??= setImmediate(() => this.flush());
    });
  }

  flush(): void {
    if (this.immediate) clearImmediate(this.immediate);
    if (this.timer) clearTimeout(this.timer);
    this.immediate = undefined;
    this.timer = undefined;
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
 * Rows nobody waits for (the audit records of reads), inserted in bulk: one transaction per
 * flush and one multi-row INSERT per CHUNK rows, so a row costs a few microseconds of SQLite.
 * A failure is reported as a process warning: the answer these rows describe was already sent.
 */
const CHUNK = 32;

class LazyRows {
  private rows: unknown[][] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly one: Database.Statement;
  private readonly many: Database.Statement;

  constructor(
    private readonly db: Database.Database,
    table: string,
    columns: readonly string[],
  ) {
    const tuple = `(${columns.map(() => '?').join(', ')})`;
    const head = `INSERT INTO ${table} (${columns.join(', ')}) VALUES `;
    this.one = db.prepare(head + tuple);
    this.many = db.prepare(head + Array.from({ length: CHUNK }, () => tuple).join(', '));
  }

  add(row: unknown[]): void {
    this.rows.push(row);
    if (this.rows.length >= MAX_BATCH) setImmediate(() => this.flush());
    else if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), LAZY_FLUSH_MS);
      this.timer.unref();
    }
  }

  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const rows = this.rows;
    this.rows = [];
    if (rows.length === 0) return;
    try {
      this.db.transaction(() => {
        let i = 0;
        for (; i + CHUNK <= rows.length; i += CHUNK) this.many.run(rows.slice(i, i + CHUNK).flat());
        for (; i < rows.length; i++) this.one.run(rows[i]);
      })();
    } catch (err) {
      process.emitWarning(`${rows.length} audit records not written: ${(err as Error).message}`);
    }
  }
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
  private readonly lazyActions: LazyRows;
  /** Conditional updates differ only by their columns and guard: a statement per distinct SQL. */
  private readonly updateStatements = new Map<string, Database.Statement>();

  constructor(path: string) {
    this.db = openSqlite(path);
    const db = this.db;
    this.group = new GroupCommit(db);
    this.lazyActions = new LazyRows(db, 'instance_actions', ACTION_COLUMNS);
    this.stmt = {
      getServer: db.prepare('SELECT * FROM servers WHERE id = ?'),
      attachmentsOf: db.prepare('SELECT * FROM attachments WHERE server_id = ? ORDER BY device'),
      listServers: db.prepare('SELECT * FROM servers ORDER BY name, id'),
      listServersByProject: db.prepare('SELECT * FROM servers WHERE project_id = ? ORDER BY name, id'),
      allAttachments: db.prepare('SELECT * FROM attachments ORDER BY server_id, device'),
      upsertServer: db.prepare(
        `INSERT INTO servers (id, name, project_id, host, state, task_state, updated_at)
         VALUES (@id, @name, @projectId, @host, @state, NULL, @now)
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, project_id = excluded.project_id,
           host = excluded.host, state = excluded.state, updated_at = excluded.updated_at`,
      ),
      serversOfHost: db.prepare('SELECT id FROM servers WHERE host = ?'),
      deleteServer: db.prepare('DELETE FROM servers WHERE id = ?'),
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
      listActions: db.prepare('SELECT * FROM instance_actions WHERE server_id = ? ORDER BY start_time DESC, rowid DESC'),
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
      listVolumeActions: db.prepare('SELECT * FROM volume_actions WHERE volume_id = ? ORDER BY start_time DESC, rowid DESC'),
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

  async syncServers(host: string, servers: Array<Omit<ServerRecord, 'updatedAt' | 'taskState' | 'host'>>): Promise<void> {
    const now = nowIso();
    this.serverCache.clear();
    this.db.transaction(() => {
      const seen = new Set(servers.map((s) => s.id));
      for (const row of this.stmt.serversOfHost.all(host) as Row[]) {
        if (!seen.has(row.id as string)) this.stmt.deleteServer.run(row.id);
      }
      for (const s of servers) {
        this.stmt.upsertServer.run({ id: s.id, name: s.name, projectId: s.projectId, host, state: s.state, now });
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
    })();
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

  async listServers(filter: { projectId?: string } = {}): Promise<ServerRecord[]> {
    const rows = (filter.projectId === undefined
      ? this.stmt.listServers.all()
      : this.stmt.listServersByProject.all(filter.projectId)) as Row[];
    const bySrv = new Map<string, AttachmentRecord[]>();
    for (const a of (this.stmt.allAttachments.all() as Row[]).map(toAttachment)) {
      const list = bySrv.get(a.serverId) ?? [];
      list.push(a);
      bySrv.set(a.serverId, list);
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

  async recordAction(a: InstanceActionRecord, opts: { lazy?: boolean } = {}): Promise<void> {
    const p = [a.requestId, a.serverId, a.action, a.event, a.userId, a.projectId, a.startTime, a.finishTime, a.result, a.message, JSON.stringify(a.details)];
    if (opts.lazy) return this.lazyActions.add(p);
    return this.group.write(() => this.stmt.recordAction.run(p));
  }

  async listActions(serverId: string): Promise<InstanceActionRecord[]> {
    this.lazyActions.flush();
    return (this.stmt.listActions.all(serverId) as Row[]).map(toAction);
  }

  async getAction(serverId: string, requestId: string): Promise<InstanceActionRecord | undefined> {
    this.lazyActions.flush();
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

  async listVolumes(filter: { projectId?: string; status?: VolumeStatus } = {}): Promise<VolumeRecord[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (filter.projectId !== undefined) {
      where.push('project_id = ?');
      params.push(filter.projectId);
    }
    if (filter.status !== undefined) {
      where.push('status = ?');
      params.push(filter.status);
    }
    const sql = `SELECT * FROM volumes ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at, id`;
    return (this.db.prepare(sql).all(...params) as Row[]).map(toVolume);
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
    let stmt = this.updateStatements.get(sql);
    if (!stmt) {
      stmt = this.db.prepare(sql);
      this.updateStatements.set(sql, stmt);
    }
    return stmt.run(params).changes === 1;
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

  async listVolumeActions(volumeId: string): Promise<VolumeActionRecord[]> {
    return (this.stmt.listVolumeActions.all(volumeId) as Row[]).map(toVolumeAction);
  }

  async close(): Promise<void> {
    this.lazyActions.flush();
    this.group.flush();
    this.db.close();
  }
}
