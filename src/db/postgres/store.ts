/**
 * PgStore: the Store on PostgreSQL (npm `pg`, one pool), for several processes and hosts sharing
 * one database (G). Same records, orders, errors and conditions as SqliteStore: rows are mapped
 * by db/rows.ts (the schema keeps SQLite's column types, db/postgres/migrations.ts); every
 * conditional write (VolumeGuard, task states, leases) is one statement, so PostgreSQL's row
 * locks decide races between processes. Times come from the callers' clocks (`now` arguments,
 * or this process's clock), as in SqliteStore.
 */
import type pg from 'pg';
import { errors } from '../../errors.js';
import type {
  ActionResult,
  FlavorRecord,
  FsGrowthRecord,
  ImageRecord,
  InstanceActionRecord,
  InventorySyncResult,
  NewServerRecord,
  PageQuery,
  ServerRecord,
  ServerStatePatch,
  ServiceRecord,
  Store,
  TokenRecord,
  VolumeActionRecord,
  VolumeGuard,
  VolumeRecord,
  VolumeStatus,
} from '../store.js';
import type { DesiredServer } from '../inventory.js';
import { ACTION_COLUMNS, FS_GROWTH_COLUMNS, fsGrowthValues, isStatusList, nowIso, toAction, toFlavor, toFsGrowth, toImage, toToken, toVolume, toVolumeAction, VOLUME_COLUMNS, type Row } from '../rows.js';
import { PgInventory } from './inventory.js';
import { createPool, inTransaction, migratePg } from './pool.js';

/** A volume field `updateVolume` writes as JSON text (null for none; an empty metadata map is none). */
function volumeValue(key: string, value: unknown): unknown {
  if (key === 'extend') return value ? JSON.stringify(value) : null;
  if (key === 'metadata') return value && Object.keys(value).length > 0 ? JSON.stringify(value) : null;
  return value;
}

/** The Store on one PostgreSQL database; see the module comment. Open with `PgStore.open`. */
export class PgStore implements Store {
  private readonly inventory: PgInventory;

  /** A store on `pool`, whose database is already migrated (`PgStore.open` does both). */
  constructor(readonly pool: pg.Pool) {
    this.inventory = new PgInventory(pool);
  }

  /**
   * Open a pool on `url` and migrate the database (see `migratePg`). Throws `pg`'s errors
   * (connection refused, authentication, no such database) and migratePg's; the pool is closed then.
   */
  static async open(url: string, poolSize?: number): Promise<PgStore> {
    const pool = createPool(url, poolSize);
    try {
      await migratePg(pool);
    } catch (e) {
      await pool.end();
      throw e;
    }
    return new PgStore(pool);
  }

  private async rows(sql: string, params: unknown[] = []): Promise<Row[]> {
    return (await this.pool.query(sql, params)).rows as Row[];
  }

  private async count(sql: string, params: unknown[]): Promise<number> {
    return (await this.pool.query(sql, params)).rowCount ?? 0;
  }

  // ---- the compute inventory (inventory.ts) ----

  /** See ComputeStore.syncServers. */
  syncServers(host: string, servers: DesiredServer[]): Promise<InventorySyncResult> {
    return this.inventory.syncServers(host, servers);
  }

  /** See ComputeStore.upsertServer. */
  upsertServer(host: string, server: DesiredServer): Promise<'added' | 'updated' | 'unchanged'> {
    return this.inventory.upsertServer(host, server);
  }

  /** See ComputeStore.removeServer. */
  removeServer(host: string, serverId: string): Promise<boolean> {
    return this.inventory.removeServer(host, serverId);
  }

  /** See ComputeStore.getServer. */
  getServer(id: string): Promise<ServerRecord | undefined> {
    return this.inventory.getServer(id);
  }

  /** See ComputeStore.listServers. */
  listServers(filter: { projectId?: string } = {}, page?: PageQuery): Promise<ServerRecord[]> {
    return this.inventory.listServers(filter, page);
  }

  /** See ComputeStore.setTaskState. */
  setTaskState(serverId: string, task: string | null, expected: string | null): Promise<boolean> {
    return this.inventory.setTaskState(serverId, task, expected);
  }

  /** See ComputeStore.createServer. */
  createServer(host: string, server: NewServerRecord): Promise<boolean> {
    return this.inventory.createServer(host, server);
  }

  /** See ComputeStore.setServerState. */
  setServerState(serverId: string, patch: ServerStatePatch, expectedTask: string | null): Promise<boolean> {
    return this.inventory.setServerState(serverId, patch, expectedTask);
  }

  /** See ComputeStore.deleteServer. */
  deleteServer(serverId: string): Promise<boolean> {
    return this.inventory.deleteServer(serverId);
  }

  // ---- flavors and images ----

  /** See ComputeStore.putFlavor. */
  async putFlavor(f: FlavorRecord): Promise<boolean> {
    const sql = `INSERT INTO flavors (id, name, vcpus, ram_mb, disk_gb, ephemeral_gb, swap_mb, is_public, description)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING`;
    return (await this.count(sql, [f.id, f.name, f.vcpus, f.ramMb, f.diskGb, f.ephemeralGb, f.swapMb, f.isPublic ? 1 : 0, f.description])) === 1;
  }

  /** See ComputeStore.getFlavor. */
  async getFlavor(id: string): Promise<FlavorRecord | undefined> {
    const [r] = await this.rows('SELECT * FROM flavors WHERE id = $1', [id]);
    return r ? toFlavor(r) : undefined;
  }

  /** See ComputeStore.listFlavors. */
  async listFlavors(): Promise<FlavorRecord[]> {
    return (await this.rows('SELECT * FROM flavors ORDER BY ram_mb, id')).map(toFlavor);
  }

  /** See ComputeStore.deleteFlavor. */
  async deleteFlavor(id: string): Promise<boolean> {
    return (await this.count('DELETE FROM flavors WHERE id = $1', [id])) === 1;
  }

  /** See ComputeStore.putImage. */
  async putImage(i: ImageRecord): Promise<boolean> {
    const sql = `INSERT INTO images (id, name, kind, disk_path, disk_format, kernel_path, ramdisk_path, cmdline, min_disk_gb, min_ram_mb, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING`;
    const params = [i.id, i.name, i.kind, i.diskPath, i.diskFormat, i.kernelPath, i.ramdiskPath, i.cmdline, i.minDiskGb, i.minRamMb, i.createdAt];
    return (await this.count(sql, params)) === 1;
  }

  /** See ComputeStore.getImage. */
  async getImage(id: string): Promise<ImageRecord | undefined> {
    const [r] = await this.rows('SELECT * FROM images WHERE id = $1', [id]);
    return r ? toImage(r) : undefined;
  }

  /** See ComputeStore.listImages. */
  async listImages(): Promise<ImageRecord[]> {
    return (await this.rows('SELECT * FROM images ORDER BY created_at, id')).map(toImage);
  }

  /** See ComputeStore.deleteImage. */
  async deleteImage(id: string): Promise<boolean> {
    return (await this.count('DELETE FROM images WHERE id = $1', [id])) === 1;
  }

  // ---- instance actions, tokens ----

  /** See ComputeStore.startAction. */
  async startAction(a: Omit<InstanceActionRecord, 'finishTime' | 'result'>): Promise<void> {
    await this.pool.query(
      `INSERT INTO instance_actions (request_id, server_id, action, event, user_id, project_id, start_time, message, details)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
      [a.requestId, a.serverId, a.action, a.event, a.userId, a.projectId, a.startTime, a.message, JSON.stringify(a.details)],
    );
  }

  /** See ComputeStore.finishAction. */
  async finishAction(requestId: string, serverId: string, result: ActionResult, message: string | null, details?: Record<string, unknown>): Promise<void> {
    await this.pool.query(
      `UPDATE instance_actions SET finish_time = $3, result = $4, message = $5, details = COALESCE($6, details)
       WHERE request_id = $1 AND server_id = $2`,
      [requestId, serverId, nowIso(), result, message, details === undefined ? null : JSON.stringify(details)],
    );
  }

  /** See ComputeStore.recordAction. */
  async recordAction(a: InstanceActionRecord): Promise<void> {
    await this.pool.query(`INSERT INTO instance_actions (${ACTION_COLUMNS.join(', ')}) VALUES (${ACTION_COLUMNS.map((_, i) => `$${i + 1}`).join(', ')})`, [
      a.requestId,
      a.serverId,
      a.action,
      a.event,
      a.userId,
      a.projectId,
      a.startTime,
      a.finishTime,
      a.result,
      a.message,
      JSON.stringify(a.details),
    ]);
  }

  /** See ComputeStore.listActions. Throws errors.markerNotFound for a marker not in the listing. */
  async listActions(serverId: string, page?: PageQuery): Promise<InstanceActionRecord[]> {
    if (!page) return (await this.rows('SELECT * FROM instance_actions WHERE server_id = $1 ORDER BY request_id DESC', [serverId])).map(toAction);
    if (page.marker === undefined) {
      return (await this.rows('SELECT * FROM instance_actions WHERE server_id = $1 ORDER BY request_id DESC LIMIT $2', [serverId, page.limit])).map(toAction);
    }
    if ((await this.rows('SELECT 1 FROM instance_actions WHERE server_id = $1 AND request_id = $2', [serverId, page.marker])).length === 0) {
      throw errors.markerNotFound(page.marker);
    }
    const sql = 'SELECT * FROM instance_actions WHERE server_id = $1 AND request_id < $2 ORDER BY request_id DESC LIMIT $3';
    return (await this.rows(sql, [serverId, page.marker, page.limit])).map(toAction);
  }

  /** See ComputeStore.listUnfinishedActions. */
  async listUnfinishedActions(action: string): Promise<InstanceActionRecord[]> {
    return (await this.rows('SELECT * FROM instance_actions WHERE action = $1 AND finish_time IS NULL ORDER BY request_id', [action])).map(toAction);
  }

  /** See ComputeStore.getAction. */
  async getAction(serverId: string, requestId: string): Promise<InstanceActionRecord | undefined> {
    const [r] = await this.rows('SELECT * FROM instance_actions WHERE server_id = $1 AND request_id = $2', [serverId, requestId]);
    return r ? toAction(r) : undefined;
  }

  /** See ComputeStore.putToken. Throws `pg`'s unique violation when the hash is stored already. */
  async putToken(t: TokenRecord): Promise<void> {
    await this.pool.query('INSERT INTO tokens (hash, user_id, project_id, roles, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)', [
      t.hash,
      t.userId,
      t.projectId,
      t.roles.join(','),
      t.createdAt,
      t.expiresAt,
    ]);
  }

  /** See ComputeStore.getToken. */
  async getToken(hash: string): Promise<TokenRecord | undefined> {
    const [r] = await this.rows('SELECT * FROM tokens WHERE hash = $1', [hash]);
    return r ? toToken(r) : undefined;
  }

  /** See ComputeStore.listTokens. */
  async listTokens(filter: { userId?: string; projectId?: string } = {}): Promise<TokenRecord[]> {
    const sql = 'SELECT * FROM tokens WHERE ($1::text IS NULL OR user_id = $1) AND ($2::text IS NULL OR project_id = $2) ORDER BY created_at, hash';
    return (await this.rows(sql, [filter.userId ?? null, filter.projectId ?? null])).map(toToken);
  }

  /** See ComputeStore.deleteToken. */
  async deleteToken(hash: string): Promise<boolean> {
    return (await this.count('DELETE FROM tokens WHERE hash = $1', [hash])) === 1;
  }

  /** See ComputeStore.deleteExpiredTokens. */
  async deleteExpiredTokens(now: Date = new Date()): Promise<number> {
    return this.count('DELETE FROM tokens WHERE expires_at <= $1', [now.toISOString()]);
  }

  // ---- compute services (G) ----

  /** See ComputeStore.serviceHeartbeat (one upsert: concurrent first heartbeats make one row). */
  async serviceHeartbeat(host: string, binary: string, topic: string, now: Date = new Date()): Promise<ServiceRecord> {
    const at = now.toISOString();
    const [r] = await this.rows(
      `INSERT INTO services (host, "binary", topic, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
       ON CONFLICT (host, "binary") DO UPDATE SET updated_at = excluded.updated_at, topic = excluded.topic RETURNING *`,
      [host, binary, topic, at],
    );
    return serviceFromRow(r!);
  }

  /** See ComputeStore.listServices. */
  async listServices(filter: { host?: string; binary?: string } = {}): Promise<ServiceRecord[]> {
    const sql = 'SELECT * FROM services WHERE ($1::text IS NULL OR host = $1) AND ($2::text IS NULL OR "binary" = $2) ORDER BY id';
    return (await this.rows(sql, [filter.host ?? null, filter.binary ?? null])).map(serviceFromRow);
  }

  /** See ComputeStore.setServiceDisabled. */
  async setServiceDisabled(host: string, binary: string, disabled: boolean, reason: string | null): Promise<boolean> {
    const sql = 'UPDATE services SET disabled = $3, disabled_reason = $4 WHERE host = $1 AND "binary" = $2';
    return (await this.count(sql, [host, binary, disabled ? 1 : 0, disabled ? reason : null])) > 0;
  }

  /** See ComputeStore.deleteService. */
  async deleteService(id: number): Promise<boolean> {
    return (await this.count('DELETE FROM services WHERE id = $1', [id])) > 0;
  }

  // ---- extend leases (G) ----

  /**
   * See VolumeStore.claimExtend. One statement: the volume must be extending; an existing lease
   * is taken only if it is ours or expired at `now`. Concurrent claims of a free lease queue on
   * the primary key's insertion; each after the first re-checks the condition against the
   * committed lease, so exactly one wins.
   */
  async claimExtend(volumeId: string, owner: string, ttlMs: number, now: Date = new Date()): Promise<boolean> {
    const [r] = await this.rows(
      `INSERT INTO extend_leases (volume_id, owner, expires_at)
         SELECT id, $2, $3 FROM volumes WHERE id = $1 AND status = 'extending'
       ON CONFLICT (volume_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
         WHERE extend_leases.owner = excluded.owner OR extend_leases.expires_at <= $4
       RETURNING owner`,
      [volumeId, owner, new Date(now.getTime() + ttlMs).toISOString(), now.toISOString()],
    );
    return r?.owner === owner;
  }

  /** See VolumeStore.renewExtendLeases (volume ids sorted as SqliteStore sorts them). */
  async renewExtendLeases(owner: string, ttlMs: number, now: Date = new Date()): Promise<string[]> {
    const rows = await this.rows('UPDATE extend_leases SET expires_at = $2 WHERE owner = $1 AND expires_at > $3 RETURNING volume_id', [
      owner,
      new Date(now.getTime() + ttlMs).toISOString(),
      now.toISOString(),
    ]);
    return rows.map((r) => r.volume_id as string).sort();
  }

  /** See VolumeStore.releaseExtend. */
  async releaseExtend(volumeId: string, owner: string): Promise<void> {
    await this.pool.query('DELETE FROM extend_leases WHERE volume_id = $1 AND owner = $2', [volumeId, owner]);
  }

  /**
   * See VolumeStore.listClaimableExtends. `FOR NO KEY UPDATE OF v SKIP LOCKED`: a volume whose row
   * another transaction is changing at this moment (a conditional update: its extend may be ending)
   * is left to the next look rather than waited for; the weaker lock does not hold up the
   * foreign-key check of a claim. The listing hands out nothing (its locks end with the
   * statement): `claimExtend` alone decides who drives an extend.
   */
  async listClaimableExtends(now: Date = new Date(), limit = 1000): Promise<string[]> {
    const rows = await this.rows(
      `SELECT v.id FROM volumes v LEFT JOIN extend_leases l ON l.volume_id = v.id
       WHERE v.status = 'extending' AND (l.volume_id IS NULL OR l.expires_at <= $1)
       ORDER BY v.created_at, v.id LIMIT $2 FOR NO KEY UPDATE OF v SKIP LOCKED`,
      [now.toISOString(), limit],
    );
    return rows.map((r) => r.id as string);
  }

  // ---- volumes ----

  /** See VolumeStore.createVolume. Throws `pg`'s unique violation for an id that is taken. */
  async createVolume(v: Omit<VolumeRecord, 'createdAt' | 'updatedAt' | 'version'>, secret: { encryptionKey?: string } = {}): Promise<void> {
    const now = nowIso();
    await this.pool.query(
      `INSERT INTO volumes (id, project_id, name, size_bytes, status, backend, format, server_id, server_project_id, device, extend, created_at, updated_at, user_id, description, metadata, attached_at, encryption, payload_offset, encryption_key)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14, $15, $16, $17, $18, $19)`,
      [
        v.id,
        v.projectId,
        v.name,
        v.sizeBytes,
        v.status,
        v.backend,
        v.format,
        v.serverId,
        v.serverProjectId,
        v.device,
        volumeValue('extend', v.extend),
        now,
        v.userId ?? null,
        v.description ?? null,
        volumeValue('metadata', v.metadata),
        v.attachedAt ?? null,
        v.encryption ?? null,
        v.payloadOffset ?? null,
        secret.encryptionKey ?? null,
      ],
    );
  }

  /** See VolumeStore.getVolumeEncryptionKey. */
  async getVolumeEncryptionKey(id: string): Promise<string | undefined> {
    const [r] = await this.rows('SELECT encryption_key FROM volumes WHERE id = $1', [id]);
    return (r?.encryption_key as string | null | undefined) ?? undefined;
  }

  /** See VolumeStore.getVolume. */
  async getVolume(id: string): Promise<VolumeRecord | undefined> {
    const [r] = await this.rows('SELECT * FROM volumes WHERE id = $1', [id]);
    return r ? toVolume(r) : undefined;
  }

  /** See VolumeStore.listVolumes. Throws errors.markerNotFound for a marker not in the listing. */
  async countVolumesByStatus(): Promise<Partial<Record<VolumeStatus, number>>> {
    // COUNT is a bigint, which pg answers as a string.
    const rows = await this.rows('SELECT status, COUNT(*)::int AS n FROM volumes GROUP BY status');
    return Object.fromEntries(rows.map((r) => [r.status as VolumeStatus, r.n as number]));
  }

  async listVolumes(filter: { projectId?: string; status?: VolumeStatus; name?: string } = {}, page?: PageQuery): Promise<VolumeRecord[]> {
    const params: unknown[] = [];
    const where: string[] = [];
    for (const [col, value] of [
      ['project_id', filter.projectId],
      ['status', filter.status],
      ['name', filter.name],
    ] as const) {
      if (value === undefined) continue;
      params.push(value);
      where.push(`${col} = $${params.length}`);
    }
    if (page?.marker !== undefined) {
      // The marker must be in this listing: another project's volume id is "not found" too.
      const scope = where.length ? ` AND ${where.join(' AND ')}` : '';
      const [m] = await this.rows(`SELECT created_at FROM volumes WHERE id = $${params.length + 1}${scope}`, [...params, page.marker]);
      if (!m) throw errors.markerNotFound(page.marker);
      params.push(m.created_at, page.marker);
      where.push(`(created_at, id) > ($${params.length - 1}, $${params.length})`);
    }
    let sql = `SELECT * FROM volumes${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at, id`;
    if (page) {
      params.push(page.limit);
      sql += ` LIMIT $${params.length}`;
    }
    return (await this.rows(sql, params)).map(toVolume);
  }

  /** See VolumeStore.updateVolume: one UPDATE whose WHERE is the guard. Throws `Error` for a patch field that is not a column. */
  async updateVolume(
    id: string,
    guard: readonly VolumeStatus[] | VolumeGuard,
    patch: Partial<Omit<VolumeRecord, 'id' | 'createdAt' | 'updatedAt' | 'version'>>,
  ): Promise<boolean> {
    const g: VolumeGuard = isStatusList(guard) ? { status: guard } : guard;
    const params: unknown[] = [id, nowIso()];
    const p = (value: unknown) => (params.push(value), `$${params.length}`);
    const sets: string[] = ['updated_at = $2', 'version = version + 1'];
    for (const [key, value] of Object.entries(patch)) {
      const col = VOLUME_COLUMNS[key];
      if (!col) throw new Error(`updateVolume: unknown field ${key}`);
      sets.push(`${col} = ${p(volumeValue(key, value))}`);
    }
    const where = ['id = $1'];
    if (g.status) {
      if (g.status.length === 0) return false;
      where.push(`status = ANY(${p([...g.status])}::text[])`);
    }
    if (g.version !== undefined) where.push(`version = ${p(g.version)}`);
    if (g.attached !== undefined) where.push(g.attached ? 'server_id IS NOT NULL' : 'server_id IS NULL');
    if (g.sizeBelow !== undefined) where.push(`size_bytes < ${p(g.sizeBelow)}`);
    if (g.extendRequestId !== undefined) where.push(`(extend::jsonb ->> 'requestId') = ${p(g.extendRequestId)}`);
    return (await this.count(`UPDATE volumes SET ${sets.join(', ')} WHERE ${where.join(' AND ')}`, params)) === 1;
  }

  /** See VolumeStore.deleteVolume (its lease goes with it). */
  async deleteVolume(id: string): Promise<void> {
    await this.pool.query('DELETE FROM volumes WHERE id = $1', [id]);
  }

  /** See VolumeStore.startVolumeAction. */
  async startVolumeAction(a: Omit<VolumeActionRecord, 'finishTime' | 'result'>): Promise<void> {
    await this.pool.query(
      `INSERT INTO volume_actions (request_id, volume_id, action, user_id, project_id, start_time, message, compute_request_ids, details)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
      [a.requestId, a.volumeId, a.action, a.userId, a.projectId, a.startTime, a.message, JSON.stringify(a.computeRequestIds), JSON.stringify(a.details)],
    );
  }

  /** See VolumeStore.noteVolumeAction: read and rewrite under the row's lock (two processes noting at once both land). */
  async noteVolumeAction(requestId: string, volumeId: string, computeRequestIds: string[], details: Record<string, unknown> = {}): Promise<void> {
    await inTransaction(this.pool, async (c) => {
      const row = (await c.query('SELECT * FROM volume_actions WHERE request_id = $1 AND volume_id = $2 FOR UPDATE', [requestId, volumeId])).rows[0] as Row | undefined;
      if (!row) return;
      const cur = toVolumeAction(row);
      await c.query('UPDATE volume_actions SET compute_request_ids = $3, details = $4 WHERE request_id = $1 AND volume_id = $2', [
        requestId,
        volumeId,
        JSON.stringify([...cur.computeRequestIds, ...computeRequestIds]),
        JSON.stringify({ ...cur.details, ...details }),
      ]);
    });
  }

  /** See VolumeStore.finishVolumeAction. */
  async finishVolumeAction(requestId: string, volumeId: string, result: ActionResult, message: string | null): Promise<void> {
    await this.pool.query('UPDATE volume_actions SET finish_time = $3, result = $4, message = $5 WHERE request_id = $1 AND volume_id = $2', [
      requestId,
      volumeId,
      nowIso(),
      result,
      message,
    ]);
  }

  /** See VolumeStore.putFsGrowth. */
  async putFsGrowth(r: FsGrowthRecord, opts: { onlyIfAbsent?: boolean } = {}): Promise<void> {
    const updates = opts.onlyIfAbsent ? 'NOTHING' : `UPDATE SET ${FS_GROWTH_COLUMNS.slice(2).map((c) => `${c} = excluded.${c}`).join(', ')}`;
    await this.pool.query(
      `INSERT INTO volume_fs_growths (${FS_GROWTH_COLUMNS.join(', ')}) VALUES (${FS_GROWTH_COLUMNS.map((_, i) => `$${i + 1}`).join(', ')})
       ON CONFLICT (volume_id, request_id) DO ${updates}`,
      fsGrowthValues(r),
    );
  }

  /** See VolumeStore.getFsGrowth. */
  async getFsGrowth(volumeId: string, requestId: string): Promise<FsGrowthRecord | undefined> {
    const r = (await this.rows('SELECT * FROM volume_fs_growths WHERE volume_id = $1 AND request_id = $2', [volumeId, requestId]))[0];
    return r ? toFsGrowth(r) : undefined;
  }

  /** See VolumeStore.latestFsGrowths. */
  async latestFsGrowths(volumeIds: readonly string[]): Promise<Map<string, FsGrowthRecord>> {
    const out = new Map<string, FsGrowthRecord>();
    if (volumeIds.length === 0) return out;
    const rows = await this.rows(
      `SELECT DISTINCT ON (volume_id) * FROM volume_fs_growths WHERE volume_id = ANY($1::text[]) ORDER BY volume_id, requested_at DESC, request_id DESC`,
      [[...volumeIds]],
    );
    for (const r of rows) out.set(r.volume_id as string, toFsGrowth(r));
    return out;
  }

  /** See VolumeStore.listVolumeActions. Throws errors.markerNotFound for a marker not in the listing. */
  async listVolumeActions(volumeId: string, page?: PageQuery): Promise<VolumeActionRecord[]> {
    if (!page) return (await this.rows('SELECT * FROM volume_actions WHERE volume_id = $1 ORDER BY request_id DESC', [volumeId])).map(toVolumeAction);
    if (page.marker === undefined) {
      return (await this.rows('SELECT * FROM volume_actions WHERE volume_id = $1 ORDER BY request_id DESC LIMIT $2', [volumeId, page.limit])).map(toVolumeAction);
    }
    if ((await this.rows('SELECT 1 FROM volume_actions WHERE volume_id = $1 AND request_id = $2', [volumeId, page.marker])).length === 0) {
      throw errors.markerNotFound(page.marker);
    }
    const sql = 'SELECT * FROM volume_actions WHERE volume_id = $1 AND request_id < $2 ORDER BY request_id DESC LIMIT $3';
    return (await this.rows(sql, [volumeId, page.marker, page.limit])).map(toVolumeAction);
  }

  /** Close the pool (waits for queries under way). */
  async close(): Promise<void> {
    await this.pool.end();
  }
}

function serviceFromRow(r: Row): ServiceRecord {
  return {
    id: r.id as number,
    host: r.host as string,
    binary: r.binary as string,
    topic: r.topic as string,
    disabled: r.disabled === 1,
    disabledReason: (r.disabled_reason as string | null) ?? null,
    createdAt: r.created_at as string,
    updatedAt: r.updated_at as string,
  };
}
