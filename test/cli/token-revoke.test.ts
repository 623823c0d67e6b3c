/**
 * `online-extend token revoke TOKEN` as a real process on the data dir of a running service
 * (in-process startService, real SQLite, real HTTP): it removes that token only, as Keystone's
 * DELETE does (tokens made from it with the token method, and the one it was made from, keep
 * working), the running service stops accepting it within its cache window (2 s), and an unknown,
 * already revoked or expired token is refused with exit 1 and a message that never quotes it,
 * changing nothing. It names the token's user by id and name; a token that starts with `-` is
 * taken as the token, not an option; a SQLite URL of the wrong form (`sqlite://tmp/x`) is refused
 * naming the right one, creating nothing. A refusal says "nothing changed" only when opening the
 * database changed nothing; otherwise it names what was narrowed (a database made 0640) or written
 * (the marker), as a revoke's note does. Child processes run to completion; temp dirs are removed.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { DB_FILE, MARKER_FILE, openDataDir } from '../../src/db/dataDir.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { SqliteUserStore } from '../../src/db/users.js';
import { hashToken, issueToken } from '../../src/auth/tokens.js';
import { hashPassword } from '../../src/identity/password.js';
import { runBin } from '../support/build.js';
import { makeService, PROJECT, type ServiceHarness } from '../support/service.js';

const PASSWORD = 'revoke me not';
/** The service's token cache window (TokenAuthenticator's default revalidateMs). */
const WINDOW_MS = 2_000;

let h: ServiceHarness;
let store: SqliteStore;

/** Runs `online-extend ARGS` to completion with `stdin`; output trimmed. */
const cli = (args: string[], stdin = '') => runBin(args, { stdin });

const revoke = (token: string, ...extra: string[]) => cli(['token', 'revoke', token, '--data-dir', h.config.dataDir, ...extra]);
const computeStatus = async (token: string) => (await fetch(`${h.service.computeUrl}/v2/${PROJECT}/servers`, { headers: { 'x-auth-token': token } })).status;

/** Polls the compute API with `token` until it answers 401; how long that took after `since` (ms), or Infinity. */
async function refusedAfter(token: string, since: number, limitMs = 10_000): Promise<number> {
  while (Date.now() - since < limitMs) {
    if ((await computeStatus(token)) === 401) return Date.now() - since;
    await new Promise((r) => setTimeout(r, 50));
  }
  return Infinity;
}

async function keystone(body: unknown): Promise<{ token: string; body: { token: { audit_ids: string[]; expires_at: string } } }> {
  const res = await fetch(`${h.service.identityUrl}/v3/auth/tokens?nocatalog`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  expect(res.status).toBe(201);
  return { token: res.headers.get('x-subject-token')!, body: (await res.json()) as { token: { audit_ids: string[]; expires_at: string } } };
}
const scope = { project: { id: PROJECT } };
const login = () => keystone({ auth: { identity: { methods: ['password'], password: { user: { name: 'dana', domain: { id: 'default' }, password: PASSWORD } } }, scope } });
const exchange = (token: string) => keystone({ auth: { identity: { methods: ['token'], token: { id: token } }, scope } });

const tokenCount = async () => (await store.listTokens()).length;

beforeAll(async () => {
  h = await makeService();
  store = new SqliteStore(join(h.config.dataDir, 'online-extend.sqlite'));
  const now = new Date().toISOString();
  const passwordHash = await hashPassword(PASSWORD, { N: 2 ** 10, r: 8, p: 1 });
  await new SqliteUserStore(store.db).createUser({ id: 'd'.repeat(32), name: 'dana', projectId: PROJECT, roles: ['member'], passwordHash, createdAt: now, updatedAt: now });
});
afterAll(async () => {
  await store?.close();
  await h?.cleanup();
});

describe('token revoke', () => {
  it('revokes a token made with token create: exit 0, says whose it was, removes it, and the running service refuses it within its cache window', async () => {
    const { token } = await issueToken(store, { userId: 'ops', projectId: PROJECT, roles: ['member'], ttlMs: 3_600_000 });
    expect(await computeStatus(token)).toBe(200);
    const r = await revoke(token, '-f', 'json');
    const revokedAt = Date.now();
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    expect(JSON.parse(r.stdout)).toEqual({ token: { user_id: 'ops', user_name: 'ops', project_id: PROJECT, expires_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/), revoked: true } });
    expect(r.stdout).not.toContain(token);
    expect(await store.getToken(hashToken(token))).toBeUndefined();
    // Another process revoked it: the service learns of it when its cached answer is 2 s old.
    expect(await refusedAfter(token, revokedAt)).toBeLessThanOrEqual(WINDOW_MS + 1_000);
    expect(await computeStatus(h.token)).toBe(200);
  });

  it('prints a table of whose token it was without -f json', async () => {
    const { token } = await issueToken(store, { userId: 'ops', projectId: PROJECT, roles: ['member'], ttlMs: 3_600_000 });
    const r = await revoke(token);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^user_id\\s+user_name\\s+project_id\\s+expires_at\\s+revoked\\n[- ]+\\nops\\s+ops\\s+${PROJECT}\\s+\\S+\\s+true$`));
  });

  it.each([
    ['the password token', 0, [401, 200, 200]],
    ['the token made from it', 1, [200, 401, 200]],
    ['the token made from that one', 2, [200, 200, 401]],
  ] as const)("revokes %s of a Keystone chain and no other, as Keystone's DELETE (read from standard input with -)", async (_name, index, statuses) => {
    const first = await login();
    const second = await exchange(first.token);
    const third = await exchange(second.token);
    const chain = [first.token, second.token, third.token];
    for (const t of chain) expect(await computeStatus(t)).toBe(200);
    const before = await tokenCount();
    const r = await cli(['token', 'revoke', '-', '--data-dir', h.config.dataDir, '-f', 'json'], `${chain[index]}\n`);
    const revokedAt = Date.now();
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ token: { user_id: 'd'.repeat(32), user_name: 'dana', project_id: PROJECT, expires_at: new Date(first.body.token.expires_at).toISOString(), revoked: true } });
    expect(await tokenCount()).toBe(before - 1);
    expect(await refusedAfter(chain[index]!, revokedAt)).toBeLessThanOrEqual(WINDOW_MS + 1_000);
    // Past the window, every answer comes from the store again: only that token is gone.
    await new Promise((res) => setTimeout(res, Math.max(0, revokedAt + WINDOW_MS + 100 - Date.now())));
    const now: number[] = [];
    for (const t of chain) now.push(await computeStatus(t));
    expect(now).toEqual(statuses);
  });

  it.each([
    ['an unknown token', async () => 'oe-not-a-token-of-ours', /^error: no such token in \/\S+\/online-extend\.sqlite: unknown there or already revoked \(nothing changed; is it the data dir or database of the service that issued it\?\)$/],
    [
      'a token revoked already',
      async () => {
        const { token } = await issueToken(store, { userId: 'ops', projectId: PROJECT, roles: ['member'], ttlMs: 3_600_000 });
        await store.deleteToken(hashToken(token));
        return token;
      },
      /^error: no such token in \/\S+\/online-extend\.sqlite: unknown there or already revoked \(nothing changed; is it the data dir or database of the service that issued it\?\)$/,
    ],
    [
      'an expired token',
      async () => (await issueToken(store, { userId: 'ops', projectId: PROJECT, roles: ['member'], ttlMs: 1_000, now: new Date(Date.now() - 60_000) })).token,
      /^error: the token expired at \d{4}-\d\d-\d\dT[\d:.]+Z: nothing to revoke \(nothing changed\)$/,
    ],
  ])('refuses %s with exit 1 and says why, never quoting it, changing nothing', async (_name, make, message) => {
    const token = await make();
    const before = await store.listTokens();
    const r = await revoke(token);
    expect({ status: r.status, stdout: r.stdout }).toEqual({ status: 1, stdout: '' });
    expect(r.stderr).toMatch(message);
    expect(r.stderr).not.toContain(token);
    expect(await store.listTokens()).toEqual(before);
  });

  it.each([
    ['a data dir that does not exist', ['--data-dir', '/tmp/oe-no-such-data-dir/typo']],
    ['a SQLite database URL whose file does not exist', ['--database-url', 'sqlite:///tmp/oe-no-such-data-dir/nope.sqlite']],
  ])('refuses %s with exit 1, creating nothing, and the token keeps working', async (_name, where) => {
    const { token } = await issueToken(store, { userId: 'ops', projectId: PROJECT, roles: ['member'], ttlMs: 3_600_000 });
    const r = await cli(['token', 'revoke', token, ...where]);
    expect({ status: r.status, stdout: r.stdout }).toEqual({ status: 1, stdout: '' });
    expect(r.stderr).toMatch(/^error: no database at \/tmp\/oe-no-such-data-dir\/\S+ \(missing or empty\): give the --data-dir \(or --database-url\) of the service whose token to revoke \(nothing changed\)$/m);
    expect(r.stderr).not.toContain(token);
    expect(existsSync('/tmp/oe-no-such-data-dir')).toBe(false);
    expect(await computeStatus(token)).toBe(200);
  });

  it('refuses a data dir whose database file is empty, writing nothing into it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'oe-revoke-empty-'));
    try {
      writeFileSync(join(dir, 'online-extend.sqlite'), '');
      const r = await cli(['token', 'revoke', 'oe-whatever', '--data-dir', dir]);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/\(missing or empty\)/);
      expect(statSync(join(dir, 'online-extend.sqlite')).size).toBe(0);
      expect(readdirSync(dir)).toEqual(['online-extend.sqlite']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a data dir that is a file, saying it is not a directory, and leaves the file as it was', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'oe-revoke-file-'));
    try {
      const file = join(dir, 'notes.txt');
      writeFileSync(file, 'mine\n');
      const r = await cli(['token', 'revoke', 'oe-whatever', '--data-dir', file]);
      expect({ status: r.status, stdout: r.stdout }).toEqual({ status: 1, stdout: '' });
      expect(r.stderr).toMatch(/^error: the data dir \S+\/notes\.txt is not a directory: give the --data-dir \(or --database-url\) of the service whose token to revoke \(nothing changed\)$/m);
      expect(readFileSync(file, 'utf8')).toBe('mine\n');
      expect(readdirSync(dir)).toEqual(['notes.txt']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('takes a token with white space around it (a copy and paste) on standard input', async () => {
    const { token } = await issueToken(store, { userId: 'ops', projectId: PROJECT, roles: ['member'], ttlMs: 3_600_000 });
    const r = await cli(['token', 'revoke', '-', '--data-dir', h.config.dataDir], `  ${token}  \r\n`);
    expect(r.status).toBe(0);
    expect(await store.getToken(hashToken(token))).toBeUndefined();
  });

  it.each([
    ['two tokens on standard input', ['token', 'revoke', '-'], 'oe-one\noe-two\n', /^error: that is more than one token/],
    ['an empty token on standard input', ['token', 'revoke', '-'], '\n', /^error: the token is empty/],
    ['no token at all', ['token', 'revoke'], '', /missing required argument 'token'/],
  ])('refuses %s with exit 1, changing nothing', async (_name, args, stdin, message) => {
    const before = await store.listTokens();
    const r = await cli([...args, '--data-dir', h.config.dataDir], stdin);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(await store.listTokens()).toEqual(before);
  });
});

describe('token revoke says what opening the database changed', () => {
  const NARROWED = "narrowed to the owner's only (files 0600, directories 0700), as the service keeps them";
  const unknownIn = (db: string, changed: string) =>
    `error: no such token in ${db}: unknown there or already revoked (no token removed; ${changed}; is it the data dir or database of the service that issued it?)`;
  let root: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'oe-revoke-modes-'));
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  /** A data dir as serve leaves it, holding one live token (returned), then `widen`ed as someone's chmod would. */
  async function dataDirWithToken(widen: (dir: string) => void): Promise<{ dir: string; db: string; token: string }> {
    const dir = join(root, 'data');
    const opened = openDataDir(dir, { lock: false });
    const { token } = await issueToken(opened.store, { userId: 'ops', projectId: PROJECT, roles: ['member'], ttlMs: 3_600_000 });
    await opened.close();
    widen(dir);
    return { dir, db: join(dir, DB_FILE), token };
  }
  const mode = (p: string) => statSync(p).mode & 0o777;

  it.each([
    {
      name: 'a database made 0640: names it, and it is 0600',
      widen: (d: string) => chmodSync(join(d, DB_FILE), 0o640),
      says: (d: string) => `the mode of ${join(d, DB_FILE)} ${NARROWED}`,
    },
    {
      name: 'a data dir made 0755 and its database 0644: names both',
      widen: (d: string) => (chmodSync(d, 0o755), chmodSync(join(d, DB_FILE), 0o644)),
      says: (d: string) => `the modes of ${d}, ${join(d, DB_FILE)} ${NARROWED}`,
    },
    {
      name: 'a data dir from before the marker: names the marker it wrote',
      widen: (d: string) => rmSync(join(d, MARKER_FILE)),
      says: (d: string) => `the marker ${join(d, MARKER_FILE)} written, recording this database as the data dir's`,
    },
  ])('refusing an unknown token in $name', async ({ widen, says }) => {
    const { dir, db } = await dataDirWithToken(widen);
    const r = await cli(['token', 'revoke', 'oe-not-a-token-of-ours', '--data-dir', dir]);
    expect({ status: r.status, stdout: r.stdout, stderr: r.stderr }).toEqual({ status: 1, stdout: '', stderr: unknownIn(db, says(dir)) });
    expect([mode(dir), mode(db)]).toEqual([0o700, 0o600]);
  });

  it('refusing an expired token in a database made 0640', async () => {
    const dir = join(root, 'data');
    const opened = openDataDir(dir, { lock: false });
    const { token } = await issueToken(opened.store, { userId: 'ops', projectId: PROJECT, roles: ['member'], ttlMs: 1_000, now: new Date(Date.now() - 60_000) });
    await opened.close();
    const db = join(dir, DB_FILE);
    chmodSync(db, 0o640);
    const r = await cli(['token', 'revoke', token, '--data-dir', dir]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error: the token expired at \\S+: nothing to revoke \\(no token removed; the mode of ${db.replace(/[.]/g, '\\.')} narrowed to the owner's only`));
    expect(mode(db)).toBe(0o600);
  });

  it('revoking a token in a database made 0640: exit 0, and a note on standard error names the narrowing', async () => {
    const { dir, db, token } = await dataDirWithToken((d) => chmodSync(join(d, DB_FILE), 0o640));
    const r = await cli(['token', 'revoke', token, '--data-dir', dir, '-f', 'json']);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: `note: opening ${db}: the mode of ${db} ${NARROWED}` });
    expect(JSON.parse(r.stdout)).toMatchObject({ token: { user_id: 'ops', revoked: true } });
    expect(mode(db)).toBe(0o600);
  });

  it('refusing an unknown token in a SQLite URL\'s file made 0640: names it, and it is 0600', async () => {
    const db = join(root, 'shared.sqlite');
    await new SqliteStore(db).close();
    chmodSync(db, 0o640);
    const r = await cli(['token', 'revoke', 'oe-not-a-token-of-ours', '--database-url', `sqlite://${db}`]);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 1, stderr: unknownIn(db, `the mode of ${db} ${NARROWED}`) });
    expect(mode(db)).toBe(0o600);
  });

  it('says "nothing changed" when nothing was: a data dir as serve keeps it', async () => {
    const { dir, db } = await dataDirWithToken(() => undefined);
    const r = await cli(['token', 'revoke', 'oe-not-a-token-of-ours', '--data-dir', dir]);
    expect(r.stderr).toBe(`error: no such token in ${db}: unknown there or already revoked (nothing changed; is it the data dir or database of the service that issued it?)`);
  });
});

describe("token revoke names the token's user", () => {
  const ERIN = 'e'.repeat(32);
  const loginAs = async (name: string) => (await keystone({ auth: { identity: { methods: ['password'], password: { user: { name, domain: { id: 'default' }, password: PASSWORD } } }, scope } })).token;

  it.each([
    ['a token create token for an id no user has, by that id (as the identity API names it)', async () => (await issueToken(store, { userId: 'ops', projectId: PROJECT, roles: ['member'], ttlMs: 3_600_000 })).token, { user_id: 'ops', user_name: 'ops' }, ''],
    ["a token create token for a user's id, by the user's name", async () => (await issueToken(store, { userId: 'd'.repeat(32), projectId: PROJECT, roles: ['member'], ttlMs: 3_600_000 })).token, { user_id: 'd'.repeat(32), user_name: 'dana' }, ''],
    ["an identity API token, by its user's name", () => loginAs('dana'), { user_id: 'd'.repeat(32), user_name: 'dana' }, ''],
    [
      'an identity API token whose user is gone, with no name, saying so, and revokes it all the same',
      async () => {
        const users = new SqliteUserStore(store.db);
        const now = new Date().toISOString();
        await users.createUser({ id: ERIN, name: 'erin', projectId: PROJECT, roles: ['member'], passwordHash: await hashPassword(PASSWORD, { N: 2 ** 10, r: 8, p: 1 }), createdAt: now, updatedAt: now });
        const t = await loginAs('erin');
        // Removed from the store directly: `user delete` would revoke its tokens first.
        expect(await users.deleteUser(ERIN)).toBe(true);
        return t;
      },
      { user_id: ERIN, user_name: null },
      `note: the token's user ${ERIN} no longer exists (deleted since the token was issued); the token is revoked all the same`,
    ],
  ] as const)('names %s', async (_name, make, user, stderr) => {
    const token = await make();
    const r = await revoke(token, '-f', 'json');
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr });
    expect(JSON.parse(r.stdout)).toEqual({ token: { ...user, project_id: PROJECT, expires_at: expect.any(String), revoked: true } });
    expect(await store.getToken(hashToken(token))).toBeUndefined();
  });
});

describe('token revoke with a token that starts with -', () => {
  /** Stores a token `prefix` + random base64url, as the store holds any token: by its hash. */
  async function dashToken(prefix: string): Promise<string> {
    const token = `${prefix}${randomBytes(24).toString('base64url')}`;
    const now = Date.now();
    await store.putToken({ hash: hashToken(token), userId: 'ops', projectId: PROJECT, roles: ['member'], createdAt: new Date(now).toISOString(), expiresAt: new Date(now + 3_600_000).toISOString() });
    return token;
  }
  const dir = () => h.config.dataDir;

  it.each([
    ['first, before the options', '-', (t: string) => [t, '--data-dir', dir(), '-f', 'json']],
    ['last, after the options', '-', (t: string) => ['--data-dir', dir(), '-f', 'json', t]],
    ["between options, -f's value attached", '-', (t: string) => [`--data-dir=${dir()}`, t, '-fjson']],
    ["starting with -f (a short option's letter)", '-f', (t: string) => [t, '--data-dir', dir(), '--format', 'json']],
    ["starting with -h (the help option's letter)", '-h', (t: string) => [t, '--data-dir', dir(), '-f', 'json']],
    ['starting with -- and not shaped as an option', '--X_', (t: string) => ['--data-dir', dir(), '-f', 'json', t]],
  ] as const)('takes it as the token, %s, with no -- before it', async (_name, prefix, args) => {
    const token = await dashToken(prefix);
    const r = await cli(['token', 'revoke', ...args(token)]);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    expect(JSON.parse(r.stdout)).toMatchObject({ token: { user_id: 'ops', revoked: true } });
    expect(r.stdout).not.toContain(token);
    expect(await store.getToken(hashToken(token))).toBeUndefined();
  });

  it.each([
    ['an unknown long option', (t: string) => [t, '--dta-dir', dir()], /^error: unknown option '--dta-dir'\n\(Did you mean --data-dir\?\)/],
    ['an unknown short option', (t: string) => [t, '-x', '--data-dir', dir()], /^error: unknown option '-x'/],
    ['a second token', (t: string) => [t, '-Second-token-of-two', '--data-dir', dir()], /^error: too many arguments for 'revoke'\. Expected 1 argument but got 2\./],
  ] as const)('refuses %s beside it, saying what is wrong, never quoting the token, with exit 1, changing nothing', async (_name, args, message) => {
    const token = await dashToken('-');
    const before = await store.listTokens();
    const r = await cli(['token', 'revoke', ...args(token)]);
    expect({ status: r.status, stdout: r.stdout }).toEqual({ status: 1, stdout: '' });
    expect(r.stderr).toMatch(message);
    expect(r.stderr).not.toContain(token);
    expect(await store.listTokens()).toEqual(before);
  });
});

describe('token create and token revoke with a SQLite URL of the wrong form', () => {
  it.each([
    [
      'two slashes (its first directory read as a host)',
      (d: string) => `sqlite://${d.slice(1)}/db.sqlite`,
      (d: string) => new RegExp(`^error: database URL: sqlite://tmp/… names a host \\(tmp\\), not a file on this one: give sqlite:///ABSOLUTE/PATH \\(three slashes\\), e\\.g\\. sqlite://${d}/db\\.sqlite; nothing opened$`),
    ],
    ['a ?query', (d: string) => `sqlite://${d}/db.sqlite?mode=ro`, () => /^error: database URL: a SQLite URL takes no \?query or #fragment: give sqlite:\/\/\/ABSOLUTE\/PATH/],
    ['no file', () => 'sqlite:///', () => /^error: database URL: a SQLite URL names a file by its absolute path: give sqlite:\/\/\/ABSOLUTE\/PATH/],
  ] as const)('refuses %s naming the right form, with exit 1, creating nothing', async (_name, url, message) => {
    const d = mkdtempSync(join(tmpdir(), 'oe-url-'));
    try {
      for (const args of [
        ['token', 'revoke', 'oe-whatever', '--database-url', url(d)],
        ['token', 'create', '--project', PROJECT, '--user', 'ops', '--roles', 'member', '--database-url', url(d)],
      ]) {
        const r = await cli(args);
        expect({ args, status: r.status, stdout: r.stdout }).toEqual({ args, status: 1, stdout: '' });
        expect(r.stderr).toMatch(message(d));
        expect(readdirSync(d)).toEqual([]);
        // Where the two-slash form pointed: the path without its first directory.
        expect(existsSync(join('/', basename(d)))).toBe(false);
      }
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
