/**
 * PgUserStore: the embedded Keystone's users and token auth records (UserStore) on the
 * PostgreSQL store's pool. Single autocommitted statements, as SqliteUserStore's.
 */
import type pg from 'pg';
import type { TokenAuthRecord, UserRecord, UserStore } from '../store.js';
import type { Row } from '../rows.js';

function toUser(r: Row): UserRecord {
  return {
    id: r.id as string,
    name: r.name as string,
    projectId: r.project_id as string,
    roles: (r.roles as string).split(',').filter(Boolean),
    passwordHash: r.password_hash as string,
    createdAt: r.created_at as string,
    updatedAt: r.updated_at as string,
  };
}

/** UserStore on `pool` (the PgStore's own, `store.pool`); see the module comment. */
export class PgUserStore implements UserStore {
  constructor(private readonly pool: pg.Pool) {}

  /** See UserStore.createUser: `pg`'s unique violation (an Error) when the name or id is taken. */
  async createUser(user: UserRecord): Promise<void> {
    await this.pool.query(
      'INSERT INTO users (id, name, project_id, roles, password_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)',
      [user.id, user.name, user.projectId, user.roles.join(','), user.passwordHash, user.createdAt, user.updatedAt],
    );
  }

  /** See UserStore.updateUser. */
  async updateUser(user: Pick<UserRecord, 'id' | 'projectId' | 'roles' | 'passwordHash' | 'updatedAt'>): Promise<boolean> {
    const res = await this.pool.query('UPDATE users SET project_id = $2, roles = $3, password_hash = $4, updated_at = $5 WHERE id = $1', [
      user.id,
      user.projectId,
      user.roles.join(','),
      user.passwordHash,
      user.updatedAt,
    ]);
    return res.rowCount === 1;
  }

  /** See UserStore.getUserByName. */
  async getUserByName(name: string): Promise<UserRecord | undefined> {
    const r = (await this.pool.query('SELECT * FROM users WHERE name = $1', [name])).rows[0] as Row | undefined;
    return r ? toUser(r) : undefined;
  }

  /** See UserStore.getUserById. */
  async getUserById(id: string): Promise<UserRecord | undefined> {
    const r = (await this.pool.query('SELECT * FROM users WHERE id = $1', [id])).rows[0] as Row | undefined;
    return r ? toUser(r) : undefined;
  }

  /** See UserStore.listUsers. */
  async listUsers(): Promise<UserRecord[]> {
    return ((await this.pool.query('SELECT * FROM users ORDER BY name')).rows as Row[]).map(toUser);
  }

  /** See UserStore.deleteUser. */
  async deleteUser(id: string): Promise<boolean> {
    return (await this.pool.query('DELETE FROM users WHERE id = $1', [id])).rowCount === 1;
  }

  /** See UserStore.putTokenAuth (replaces an earlier record of the same token). */
  async putTokenAuth(auth: TokenAuthRecord): Promise<void> {
    await this.pool.query(
      'INSERT INTO token_auth (hash, methods, audit_ids) VALUES ($1, $2, $3) ON CONFLICT (hash) DO UPDATE SET methods = excluded.methods, audit_ids = excluded.audit_ids',
      [auth.hash, JSON.stringify(auth.methods), JSON.stringify(auth.auditIds)],
    );
  }

  /** See UserStore.getTokenAuth. */
  async getTokenAuth(hash: string): Promise<TokenAuthRecord | undefined> {
    const r = (await this.pool.query('SELECT * FROM token_auth WHERE hash = $1', [hash])).rows[0] as Row | undefined;
    return r ? { hash, methods: JSON.parse(r.methods as string) as string[], auditIds: JSON.parse(r.audit_ids as string) as string[] } : undefined;
  }
}
