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
 *     volumes/<backend>/…              the volumes' backing files (<volumeId>.raw|.qcow2, half-made *.tmp-*)
 *     instances/<server id>/…          servers created through the API (libvirt: root disk, console)
 *
 * Four guarantees, checked before the service touches anything (`openDataDir`):
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
 * Its parts: the layout and DataDirError (dataDirLayout.ts), the lock (dataDirLock.ts), modes,
 * database state and marker (dataDirState.ts), volume files against the database (volumeFiles.ts);
 * this file opens the whole, and re-exports the parts.
 *
 * Errors here are for the operator starting the service (they name paths); they never reach an
 * API client.
 */
import { lstatSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { SqliteStore } from './sqlite.js';
import { databaseOwner, ensureDatabaseId, sqliteFileKind } from './sqliteOpen.js';
import { DataDirError, DATA_DIR_LAYOUT, DB_FILE, dbPath, DIR_MODE, MARKER_FILE, MARKER_FORMAT, VOLUMES_DIR, type LayoutDir, type LayoutNode } from './dataDirLayout.js';
import { lockDataDir, type DataDirLock } from './dataDirLock.js';
import { inspectDatabase, readMarker, secureDataDir, traces, writeMarker } from './dataDirState.js';
import { checkVolumeFiles, type VolumeCheck } from './volumeFiles.js';

export * from './dataDirLayout.js';
export { lockDataDir, type DataDirLock } from './dataDirLock.js';
export { inspectDatabase, readMarker, secureDataDir, traces, type DatabaseState, type Marker } from './dataDirState.js';
export { checkVolumeFiles, volumeFiles, type VolumeCheck, type VolumeFile } from './volumeFiles.js';

// ---- opening ----------------------------------------------------------------------------------

/** How `openDataDir` opens a data dir: whether to lock it, which backends' volume directories to make, and the volume-file check. */
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

/** A data dir opened by `openDataDir`: its store, its lock if taken, and what the checks at start found. */
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
  refuseForeignDir(dir);
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
        writeMarker(dir, { format: MARKER_FORMAT, database: DB_FILE, createdAt: marker?.createdAt ?? new Date().toISOString(), ...marker, databaseId });
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

/** Whether the file at `path` is a data dir's marker (a regular file of JSON naming its format), read without changing it. */
function isOurMarker(path: string): boolean {
  try {
    // A FIFO or device of that name would block the read: regular files only.
    if (!statSync(path).isFile()) return false;
    const m = JSON.parse(readFileSync(path, 'utf8')) as { format?: unknown } | null;
    return m !== null && typeof m === 'object' && m.format === MARKER_FORMAT;
  } catch {
    return false;
  }
}

/**
 * NotADataDir when `dir` exists and is not a directory (a symlink to one is followed), or does not
 * show a data dir's content: a data dir is made private (its tree 0700/0600, secureDataDir), which
 * on `/`, a home or /tmp would lock others out, and names alone (`volumes`, the database's, the
 * marker's) are no proof. Evidence is our marker (MARKER_FORMAT) or a database with our tables.
 * Refused: a database file that is not a regular file, another program's SQLite database (even
 * alone: our schema would be written into it), and, beside anything that does not fit a data
 * dir's layout (a marker not ours counts as not fitting), a file that is not SQLite or a database
 * without our tables. Passes: a missing or empty directory, one with evidence, or one whose every
 * path fits the layout (DATA_DIR_LAYOUT, down to the files in `volumes/<backend>/` and
 * `instances/<server>/`: a start cut short, a data dir whose database was lost or damaged, which
 * the checks after this one refuse in their own words). Reads only; follows no symlink inside.
 */
function refuseForeignDir(dir: string): void {
  let names: string[];
  try {
    if (!statSync(dir).isDirectory()) throw new DataDirError('NotADataDir', `the data dir ${dir} is not a directory: give online-extend a directory of its own`, { path: dir });
    names = readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  // With our marker, a damaged or missing database is this data dir's: the later checks say so.
  if (names.includes(MARKER_FILE) && isOurMarker(join(dir, MARKER_FILE))) return;
  const refuse = (what: string): never => {
    throw new DataDirError(
      'NotADataDir',
      `the data dir ${dir} ${what}: online-extend makes its data dir private (0700, its files 0600), so it will not take over this one. ` +
        `Give it a directory of its own (new or empty).`,
      { path: dir, entries: names.length },
    );
  };
  const dbPathHere = join(dir, DB_FILE);
  const dbKind = names.includes(DB_FILE) ? sqliteFileKind(dbPathHere) : 'missing';
  if (dbKind === 'not-a-file') refuse(`holds ${DB_FILE}, which is not a regular file`);
  const owner = dbKind === 'sqlite' ? databaseOwner(dbPathHere) : undefined;
  if (owner === 'ours') return;
  if (owner === 'another program') refuse(`holds ${DB_FILE}, an SQLite database of another program (none of online-extend's tables)`);
  const foreign = layoutStrangers(dir, names);
  if (foreign.length === 0) return;
  const others = `other files (${foreign.slice(0, SHOW_STRANGERS).join(', ')}${foreign.length > SHOW_STRANGERS ? ', …' : ''})`;
  if (dbKind === 'other') refuse(`holds ${DB_FILE}, but that file is not an SQLite database, beside ${others}: it is not online-extend's`);
  refuse(`holds ${others} and no data dir's database or marker`);
}

/** How many paths that do not fit the layout a refusal names; the walk stops at one more. */
const SHOW_STRANGERS = 5;

/**
 * The paths under `dir` that do not fit the data dir's layout (DATA_DIR_LAYOUT), relative to
 * `dir`, in sorted order, depth first, at most SHOW_STRANGERS + 1 (the walk stops there): a name
 * the layout never makes there (the marker too: the caller found it is not ours), or a layout's
 * name of another kind, saying which (`volumes (not a directory)`, `volumes/file/a.raw (a
 * symlink)`). `names`: `dir`'s entries. Reads only, with lstat: a symlink is never followed (the
 * layout makes none), so nothing outside `dir` is looked at.
 */
function layoutStrangers(dir: string, names: readonly string[]): string[] {
  const found: string[] = [];
  const visit = (path: string, rel: string, node: LayoutDir, entries: readonly string[]): void => {
    for (const name of [...entries].sort()) {
      if (found.length > SHOW_STRANGERS) return;
      const at = rel === '' ? name : `${rel}/${name}`;
      const want = at === MARKER_FILE ? undefined : node.entry(name);
      if (want === undefined) {
        found.push(at);
        continue;
      }
      // The database is judged by its content (refuseForeignDir), a symlink to it included.
      if (want.kind === 'database') continue;
      const full = join(path, name);
      const st = lstatSync(full, { throwIfNoEntry: false });
      if (st === undefined) continue; // gone meanwhile
      const is = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSocket() ? 'socket' : undefined;
      if (is !== want.kind) {
        found.push(`${at} (${st.isSymbolicLink() ? 'a symlink' : NOT_A[want.kind]})`);
        continue;
      }
      if (want.kind === 'dir') visit(full, at, want, readdirSync(full));
    }
  };
  visit(dir, '', DATA_DIR_LAYOUT, names);
  return found;
}

/** How a path of the layout's name but another kind is named in a refusal. */
const NOT_A: Record<Exclude<LayoutNode['kind'], 'database'>, string> = { dir: 'not a directory', file: 'not a regular file', socket: 'not a socket' };
