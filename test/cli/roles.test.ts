/**
 * The deployment commands as real processes: `token create`, `user create|list` and `flavor
 * create` with `--database-url` write to the database it names (not to a data dir, which is
 * left untouched), and `api` / `compute-agent` refuse to start without the shared database or
 * the broker, naming the setting (exit 2).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBin } from '../support/build.js';
import { openStoreUrl } from '../../src/db/open.js';
import { hashToken } from '../../src/auth/tokens.js';

const PROJECT = 'p-roles';

let root: string;
let url: string;
let dataDir: string;

/** Runs the CLI to completion with `stdin`; the environment names no database. */
function cli(args: string[], stdin = '') {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.ONLINE_EXTEND_DATABASE_URL;
  delete env.ONLINE_EXTEND_TRANSPORT_URL;
  return runBin(args, { stdin, env });
}

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'oe-roles-cli-'));
  url = `sqlite://${join(root, 'deployment.sqlite')}`;
  dataDir = join(root, 'data');
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('--database-url on the store commands', () => {
  it('token create writes the token to the database the URL names, and nothing to the data dir', async () => {
    const r = await cli(['token', 'create', '--project', PROJECT, '--user', 'alice', '--roles', 'member', '--database-url', url, '--data-dir', dataDir]);
    expect(r.status, r.stderr).toBe(0);
    const db = await openStoreUrl(url);
    try {
      const record = await db.store.getToken(hashToken(r.stdout));
      expect(record).toMatchObject({ userId: 'alice', projectId: PROJECT, roles: ['member'] });
    } finally {
      await db.close();
    }
    expect(existsSync(dataDir)).toBe(false);
  });

  it('user create and user list work on the database the URL names', async () => {
    const created = await cli(['user', 'create', '--project', PROJECT, '--user', 'bob', '--roles', 'member', '--password-stdin', '--database-url', url, '--data-dir', dataDir, '-f', 'json'], 'secret-pass-1\n');
    expect(created.status, created.stderr).toBe(0);
    const listed = await cli(['user', 'list', '--database-url', url, '-f', 'json']);
    expect(listed.status, listed.stderr).toBe(0);
    expect((JSON.parse(listed.stdout) as { users: Array<{ name: string; project_id: string }> }).users.map((u) => [u.name, u.project_id])).toEqual([['bob', PROJECT]]);
    const db = await openStoreUrl(url);
    try {
      expect((await db.users.getUserByName('bob'))?.projectId).toBe(PROJECT);
    } finally {
      await db.close();
    }
    expect(existsSync(dataDir)).toBe(false);
  });

  it('flavor create registers the flavor in the database the URL names', async () => {
    const r = await cli(['flavor', 'create', '--name', 'm1.tiny', '--id', 'tiny', '--vcpus', '1', '--ram', '512', '--disk', '1', '--database-url', url]);
    expect(r.status, r.stderr).toBe(0);
    const db = await openStoreUrl(url);
    try {
      expect(await db.store.getFlavor('tiny')).toMatchObject({ name: 'm1.tiny', vcpus: 1, ramMb: 512 });
    } finally {
      await db.close();
    }
  });
});

describe('the deployment roles refuse to start without what they share', () => {
  const cases: Array<[string, string[], RegExp]> = [
    ['api without --database-url', ['api', '--data-dir', join(tmpdir(), 'oe-never-made'), '--port', '0'], /config databaseUrl: .*--database-url/],
    ['api without --transport-url', ['api', '--database-url', 'sqlite:///nonexistent/never.sqlite', '--port', '0'], /config transportUrl: .*--transport-url rabbit:\/\//],
    ['compute-agent without --database-url', ['compute-agent', '--host', 'h1', '--transport-url', 'rabbit://u:p@127.0.0.1:5672/'], /config databaseUrl: .*--database-url/],
    ['compute-agent without --transport-url', ['compute-agent', '--host', 'h1', '--database-url', 'sqlite:///nonexistent/never.sqlite'], /config transportUrl: .*--transport-url/],
    ['compute-agent with a database URL of another scheme', ['compute-agent', '--host', 'h1', '--database-url', 'mysql://x/y'], /config databaseUrl: /],
  ];
  for (const [name, args, message] of cases) {
    it(`exits 2 for ${name}, naming the setting`, async () => {
      const r = await cli(args);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(message);
    });
  }

  it('compute-agent needs --host', async () => {
    const r = await cli(['compute-agent', '--database-url', url, '--transport-url', 'rabbit://u:p@127.0.0.1:5672/']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/--host/);
  });
});
