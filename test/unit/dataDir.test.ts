/**
 * The data dir's guarantees, in-process with real SQLite files: one holder at a time, a missing,
 * empty, damaged or too-new database refused (and nothing changed), everything private.
 * Across processes (kill -9, two `serve`) see test/cli/serve.test.ts.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import {
  DataDirError,
  DB_FILE,
  FAKE_STATE_FILE,
  LOCK_FILE,
  MARKER_FILE,
  PID_FILE,
  inspectDatabase,
  lockDataDir,
  openDataDir,
  secureDataDir,
  type DataDirErrorCode,
} from '../../src/db/dataDir.js';
import { MIGRATIONS } from '../../src/db/migrations.js';
import { SqliteStore } from '../../src/db/sqlite.js';

let root: string;
let dir: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'oe-datadir-'));
  dir = join(root, 'data');
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const mode = (p: string) => statSync(p).mode & 0o7777;

function refusal(fn: () => unknown): DataDirError {
  try {
    fn();
  } catch (err) {
    if (err instanceof DataDirError) return err;
    throw err;
  }
  throw new Error('expected a DataDirError, got none');
}

/** A data dir as a running service leaves it: a database with a volume, its file, the marker. */
async function usedDataDir(opts: { rows?: number } = {}): Promise<void> {
  const opened = openDataDir(dir, { lock: false, backends: ['file'] });
  const store = opened.store;
  await store.createVolume({
    id: 'vol-1', projectId: 'p', name: 'v', sizeBytes: 1 << 20, status: 'available', backend: 'file', format: 'raw',
    serverId: null, serverProjectId: null, device: null, extend: null,
  });
  for (let i = 0; i < (opts.rows ?? 0); i++) {
    await store.putToken({ hash: `h${String(i).padStart(6, '0')}`, userId: 'u', projectId: 'p', roles: ['member'], createdAt: '2026-01-01T00:00:00.000Z', expiresAt: '2100-01-01T00:00:00.000Z' });
  }
  await opened.close();
  writeFileSync(join(dir, 'volumes', 'file', 'vol-1.raw'), Buffer.alloc(512));
}

/**
 * Every file under `d` with a hash of its bytes, to show a refusal changed nothing. The lock file
 * and SQLite's own -wal/-shm sidecars are left out: opening a database may fold or drop them.
 */
function snapshot(d: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (p: string) => {
    for (const name of readdirSync(p)) {
      const f = join(p, name);
      if (statSync(f).isDirectory()) walk(f);
      else if (name !== LOCK_FILE && !/-(wal|shm)$/.test(name)) out[f.slice(d.length)] = createHash('sha256').update(readFileSync(f)).digest('hex');
    }
  };
  if (existsSync(d)) walk(d);
  return out;
}

describe('lockDataDir', () => {
  it('refuses a second holder and names the pid holding the data dir', () => {
    const lock = lockDataDir(dir);
    try {
      expect(readFileSync(join(dir, PID_FILE), 'utf8').trim()).toBe(String(process.pid));
      const err = refusal(() => lockDataDir(dir));
      expect(err.code).toBe<DataDirErrorCode>('DataDirLocked');
      expect(err.details.pid).toBe(process.pid);
      expect(err.message).toContain(`process ${process.pid}`);
      expect(err.message).toContain('--data-dir');
    } finally {
      lock.release();
    }
  });

  it('can be taken again once released, and removes its pid file', () => {
    lockDataDir(dir).release();
    expect(existsSync(join(dir, PID_FILE))).toBe(false);
    const again = lockDataDir(dir);
    again.release();
    again.release(); // idempotent
  });

  it('refuses openDataDir for serving while held, but lets a lock-free opener (token create) use the database', async () => {
    const serving = openDataDir(dir, { lock: true });
    try {
      expect(refusal(() => openDataDir(dir, { lock: true })).code).toBe<DataDirErrorCode>('DataDirLocked');
      const cli = openDataDir(dir, { lock: false });
      await cli.store.putToken({ hash: 'cli', userId: 'u', projectId: 'p', roles: ['member'], createdAt: '2026-01-01T00:00:00.000Z', expiresAt: '2100-01-01T00:00:00.000Z' });
      await cli.close();
      expect(await serving.store.getToken('cli')).toBeDefined();
    } finally {
      await serving.close();
    }
  });
});

describe('openDataDir refuses an unsound database and changes nothing', () => {
  interface Case {
    name: string;
    code: DataDirErrorCode;
    /** Damage a used data dir (or a fresh one when `fresh`). */
    damage(): void | Promise<void>;
    fresh?: boolean;
    says: RegExp[];
  }
  const db = () => join(dir, DB_FILE);
  const cases: Case[] = [
    {
      name: 'a zero-length database while volume files are present',
      code: 'DatabaseMissing',
      damage: () => {
        rmSync(`${db()}-wal`, { force: true });
        rmSync(`${db()}-shm`, { force: true });
        writeFileSync(db(), '');
      },
      says: [/is empty \(0 bytes\)/, /1 volume file\(s\) in .*volumes\/file/, /marker/, /Restore the database from a backup/],
    },
    {
      name: 'a missing database while volume files are present',
      code: 'DatabaseMissing',
      damage: () => rmSync(db()),
      says: [/is missing/, /volume file/],
    },
    {
      name: 'a missing database where only the fake hypervisor state remains',
      code: 'DatabaseMissing',
      fresh: true,
      damage: () => {
        mkdirSync(dir, { recursive: true });
        writeFileSync(join(dir, FAKE_STATE_FILE), '{"servers":[]}');
      },
      says: [/is missing/, /fake hypervisor's state/],
    },
    {
      name: 'a database with a damaged page',
      code: 'DatabaseCorrupt',
      damage: () => {
        // Garbage over the root page of the tokens table (an interior page: it holds 3,000 rows).
        const probe = new Database(db(), { readonly: true });
        const root = (probe.prepare("SELECT rootpage FROM sqlite_master WHERE name = 'tokens'").get() as { rootpage: number }).rootpage;
        const pageSize = probe.pragma('page_size', { simple: true }) as number;
        probe.close();
        const fd = openSync(db(), 'r+');
        writeSync(fd, Buffer.alloc(pageSize, 0xa5), 0, pageSize, (root - 1) * pageSize);
        closeSync(fd);
      },
      says: [/is damaged/, /quick_check/, /restore it from a backup/],
    },
    {
      name: 'a file that is not a database at all',
      code: 'DatabaseCorrupt',
      damage: () => writeFileSync(db(), Buffer.alloc(8192, 0x5a)),
      says: [/is damaged/],
    },
    {
      name: 'a database from a newer build (a future schema version)',
      code: 'SchemaTooNew',
      damage: () => {
        const d = new Database(db());
        d.pragma(`user_version = ${MIGRATIONS.length + 1}`);
        d.close();
      },
      says: [new RegExp(`schema version ${MIGRATIONS.length + 1}`), /newer version/],
    },
  ];

  for (const c of cases) {
    it(`refuses ${c.name}`, async () => {
      if (!c.fresh) await usedDataDir({ rows: 3000 });
      await c.damage();
      const before = snapshot(dir);
      const err = refusal(() => openDataDir(dir, { lock: true, backends: ['file'] }));
      expect(err.code).toBe(c.code);
      for (const re of c.says) expect(err.message).toMatch(re);
      // Nothing created or rewritten, and the lock was given back.
      expect(snapshot(dir)).toEqual(before);
      lockDataDir(dir).release();
    });
  }
});

describe('openDataDir on sound data dirs', () => {
  it('starts a fresh data dir, creating the database and the marker', async () => {
    const opened = openDataDir(dir, { lock: true, backends: ['file', 'block'] });
    await opened.close();
    expect(inspectDatabase(join(dir, DB_FILE))).toEqual({ state: 'ok', schemaVersion: MIGRATIONS.length });
    expect(JSON.parse(readFileSync(join(dir, MARKER_FILE), 'utf8'))).toMatchObject({ database: DB_FILE });
    expect(statSync(join(dir, 'volumes', 'block')).isDirectory()).toBe(true);
  });

  it('restarts a healthy used data dir and keeps its volumes', async () => {
    await usedDataDir();
    const opened = openDataDir(dir, { lock: true });
    expect((await opened.store.listVolumes()).map((v) => v.id)).toEqual(['vol-1']);
    await opened.close();
  });

  it('adopts a data dir from before the marker existed (a database with its schema, no marker)', async () => {
    await usedDataDir();
    rmSync(join(dir, MARKER_FILE));
    const opened = openDataDir(dir, { lock: true });
    await opened.close();
    expect(existsSync(join(dir, MARKER_FILE))).toBe(true);
  });

  it('treats a zero-length database with no trace of use as a fresh start', async () => {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, DB_FILE), '');
    const opened = openDataDir(dir, { lock: true });
    await opened.close();
    expect(inspectDatabase(join(dir, DB_FILE))).toMatchObject({ state: 'ok' });
  });

  it('ignores half-made volume files a crash during create leaves (*.tmp-*)', async () => {
    mkdirSync(join(dir, 'volumes', 'file'), { recursive: true });
    writeFileSync(join(dir, 'volumes', 'file', 'vol-9.raw.tmp-123-abcd'), '');
    const opened = openDataDir(dir, { lock: true });
    await opened.close();
  });

  it('refuses a schema newer than it knows in the store itself too, not only at start', async () => {
    await usedDataDir();
    const d = new Database(join(dir, DB_FILE));
    d.pragma(`user_version = ${MIGRATIONS.length + 1}`);
    d.close();
    expect(() => new SqliteStore(join(dir, DB_FILE))).toThrow(/newer than this build knows/);
  });
});

describe('file modes', () => {
  it('makes every directory 0700 and every file 0600, leaving symlinks alone', () => {
    mkdirSync(join(dir, 'volumes', 'file'), { recursive: true, mode: 0o755 });
    chmodSync(dir, 0o755);
    chmodSync(join(dir, 'volumes'), 0o775);
    writeFileSync(join(dir, 'volumes', 'file', 'a.qcow2'), 'x', { mode: 0o644 });
    writeFileSync(join(dir, 'online-extend.sqlite-wal'), 'x', { mode: 0o666 });
    writeFileSync(join(root, 'outside'), 'x', { mode: 0o644 });
    symlinkSync(join(root, 'outside'), join(dir, 'link'));
    const changed = secureDataDir(dir);
    expect(changed.length).toBe(5);
    for (const d of [dir, join(dir, 'volumes'), join(dir, 'volumes', 'file')]) expect(mode(d)).toBe(0o700);
    for (const f of [join(dir, 'volumes', 'file', 'a.qcow2'), join(dir, 'online-extend.sqlite-wal')]) expect(mode(f)).toBe(0o600);
    expect(mode(join(root, 'outside'))).toBe(0o644);
    expect(secureDataDir(dir)).toEqual([]);
  });

  it('creates the database, its WAL and SHM, the marker and the lock 0600 even under umask 022', async () => {
    const old = process.umask(0o022);
    try {
      const opened = openDataDir(dir, { lock: true, backends: ['file'] });
      await opened.store.putToken({ hash: 'm', userId: 'u', projectId: 'p', roles: ['member'], createdAt: '2026-01-01T00:00:00.000Z', expiresAt: '2100-01-01T00:00:00.000Z' });
      for (const f of [DB_FILE, `${DB_FILE}-wal`, `${DB_FILE}-shm`, MARKER_FILE, 'serve.lock', PID_FILE]) expect([f, mode(join(dir, f))]).toEqual([f, 0o600]);
      for (const d of [dir, join(dir, 'volumes'), join(dir, 'volumes', 'file')]) expect([d, mode(d)]).toEqual([d, 0o700]);
      await opened.close();
    } finally {
      process.umask(old);
    }
  });
});
