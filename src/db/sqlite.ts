/**
 * SqliteStore: the embedded default store (one process, one host). WAL mode, prepared statements,
 * migrations by `PRAGMA user_version`.
 *
 * Its parts, one concern a file: opening and migrating the database (sqliteOpen.ts), row mapping
 * (rows.ts), the listings' SQL (sql.ts), the one write batcher (writeQueue.ts: group commit and
 * ordered jobs, with its contract), the compute inventory (inventory.ts); this file holds the
 * audit records (instance and volume actions), tokens and volumes, and joins the parts.
 */
import type Database from 'better-sqlite3';
import { errors } from '../errors.js';
import type {
  ActionResult,
  FlavorRecord,
  FsGrowthRecord,
  ImageRecord,
  InventorySyncResult,
  NewServerRecord,
  ServerStatePatch,
  PageQuery,
  VolumeActionRecord,
  VolumeRecord,
  VolumeStatus,
  VolumeGuard,
  InstanceActionRecord,
  ServerRecord,
  ServiceRecord,
  Store,
  TokenRecord,
} from './store.js';
import { SqliteInventory, type DesiredServer } from './inventory.js';
import { ACTION_COLUMNS, FS_GROWTH_COLUMNS, fsGrowthValues, isStatusList, nowIso, toAction, toFlavor, toFsGrowth, toImage, toToken, toVolume, toVolumeAction, VOLUME_COLUMNS, type Row } from './rows.js';
import { PAGE_SQL, ShapedStatements, volumesSql } from './sql.js';
import { openSqliteFile } from './sqliteOpen.js';
import { WriteQueue } from './writeQueue.js';

export { DB_FILE_MODE, databaseIdOf, ensureDatabaseId, migrate, openSqlite } from './sqliteOpen.js';
export { PAGE_SQL, serversSql, volumesSql } from './sql.js';
export { SYNC_CHUNK } from './inventory.js';

/** The Store on one SQLite database file (or `:memory:`); see the module comment for its parts. */
export class SqliteStore implements Store {
  /** The open database (tests read query plans and change counts through it). */
  readonly db: Database.Database;
  private readonly stmt;
  /** The one write batcher: audit writes and the inventory's jobs go through it. */
  private readonly writes: WriteQueue;
  private readonly shaped: ShapedStatements;
  private readonly inventory: SqliteInventory;

  /** The database's files whose wider mode opening it narrowed to 0600 (openSqliteFile). */
  readonly narrowed: readonly string[];

  /** Open (creating and migrating) the database at `path`; throws what `openSqlite` throws. */
  constructor(path: string) {
    ({ db: this.db, narrowed: this.narrowed } = openSqliteFile(path));
    const db = this.db;
    this.writes = new WriteQueue(db);
    this.shaped = new ShapedStatements(db);
    this.inventory = new SqliteInventory(db, this.writes, this.shaped);
    this.stmt = {
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
      // No index on purpose: read once at start-up; an index would cost every audited call.
      unfinishedActions: db.prepare('SELECT * FROM instance_actions WHERE action = ? AND finish_time IS NULL ORDER BY request_id'),
      putToken: db.prepare(
        `INSERT INTO tokens (hash, user_id, project_id, roles, created_at, expires_at)
         VALUES (@hash, @userId, @projectId, @roles, @createdAt, @expiresAt)`,
      ),
      getToken: db.prepare('SELECT * FROM tokens WHERE hash = ?'),
      deleteToken: db.prepare('DELETE FROM tokens WHERE hash = ?'),
      deleteExpiredTokens: db.prepare('DELETE FROM tokens WHERE expires_at <= ?'),
      insertVolume: db.prepare(
        `INSERT INTO volumes (id, project_id, name, size_bytes, status, backend, format, server_id, server_project_id, device, extend, created_at, updated_at, user_id, description, metadata, attached_at, encryption, payload_offset, encryption_key)
         VALUES (@id, @projectId, @name, @sizeBytes, @status, @backend, @format, @serverId, @serverProjectId, @device, @extend, @now, @now, @userId, @description, @metadata, @attachedAt, @encryption, @payloadOffset, @encryptionKey)`,
      ),
      getVolume: db.prepare('SELECT * FROM volumes WHERE id = ?'),
      getVolumeEncryptionKey: db.prepare('SELECT encryption_key FROM volumes WHERE id = ?'),
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
      putFlavor: db.prepare(
        `INSERT INTO flavors (id, name, vcpus, ram_mb, disk_gb, ephemeral_gb, swap_mb, is_public, description)
         VALUES (@id, @name, @vcpus, @ramMb, @diskGb, @ephemeralGb, @swapMb, @isPublic, @description) ON CONFLICT(id) DO NOTHING`,
      ),
      getFlavor: db.prepare('SELECT * FROM flavors WHERE id = ?'),
      listFlavors: db.prepare('SELECT * FROM flavors ORDER BY ram_mb, id'),
      deleteFlavor: db.prepare('DELETE FROM flavors WHERE id = ?'),
      putImage: db.prepare(
        `INSERT INTO images (id, name, kind, disk_path, disk_format, kernel_path, ramdisk_path, cmdline, min_disk_gb, min_ram_mb, created_at)
         VALUES (@id, @name, @kind, @diskPath, @diskFormat, @kernelPath, @ramdiskPath, @cmdline, @minDiskGb, @minRamMb, @createdAt) ON CONFLICT(id) DO NOTHING`,
      ),
      getImage: db.prepare('SELECT * FROM images WHERE id = ?'),
      listImages: db.prepare('SELECT * FROM images ORDER BY created_at, id'),
      deleteImage: db.prepare('DELETE FROM images WHERE id = ?'),
    };
  }

  // ---- the compute inventory (inventory.ts) ----

  syncServers(host: string, servers: DesiredServer[]): Promise<InventorySyncResult> {
    return this.inventory.syncServers(host, servers);
  }

  upsertServer(host: string, server: DesiredServer): Promise<'added' | 'updated' | 'unchanged'> {
    return this.inventory.upsertServer(host, server);
  }

  removeServer(host: string, serverId: string): Promise<boolean> {
    return this.inventory.removeServer(host, serverId);
  }

  getServer(id: string): Promise<ServerRecord | undefined> {
    return this.inventory.getServer(id);
  }

  cachedServer(id: string): ServerRecord | undefined {
    return this.inventory.cachedServer(id);
  }

  listServers(filter: { projectId?: string } = {}, page?: PageQuery): Promise<ServerRecord[]> {
    return this.inventory.listServers(filter, page);
  }

  setTaskState(serverId: string, task: string | null, expected: string | null): Promise<boolean> {
    return this.inventory.setTaskState(serverId, task, expected);
  }

  createServer(host: string, server: NewServerRecord): Promise<boolean> {
    return this.inventory.createServer(host, server);
  }

  setServerState(serverId: string, patch: ServerStatePatch, expectedTask: string | null): Promise<boolean> {
    return this.inventory.setServerState(serverId, patch, expectedTask);
  }

  deleteServer(serverId: string): Promise<boolean> {
    return this.inventory.deleteServer(serverId);
  }

  // ---- flavors and images (registered with the CLI, read on every use: another process may add them) ----

  async putFlavor(f: FlavorRecord): Promise<boolean> {
    return this.stmt.putFlavor.run({ ...f, isPublic: f.isPublic ? 1 : 0 }).changes === 1;
  }

  async getFlavor(id: string): Promise<FlavorRecord | undefined> {
    const r = this.stmt.getFlavor.get(id) as Row | undefined;
    return r ? toFlavor(r) : undefined;
  }

  async listFlavors(): Promise<FlavorRecord[]> {
    return (this.stmt.listFlavors.all() as Row[]).map(toFlavor);
  }

  async deleteFlavor(id: string): Promise<boolean> {
    return this.stmt.deleteFlavor.run(id).changes === 1;
  }

  async putImage(i: ImageRecord): Promise<boolean> {
    return this.stmt.putImage.run(i).changes === 1;
  }

  async getImage(id: string): Promise<ImageRecord | undefined> {
    const r = this.stmt.getImage.get(id) as Row | undefined;
    return r ? toImage(r) : undefined;
  }

  async listImages(): Promise<ImageRecord[]> {
    return (this.stmt.listImages.all() as Row[]).map(toImage);
  }

  async deleteImage(id: string): Promise<boolean> {
    return this.stmt.deleteImage.run(id).changes === 1;
  }

  // ---- instance actions (group-committed), tokens ----

  async startAction(a: Omit<InstanceActionRecord, 'finishTime' | 'result'>): Promise<void> {
    const params = { ...a, details: JSON.stringify(a.details) };
    return this.writes.write(() => {
      this.stmt.startAction.run(params);
    });
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
    return this.writes.write(() => {
      this.stmt.finishAction.run(params);
    });
  }

  async recordAction(a: InstanceActionRecord): Promise<void> {
    const p = [a.requestId, a.serverId, a.action, a.event, a.userId, a.projectId, a.startTime, a.finishTime, a.result, a.message, JSON.stringify(a.details)];
    return this.writes.write(() => {
      this.stmt.recordAction.run(p);
    });
  }

  async listActions(serverId: string, page?: PageQuery): Promise<InstanceActionRecord[]> {
    if (!page) return (this.stmt.listActions.all(serverId) as Row[]).map(toAction);
    if (page.marker === undefined) return (this.stmt.actionsFirst.all(serverId, page.limit) as Row[]).map(toAction);
    if (!this.stmt.actionMarker.get(serverId, page.marker)) throw errors.markerNotFound(page.marker);
    return (this.stmt.actionsAfter.all(serverId, page.marker, page.limit) as Row[]).map(toAction);
  }

  async listUnfinishedActions(action: string): Promise<InstanceActionRecord[]> {
    return (this.stmt.unfinishedActions.all(action) as Row[]).map(toAction);
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

  // ---- compute services (G) ----

  async serviceHeartbeat(host: string, binary: string, topic: string, now: Date = new Date()): Promise<ServiceRecord> {
    const at = now.toISOString();
    const row = this.db
      .prepare(
        `INSERT INTO services (host, binary, topic, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (host, binary) DO UPDATE SET updated_at = excluded.updated_at, topic = excluded.topic RETURNING *`,
      )
      .get(host, binary, topic, at, at) as ServiceRow;
    return serviceFromRow(row);
  }

  async listServices(filter: { host?: string; binary?: string } = {}): Promise<ServiceRecord[]> {
    const rows = this.db
      .prepare('SELECT * FROM services WHERE (@host IS NULL OR host = @host) AND (@binary IS NULL OR binary = @binary) ORDER BY id')
      .all({ host: filter.host ?? null, binary: filter.binary ?? null }) as ServiceRow[];
    return rows.map(serviceFromRow);
  }

  async setServiceDisabled(host: string, binary: string, disabled: boolean, reason: string | null): Promise<boolean> {
    return this.db.prepare('UPDATE services SET disabled = ?, disabled_reason = ? WHERE host = ? AND binary = ?').run(disabled ? 1 : 0, disabled ? reason : null, host, binary).changes > 0;
  }

  async deleteService(id: number): Promise<boolean> {
    return this.db.prepare('DELETE FROM services WHERE id = ?').run(id).changes > 0;
  }

  // ---- extend leases (G) ----

  async claimExtend(volumeId: string, owner: string, ttlMs: number, now: Date = new Date()): Promise<boolean> {
    // One statement: the volume must be extending; an existing lease is taken only if it is ours or expired.
    const row = this.db
      .prepare(
        `INSERT INTO extend_leases (volume_id, owner, expires_at)
           SELECT id, @owner, @expires FROM volumes WHERE id = @volumeId AND status = 'extending'
         ON CONFLICT (volume_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
           WHERE extend_leases.owner = excluded.owner OR extend_leases.expires_at <= @now
         RETURNING owner`,
      )
      .get({ volumeId, owner, expires: new Date(now.getTime() + ttlMs).toISOString(), now: now.toISOString() }) as { owner: string } | undefined;
    return row?.owner === owner;
  }

  async renewExtendLeases(owner: string, ttlMs: number, now: Date = new Date()): Promise<string[]> {
    const rows = this.db
      .prepare('UPDATE extend_leases SET expires_at = @expires WHERE owner = @owner AND expires_at > @now RETURNING volume_id')
      .all({ owner, expires: new Date(now.getTime() + ttlMs).toISOString(), now: now.toISOString() }) as Array<{ volume_id: string }>;
    return rows.map((r) => r.volume_id).sort();
  }

  async releaseExtend(volumeId: string, owner: string): Promise<void> {
    this.db.prepare('DELETE FROM extend_leases WHERE volume_id = ? AND owner = ?').run(volumeId, owner);
  }

  async listClaimableExtends(now: Date = new Date(), limit = 1000): Promise<string[]> {
    const rows = this.db
      .prepare(
        `SELECT v.id FROM volumes v LEFT JOIN extend_leases l ON l.volume_id = v.id
         WHERE v.status = 'extending' AND (l.volume_id IS NULL OR l.expires_at <= ?)
         ORDER BY v.created_at, v.id LIMIT ?`,
      )
      .all(now.toISOString(), limit) as Array<{ id: string }>;
    return rows.map((r) => r.id);
  }

  // ---- volumes ----

  async createVolume(v: Omit<VolumeRecord, 'createdAt' | 'updatedAt' | 'version'>, secret: { encryptionKey?: string } = {}): Promise<void> {
    this.stmt.insertVolume.run({
      encryption: v.encryption ?? null,
      payloadOffset: v.payloadOffset ?? null,
      encryptionKey: secret.encryptionKey ?? null,
      ...v,
      extend: v.extend ? JSON.stringify(v.extend) : null,
      now: nowIso(),
      userId: v.userId ?? null,
      description: v.description ?? null,
      metadata: v.metadata && Object.keys(v.metadata).length > 0 ? JSON.stringify(v.metadata) : null,
      attachedAt: v.attachedAt ?? null,
    });
  }

  async getVolumeEncryptionKey(id: string): Promise<string | undefined> {
    const r = this.stmt.getVolumeEncryptionKey.get(id) as { encryption_key: string | null } | undefined;
    return r?.encryption_key ?? undefined;
  }

  async getVolume(id: string): Promise<VolumeRecord | undefined> {
    const r = this.stmt.getVolume.get(id) as Row | undefined;
    return r ? toVolume(r) : undefined;
  }

  async listVolumes(filter: { projectId?: string; status?: VolumeStatus; name?: string } = {}, page?: PageQuery): Promise<VolumeRecord[]> {
    const project = filter.projectId !== undefined;
    const status = filter.status !== undefined;
    const name = filter.name !== undefined;
    const params: Record<string, unknown> = {
      ...(project ? { projectId: filter.projectId } : {}),
      ...(status ? { status: filter.status } : {}),
      ...(name ? { name: filter.name } : {}),
    };
    if (page?.marker !== undefined) {
      // The marker must be in this listing: another project's volume id is "not found" too.
      const scope = `${project ? ' AND project_id = @projectId' : ''}${status ? ' AND status = @status' : ''}${name ? ' AND name = @name' : ''}`;
      const m = this.shaped.get(`SELECT created_at FROM volumes WHERE id = @marker${scope}`).get({ ...params, marker: page.marker }) as Row | undefined;
      if (!m) throw errors.markerNotFound(page.marker);
      Object.assign(params, { marker: page.marker, markerCreated: m.created_at });
    }
    if (page) params.limit = page.limit;
    const sql = volumesSql({ project, status, name, marker: page?.marker !== undefined, limit: page !== undefined });
    return (this.shaped.get(sql).all(params) as Row[]).map(toVolume);
  }

  async countVolumesByStatus(): Promise<Partial<Record<VolumeStatus, number>>> {
    const rows = this.shaped.get('SELECT status, COUNT(*) AS n FROM volumes GROUP BY status').all() as { status: VolumeStatus; n: number }[];
    return Object.fromEntries(rows.map((r) => [r.status, r.n]));
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
      params[key] = key === 'extend' || key === 'metadata' ? (value && (key === 'extend' || Object.keys(value).length > 0) ? JSON.stringify(value) : null) : value;
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
    return this.shaped.get(sql).run(params).changes === 1;
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

  async putFsGrowth(r: FsGrowthRecord, opts: { onlyIfAbsent?: boolean } = {}): Promise<void> {
    const updates = opts.onlyIfAbsent ? 'NOTHING' : `UPDATE SET ${FS_GROWTH_COLUMNS.slice(2).map((c) => `${c} = excluded.${c}`).join(', ')}`;
    this.shaped
      .get(`INSERT INTO volume_fs_growths (${FS_GROWTH_COLUMNS.join(', ')}) VALUES (${FS_GROWTH_COLUMNS.map(() => '?').join(', ')}) ON CONFLICT (volume_id, request_id) DO ${updates}`)
      .run(...fsGrowthValues(r));
  }

  async getFsGrowth(volumeId: string, requestId: string): Promise<FsGrowthRecord | undefined> {
    const r = this.shaped.get('SELECT * FROM volume_fs_growths WHERE volume_id = ? AND request_id = ?').get(volumeId, requestId) as Row | undefined;
    return r ? toFsGrowth(r) : undefined;
  }

  async latestFsGrowths(volumeIds: readonly string[]): Promise<Map<string, FsGrowthRecord>> {
    const out = new Map<string, FsGrowthRecord>();
    if (volumeIds.length === 0) return out;
    // The ids as one JSON parameter: one statement shape whatever their number.
    const rows = this.shaped
      .get(
        `SELECT * FROM (SELECT g.*, ROW_NUMBER() OVER (PARTITION BY g.volume_id ORDER BY g.requested_at DESC, g.request_id DESC) AS rn
           FROM volume_fs_growths g WHERE g.volume_id IN (SELECT value FROM json_each(?))) WHERE rn = 1`,
      )
      .all(JSON.stringify(volumeIds)) as Row[];
    for (const r of rows) out.set(r.volume_id as string, toFsGrowth(r));
    return out;
  }

  async listVolumeActions(volumeId: string, page?: PageQuery): Promise<VolumeActionRecord[]> {
    if (!page) return (this.stmt.listVolumeActions.all(volumeId) as Row[]).map(toVolumeAction);
    if (page.marker === undefined) return (this.stmt.volumeActionsFirst.all(volumeId, page.limit) as Row[]).map(toVolumeAction);
    if (!this.stmt.volumeActionMarker.get(volumeId, page.marker)) throw errors.markerNotFound(page.marker);
    return (this.stmt.volumeActionsAfter.all(volumeId, page.marker, page.limit) as Row[]).map(toVolumeAction);
  }

  async close(): Promise<void> {
    this.writes.flush();
    this.db.close();
  }
}

interface ServiceRow {
  id: number;
  host: string;
  binary: string;
  topic: string;
  disabled: number;
  disabled_reason: string | null;
  created_at: string;
  updated_at: string;
}

function serviceFromRow(r: ServiceRow): ServiceRecord {
  return { id: r.id, host: r.host, binary: r.binary, topic: r.topic, disabled: r.disabled === 1, disabledReason: r.disabled_reason, createdAt: r.created_at, updatedAt: r.updated_at };
}
