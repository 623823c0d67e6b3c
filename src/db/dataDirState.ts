/**
 * Whether a data dir is sound: private modes, the database's state (integrity, schema, identity),
 * the marker that records which database belongs here, and the traces of earlier use.
 */
import Database from 'better-sqlite3';
import { chmodSync, existsSync, lstatSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { writePrivateFile } from '../util/privateFile.js';
import { MIGRATIONS } from './migrations.js';
import { databaseIdOf } from './sqliteOpen.js';
import { volumeFiles } from './volumeFiles.js';
import { DataDirError, DB_FILE, dbPath, DIR_MODE, FAKE_STATE_FILE, FILE_MODE, INSTANCE_DIR_NAME, INSTANCES_DIR, MARKER_FILE, MARKER_FORMAT, VOLUMES_DIR } from './dataDirLayout.js';

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

/**
 * What `inspectDatabase` found: no file, an empty one (0 bytes or no schema yet; `bytes` is its size), or a database
 * with a schema (`user_version`).
 */
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
  return { format: MARKER_FORMAT, database: DB_FILE, ...(m as Partial<Marker>) };
}

/** Write the marker `m` (0600). */
export function writeMarker(dir: string, m: Marker): void {
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
  // The files the start-up volume check compares with the database (volumeFiles.ts), by backend.
  const perBackend = new Map<string, number>();
  for (const f of volumeFiles(dir)) perBackend.set(f.backend, (perBackend.get(f.backend) ?? 0) + 1);
  for (const [backend, n] of perBackend) found.push(`${n} volume file(s) in ${join(dir, VOLUMES_DIR, backend)}`);
  // Servers' root disks (spawned from images): guest data as much as a volume's.
  const instances = join(dir, INSTANCES_DIR);
  if (existsSync(instances) && statSync(instances).isDirectory()) {
    const disks = readdirSync(instances).filter((id) => INSTANCE_DIR_NAME.test(id) && existsSync(join(instances, id, 'disk')));
    if (disks.length > 0) found.push(`${disks.length} server disk(s) in ${instances}`);
  }
  const fake = join(dir, FAKE_STATE_FILE);
  if (existsSync(fake)) found.push(`the fake hypervisor's state ${fake}`);
  return found;
}
