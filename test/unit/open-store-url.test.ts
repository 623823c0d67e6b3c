import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openStoreUrl, sqliteUrlPath } from '../../src/db/open.js';
import { redactDatabaseUrl } from '../../src/db/postgres/index.js';
import { createPool } from '../../src/db/postgres/pool.js';
import { unexpectedError } from '../../src/errors.js';

describe('opening a store from --database-url', () => {
  it.each([
    { url: 'postgresql://oe:s3cret@db.example:5432/oe', shown: 'postgresql://oe:***@db.example:5432/oe' },
    { url: 'postgres://oe:p%40ss%3Aw@127.0.0.1/oe?host=/run/pg', shown: 'postgres://oe:***@127.0.0.1/oe?host=/run/pg' },
    { url: 'postgresql://oe@/oe?host=/run/pg', shown: 'postgresql://oe@/oe?host=/run/pg' },
    { url: 'postgresql://oe:s3cret@[::1/oe', shown: 'postgresql://oe:***@[::1/oe' },
    // libpq's password parameter (red team: it was shown in full).
    { url: 'postgresql://postgres@127.0.0.1:1/oe?password=S3cretPW', shown: 'postgresql://postgres@127.0.0.1:1/oe?password=***' },
    { url: 'postgresql://postgres@[::1/oe?sslmode=disable&PASSWORD=S3cretPW', shown: 'postgresql://postgres@[::1/oe?sslmode=disable&PASSWORD=***' },
  ])('shows $url as $shown in errors', ({ url, shown }) => {
    expect(redactDatabaseUrl(url)).toBe(shown);
  });

  it('opens sqlite:///PATH as the SQLite store with its users', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'oe-open-'));
    try {
      const opened = await openStoreUrl(`sqlite://${join(dir, 'db.sqlite')}`);
      expect(opened.kind).toBe('sqlite');
      await opened.users.createUser({ id: 'a'.repeat(32), name: 'a', projectId: 'p', roles: [], passwordHash: 'h', createdAt: 't', updatedAt: 't' });
      expect((await opened.users.listUsers()).map((u) => u.name)).toEqual(['a']);
      await opened.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each([
    ['sqlite:///var/lib/oe/db.sqlite', '/var/lib/oe/db.sqlite'],
    ['SQLITE:///tmp/a%20b.sqlite', '/tmp/a b.sqlite'],
    ['sqlite:///tmp/a%3Fb%23c.sqlite', '/tmp/a?b#c.sqlite'],
  ])('reads %s as the file %s', (url, path) => {
    expect(sqliteUrlPath(url)).toBe(path);
  });

  it.each([
    ['two slashes, the first directory read as a host', 'sqlite://tmp/x.sqlite', /names a host \(tmp\).*e\.g\. sqlite:\/\/\/tmp\/x\.sqlite; nothing opened$/],
    ['localhost as the host', 'sqlite://localhost/tmp/x.sqlite', /names a host \(localhost\)/],
    ['a user and password before the host, never repeated', 'sqlite://me:s3cret@tmp/x.sqlite', /names a host \(tmp\)/],
    ['a relative path', 'sqlite:x.sqlite', /by its absolute path/],
    ['no path', 'sqlite://', /by its absolute path/],
    ['a directory', 'sqlite:///tmp/', /by its absolute path/],
    ['a query', 'sqlite:///tmp/x.sqlite?mode=ro', /takes no \?query or #fragment/],
    ['a fragment', 'sqlite:///tmp/x.sqlite#main', /takes no \?query or #fragment/],
  ])('refuses a SQLite URL with %s, naming sqlite:///ABSOLUTE/PATH', async (_name, url, message) => {
    expect(() => sqliteUrlPath(url)).toThrow(message);
    expect(() => sqliteUrlPath(url)).toThrow(/give sqlite:\/\/\/ABSOLUTE\/PATH \(three slashes\)/);
    expect(() => sqliteUrlPath(url)).not.toThrow(/s3cret/);
    // openStoreUrl refuses it before opening (creating) anything.
    await expect(openStoreUrl(url)).rejects.toThrow(message);
  });

  it.each(['postgresql', 'postgres'])('fails to open a %s:// URL no server answers with an error that names the URL but not its password', async (scheme) => {
    // Port 1 on the loopback: nothing listens there, the connection is refused at once.
    const err = await openStoreUrl(`${scheme}://oe:s3cret-pw@127.0.0.1:1/oe`).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toContain(`${scheme}://oe:***@127.0.0.1:1/oe`);
    expect(err?.message).not.toContain('s3cret-pw');
  });

  it('refuses an unknown scheme, naming it', async () => {
    await expect(openStoreUrl('mysql://u:pw@h/db')).rejects.toThrow(/unknown scheme mysql/);
  });

  it('answers a query whose connection is refused (PostgreSQL restarting) as DatabaseUnavailable, 503 and uncertain, not InternalError', async () => {
    const pool = createPool('postgresql://oe@127.0.0.1:1/oe');
    try {
      const err = await pool.query('SELECT 1').then(
        () => undefined,
        (e: unknown) => e as Error & { code?: string },
      );
      expect(err?.code).toBe('ECONNREFUSED');
      expect(unexpectedError(err)).toMatchObject({ code: 'DatabaseUnavailable', status: 503, final: false });
      // The same socket error from anything but the database's client stays an uncertain InternalError.
      const plain = Object.assign(new Error(err!.message), { code: 'ECONNREFUSED', syscall: 'connect' });
      expect(unexpectedError(plain)).toMatchObject({ code: 'InternalError', final: false });
    } finally {
      await pool.end();
    }
  });
});
