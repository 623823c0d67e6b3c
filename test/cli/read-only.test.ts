/**
 * The CLI commands that only read or remove (`user list|delete`, `flavor list|delete`, `image
 * list|delete`, `token revoke`) as real processes: on a missing or empty data dir, an empty
 * database file, an SQLite file with no tables or a missing SQLite URL's file they exit 1 with a
 * message naming the database and what to give, and create or write nothing (no data dir, schema
 * or marker); another program's database named by a SQLite URL is refused as such, unchanged. On a
 * data dir that exists they work. Each case's temp dir is removed.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBin } from '../support/build.js';

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'oe-read-only-'));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

/** Every path under `root`, to show a refusal created nothing. */
const tree = () => readdirSync(root, { recursive: true }).map(String).sort();
/** The content of every file under `root` (base64; directories as `dir`), to show a refusal wrote nothing. */
const contents = () => Object.fromEntries(tree().map((p) => [p, statSync(join(root, p)).isDirectory() ? 'dir' : readFileSync(join(root, p)).toString('base64')]));

const COMMANDS = [
  { args: ['user', 'list'], whose: 'whose users to list' },
  { args: ['user', 'delete', '--user', 'alice'], whose: 'whose user to delete' },
  { args: ['flavor', 'list'], whose: 'whose flavors to list' },
  { args: ['flavor', 'delete', 'f1'], whose: 'whose flavor to delete' },
  { args: ['image', 'list'], whose: 'whose images to list' },
  { args: ['image', 'delete', 'i1'], whose: 'whose image to delete' },
  { args: ['token', 'revoke', 'oe-whatever'], whose: 'whose token to revoke' },
];

/** An SQLite database at `f` (rollback journal, as most programs keep theirs) made by `sql`. */
function sqliteWith(f: string, sql: string): void {
  mkdirSync(join(f, '..'), { recursive: true });
  const db = new Database(f);
  db.exec(sql);
  db.close();
}
const NO_TABLES = 'CREATE TABLE t (x); DROP TABLE t';

/** Where the command is pointed: its options, the database file the message must name, and what it says was found there. */
const PLACES = [
  { place: 'a data dir that does not exist', make: () => undefined, where: () => ['--data-dir', join(root, 'data')] },
  { place: 'an empty data dir', make: () => mkdirSync(join(root, 'data')), where: () => ['--data-dir', join(root, 'data')] },
  {
    place: 'a data dir whose database file is empty',
    make: () => (mkdirSync(join(root, 'data')), writeFileSync(join(root, 'data', 'online-extend.sqlite'), '')),
    where: () => ['--data-dir', join(root, 'data')],
  },
  { place: "a SQLite URL whose file does not exist", make: () => undefined, where: () => ['--database-url', `sqlite://${join(root, 'data', 'db.sqlite')}`] },
  {
    place: 'a data dir whose database is an SQLite file with no tables',
    make: () => sqliteWith(join(root, 'data', 'online-extend.sqlite'), NO_TABLES),
    where: () => ['--data-dir', join(root, 'data')],
    found: 'an SQLite file with no tables',
  },
  {
    place: 'a SQLite URL naming an SQLite file with no tables',
    make: () => sqliteWith(join(root, 'data', 'db.sqlite'), NO_TABLES),
    where: () => ['--database-url', `sqlite://${join(root, 'data', 'db.sqlite')}`],
    found: 'an SQLite file with no tables',
  },
].map((p) => ({ found: 'missing or empty', ...p }));

const CASES = COMMANDS.flatMap((c) => PLACES.map((p) => ({ ...c, ...p, name: `${c.args.slice(0, 2).join(' ')} on ${p.place}` })));

describe('commands that only read or remove create no data dir', () => {
  it.each(CASES)('$name: exit 1, naming the database, nothing created', async ({ args, whose, make, where, found }) => {
    make();
    const before = tree();
    const content = contents();
    const opts = where();
    const r = await runBin([...args, ...opts]);
    const db = opts[0] === '--data-dir' ? join(opts[1]!, 'online-extend.sqlite') : join(root, 'data', 'db.sqlite');
    expect({ status: r.status, stdout: r.stdout }).toEqual({ status: 1, stdout: '' });
    expect(r.stderr).toBe(`error: no database at ${db} (${found}): give the --data-dir (or --database-url) of the service ${whose} (nothing changed)`);
    expect(tree()).toEqual(before);
    expect(contents()).toEqual(content);
  });

  it.each(COMMANDS.map((c) => ({ ...c, name: c.args.slice(0, 2).join(' ') })))(
    "$name on a SQLite URL naming another program's database: exit 1, saying so, the database left as it was",
    async ({ args }) => {
      const theirs = join(root, 'photos.db');
      sqliteWith(theirs, "CREATE TABLE photos (id INTEGER, name TEXT); INSERT INTO photos VALUES (1, 'a')");
      const before = readFileSync(theirs);
      const r = await runBin([...args, '--database-url', `sqlite://${theirs}`]);
      expect({ status: r.status, stdout: r.stdout }).toEqual({ status: 1, stdout: '' });
      expect(r.stderr).toBe(`error: the database path ${theirs} is an SQLite database of another program (none of online-extend's tables; nothing changed)`);
      expect(readFileSync(theirs).equals(before)).toBe(true);
      expect(tree()).toEqual(['photos.db']);
    },
  );

  it('refuses a data dir that is a file, saying so, and leaves it as it was', async () => {
    const file = join(root, 'notes.txt');
    writeFileSync(file, 'mine\n');
    const r = await runBin(['user', 'list', '--data-dir', file]);
    expect({ status: r.status, stdout: r.stdout }).toEqual({ status: 1, stdout: '' });
    expect(r.stderr).toBe(`error: the data dir ${file} is not a directory: give the --data-dir (or --database-url) of the service whose users to list (nothing changed)`);
    expect(tree()).toEqual(['notes.txt']);
  });

  it('works on a data dir a command that writes made, and still creates one for such a command', async () => {
    const data = join(root, 'data');
    const created = await runBin(['flavor', 'create', '--name', 'tiny', '--id', 'tiny', '--vcpus', '1', '--ram', '64', '--disk', '0', '--data-dir', data]);
    expect({ status: created.status, stdout: created.stdout }).toEqual({ status: 0, stdout: 'tiny' });
    expect(existsSync(join(data, 'data-dir.json'))).toBe(true);
    const users = await runBin(['user', 'list', '--data-dir', data, '-f', 'json']);
    expect({ status: users.status, users: JSON.parse(users.stdout) as unknown }).toEqual({ status: 0, users: { users: [] } });
    const flavors = await runBin(['flavor', 'list', '--data-dir', data, '-f', 'json']);
    expect((JSON.parse(flavors.stdout) as { flavors: Array<{ id: string }> }).flavors.map((f) => f.id)).toEqual(['tiny']);
    const deleted = await runBin(['flavor', 'delete', 'tiny', '--data-dir', data]);
    expect({ status: deleted.status, stdout: deleted.stdout }).toEqual({ status: 0, stdout: 'tiny' });
  });
});
