/**
 * The data dir's guarantees, in-process with real SQLite files: one holder at a time, a missing,
 * empty, damaged or too-new database refused (and nothing changed), the database known to belong
 * to its data dir (its identity in the marker) and to know every volume file, everything private.
 * Across processes (kill -9, two `serve`) see test/cli/serve.test.ts.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { chmodSync, closeSync, copyFileSync, existsSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { createServer } from 'node:net';
import {
  DataDirError,
  DB_FILE,
  FAKE_STATE_FILE,
  INSTANCES_DIR,
  LOCK_FILE,
  MARKER_FILE,
  PID_FILE,
  inspectDatabase,
  lockDataDir,
  openDataDir,
  readMarker,
  secureDataDir,
  type DataDirErrorCode,
  type OpenDataDirOptions,
  type OpenedDataDir,
} from '../../src/db/dataDir.js';
import { MIGRATIONS } from '../../src/db/migrations.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { FileBackend } from '../../src/volume/backends/file.js';
import { instanceFiles } from '../../src/virt/libvirt/spawn.js';

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

/**
 * A data dir as a running service leaves it: a database with `volumes` volumes (vol-1, vol-2, …)
 * and their files, the marker, and with `fake` the fake hypervisor's state. `at` makes it elsewhere.
 */
async function usedDataDir(opts: { rows?: number; volumes?: number; fake?: boolean; at?: string; first?: number } = {}): Promise<void> {
  const at = opts.at ?? dir;
  const opened = openDataDir(at, { lock: false, backends: ['file'] });
  const store = opened.store;
  const first = opts.first ?? 1;
  for (let i = first; i < first + (opts.volumes ?? 1); i++) {
    await store.createVolume({
      id: `vol-${i}`, projectId: 'p', name: 'v', sizeBytes: 1 << 20, status: 'available', backend: 'file', format: i % 2 ? 'raw' : 'qcow2',
      serverId: null, serverProjectId: null, device: null, extend: null,
    });
    writeFileSync(join(at, 'volumes', 'file', `vol-${i}.${i % 2 ? 'raw' : 'qcow2'}`), Buffer.alloc(512));
  }
  for (let i = 0; i < (opts.rows ?? 0); i++) {
    await store.putToken({ hash: `h${String(i).padStart(6, '0')}`, userId: 'u', projectId: 'p', roles: ['member'], createdAt: '2026-01-01T00:00:00.000Z', expiresAt: '2100-01-01T00:00:00.000Z' });
  }
  await opened.close();
  if (opts.fake) writeFileSync(join(at, FAKE_STATE_FILE), '{"servers":[]}');
}

/** Put the database at `from` in place of this data dir's, as an operator's `cp` would (no WAL left). */
function swapDatabase(from: string): void {
  for (const f of [DB_FILE, `${DB_FILE}-wal`, `${DB_FILE}-shm`]) rmSync(join(dir, f), { force: true });
  copyFileSync(from, join(dir, DB_FILE));
}

/** The schema before databases had an identity: what an older online-extend made. */
const PRE_IDENTITY = MIGRATIONS.findIndex((m) => m.includes('CREATE TABLE meta'));

/** A database as an older online-extend left it (no identity), knowing `volumeIds`. */
function olderDatabase(path: string, volumeIds: readonly string[]): void {
  const d = new Database(path);
  for (let v = 0; v < PRE_IDENTITY; v++) {
    d.exec(MIGRATIONS[v]!);
    d.pragma(`user_version = ${v + 1}`);
  }
  const add = d.prepare(
    "INSERT INTO volumes (id, project_id, name, size_bytes, status, backend, format, created_at, updated_at) VALUES (?, 'p', 'v', 512, 'available', 'file', 'raw', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
  );
  for (const id of volumeIds) add.run(id);
  d.close();
}

/** Run SQL on the data dir's database, as an operator with `sqlite3` would. */
function sql(statement: string): void {
  const d = new Database(join(dir, DB_FILE));
  d.exec(statement);
  d.close();
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
      name: 'a missing database: a directory named like a volume file is not counted as one',
      code: 'DatabaseMissing',
      damage: () => {
        rmSync(db());
        mkdirSync(join(dir, 'volumes', 'file', '5d1c0a9e-7b7e-4f43-9c1e-2b8f0f4a6d11.raw'));
      },
      says: [/is missing/, /\b1 volume file\(s\) in .*volumes\/file/],
    },
    {
      name: 'a missing database while volume files are present',
      code: 'DatabaseMissing',
      damage: () => rmSync(db()),
      says: [/is missing/, /volume file/],
    },
    {
      name: 'a missing database where only a server root disk remains',
      code: 'DatabaseMissing',
      fresh: true,
      damage: () => {
        const server = join(dir, INSTANCES_DIR, '0b5ce1a4-6f0e-4f5a-9d0e-3c1f2a4b5c6d');
        mkdirSync(server, { recursive: true });
        writeFileSync(join(server, 'disk'), 'guest data');
      },
      says: [/is missing/, /1 server disk\(s\) in .*instances/],
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
      // Not NotADataDir: everything else in it is a data dir's, so the database is this one's.
      name: "a database whose header was overwritten, in a data dir from before the marker",
      code: 'DatabaseCorrupt',
      damage: () => {
        rmSync(join(dir, MARKER_FILE));
        const fd = openSync(db(), 'r+');
        writeSync(fd, Buffer.alloc(16, 0x5a), 0, 16, 0);
        closeSync(fd);
      },
      says: [/is damaged/],
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
    const inspected = inspectDatabase(join(dir, DB_FILE));
    expect(inspected).toEqual({ state: 'ok', schemaVersion: MIGRATIONS.length, databaseId: expect.stringMatching(/^[0-9a-f]{32}$/) });
    expect(JSON.parse(readFileSync(join(dir, MARKER_FILE), 'utf8'))).toMatchObject({ database: DB_FILE, databaseId: opened.databaseId });
    expect(inspected.state === 'ok' && inspected.databaseId).toBe(opened.databaseId);
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
    expect(opened.adopted).toBe(true);
    expect(readMarker(dir)?.databaseId).toBe(opened.databaseId);
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

describe('openDataDir refuses a database that is not the data dir’s, or that lost volumes, and changes nothing', () => {
  interface Case {
    name: string;
    code: DataDirErrorCode;
    /** Start from a used data dir with 200 volumes (their files, the marker, the fake's state), then break it. */
    damage(): void | Promise<void>;
    opts?: Partial<OpenDataDirOptions>;
    says: RegExp[];
  }
  const other = () => join(root, 'other');
  const cases: Case[] = [
    {
      name: 'a fresh database copied over it (valid, empty, its own identity)',
      code: 'DatabaseMismatch',
      damage: async () => {
        await openDataDir(other(), { lock: false }).close();
        swapDatabase(join(other(), DB_FILE));
      },
      says: [/is not this data dir's/, /the marker .*data-dir\.json records database [0-9a-f]{32} \(in use since /, /this one is database [0-9a-f]{32}/, /restore it from a backup/, /move the data dir aside/],
    },
    {
      name: 'another data dir’s database, with volumes of its own',
      code: 'DatabaseMismatch',
      damage: async () => {
        await usedDataDir({ at: other(), volumes: 3 });
        swapDatabase(join(other(), DB_FILE));
      },
      says: [/is not this data dir's/, /this one is database [0-9a-f]{32}/],
    },
    {
      name: 'a database an older online-extend made (no identity) copied over it',
      code: 'DatabaseMismatch',
      damage: () => {
        mkdirSync(other(), { recursive: true });
        olderDatabase(join(other(), 'old.sqlite'), []);
        swapDatabase(join(other(), 'old.sqlite'));
      },
      says: [/has no identity \(one made by an older online-extend\)/, /remove the marker and start again/],
    },
    {
      name: 'its database with the identity row deleted',
      code: 'DatabaseMismatch',
      damage: () => sql("DELETE FROM meta WHERE key = 'database_id'"),
      says: [/has no identity/],
    },
    {
      name: 'the identity mismatch also for a lock-free opener (token create)',
      code: 'DatabaseMismatch',
      damage: async () => {
        await openDataDir(other(), { lock: false }).close();
        swapDatabase(join(other(), DB_FILE));
      },
      opts: { lock: false },
      says: [/is not this data dir's/],
    },
    {
      name: 'its database with every volume row deleted while the 200 files remain',
      code: 'OrphanVolumes',
      damage: () => sql('DELETE FROM volumes'),
      says: [/^200 volume file\(s\) under .*\/volumes belong to no volume in the database/, /\(file\/vol-1\.raw, file\/vol-10\.qcow2, .*, … 195 more\)/, /it knows 0 volume\(s\)/, /--allow-orphan-volumes/],
    },
    {
      name: 'its own older backup, from before the last 50 volumes were made',
      code: 'OrphanVolumes',
      damage: async () => {
        mkdirSync(other(), { recursive: true });
        copyFileSync(join(dir, DB_FILE), join(other(), 'backup.sqlite'));
        await usedDataDir({ volumes: 50, first: 201 });
        swapDatabase(join(other(), 'backup.sqlite'));
      },
      says: [/^50 volume file\(s\) .* belong to no volume/, /file\/vol-201\.raw/, /it knows 200 volume\(s\)/, /Restore the database that knows them/],
    },
    {
      name: 'a file in a backend that is not enabled, whose volume the database does not know',
      code: 'OrphanVolumes',
      damage: () => {
        mkdirSync(join(dir, 'volumes', 'block'));
        writeFileSync(join(dir, 'volumes', 'block', 'vol-lost.raw'), '');
      },
      says: [/^1 volume file\(s\) .*\(block\/vol-lost\.raw\)/, /it knows 200 volume\(s\)/],
    },
    {
      name: 'a marker that is not JSON',
      code: 'MarkerUnreadable',
      damage: () => writeFileSync(join(dir, MARKER_FILE), '{"databaseId": "ab'),
      says: [/data-dir\.json is not one online-extend wrote/, /remove the marker/],
    },
  ];

  for (const c of cases) {
    it(`refuses ${c.name}`, async () => {
      await usedDataDir({ volumes: 200, fake: true });
      await c.damage();
      const before = snapshot(dir);
      const err = refusal(() => openDataDir(dir, { lock: true, backends: ['file'], ...c.opts }));
      expect(err.code).toBe(c.code);
      for (const re of c.says) expect(err.message).toMatch(re);
      // Nothing created or rewritten (the marker still names the old database), and the lock was given back.
      expect(snapshot(dir)).toEqual(before);
      lockDataDir(dir).release();
    });
  }
});

describe('openDataDir on data dirs whose database belongs to them', () => {
  interface Case {
    name: string;
    /** Turn a used data dir with 200 volumes into the case. */
    prepare(): void | Promise<void>;
    opts?: Partial<OpenDataDirOptions>;
    /** What must hold of the opened data dir; `markerBefore` is the marker as it was before. */
    check(opened: OpenedDataDir, markerBefore: ReturnType<typeof readMarker>): void | Promise<void>;
  }
  const cases: Case[] = [
    {
      name: 'restarts a healthy data dir, checking its 200 files against its 200 volumes',
      prepare: () => undefined,
      check: async (o, before) => {
        expect(o.volumes).toEqual({ files: 200, volumes: 200, orphans: [], withoutFile: [] });
        expect(o.adopted).toBe(false);
        expect(o.databaseId).toBe(before?.databaseId);
        expect(await o.store.listVolumes({}, { limit: 1000 })).toHaveLength(200);
      },
    },
    {
      name: 'records the database’s identity in a marker from before identities, keeping its start date',
      prepare: () => {
        const m = readMarker(dir)!;
        writeFileSync(join(dir, MARKER_FILE), JSON.stringify({ format: m.format, database: m.database, createdAt: '2025-01-02T03:04:05.000Z' }));
      },
      check: (o) => {
        expect(o.adopted).toBe(true);
        expect(readMarker(dir)).toEqual({ format: 'online-extend data dir', database: DB_FILE, createdAt: '2025-01-02T03:04:05.000Z', databaseId: o.databaseId });
        expect(o.volumes?.orphans).toEqual([]);
      },
    },
    {
      name: 'upgrades a data dir an older online-extend left (old schema, old marker): migrates, gives the database an identity and records it',
      prepare: () => {
        for (const f of [DB_FILE, `${DB_FILE}-wal`, `${DB_FILE}-shm`]) rmSync(join(dir, f), { force: true });
        olderDatabase(join(dir, DB_FILE), Array.from({ length: 200 }, (_, i) => `vol-${i + 1}`));
        writeFileSync(join(dir, MARKER_FILE), JSON.stringify({ format: 'online-extend data dir', database: DB_FILE, createdAt: '2025-01-02T03:04:05.000Z' }));
      },
      check: (o) => {
        expect(o.adopted).toBe(true);
        expect(o.databaseId).toMatch(/^[0-9a-f]{32}$/);
        expect(inspectDatabase(join(dir, DB_FILE))).toEqual({ state: 'ok', schemaVersion: MIGRATIONS.length, databaseId: o.databaseId });
        expect(readMarker(dir)?.databaseId).toBe(o.databaseId);
        expect(o.volumes).toMatchObject({ files: 200, volumes: 200, orphans: [] });
      },
    },
    {
      name: 'starts with --allow-orphan-volumes despite deleted volume rows, returning the orphans and leaving their files',
      prepare: () => sql("DELETE FROM volumes WHERE id IN ('vol-7', 'vol-8')"),
      opts: { allowOrphanVolumes: true },
      check: (o, before) => {
        expect([...o.volumes!.orphans].sort((a, b) => a.name.localeCompare(b.name))).toEqual([
          { backend: 'file', name: 'vol-7.raw', volumeId: 'vol-7' },
          { backend: 'file', name: 'vol-8.qcow2', volumeId: 'vol-8' },
        ]);
        expect(o.volumes).toMatchObject({ files: 200, volumes: 198 });
        for (const f of ['vol-7.raw', 'vol-8.qcow2']) expect(existsSync(join(dir, 'volumes', 'file', f))).toBe(true);
        expect(readMarker(dir)).toEqual(before);
      },
    },
    {
      name: 'lets a lock-free opener (token create) skip the volume check, which would race with a serving process',
      prepare: () => sql('DELETE FROM volumes'),
      opts: { lock: false },
      check: (o) => expect(o.volumes).toBeUndefined(),
    },
    {
      name: 'reports volumes whose status says they have storage but whose file is gone, without refusing',
      prepare: () => {
        rmSync(join(dir, 'volumes', 'file', 'vol-3.raw'));
        sql("UPDATE volumes SET status = 'creating' WHERE id = 'vol-5'");
        rmSync(join(dir, 'volumes', 'file', 'vol-5.raw'));
      },
      check: (o) => expect(o.volumes).toMatchObject({ files: 198, volumes: 200, orphans: [], withoutFile: ['vol-3'] }),
    },
    {
      name: 'ignores half-made files (*.tmp-*) and names no backend makes',
      prepare: () => {
        writeFileSync(join(dir, 'volumes', 'file', 'vol-999.raw.tmp-123-abcd'), '');
        writeFileSync(join(dir, 'volumes', 'file', 'README'), '');
        mkdirSync(join(dir, 'volumes', 'file', 'lost+found'));
      },
      check: (o) => expect(o.volumes).toMatchObject({ files: 200, orphans: [] }),
    },
  ];

  for (const c of cases) {
    it(c.name, async () => {
      await usedDataDir({ volumes: 200, fake: true });
      await c.prepare();
      const before = readMarker(dir);
      const opened = openDataDir(dir, { lock: true, backends: ['file'], ...c.opts });
      try {
        await c.check(opened, before);
      } finally {
        await opened.close();
      }
    });
  }
});

describe('openDataDir refuses a directory that is not a data dir (/, a home, /tmp), changing nothing in it', () => {
  /** Every path under `d` with its mode, so a test sees that nothing was created or changed. */
  const snapshot = (d: string) => Object.fromEntries([d, ...readdirSync(d, { recursive: true }).map((n) => join(d, String(n)))].map((p) => [p, statSync(p).mode]));

  it.each([
    { name: 'a directory of other files (a home, /tmp)', make: (d: string) => (mkdirSync(join(d, 'src')), writeFileSync(join(d, 'notes.txt'), 'mine')) },
    { name: 'one other file', make: (d: string) => writeFileSync(join(d, '.profile'), 'x') },
    // Everyday names that a data dir also uses are no proof that the directory is one.
    { name: "other files beside a 'volumes' folder of photos", make: (d: string) => (writeFileSync(join(d, 'notes.txt'), 'x'), mkdirSync(join(d, 'volumes', 'photos'), { recursive: true }), writeFileSync(join(d, 'volumes', 'photos', 'a.jpg'), 'x')) },
    { name: "other files beside an empty 'volumes' folder", make: (d: string) => (writeFileSync(join(d, 'notes.txt'), 'x'), mkdirSync(join(d, 'volumes'))) },
    { name: 'other files beside a stray serve.lock', make: (d: string) => (writeFileSync(join(d, 'notes.txt'), 'x'), writeFileSync(join(d, LOCK_FILE), '')) },
    // The database's name is no proof either: only its content (SQLite's header) or our marker is.
    { name: `other files beside an empty file named ${DB_FILE}`, make: (d: string) => (writeFileSync(join(d, 'a.txt'), 'x'), writeFileSync(join(d, DB_FILE), '')) },
    { name: `other files beside a marker that is not ours`, make: (d: string) => (writeFileSync(join(d, 'a.txt'), 'x'), writeFileSync(join(d, MARKER_FILE), '{"name":"someone else\'s"}')) },
  ])('refuses $name with NotADataDir naming what it holds, and creates or changes nothing', ({ make }) => {
    mkdirSync(dir, { mode: 0o755 });
    make(dir);
    chmodSync(dir, 0o755);
    const before = snapshot(dir);
    const err = (() => {
      try {
        openDataDir(dir, { lock: true, backends: ['file'] });
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(DataDirError);
    expect((err as DataDirError).code).toBe<DataDirErrorCode>('NotADataDir');
    expect((err as Error).message).toMatch(/holds other files .*and no data dir's database or marker/);
    expect(snapshot(dir)).toEqual(before);
  });

  /** Another program's SQLite database (tables, none of ours) at `path`. */
  const anotherProgramsDb = (path: string) => {
    const other = new Database(path);
    other.exec('CREATE TABLE bookmarks (url TEXT)');
    other.close();
  };
  const refusedUnchanged = (message: RegExp) => {
    const before = snapshot(dir);
    expect(() => openDataDir(dir, { lock: true, backends: ['file'] })).toThrow(expect.objectContaining({ code: 'NotADataDir', message: expect.stringMatching(message) }));
    expect(snapshot(dir)).toEqual(before);
  };

  it.each([
    { name: `a ${DB_FILE} that is not an SQLite database beside other files`, make: () => (writeFileSync(join(dir, DB_FILE), 'notdb\n'), mkdirSync(join(dir, 'sub'))), says: /holds online-extend\.sqlite, but that file is not an SQLite database, beside other files \(sub\)/ },
    { name: `a ${DB_FILE} with only SQLite's header beside other files`, make: () => (writeFileSync(join(dir, DB_FILE), Buffer.concat([Buffer.from('SQLite format 3\0', 'latin1'), Buffer.alloc(92)])), writeFileSync(join(dir, 'a.txt'), 'x')), says: /holds other files \(a\.txt\) and no data dir's database or marker/ },
    { name: "another program's SQLite database beside other files", make: () => (anotherProgramsDb(join(dir, DB_FILE)), writeFileSync(join(dir, 'a.txt'), 'x')), says: /an SQLite database of another program/ },
    { name: "another program's SQLite database alone", make: () => anotherProgramsDb(join(dir, DB_FILE)), says: /an SQLite database of another program/ },
    { name: `a FIFO named ${DB_FILE} alone`, make: () => execFileSync('mkfifo', [join(dir, DB_FILE)]), says: /holds online-extend\.sqlite, which is not a regular file/ },
    { name: `a directory named ${DB_FILE} alone`, make: () => mkdirSync(join(dir, DB_FILE)), says: /holds online-extend\.sqlite, which is not a regular file/ },
    { name: `someone's ${MARKER_FILE} alone`, make: () => writeFileSync(join(dir, MARKER_FILE), '{"name":"my-app"}'), says: /holds other files \(data-dir\.json\) and no data dir's database or marker/ },
    // A FIFO would block a read of it: it must be refused, not waited on.
    { name: `a FIFO named ${MARKER_FILE} beside other files`, make: () => (execFileSync('mkfifo', [join(dir, MARKER_FILE)]), writeFileSync(join(dir, 'a.txt'), 'x')), says: /holds other files \(a\.txt, data-dir\.json\)/ },
  ])('refuses $name with NotADataDir, and creates or changes nothing', ({ make, says }) => {
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o755);
    make();
    refusedUnchanged(says);
  });

  it("refuses a symlink to another program's SQLite database outside, and leaves that database as it was", () => {
    mkdirSync(dir);
    const outside = join(root, 'other-app.sqlite');
    anotherProgramsDb(outside);
    chmodSync(outside, 0o644);
    symlinkSync(outside, join(dir, DB_FILE));
    const digest = createHash('sha256').update(readFileSync(outside)).digest('hex');
    refusedUnchanged(/an SQLite database of another program/);
    expect(statSync(outside).mode & 0o777).toBe(0o644);
    expect(createHash('sha256').update(readFileSync(outside)).digest('hex')).toBe(digest);
  });

  it('takes a directory of other files that holds a real database of ours, as an operator left them', async () => {
    mkdirSync(dir);
    await new SqliteStore(join(dir, DB_FILE)).close();
    writeFileSync(join(dir, 'operator-notes.txt'), 'mine');
    const opened = openDataDir(dir, { lock: true });
    await opened.close();
    expect(readFileSync(join(dir, 'operator-notes.txt'), 'utf8')).toBe('mine');
  });

  it('refuses a path that is a file', () => {
    mkdirSync(root, { recursive: true });
    writeFileSync(dir, 'not a dir');
    expect(() => openDataDir(dir, { lock: true })).toThrow(expect.objectContaining({ code: 'NotADataDir' }));
    expect(readFileSync(dir, 'utf8')).toBe('not a dir');
  });

  it.each([
    { name: 'missing', make: () => undefined },
    { name: 'empty', make: () => mkdirSync(dir) },
    { name: 'holding only an empty volumes dir', make: () => mkdirSync(join(dir, 'volumes'), { recursive: true }) },
    { name: 'holding only names of a data dir (a start cut short: its lock and pid)', make: () => (mkdirSync(dir), writeFileSync(join(dir, LOCK_FILE), ''), writeFileSync(join(dir, PID_FILE), '1')) },
  ])('takes a directory that is $name', async ({ make }) => {
    make();
    const opened = openDataDir(dir, { lock: true });
    await opened.close();
    expect(existsSync(join(dir, DB_FILE))).toBe(true);
  });

  it('takes a data dir reached through a symlink, and another file beside its database', async () => {
    const opened = openDataDir(dir, { lock: true });
    await opened.close();
    writeFileSync(join(dir, 'operator-notes.txt'), 'mine');
    const link = join(root, 'link');
    symlinkSync(dir, link);
    const again = openDataDir(link, { lock: true });
    await again.close();
    expect(readFileSync(join(dir, 'operator-notes.txt'), 'utf8')).toBe('mine');
  });

  it('never changes the mode of a directory given as the database file (a malformed URL naming /)', () => {
    const asDb = join(root, 'a-dir.sqlite');
    mkdirSync(asDb, { recursive: true, mode: 0o755 });
    chmodSync(asDb, 0o755);
    expect(() => new SqliteStore(asDb)).toThrow(/not a regular file/);
    expect(statSync(asDb).mode & 0o777).toBe(0o755);
  });

  it.each([
    { name: "someone's text file (a typo in a sqlite:/// URL)", content: 'hi\n' },
    { name: 'a file shorter than the SQLite header', content: 'SQLite' },
    { name: 'a file with a header like SQLite 2', content: '** This file contains an SQLite 2.1 database **' },
  ])('refuses $name as the database file, changing neither its mode nor its content, nor making -wal/-shm files', ({ content }) => {
    const f = join(root, 'notes.txt');
    writeFileSync(f, content, { mode: 0o644 });
    chmodSync(f, 0o644);
    expect(() => new SqliteStore(f)).toThrow(/is not an SQLite database \(nothing changed\)/);
    expect(statSync(f).mode & 0o777).toBe(0o644);
    expect(readFileSync(f, 'utf8')).toBe(content);
    expect(existsSync(`${f}-wal`) || existsSync(`${f}-shm`)).toBe(false);
  });

  it.each([
    { name: 'a symlink to a file that does not exist', target: (d: string) => join(d, 'gone', 'db.sqlite') },
    { name: 'a symlink to a missing file in an existing directory', target: (d: string) => join(d, 'moved.sqlite') },
    { name: 'a loop of symlinks', target: (d: string) => join(d, 'db.sqlite') },
  ])('refuses $name as the database file, creating nothing where it points', ({ target }) => {
    const f = join(root, 'db.sqlite');
    const to = target(root);
    symlinkSync(to, f);
    expect(() => new SqliteStore(f)).toThrow(/is a symlink to .*, which does not exist: .*\(nothing changed\)/);
    expect(lstatSync(f).isSymbolicLink()).toBe(true);
    if (to !== f) expect(existsSync(to)).toBe(false);
    expect(existsSync(`${f}-wal`) || existsSync(`${f}-shm`)).toBe(false);
  });

  it('opens a database through a symlink to it (the healthy neighbour)', async () => {
    const real = join(root, 'real.sqlite');
    await new SqliteStore(real).close();
    const f = join(root, 'db.sqlite');
    symlinkSync(real, f);
    const store = new SqliteStore(f);
    await store.close();
    expect(lstatSync(f).isSymbolicLink()).toBe(true);
    expect(statSync(real).size).toBeGreaterThan(0);
  });

  it('refuses a data dir whose database is a dangling symlink, through openDataDir, and creates nothing', () => {
    const d = join(root, 'data');
    mkdirSync(d, { mode: 0o700 });
    const to = join(root, 'unmounted', DB_FILE);
    symlinkSync(to, join(d, DB_FILE));
    expect(() => openDataDir(d, { lock: false })).toThrow(/is a symlink to .*, which does not exist/);
    expect(existsSync(to)).toBe(false);
    expect(readdirSync(d)).toEqual([DB_FILE]);
  });

  /** An SQLite database in rollback-journal mode (as most programs leave theirs) whose tables are `sql`'s. */
  const sqliteWith = (f: string, sql: string) => {
    const db = new Database(f);
    db.exec(sql);
    db.close();
  };

  it.each([
    { name: "another program's SQLite database (a typo in a sqlite:/// URL)", sql: "CREATE TABLE photos (id INTEGER, name TEXT); INSERT INTO photos VALUES (1, 'a')" },
    { name: 'a database with some of our table names only', sql: 'CREATE TABLE servers (id TEXT); CREATE TABLE notes (t TEXT)' },
  ])('refuses $name, changing neither its mode nor its content, nor making -wal/-shm files', ({ sql }) => {
    const f = join(root, 'theirs.db');
    sqliteWith(f, sql);
    chmodSync(f, 0o644);
    const before = readFileSync(f);
    expect(() => new SqliteStore(f)).toThrow(/is an SQLite database of another program \(none of online-extend's tables; nothing changed\)/);
    expect(statSync(f).mode & 0o777).toBe(0o644);
    expect(readFileSync(f).equals(before)).toBe(true);
    expect(existsSync(`${f}-wal`) || existsSync(`${f}-shm`)).toBe(false);
  });

  it.each([
    { name: 'an existing database', make: (f: string) => new SqliteStore(f).close() },
    { name: 'an SQLite file with no tables yet (a command that creates may use it)', make: (f: string) => sqliteWith(f, 'CREATE TABLE t (x); DROP TABLE t') },
    { name: 'an empty file (a database not yet written)', make: (f: string) => writeFileSync(f, '') },
  ])('opens $name and makes it 0600, saying it narrowed it (once)', async ({ make }) => {
    const f = join(root, 'db.sqlite');
    await make(f);
    chmodSync(f, 0o644);
    const store = new SqliteStore(f);
    await store.close();
    expect(statSync(f).mode & 0o777).toBe(0o600);
    expect(store.narrowed).toEqual([f]);
    const again = new SqliteStore(f);
    await again.close();
    expect(again.narrowed).toEqual([]);
  });
});

describe('volumes/ and instances/ show a data dir only by what they hold', () => {
  const SERVER = '6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f';
  const VOLUME = '0d9b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e';
  /** `rel` under the data dir, its directories made on the way. */
  const at = (rel: string) => join(dir, ...rel.split('/'));
  const file = (rel: string, content = 'x') => (mkdirSync(join(at(rel), '..'), { recursive: true }), writeFileSync(at(rel), content));
  const folder = (rel: string) => mkdirSync(at(rel), { recursive: true });
  const outside = () => join(root, 'outside');
  /** Every path under the data dir and outside it with its lstat mode: a refusal must create, remove and narrow nothing. */
  const modes = () => {
    const out: Record<string, number> = {};
    for (const d of [dir, outside()]) {
      if (!existsSync(d)) continue;
      const under = statSync(d).isDirectory() ? readdirSync(d, { recursive: true }).map((n) => join(d, String(n))) : [];
      for (const p of [d, ...under]) out[p] = lstatSync(p).mode;
    }
    return out;
  };
  /** Everything made world-readable, as someone's own files are, so a narrowing would show. */
  const widen = () => {
    for (const p of Object.keys(modes())) {
      const st = lstatSync(p);
      if (st.isDirectory()) chmodSync(p, 0o755);
      else if (st.isFile()) chmodSync(p, 0o644);
    }
  };

  it.each([
    { name: 'instances/list.txt alone', make: () => file('instances/list.txt'), says: 'instances/list.txt' },
    { name: 'volumes/holiday/pic.jpg alone', make: () => file('volumes/holiday/pic.jpg'), says: 'volumes/holiday/pic.jpg' },
    { name: 'a file directly in volumes/', make: () => file(`volumes/${VOLUME}.raw`), says: `volumes/${VOLUME}.raw (not a directory)` },
    { name: 'a directory nested in a backend directory', make: () => folder('volumes/file/old'), says: 'volumes/file/old' },
    { name: "a directory under a volume file's name", make: () => file(`volumes/file/${VOLUME}.raw/notes.txt`), says: `volumes/file/${VOLUME}.raw (not a regular file)` },
    { name: "someone's file beside a real volume file", make: () => (file(`volumes/file/${VOLUME}.raw`), file('volumes/file/notes.txt')), says: 'volumes/file/notes.txt' },
    { name: 'a directory in instances/ not named by a server id', make: () => folder('instances/photos'), says: 'instances/photos' },
    { name: "a server id in capitals (ours are lower case)", make: () => folder(`instances/${SERVER.toUpperCase()}`), says: `instances/${SERVER.toUpperCase()}` },
    { name: "another file in a server's directory", make: () => (file(`instances/${SERVER}/disk`), file(`instances/${SERVER}/notes.txt`)), says: `instances/${SERVER}/notes.txt` },
    { name: "a directory nested in a server's directory", make: () => folder(`instances/${SERVER}/snapshots`), says: `instances/${SERVER}/snapshots` },
    { name: "a server's disk that is a directory", make: () => folder(`instances/${SERVER}/disk`), says: `instances/${SERVER}/disk (not a regular file)` },
    { name: "a console.sock that is a regular file", make: () => file(`instances/${SERVER}/console.sock`), says: `instances/${SERVER}/console.sock (not a socket)` },
    { name: 'a file named volumes', make: () => (mkdirSync(dir), writeFileSync(at('volumes'), 'x')), says: 'volumes (not a directory)' },
    { name: 'a directory named serve.pid holding files', make: () => file('serve.pid/mine.txt'), says: 'serve.pid (not a regular file)' },
    {
      name: 'a volume file that is a symlink to a file outside',
      make: () => (folder('volumes/file'), writeFileSync(outside(), 'x'), symlinkSync(outside(), at(`volumes/file/${VOLUME}.raw`))),
      says: `volumes/file/${VOLUME}.raw (a symlink)`,
    },
    {
      name: 'a volumes/ that is a symlink to a directory outside',
      make: () => (mkdirSync(dir), mkdirSync(join(outside(), 'file'), { recursive: true }), writeFileSync(join(outside(), 'file', `${VOLUME}.raw`), 'x'), symlinkSync(outside(), at('volumes'))),
      says: 'volumes (a symlink)',
    },
  ])('refuses $name with NotADataDir naming it, before anything is created or narrowed', ({ make, says }) => {
    make();
    widen();
    const before = modes();
    const err = refusal(() => openDataDir(dir, { lock: true, backends: ['file'] }));
    expect(err.code).toBe<DataDirErrorCode>('NotADataDir');
    expect(err.message).toContain(`holds other files (${says}) and no data dir's database or marker`);
    expect(modes()).toEqual(before);
  });

  it('names five of many paths that do not fit, and an ellipsis for the rest', () => {
    for (let i = 0; i < 8; i++) file(`volumes/holiday/pic-${i}.jpg`);
    const err = refusal(() => openDataDir(dir, { lock: true }));
    expect(err.message).toContain('other files (volumes/holiday/pic-0.jpg, volumes/holiday/pic-1.jpg, volumes/holiday/pic-2.jpg, volumes/holiday/pic-3.jpg, volumes/holiday/pic-4.jpg, …)');
  });

  it.each([
    { name: 'an empty volumes/', make: () => folder('volumes') },
    { name: 'empty backend directories', make: () => (folder('volumes/file'), folder('volumes/iscsi')) },
    { name: 'an empty instances/', make: () => folder('instances') },
    { name: "an empty server's directory (a spawn cut short)", make: () => folder(`instances/${SERVER}`) },
    // A start cut short: the lock taken, the database begun, the backends' directories made; a create cut short leaves its temporary file.
    {
      name: 'what a start cut short leaves',
      make: () => (file(LOCK_FILE, ''), file(PID_FILE, '1'), file(DB_FILE, ''), folder('volumes/file'), file(`volumes/block/${VOLUME}.raw.tmp-4242-0a1b2c3d`, '')),
    },
  ])('takes a directory holding $name as a fresh data dir', async ({ make }) => {
    make();
    const opened = openDataDir(dir, { lock: true, backends: ['file'] });
    await opened.close();
    expect(readMarker(dir)?.databaseId).toBe(opened.databaseId);
  });

  it("passes the files the code makes (a backend's volume, a server's directory) on to the database checks when the database and marker are lost", async () => {
    await usedDataDir();
    await new FileBackend({ dir: at('volumes/file') }).create(VOLUME, 1 << 20);
    const files = instanceFiles(at('instances'), SERVER);
    mkdirSync(files.dir, { recursive: true });
    writeFileSync(files.disk, '');
    writeFileSync(files.consoleLog, 'boot\n');
    writeFileSync(`${files.consoleLog}.0`, 'older boot\n');
    // A socket QEMU left: made by listening on it (closing the server would remove it).
    const server = createServer();
    await new Promise<void>((res) => server.listen(files.consoleSocket!, res));
    try {
      for (const f of [DB_FILE, `${DB_FILE}-wal`, `${DB_FILE}-shm`, MARKER_FILE]) rmSync(join(dir, f), { force: true });
      const err = refusal(() => openDataDir(dir, { lock: true }));
      expect(err.code).toBe<DataDirErrorCode>('DatabaseMissing');
      expect(err.message).toMatch(/2 volume file\(s\) in .*volumes\/file/);
    } finally {
      await new Promise((res) => server.close(res));
    }
  });

  it("takes a used data dir with a server's directory, its marker and database the evidence", async () => {
    await usedDataDir();
    file(`instances/${SERVER}/disk`, '');
    file('instances/notes.txt');
    const opened = openDataDir(dir, { lock: true });
    await opened.close();
    expect(readFileSync(at('instances/notes.txt'), 'utf8')).toBe('x');
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
