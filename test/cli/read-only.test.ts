/**
 * The CLI commands that only read or remove (`user list|delete`, `flavor list|delete`, `image
 * list|delete`, `token revoke`) as real processes: on a missing or empty data dir, an empty
 * database file or a missing SQLite URL's file they exit 1 with a message naming the database and
 * what to give, and create nothing (no data dir, database or marker). On a data dir that exists
 * they work. Each case's temp dir is removed.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
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

const COMMANDS = [
  { args: ['user', 'list'], whose: 'whose users to list' },
  { args: ['user', 'delete', '--user', 'alice'], whose: 'whose user to delete' },
  { args: ['flavor', 'list'], whose: 'whose flavors to list' },
  { args: ['flavor', 'delete', 'f1'], whose: 'whose flavor to delete' },
  { args: ['image', 'list'], whose: 'whose images to list' },
  { args: ['image', 'delete', 'i1'], whose: 'whose image to delete' },
  { args: ['token', 'revoke', 'oe-whatever'], whose: 'whose token to revoke' },
];

/** Where the command is pointed: its options and the database file the message must name. */
const PLACES = [
  { place: 'a data dir that does not exist', make: () => undefined, where: () => ['--data-dir', join(root, 'data')] },
  { place: 'an empty data dir', make: () => mkdirSync(join(root, 'data')), where: () => ['--data-dir', join(root, 'data')] },
  {
    place: 'a data dir whose database file is empty',
    make: () => (mkdirSync(join(root, 'data')), writeFileSync(join(root, 'data', 'online-extend.sqlite'), '')),
    where: () => ['--data-dir', join(root, 'data')],
  },
  { place: "a SQLite URL whose file does not exist", make: () => undefined, where: () => ['--database-url', `sqlite://${join(root, 'data', 'db.sqlite')}`] },
];

const CASES = COMMANDS.flatMap((c) => PLACES.map((p) => ({ ...c, ...p, name: `${c.args.slice(0, 2).join(' ')} on ${p.place}` })));

describe('commands that only read or remove create no data dir', () => {
  it.each(CASES)('$name: exit 1, naming the database, nothing created', async ({ args, whose, make, where }) => {
    make();
    const before = tree();
    const opts = where();
    const r = await runBin([...args, ...opts]);
    const db = opts[0] === '--data-dir' ? join(opts[1]!, 'online-extend.sqlite') : join(root, 'data', 'db.sqlite');
    expect({ status: r.status, stdout: r.stdout }).toEqual({ status: 1, stdout: '' });
    expect(r.stderr).toBe(`error: no database at ${db} (missing or empty): give the --data-dir (or --database-url) of the service ${whose} (nothing changed)`);
    expect(tree()).toEqual(before);
  });

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
