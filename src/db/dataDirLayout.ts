/**
 * The data directory's layout: the names of what is in it, its modes, and the refusal to use it
 * (DataDirError). See dataDir.ts for the directory as a whole and its guarantees.
 */
import { join } from 'node:path';
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE } from '../util/privateFile.js';

export const DB_FILE = 'online-extend.sqlite';
export const MARKER_FILE = 'data-dir.json';
/** The marker's `format` field: what tells our marker from someone's file of the same name. */
export const MARKER_FORMAT = 'online-extend data dir';
export const LOCK_FILE = 'serve.lock';
export const PID_FILE = 'serve.pid';
export const SERVICE_TOKEN_FILE = 'service-token.json';
export const FAKE_STATE_FILE = 'fake-hypervisor.json';
export const VOLUMES_DIR = 'volumes';
/** Servers created through the API: one directory each (the libvirt driver's root disk copy, console). */
export const INSTANCES_DIR = 'instances';

/** Every name a data dir's top level may hold (its database with SQLite's -wal/-shm, and the above): what makes a directory ours. */
export const DATA_DIR_ENTRIES: ReadonlySet<string> = new Set([
  DB_FILE,
  `${DB_FILE}-wal`,
  `${DB_FILE}-shm`,
  MARKER_FILE,
  LOCK_FILE,
  PID_FILE,
  SERVICE_TOKEN_FILE,
  FAKE_STATE_FILE,
  VOLUMES_DIR,
  INSTANCES_DIR,
]);

export const DIR_MODE = PRIVATE_DIR_MODE;
export const FILE_MODE = PRIVATE_FILE_MODE;

/** Why a data dir was refused (`DataDirError.code`); operator-facing, never an API error code. */
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
  | 'OrphanVolumes'
  /**
   * A directory that holds other files and neither a data dir's database nor its marker (`/`, a home, /tmp):
   * refused before anything in it is created or its modes changed (a data dir is made private).
   */
  | 'NotADataDir';

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

/** The database file of the data dir `dir`. */
export function dbPath(dir: string): string {
  return join(dir, DB_FILE);
}
