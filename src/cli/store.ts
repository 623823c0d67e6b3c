/**
 * The store a CLI command works on: the database `--database-url` names (a deployment's shared
 * one, db/open.ts), or else the data dir's SQLite file, opened as `token create` always opened it
 * (checked, not locked: it works while serve runs).
 *
 * A command that creates (`token create`, `user create`, `flavor create`) makes a fresh data dir
 * or SQLite file when there is none. One that only reads or removes (`user list`, `flavor delete`,
 * `token revoke`, …) refuses a missing or empty one instead, creating nothing: a list from a fresh
 * database would show nothing, and a removal from it would answer "unknown", for what the real
 * one (a mistyped path) holds.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config.js';
import { dbPath, MARKER_FILE, openDataDir } from '../db/dataDir.js';
import { openStoreUrl, sqliteUrlPath } from '../db/open.js';
import { databaseOwner, sqliteFileKind } from '../db/sqliteOpen.js';
import { SqliteUserStore } from '../db/users.js';
import type { Store, UserStore } from '../db/store.js';

/** A store opened for one command, with the embedded Keystone's users; `close` when done. */
export interface CommandStore {
  store: Store;
  users: UserStore;
  /** Paths whose wider mode opening narrowed to the owner's only (files 0600, directories 0700). */
  narrowed: readonly string[];
  /** The data dir's marker when opening wrote it (a data dir from before the marker: it now records this database). */
  markerWritten: string | undefined;
  close(): Promise<void>;
}

/** How `openCommandStore` opens: `existing` for a command that only reads or removes (see the module comment). */
export interface CommandStoreOptions {
  /**
   * Refuse a missing or empty database, creating nothing; the text names what the command wanted,
   * completing "give the --data-dir (or --database-url) of the service …" (e.g. `whose users to list`).
   */
  existing?: string;
}

/**
 * Opens `config.databaseUrl` if set, else `config.dataDir`'s database (see the module comment).
 * With `existing`, throws an Error (missingDatabase's sentence) before anything is opened when
 * there is no database to use. Throws what either opener throws.
 */
export async function openCommandStore(config: Pick<Config, 'databaseUrl' | 'dataDir'>, opts: CommandStoreOptions = {}): Promise<CommandStore> {
  if (opts.existing !== undefined) {
    const problem = missingDatabase(config, opts.existing);
    if (problem !== undefined) throw new Error(problem);
  }
  if (config.databaseUrl) return { markerWritten: undefined, ...(await openStoreUrl(config.databaseUrl)) };
  const dataDir = openDataDir(config.dataDir, { lock: false });
  return {
    store: dataDir.store,
    users: new SqliteUserStore(dataDir.store.db),
    narrowed: [...new Set([...dataDir.secured, ...dataDir.store.narrowed])],
    markerWritten: dataDir.adopted ? join(dataDir.dir, MARKER_FILE) : undefined,
    close: () => dataDir.close(),
  };
}

/**
 * Why a command that only reads or removes cannot use the database `config` names, as one sentence
 * for the operator; undefined when it can (the SQLite file exists and is not empty, or the URL is
 * PostgreSQL's). A missing or empty file, or an SQLite file with no tables, is refused (opening it
 * would write a fresh schema), and a data dir that is not a directory is named as such. `whose` completes "give the --data-dir (or
 * --database-url) of the service …".
 */
export function missingDatabase(config: { dataDir: string; databaseUrl?: string | undefined }, whose: string): string | undefined {
  const path = commandDatabaseFile(config);
  if (path === undefined) return undefined;
  const giveIt = `give the --data-dir (or --database-url) of the service ${whose} (nothing changed)`;
  if (config.databaseUrl === undefined && existsSync(config.dataDir) && !statSync(config.dataDir).isDirectory()) {
    return `the data dir ${config.dataDir} is not a directory: ${giveIt}`;
  }
  // An empty file is no database either, nor an SQLite file with no tables yet: opening either
  // would write a fresh schema into it.
  if (!existsSync(path) || statSync(path).size === 0) return `no database at ${path} (missing or empty): ${giveIt}`;
  if (sqliteFileKind(path) === 'sqlite' && databaseOwner(path) === 'no tables') return `no database at ${path} (an SQLite file with no tables): ${giveIt}`;
  return undefined;
}

/**
 * The SQLite file `config` names (the data dir's, or a `sqlite:///` URL's path); undefined for
 * PostgreSQL. Throws sqliteUrlPath's Error for a SQLite URL of another form (`sqlite://tmp/x`).
 */
function commandDatabaseFile(config: { dataDir: string; databaseUrl?: string | undefined }): string | undefined {
  const url = config.databaseUrl;
  if (url !== undefined && !/^sqlite:/i.test(url)) return undefined;
  return url === undefined ? dbPath(config.dataDir) : sqliteUrlPath(url);
}

/** Where a command looks, for its messages: the SQLite file, or "the PostgreSQL database" (never a URL: it may hold a password). */
export function commandDatabaseName(config: { dataDir: string; databaseUrl?: string | undefined }): string {
  return commandDatabaseFile(config) ?? 'the PostgreSQL database';
}

/** How many narrowed paths `openingChanges` names; the rest are counted. */
const SHOW_NARROWED = 5;

/**
 * What opening `db` changed on disk, as a phrase for a command's message (`the mode of P narrowed
 * to …`), or undefined when it changed nothing: modes narrowed (at most SHOW_NARROWED paths named)
 * and the marker written.
 */
export function openingChanges(db: Pick<CommandStore, 'narrowed' | 'markerWritten'>): string | undefined {
  const parts: string[] = [];
  const n = db.narrowed.length;
  if (n > 0) {
    const shown = db.narrowed.slice(0, SHOW_NARROWED).join(', ') + (n > SHOW_NARROWED ? `, … ${n - SHOW_NARROWED} more` : '');
    parts.push(`${n === 1 ? 'the mode of' : 'the modes of'} ${shown} narrowed to the owner's only (files 0600, directories 0700), as the service keeps them`);
  }
  if (db.markerWritten !== undefined) parts.push(`the marker ${db.markerWritten} written, recording this database as the data dir's`);
  return parts.length > 0 ? parts.join('; ') : undefined;
}

/** The `--database-url` option's help, the same on every command that has it. */
export const DATABASE_URL_HELP = 'the shared database: postgresql://… or sqlite:///PATH (env ONLINE_EXTEND_DATABASE_URL; default: the data dir\'s SQLite file)';
