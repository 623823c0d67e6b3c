/**
 * SqliteUserStore: the embedded Keystone's users and token auth records (UserStore) on the
 * store's SQLite database (schema 6 on). Single autocommitted statements, as the tokens are: a
 * user write decides the caller's answer at once, so it does not wait for the write queue.
 */
import type Database from 'better-sqlite3';
import type { TokenAuthRecord, UserRecord, UserStore } from './store.js';
import type { Row } from './rows.js';

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

/** UserStore on `db` (the SqliteStore's own handle, `store.db`); see the module comment. */
export class SqliteUserStore implements UserStore {
  private readonly stmt;

  constructor(db: Database.Database) {
    this.stmt = {
      create: db.prepare(
        `INSERT INTO users (id, name, project_id, roles, password_hash, created_at, updated_at)
         VALUES (@id, @name, @projectId, @roles, @passwordHash, @createdAt, @updatedAt)`,
      ),
      update: db.prepare('UPDATE users SET project_id = @projectId, roles = @roles, password_hash = @passwordHash, updated_at = @updatedAt WHERE id = @id'),
      byName: db.prepare('SELECT * FROM users WHERE name = ?'),
      byId: db.prepare('SELECT * FROM users WHERE id = ?'),
      list: db.prepare('SELECT * FROM users ORDER BY name'),
      delete: db.prepare('DELETE FROM users WHERE id = ?'),
      putAuth: db.prepare('INSERT OR REPLACE INTO token_auth (hash, methods, audit_ids) VALUES (?, ?, ?)'),
      getAuth: db.prepare('SELECT * FROM token_auth WHERE hash = ?'),
    };
  }

  async createUser(user: UserRecord): Promise<void> {
    this.stmt.create.run({ ...user, roles: user.roles.join(',') });
  }

  async updateUser(user: Pick<UserRecord, 'id' | 'projectId' | 'roles' | 'passwordHash' | 'updatedAt'>): Promise<boolean> {
    return this.stmt.update.run({ ...user, roles: user.roles.join(',') }).changes === 1;
  }

  async getUserByName(name: string): Promise<UserRecord | undefined> {
    const r = this.stmt.byName.get(name) as Row | undefined;
    return r ? toUser(r) : undefined;
  }

  async getUserById(id: string): Promise<UserRecord | undefined> {
    const r = this.stmt.byId.get(id) as Row | undefined;
    return r ? toUser(r) : undefined;
  }

  async listUsers(): Promise<UserRecord[]> {
    return (this.stmt.list.all() as Row[]).map(toUser);
  }

  async deleteUser(id: string): Promise<boolean> {
    return this.stmt.delete.run(id).changes === 1;
  }

  async putTokenAuth(auth: TokenAuthRecord): Promise<void> {
    this.stmt.putAuth.run(auth.hash, JSON.stringify(auth.methods), JSON.stringify(auth.auditIds));
  }

  async getTokenAuth(hash: string): Promise<TokenAuthRecord | undefined> {
    const r = this.stmt.getAuth.get(hash) as Row | undefined;
    return r ? { hash, methods: JSON.parse(r.methods as string) as string[], auditIds: JSON.parse(r.audit_ids as string) as string[] } : undefined;
  }
}
