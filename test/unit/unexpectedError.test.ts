/**
 * An error nobody classified becomes InternalError, final or uncertain by the same tables every
 * layer uses: util/errno.ts for operating-system errors, SQLite's result codes for the store.
 */
import { describe, expect, it } from 'vitest';
import { unexpectedError } from '../../src/errors.js';
import { classifyErrno, ERRNO_CLASSES } from '../../src/util/errno.js';

const systemError = (code: string): NodeJS.ErrnoException =>
  Object.assign(new Error(`${code}: something failed, open '/var/lib/online-extend/secret/path'`), { code });

describe('unexpectedError', () => {
  it.each(Object.keys(ERRNO_CLASSES))('classifies %s as util/errno.ts does, and keeps the path out of the message', (code) => {
    const err = unexpectedError(systemError(code));
    expect(err.code).toBe('InternalError');
    expect(err.final).toBe(classifyErrno(systemError(code)).final);
    expect(err.message).not.toContain('/var/lib');
    expect(err.detail).toContain('/var/lib');
  });

  it.each([
    ['SQLITE_BUSY', false],
    ['SQLITE_FULL', false],
    ['SQLITE_IOERR_WRITE', false],
    ['SQLITE_LOCKED_SHAREDCACHE', false],
    ['SQLITE_CONSTRAINT_UNIQUE', true],
    ['SQLITE_CORRUPT', true],
    ['EWHATEVER', true],
  ] as const)('classifies %s as final=%s', (code, final) => {
    expect(unexpectedError(systemError(code)).final).toBe(final);
  });

  it('treats an error with no code (a bug) as final, with a generic message', () => {
    const err = unexpectedError(new TypeError("Cannot read properties of undefined (reading 'x')"));
    expect(err).toMatchObject({ code: 'InternalError', final: true, message: 'An unexpected error occurred.' });
  });

  it('says what passes with time, in public words, for an I/O error (EIO is uncertain in every layer)', () => {
    const err = unexpectedError(systemError('EIO'));
    expect(err.final).toBe(false);
    expect(err.message).toMatch(/temporary failure.*I\/O error.*\(EIO\).*try again/);
  });
});

describe('unexpectedError on a shared database (PostgreSQL through npm pg)', () => {
  const pgError = (code: string, message = 'terminating connection due to administrator command') => Object.assign(new Error(message), { code, severity: 'FATAL' });

  it.each([
    ['57P01 (admin shutdown: a restart)', pgError('57P01')],
    ['57P03 (the server is starting)', pgError('57P03', 'the database system is starting up')],
    ['08006 (connection failure)', pgError('08006', 'connection failure')],
    ['53300 (too many connections)', pgError('53300', 'sorry, too many clients already')],
    ['the client lost its connection', new Error('Connection terminated unexpectedly')],
    ['the pool found no connection in time', new Error('timeout exceeded when trying to connect')],
  ])('makes %s a 503 DatabaseUnavailable, uncertain, with nothing of the server in the message', (_, err) => {
    const e = unexpectedError(err);
    expect(e).toMatchObject({ code: 'DatabaseUnavailable', status: 503, final: false });
    expect(e.message).toBe('The database is unavailable; try again.');
  });

  it.each([
    ['23505 (unique violation: a bug or a race, not an outage)', pgError('23505', 'duplicate key value violates unique constraint'), true],
    ['42P01 (undefined table)', pgError('42P01', 'relation "x" does not exist'), true],
  ])('leaves %s an InternalError (final=%s)', (_, err, final) => {
    expect(unexpectedError(err)).toMatchObject({ code: 'InternalError', final });
  });

  it.each(['ENOENT', 'ECONNREFUSED'])('treats a failed socket connect (%s: a peer restarting) as uncertain', (code) => {
    const err = Object.assign(new Error(`connect ${code} /run/postgresql/.s.PGSQL.5432`), { code, syscall: 'connect' });
    expect(unexpectedError(err).final).toBe(false);
    // ENOENT elsewhere (a missing file) stays final.
    if (code === 'ENOENT') expect(unexpectedError(Object.assign(new Error('open ENOENT'), { code, syscall: 'open' })).final).toBe(true);
  });
});
