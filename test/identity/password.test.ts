/** Password hashing for the embedded Keystone's users (identity/password.ts): scrypt with its parameters and salt stored. */
import { describe, expect, it } from 'vitest';
import { hashPassword, MAX_PASSWORD_BYTES, verifyPassword } from '../../src/identity/password.js';

const CHEAP = { N: 2 ** 10, r: 8, p: 1 };

describe('hashPassword', () => {
  it('stores the algorithm, its parameters, a salt and the key, never the password', async () => {
    const stored = await hashPassword('s3cret', CHEAP);
    expect(stored).toMatch(/^scrypt\$N=1024,r=8,p=1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$/);
    expect(stored).not.toContain('s3cret');
  });

  it('salts every hash: the same password twice gives two different hashes, both of which verify', async () => {
    const [a, b] = [await hashPassword('same', CHEAP), await hashPassword('same', CHEAP)];
    expect(a).not.toBe(b);
    expect([await verifyPassword('same', a), await verifyPassword('same', b)]).toEqual([true, true]);
  });

  it.each([
    ['an empty password', '', /the password is empty/],
    ['a password over the limit', 'x'.repeat(MAX_PASSWORD_BYTES + 1), new RegExp(`longer than ${MAX_PASSWORD_BYTES} bytes`)],
  ])('refuses %s', async (_name, password, message) => {
    await expect(hashPassword(password, CHEAP)).rejects.toThrow(message);
  });
});

describe('verifyPassword', () => {
  it('accepts the password, refuses any other, and reads the parameters from the stored hash', async () => {
    const stored = await hashPassword('right one', { N: 2 ** 11, r: 4, p: 2 });
    expect(await verifyPassword('right one', stored)).toBe(true);
    for (const other of ['right one ', 'Right one', 'right on', '']) expect(await verifyPassword(other, stored)).toBe(false);
  });

  it('treats canonically equal Unicode spellings as the same password (NFC)', async () => {
    const stored = await hashPassword('caf\u00e9', CHEAP);
    expect(await verifyPassword('cafe\u0301', stored)).toBe(true);
  });

  it('answers false for no stored hash (an unknown user), after doing the same work', async () => {
    expect(await verifyPassword('anything', undefined)).toBe(false);
  });

  it.each([
    ['another algorithm', (h: string) => h.replace(/^scrypt/, 'bcrypt')],
    ['a cost that is not a power of two', (h: string) => h.replace('N=1024', 'N=1000')],
    ['a cost too large to compute', (h: string) => h.replace('N=1024', `N=${2 ** 24}`)],
    ['a truncated key', (h: string) => h.slice(0, -8)],
    ['no salt', (h: string) => h.replace(/\$[^$]+\$([^$]+)$/, '$$$$$1')],
  ])('answers false for a stored hash with %s', async (_name, damage) => {
    const stored = await hashPassword('pw', CHEAP);
    expect(await verifyPassword('pw', damage(stored))).toBe(false);
  });
});
