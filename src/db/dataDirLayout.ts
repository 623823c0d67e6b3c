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

/** `<volumeId>.raw` or `<volumeId>.qcow2`, the names every backend gives its files in `volumes/<backend>/` (volume/backends). */
export const VOLUME_FILE = /^(.+)\.(raw|qcow2)$/;
/**
 * A half-made volume file, what a crash during create leaves beside the volume files:
 * `<volume file>.tmp-<pid>-<random>` (volume/backends/common.ts createAtomically).
 */
export const VOLUME_TMP_FILE = /^.+\.(raw|qcow2)\.tmp-[^/]+$/;
/** A server's directory in `instances/`: its id, a UUID in lower case (virt/libvirt/spawn.ts instanceFiles). */
export const INSTANCE_DIR_NAME = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/**
 * What a server's directory holds (virt/libvirt/spawn.ts instanceFiles): its root disk `disk`,
 * its console log `console.log` (and `console.log.N`, the copies virtlogd may rotate it into),
 * and the console's unix socket `console.sock`.
 */
const INSTANCE_FILE = /^(disk|console\.log(\.\d+)?)$/;
const INSTANCE_SOCKET = 'console.sock';

/**
 * What the layout puts at a path: a regular file, a unix socket, a directory whose entries
 * `entry(name)` describes (undefined: a name the layout never makes there), or the database,
 * which is judged by its content instead (an SQLite header, our tables: dataDir.ts).
 */
export type LayoutNode =
  | { kind: 'file' }
  | { kind: 'socket' }
  | { kind: 'database' }
  | { kind: 'dir'; entry(name: string): LayoutNode | undefined };
/** A directory of the layout. */
export type LayoutDir = Extract<LayoutNode, { kind: 'dir' }>;

const FILE: LayoutNode = { kind: 'file' };
const dirOf = (entry: (name: string) => LayoutNode | undefined): LayoutDir => ({ kind: 'dir', entry });
/** `volumes/<backend>/`: volume files and half-made ones. Any backend's name: one switched off keeps its directory. */
const BACKEND_DIR = dirOf((name) => (VOLUME_FILE.test(name) || VOLUME_TMP_FILE.test(name) ? FILE : undefined));
const SERVER_DIR = dirOf((name) => (INSTANCE_FILE.test(name) ? FILE : name === INSTANCE_SOCKET ? { kind: 'socket' } : undefined));

/** The top level of a data dir: every name it may hold (see dataDir.ts), and what each is. */
const TOP_LEVEL: ReadonlyMap<string, LayoutNode> = new Map<string, LayoutNode>([
  [DB_FILE, { kind: 'database' }],
  [`${DB_FILE}-wal`, FILE],
  [`${DB_FILE}-shm`, FILE],
  [MARKER_FILE, FILE],
  [LOCK_FILE, FILE],
  [PID_FILE, FILE],
  [SERVICE_TOKEN_FILE, FILE],
  [FAKE_STATE_FILE, FILE],
  [VOLUMES_DIR, dirOf(() => BACKEND_DIR)],
  [INSTANCES_DIR, dirOf((name) => (INSTANCE_DIR_NAME.test(name) ? SERVER_DIR : undefined))],
]);

/**
 * The data dir's layout as a tree: what a data dir holds, down to its volume files and servers'
 * directories. A directory whose every path fits it shows nothing but a data dir's content.
 */
export const DATA_DIR_LAYOUT: LayoutDir = dirOf((name) => TOP_LEVEL.get(name));

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
   * refused before anything in it is created or its modes changed (a data dir is made private). Other files:
   * anything the layout does not put there (DATA_DIR_LAYOUT), inside `volumes/` and `instances/` too.
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
