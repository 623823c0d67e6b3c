import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { UnexpectedReadCapacityOutput, iscsiUrl, parseReadCapacity16, readCapacityArgs, readLunCapacity } from '../../src/host/iscsi.js';

const fixture = (name: string): string => readFileSync(join(import.meta.dirname, 'fixtures', name), 'utf8');

// Captured on this machine (libiscsi-bin, tgt): `iscsi-readcapacity16 [-s] iscsi://…` against LUNs
// over a 100 MiB file, a 12345678-byte file (not a whole number of blocks) and a 64 MiB file
// exported with 4096-byte blocks.
describe('parseReadCapacity16 (iscsi-readcapacity16 output)', () => {
  it.each([
    ['readcapacity16-100MiB-512.txt', 'last LBA 204799, 512-byte blocks', 104857600],
    ['readcapacity16-odd-512.txt', 'a file that is not a whole number of blocks: tgt rounds down', 12345344],
    ['readcapacity16-64MiB-4096.txt', 'last LBA 16383, 4096-byte blocks', 67108864],
    ['readcapacity16-s-100MiB.txt', 'the -s form: the size alone', 104857600],
  ])('reads %s (%s) as (last LBA + 1) × block length = %d bytes', (file, _what, bytes) => {
    expect(parseReadCapacity16(fixture(file))).toBe(bytes);
  });

  it('does not take the LBA (the first number of the full output) for the size', () => {
    const full = fixture('readcapacity16-100MiB-512.txt');
    expect(full).toContain('RETURNED LOGICAL BLOCK ADDRESS:204799');
    expect(parseReadCapacity16(full)).not.toBe(204799);
    expect(parseReadCapacity16(full)).toBe((204799 + 1) * 512);
  });

  it.each([
    ['an empty output', ''],
    ['a login failure', 'Login Failed. Failed to log in to target. Status: Target not found(515)\n'],
    ['a size beyond 2^53', '18014398509481984\n'],
    ['a Total size that contradicts LBA × block length', 'RETURNED LOGICAL BLOCK ADDRESS:99\nLOGICAL BLOCK LENGTH IN BYTES:512\nTotal size:1\n'],
    ['a number among words', 'size is 123 bytes\n'],
  ])('refuses %s', (_what, out) => {
    expect(() => parseReadCapacity16(out)).toThrow(UnexpectedReadCapacityOutput);
  });

  it('builds the libiscsi URL of a LUN, on the default portal when none is given', () => {
    expect(iscsiUrl('127.0.0.1:3261', 'iqn.2026-11.dev.oe:v/1')).toBe('iscsi://127.0.0.1:3261/iqn.2026-11.dev.oe:v/1');
    expect(readCapacityArgs(undefined, 'iqn.x:t/9')).toEqual(['-s', 'iscsi://127.0.0.1:3260/iqn.x:t/9']);
  });

  it('runs iscsi-readcapacity16 -s through the given runner and parses what it prints', async () => {
    const calls: string[][] = [];
    const bytes = await readLunCapacity('127.0.0.1:3260', 'iqn.x:t/1', {
      run: async (file, args) => {
        calls.push([file, ...args]);
        return fixture('readcapacity16-s-100MiB.txt');
      },
    });
    expect(bytes).toBe(104857600);
    expect(calls).toEqual([['iscsi-readcapacity16', '-s', 'iscsi://127.0.0.1:3260/iqn.x:t/1']]);
  });
});
