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
