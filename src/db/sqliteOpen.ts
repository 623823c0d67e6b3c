/**
 * Opening an SQLite database file for the store: private file modes, WAL, pragmas, migrations by
 * `PRAGMA user_version`, and the database's identity (schema 5 on).
 */
import Database from 'better-sqlite3';
import { chmodSync, closeSync, existsSync, lstatSync, mkdirSync, openSync, readlinkSync, readSync, statSync, type Stats } from 'node:fs';
import { dirname } from 'node:path';
import { MIGRATIONS } from './migrations.js';

/**
 * Bring `db` to the newest schema this build knows, one transaction per migration. Returns the
 * schema version reached (`MIGRATIONS.length`). Throws `Error` when the database's schema is newer
 * than this build knows: running old statements against it could damage it.
 */
export function migrate(db: Database.Database): number {
  const current = db.pragma('user_version', { simple: true }) as number;
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

/**
 * Open (creating it 0600, its directory 0700) and migrate the database at `path` (`:memory:` for
 * a private in-memory one). WAL, `synchronous = NORMAL`, foreign keys on, 5 s busy timeout.
 * Throws what `migrate` throws, and better-sqlite3's errors for a file that is not a database;
 * an Error, changing nothing, for a file of something else or another program's SQLite database.
 */
export function openSqlite(path: string): Database.Database {
  return openSqliteFile(path).db;
}

/**
 * `openSqlite`, also answering which of the database's files (it, its -wal, its -shm) had a wider
 * mode and were narrowed to DB_FILE_MODE: a command that reports what it changed names them.
 */
export function openSqliteFile(path: string): { db: Database.Database; narrowed: string[] } {
  const narrowed: string[] = [];
  if (path !== ':memory:') {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    // A symlink whose target is gone (a database moved away, a disk not mounted): creating the
    // database would make a new, empty one wherever the link points, outside the data dir.
    refuseDanglingLink(path);
    // SQLite creates a database 0644, and its -wal/-shm files with the database file's mode:
    // create the file 0600 first, and fix files an older version made.
    if (!existsSync(path)) closeSync(openSync(path, 'a', DB_FILE_MODE));
    // Someone's other file or database (a typo in a sqlite:/// URL) is refused before its mode is changed.
    refuseNonDatabase(path);
    for (const f of [path, `${path}-wal`, `${path}-shm`]) {
      // Regular files only: a database path naming a directory (`/`, by a malformed URL) must never have its mode changed.
      const st = statIfAny(f);
      if (st === undefined) continue;
      if (!st.isFile()) throw new Error(`the database path ${f} is not a regular file`);
      if ((st.mode & 0o7777) === DB_FILE_MODE) continue;
      chmodSync(f, DB_FILE_MODE);
      narrowed.push(f);
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
  return { db, narrowed };
}

/** The first 16 bytes of every SQLite 3 database file (sqlite.org/fileformat.html, 1.3). */
const SQLITE_HEADER = Buffer.from('SQLite format 3\0', 'latin1');

/**
 * What is at `path`, read without changing it: nothing, not a regular file, an empty file (a
 * database not yet written: SQLite's own view), an SQLite database (its header), or a file of
 * something else. A symlink is followed.
 */
export function sqliteFileKind(path: string): 'missing' | 'not-a-file' | 'empty' | 'sqlite' | 'other' {
  const st = statIfAny(path);
  if (st === undefined) return 'missing';
  if (!st.isFile()) return 'not-a-file';
  if (st.size === 0) return 'empty';
  const head = Buffer.alloc(SQLITE_HEADER.length);
  const fd = openSync(path, 'r');
  try {
    readSync(fd, head, 0, head.length, 0);
  } finally {
    closeSync(fd);
  }
  return head.equals(SQLITE_HEADER) ? 'sqlite' : 'other';
}

/** Tables every online-extend database has had since its first schema (migrations.ts). */
const OUR_TABLES = ['servers', 'volumes', 'tokens'];

/**
 * Whose tables the SQLite database at `path` holds, read without writing to it: ours (OUR_TABLES), another
 * program's (tables, not all of ours), none yet, or unreadable (damaged: the checks that open it
 * say so in their own words).
 */
export function databaseOwner(path: string): 'ours' | 'another program' | 'no tables' | 'unreadable' {
  try {
    // Not `readonly`: a read-only connection to a WAL database makes its -wal and -shm files and
    // leaves them (it cannot checkpoint), so a check would leave files behind it, ours then
    // narrowed and reported as such. The last read-write connection removes them on close (SQLite
    // opens a write-protected file read-only by itself); this one only reads.
    const db = new Database(path, { fileMustExist: true });
    try {
      const tables = new Set((db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as Array<{ name: string }>).map((t) => t.name));
      if (OUR_TABLES.every((t) => tables.has(t))) return 'ours';
      return tables.size > 0 ? 'another program' : 'no tables';
    } finally {
      db.close();
    }
  } catch {
    return 'unreadable';
  }
}

/**
 * Throws, changing nothing, when `path` is a file of something other than an SQLite database, or
 * another program's SQLite database (a `sqlite:///` URL naming its file): migrating would write
 * our schema into it and turn WAL on. Not a regular file: thrown by the caller.
 */
function refuseNonDatabase(path: string): void {
  const kind = sqliteFileKind(path);
  if (kind === 'other') throw new Error(`the database path ${path} is not an SQLite database (nothing changed)`);
  if (kind === 'sqlite' && databaseOwner(path) === 'another program') {
    throw new Error(`the database path ${path} is an SQLite database of another program (none of online-extend's tables; nothing changed)`);
  }
}

/** An Error, changing nothing, when `path` is a symlink to nothing (its target missing, or a loop of links). */
function refuseDanglingLink(path: string): void {
  let link: Stats;
  try {
    link = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!link.isSymbolicLink()) return;
  try {
    statSync(path);
    return;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ELOOP') throw err;
  }
  throw new Error(
    `the database path ${path} is a symlink to ${readlinkSync(path)}, which does not exist: ` +
      `put the database back where the link points (a disk not mounted?), or remove the link to start a new one (nothing changed)`,
  );
}

/** `stat` of `path` (a symlink followed, as chmod follows it), or undefined when there is nothing there. */
function statIfAny(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
