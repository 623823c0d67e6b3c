/**
 * The data directory (`--data-dir`): what is in it, who may use it, and whether it is sound.
 *
 *   DATA_DIR/
 *     online-extend.sqlite[-wal,-shm]  the database (SqliteStore)
 *     data-dir.json                    marker: written once the database first holds a schema;
 *                                      records the database's identity (`databaseId`)
 *     serve.lock, serve.pid            held by the one `serve` using this directory
 *     service-token.json               the volume service's current token for the compute API
 *     fake-hypervisor.json             the fake driver's state
 *     volumes/<backend>/…              the volumes' backing files
 *
 * Three guarantees, checked before the service touches anything (`openDataDir`):
 *  - one `serve` per data dir: an OS lock (fcntl, through SQLite) that the kernel drops when the
 *    holder dies, so a restart right after `kill -9` works at once;
 *  - a database that is missing, empty, damaged or from a newer build is never used as if it
 *    were a fresh one while the directory shows it was in use (volume files, fake hypervisor
 *    state, the marker): the service refuses to start and says what it found;
 *  - the database belongs to the data dir: each database has a random identity (made with its
 *    schema) that the marker records, so a fresh or foreign database swapped in is refused; and
 *    the serving process refuses volume files the database does not know (rows deleted, an older
 *    backup restored) unless told to start anyway (`--allow-orphan-volumes`);
 *  - everything in it is private: directories 0700, files 0600 (guest data and credentials),
 *    including files an older version left behind.
 *
 * Errors here are for the operator starting the service (they name paths); they never reach an
 * API client.
 */
import Database from 'better-sqlite3';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, writePrivateFile } from '../util/privateFile.js';
import { MIGRATIONS } from './migrations.js';
import { databaseIdOf, ensureDatabaseId, SqliteStore } from './sqlite.js';

export const DB_FILE = 'online-extend.sqlite';
export const MARKER_FILE = 'data-dir.json';
export const LOCK_FILE = 'serve.lock';
export const PID_FILE = 'serve.pid';
export const SERVICE_TOKEN_FILE = 'service-token.json';
export const FAKE_STATE_FILE = 'fake-hypervisor.json';
export const VOLUMES_DIR = 'volumes';

export const DIR_MODE = PRIVATE_DIR_MODE;
export const FILE_MODE = PRIVATE_FILE_MODE;

export type DataDirErrorCode =
  /** Another process holds the data dir's lock. */
  | 'DataDirLocked'
  /** The database is missing or empty while the data dir shows it was in use. */
  | 'DatabaseMissing'
  /** The database fails SQLite's integrity check or is not a database. */
  | 'DatabaseCorrupt'
  /** The database's schema is newer than this build knows. */
  | 'SchemaTooNew'
  /** The marker is there but cannot be read, so the database's identity cannot be checked. */
  | 'MarkerUnreadable'
  /** The database is not the one the marker records (a fresh or foreign database swapped in). */
  | 'DatabaseMismatch'
  /** Volume files whose volume the database does not know. */
  | 'OrphanVolumes';

/** A refusal to use a data dir. `message` says what was found and what to do. */
export class DataDirError extends Error {
  constructor(
    readonly code: DataDirErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'DataDirError';
  }
}

export function dbPath(dir: string): string {
  return join(dir, DB_FILE);
}

// ---- the lock -------------------------------------------------------------------------------

export interface DataDirLock {
  /** This process's pid, as recorded in `serve.pid`. */
  readonly pid: number;
  /** Give the data dir up (idempotent). The kernel also drops the lock if the process dies. */
  release(): void;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readPid(dir: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(dir, PID_FILE), 'utf8').trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Take the data dir for this process, or throw DataDirError `DataDirLocked` naming the holder's pid.
 *
 * The lock is SQLite's own file lock (POSIX fcntl) on `serve.lock`, held for the life of the
 * process by an exclusive-mode connection with an open exclusive transaction: the kernel releases
 * it when the process ends, however it ends, so there is no staleness to guess. A second
 * connection in the same process is refused too (SQLite tracks its locks per file across
 * connections). `token create` and other CLI commands use the database itself, which this lock
 * does not cover, so they keep working while `serve` runs.
 *
 * NOTE: the lock file must never be opened and closed through `fs` in the holding process: closing
 * any descriptor of a file drops the process's fcntl locks on it. Only `chmod` by path is used.
 */
export function lockDataDir(dir: string): DataDirLock {
  mkdirSync(dir, { recursive: true, mode: DIR_MODE });
  const lockPath = join(dir, LOCK_FILE);
  const db = new Database(lockPath, { timeout: 0 });
  chmodSync(lockPath, FILE_MODE);
  try {
    // No journal file: nothing is ever written to the lock's database.
    db.pragma('journal_mode = MEMORY');
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code !== 'SQLITE_BUSY') throw err;
    // The holder writes its pid right after taking the lock: if the file still names a dead
    // process, give the new holder a moment to write its own.
    let pid = readPid(dir);
    for (let i = 0; i < 25 && (pid === undefined || !isAlive(pid)); i++) {
      sleepSync(20);
      pid = readPid(dir);
    }
    const who = pid === undefined ? 'another process' : `process ${pid}`;
    throw new DataDirError(
      'DataDirLocked',
      `the data dir ${dir} is in use by ${who} (an online-extend serve): only one serve may use a data dir. ` +
        `Stop that one first, or give this one another --data-dir.`,
      { dataDir: dir, ...(pid === undefined ? {} : { pid }) },
    );
  }
  writePrivateFile(join(dir, PID_FILE), `${process.pid}\n`);
  let held = true;
  return {
    pid: process.pid,
    release() {
      if (!held) return;
      held = false;
      if (readPid(dir) === process.pid) rmSync(join(dir, PID_FILE), { force: true });
      db.exec('ROLLBACK');
      db.close();
    },
  };
}

// ---- file modes -----------------------------------------------------------------------------

/**
 * Make the tree under `dir` private: directories 0700, regular files 0600 (symlinks are neither
 * followed nor changed). Fixes what an older version, or a subprocess under a wider umask, made.
 * Returns the paths whose mode was changed.
 */
export function secureDataDir(dir: string): string[] {
  const changed: string[] = [];
  const visit = (path: string): void => {
    let st;
    try {
      st = lstatSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // gone meanwhile
      throw err;
    }
    const want = st.isDirectory() ? DIR_MODE : st.isFile() ? FILE_MODE : undefined;
    if (want === undefined) return;
    if ((st.mode & 0o7777) !== want) {
      chmodSync(path, want);
      changed.push(path);
    }
    if (st.isDirectory()) for (const name of readdirSync(path)) visit(join(path, name));
  };
  visit(dir);
  return changed;
}

// ---- soundness ------------------------------------------------------------------------------

export type DatabaseState =
  | { state: 'missing' }
  | { state: 'empty'; bytes: number }
  /** `databaseId`: the database's identity (schema 5 on), null where it has none. */
  | { state: 'ok'; schemaVersion: number; databaseId: string | null };

/**
 * What the database file holds, checked with `PRAGMA quick_check` (O(size), reads every page),
 * and its identity. Throws DataDirError `DatabaseCorrupt` or `SchemaTooNew`.
 */
export function inspectDatabase(path: string): DatabaseState {
  let bytes: number;
  try {
    bytes = statSync(path).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'missing' };
    throw err;
  }
  if (bytes === 0) return { state: 'empty', bytes };
  let version: number;
  let problems: string[];
  let databaseId: string | null = null;
  try {
    const db = new Database(path, { fileMustExist: true, timeout: 5000 });
    try {
      problems = (db.pragma('quick_check(20)') as Array<{ quick_check: string }>).map((r) => r.quick_check).filter((r) => r !== 'ok');
      version = db.pragma('user_version', { simple: true }) as number;
      if (problems.length === 0) databaseId = databaseIdOf(db) ?? null;
    } finally {
      db.close();
    }
  } catch (err) {
    const code = (err as { code?: string }).code ?? '';
    if (code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT_')) problems = [(err as Error).message];
    else throw err;
    version = -1;
  }
  if (problems.length > 0) {
    throw new DataDirError(
      'DatabaseCorrupt',
      `the database ${path} is damaged (SQLite quick_check: ${problems.slice(0, 3).join('; ')}). ` +
        `The service will not start on it. Stop everything using it, keep a copy, then restore it from a backup ` +
        `(or try \`sqlite3 ${path} .recover\` into a new file and move that into place).`,
      { path, problems },
    );
  }
  if (version > MIGRATIONS.length) {
    throw new DataDirError(
      'SchemaTooNew',
      `the database ${path} has schema version ${version}, newer than this build of online-extend knows (${MIGRATIONS.length}): ` +
        `it was written by a newer version. Run that version (or newer), or restore a backup made by this one.`,
      { path, schemaVersion: version, known: MIGRATIONS.length },
    );
  }
  return version === 0 ? { state: 'empty', bytes } : { state: 'ok', schemaVersion: version, databaseId };
}

/** What `data-dir.json` says. `databaseId` is absent in markers written before identities. */
export interface Marker {
  format: string;
  database: string;
  createdAt?: string;
  databaseId?: string;
}

/**
 * The data dir's marker, undefined if there is none. Throws DataDirError `MarkerUnreadable` when
 * it is there but not a marker: it may have named a database, and guessing could hide a swap.
 */
export function readMarker(dir: string): Marker | undefined {
  const path = join(dir, MARKER_FILE);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch {
    m = undefined;
  }
  const ok =
    typeof m === 'object' && m !== null && !Array.isArray(m) &&
    ['createdAt', 'databaseId'].every((k) => (m as Record<string, unknown>)[k] === undefined || typeof (m as Record<string, unknown>)[k] === 'string');
  if (!ok) {
    throw new DataDirError(
      'MarkerUnreadable',
      `the data dir's marker ${path} is not one online-extend wrote (expected a JSON object naming the database), ` +
        `so which database belongs to this data dir cannot be checked. Restore the marker from a backup of this data dir; ` +
        `or, if the database ${dbPath(dir)} is this data dir's own, remove the marker: the next start records that database ` +
        `(after checking that it knows every volume file here).`,
      { path },
    );
  }
  return { format: 'online-extend data dir', database: DB_FILE, ...(m as Partial<Marker>) };
}

function writeMarker(dir: string, m: Marker): void {
  writePrivateFile(join(dir, MARKER_FILE), `${JSON.stringify(m)}\n`);
}

/** Signs that a data dir was used before: each names what was found. */
export function traces(dir: string): string[] {
  const found: string[] = [];
  const marker = join(dir, MARKER_FILE);
  if (existsSync(marker)) {
    let since = '';
    try {
      const m = JSON.parse(readFileSync(marker, 'utf8')) as { createdAt?: unknown };
      if (typeof m.createdAt === 'string') since = ` (in use since ${m.createdAt})`;
    } catch {
      // an unreadable marker is still a marker
    }
    found.push(`the marker ${marker}${since}`);
  }
  const volumes = join(dir, VOLUMES_DIR);
  if (existsSync(volumes)) {
    for (const backend of readdirSync(volumes).sort()) {
      const sub = join(volumes, backend);
      if (!statSync(sub).isDirectory()) continue;
      // `*.tmp-*` are half-made files a crash during create leaves: not volumes.
      const files = readdirSync(sub).filter((f) => !f.includes('.tmp-'));
      if (files.length > 0) found.push(`${files.length} volume file(s) in ${sub}`);
    }
  }
  const fake = join(dir, FAKE_STATE_FILE);
  if (existsSync(fake)) found.push(`the fake hypervisor's state ${fake}`);
  return found;
}

// ---- volume files against the database ------------------------------------------------------

/** A volume's backing file: `volumes/<backend>/<volumeId>.raw|.qcow2`. */
export interface VolumeFile {
  backend: string;
  /** The file's name in its backend's directory. */
  name: string;
  volumeId: string;
}

/** `<volumeId>.raw` or `<volumeId>.qcow2`, the names every backend gives its files (volume/backends). */
const VOLUME_FILE = /^(.+)\.(raw|qcow2)$/;

/**
 * The volume files under `DATA_DIR/volumes/<backend>/` of every backend directory present
 * (enabled or not: a backend switched off still has its volumes in the database), sorted by
 * backend and name. Half-made files (`*.tmp-*`, what a crash during create leaves) and names no
 * backend makes are left out.
 */
export function volumeFiles(dir: string): VolumeFile[] {
  const root = join(dir, VOLUMES_DIR);
  const out: VolumeFile[] = [];
  let backends;
  try {
    backends = readdirSync(root, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
    throw err;
  }
  for (const b of backends) {
    if (!b.isDirectory()) continue;
    // withFileTypes: one getdents per directory, no stat per file (10,000 files in a few ms).
    for (const f of readdirSync(join(root, b.name), { withFileTypes: true })) {
      if (f.isDirectory() || f.name.includes('.tmp-')) continue;
      const m = VOLUME_FILE.exec(f.name);
      if (m) out.push({ backend: b.name, name: f.name, volumeId: m[1]! });
    }
  }
  // Directory order is the filesystem's: sorted, messages name the same files every time.
  return out.sort((x, y) => (x.backend === y.backend ? (x.name < y.name ? -1 : x.name > y.name ? 1 : 0) : x.backend < y.backend ? -1 : 1));
}

/** Statuses in which a volume's storage exists (created, not being deleted). */
const HAS_STORAGE = new Set(['available', 'attaching', 'in-use', 'detaching', 'extending', 'error_extending']);

/** What the start-up check of volume files against the database found. */
export interface VolumeCheck {
  /** Volume files found under `volumes/`. */
  files: number;
  /** Volumes the database knows. */
  volumes: number;
  /** Files whose volume the database does not know. */
  orphans: VolumeFile[];
  /** Volumes whose status says their storage exists, with no file under any backend (ids). */
  withoutFile: string[];
}

/** Compare the volume files with the volumes in the database at `path` (read only). */
export function checkVolumeFiles(dir: string, path: string): VolumeCheck {
  const files = volumeFiles(dir);
  const known = new Map<string, string>();
  if (existsSync(path) && statSync(path).size > 0) {
    const db = new Database(path, { fileMustExist: true, timeout: 5000 });
    try {
      const hasVolumes = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'volumes'").get() !== undefined;
      if (hasVolumes) for (const [id, status] of db.prepare('SELECT id, status FROM volumes').raw().all() as Array<[string, string]>) known.set(id, status);
    } finally {
      db.close();
    }
  }
  const withFile = new Set(files.map((f) => f.volumeId));
  const withoutFile: string[] = [];
  for (const [id, status] of known) if (HAS_STORAGE.has(status) && !withFile.has(id)) withoutFile.push(id);
  return { files: files.length, volumes: known.size, orphans: files.filter((f) => !known.has(f.volumeId)), withoutFile };
}

// ---- opening ----------------------------------------------------------------------------------

export interface OpenDataDirOptions {
  /** Take the data dir's lock (the serving process); CLI commands that only write tokens do not. */
  lock: boolean;
  /** Create `volumes/<name>` for each, 0700, so backends never make them under a wider umask. */
  backends?: readonly string[];
  /**
   * Compare the volume files with the database's volumes and refuse (`OrphanVolumes`) files it
   * does not know. Default: when `lock` (the serving process, before anything runs; a lock-free
   * opener runs beside a serving one, whose creates and deletes would race with the listing).
   */
  checkVolumes?: boolean;
  /** Start despite orphaned volume files (`serve --allow-orphan-volumes`): they are returned to be logged. */
  allowOrphanVolumes?: boolean;
}

export interface OpenedDataDir {
  dir: string;
  store: SqliteStore;
  /** Set when `lock` was asked for. */
  lock: DataDirLock | undefined;
  /** Paths whose mode was narrowed at start (files from an older version). */
  secured: string[];
  /** The database's identity, as the marker records it. */
  databaseId: string;
  /** True when the marker had no identity (or no marker was there) and now records this database's. */
  adopted: boolean;
  /** What the volume check found; undefined when it did not run. */
  volumes: VolumeCheck | undefined;
  /** Close the store, then release the lock. */
  close(): Promise<void>;
}

const SHOW_IDS = 5;

/**
 * Open the data dir `dir` (created 0700 if missing): lock it if asked, make it private, check the
 * database (see `inspectDatabase`), then refuse (DataDirError):
 *  - `DatabaseMissing`: a missing or empty database in a directory that was in use;
 *  - `MarkerUnreadable`: a marker that cannot be read;
 *  - `DatabaseMismatch`: a database whose identity is not the one the marker records (a fresh or
 *    foreign database swapped in), or that has none while the marker records one;
 *  - `OrphanVolumes` (with `checkVolumes`): volume files whose volume the database does not know
 *    (rows deleted, an older backup restored), unless `allowOrphanVolumes`.
 * Then open the store (migrating it) and write the marker, recording the database's identity if
 * it had none (a data dir from before identities, or before the marker). Nothing is created or
 * changed before the checks pass, except the lock and file modes.
 */
export function openDataDir(dir: string, opts: OpenDataDirOptions): OpenedDataDir {
  mkdirSync(dir, { recursive: true, mode: DIR_MODE });
  const lock = opts.lock ? lockDataDir(dir) : undefined;
  try {
    const secured = secureDataDir(dir);
    const path = dbPath(dir);
    const db = inspectDatabase(path);
    if (db.state !== 'ok') {
      const found = traces(dir);
      if (found.length > 0) {
        const what = db.state === 'missing' ? 'is missing' : db.bytes === 0 ? 'is empty (0 bytes)' : 'holds no schema';
        throw new DataDirError(
          'DatabaseMissing',
          `the database ${path} ${what}, but this data dir was in use: found ${found.join(', ')}. ` +
            `Starting would orphan those volumes and their state. Restore the database from a backup; ` +
            `or, to start over on purpose, move the data dir aside (or remove what was found).`,
          { path, found },
        );
      }
    }
    const marker = readMarker(dir);
    if (db.state === 'ok' && marker?.databaseId !== undefined && marker.databaseId !== db.databaseId) {
      const markerPath = join(dir, MARKER_FILE);
      const is = db.databaseId === null ? 'has no identity (one made by an older online-extend)' : `is database ${db.databaseId}`;
      throw new DataDirError(
        'DatabaseMismatch',
        `the database ${path} is not this data dir's: the marker ${markerPath} records database ${marker.databaseId}` +
          `${marker.createdAt ? ` (in use since ${marker.createdAt})` : ''}, but this one ${is}. It was replaced ` +
          `(a fresh database, or another data dir's), and starting would orphan this data dir's volumes. ` +
          `Put back this data dir's own database (restore it from a backup). To use the database that is there instead, ` +
          `move the data dir aside and give it a data dir of its own with its own volume files; if it is this data dir's ` +
          `own backup made by an older online-extend, remove the marker and start again (the volume files are still checked against it).`,
        { path, marker: markerPath, expected: marker.databaseId, found: db.databaseId },
      );
    }
    const checkVolumes = opts.checkVolumes ?? opts.lock;
    const volumes = checkVolumes ? checkVolumeFiles(dir, path) : undefined;
    if (volumes && volumes.orphans.length > 0 && !opts.allowOrphanVolumes) {
      const n = volumes.orphans.length;
      const shown = volumes.orphans.slice(0, SHOW_IDS).map((f) => `${f.backend}/${f.name}`);
      throw new DataDirError(
        'OrphanVolumes',
        `${n} volume file(s) under ${join(dir, VOLUMES_DIR)} belong to no volume in the database ${path} ` +
          `(${shown.join(', ')}${n > SHOW_IDS ? `, … ${n - SHOW_IDS} more` : ''}); it knows ${volumes.volumes} volume(s). ` +
          `The database has lost them (rows deleted, or an older backup restored), and starting would orphan them. ` +
          `Restore the database that knows them. If you know these files are not needed, move them out of ${join(dir, VOLUMES_DIR)}, ` +
          `or start once with \`serve --allow-orphan-volumes\` (they are left in place, logged, and served by nothing).`,
        { path, orphans: n, volumeIds: volumes.orphans.slice(0, 100).map((f) => f.volumeId), known: volumes.volumes },
      );
    }
    for (const b of opts.backends ?? []) mkdirSync(join(dir, VOLUMES_DIR, b), { recursive: true, mode: DIR_MODE });
    const store = new SqliteStore(path);
    try {
      const databaseId = ensureDatabaseId(store.db);
      const adopted = marker?.databaseId === undefined;
      if (adopted) {
        // A new data dir, or one from before the marker or identities: record this database.
        writeMarker(dir, { format: 'online-extend data dir', database: DB_FILE, createdAt: marker?.createdAt ?? new Date().toISOString(), ...marker, databaseId });
      }
      return {
        dir,
        store,
        lock,
        secured,
        databaseId,
        adopted,
        volumes,
        async close() {
          try {
            await store.close();
          } finally {
            lock?.release();
          }
        },
      };
    } catch (err) {
      void store.close();
      throw err;
    }
  } catch (err) {
    lock?.release();
    throw err;
  }
}
