/**
 * The SQLite store's one write batcher (src/db/writeQueue.ts), clause by clause of its contract,
 * on a real database file read back through a second connection.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { openSqlite } from '../../src/db/sqliteOpen.js';
import { WriteQueue } from '../../src/db/writeQueue.js';

let dir: string;
let db: Database.Database;
let reader: Database.Database;
let q: WriteQueue;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'oe-writes-'));
  db = openSqlite(join(dir, 'db.sqlite'));
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
  reader = new Database(join(dir, 'db.sqlite'), { readonly: true });
  q = new WriteQueue(db);
});
afterEach(() => {
  q.flush();
  reader.close();
  db.close();
  rmSync(dir, { recursive: true, force: true });
});

const insert = (id: number, v = `v${id}`) => () => db.prepare('INSERT INTO t (id, v) VALUES (?, ?)').run(id, v).changes;
const seen = () => (reader.prepare('SELECT id FROM t ORDER BY id').all() as Array<{ id: number }>).map((r) => r.id);

describe('WriteQueue', () => {
  it('commits the writes of one turn together at its end: another connection sees none before, all after', async () => {
    const done = [q.write(insert(1)), q.write(insert(2)), q.write(insert(3))];
    expect(seen()).toEqual([]);
    await Promise.all(done);
    expect(seen()).toEqual([1, 2, 3]);
  });

  it('runs a group in one transaction: the second write of a turn cannot see the first from another connection', async () => {
    let seenBySecond: number[] | undefined;
    await Promise.all([
      q.write(insert(1)),
      q.write(() => {
        seenBySecond = seen();
      }),
    ]);
    expect(seenBySecond).toEqual([]);
    expect(seen()).toEqual([1]);
  });

  it('resolves each write with what its run returned', async () => {
    expect(await Promise.all([q.write(insert(1)), q.write(() => 'answer')])).toEqual([1, 'answer']);
  });

  it('rejects only the bad write of a group; its neighbours commit, in order', async () => {
    await q.write(insert(1));
    const results = await Promise.allSettled([q.write(insert(2)), q.write(insert(1, 'duplicate')), q.write(insert(3))]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason).toMatchObject({ code: 'SQLITE_CONSTRAINT_PRIMARYKEY' });
    expect(seen()).toEqual([1, 2, 3]);
  });

  it('runs a failing write alone in its own transaction: none of its statements stay', async () => {
    const twoStatements = () => {
      insert(5)();
      insert(1)(); // fails: id 1 exists
    };
    await q.write(insert(1));
    const results = await Promise.allSettled([q.write(twoStatements), q.write(insert(6))]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'fulfilled']);
    expect(seen()).toEqual([1, 6]);
  });

  it('runs sequenced jobs one after another, never interleaved, and goes on after one fails', async () => {
    const log: string[] = [];
    const job = (name: string, fail = false) => async () => {
      log.push(`${name} start`);
      await nextTurn();
      await q.write(insert(log.length));
      log.push(`${name} end`);
      if (fail) throw new Error(name);
      return name;
    };
    const results = await Promise.allSettled([q.sequence(job('a')), q.sequence(job('b', true)), q.sequence(job('c'))]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(log).toEqual(['a start', 'a end', 'b start', 'b end', 'c start', 'c end']);
  });

  it("groups a sequenced job's writes with other writes of the same turn (audit writes never wait for a whole job)", async () => {
    let release!: () => void;
    const blocked = new Promise<void>((r) => (release = r));
    const job = q.sequence(async () => {
      await q.write(insert(1));
      await blocked;
      await q.write(insert(3));
    });
    await nextTurn();
    await nextTurn();
    // The job is waiting midway: a write outside it commits all the same.
    await q.write(insert(2));
    expect(seen()).toEqual([1, 2]);
    release();
    await job;
    expect(seen()).toEqual([1, 2, 3]);
  });

  it('commits what is queued at once on flush', () => {
    void q.write(insert(7));
    expect(seen()).toEqual([]);
    q.flush();
    expect(seen()).toEqual([7]);
  });
});
