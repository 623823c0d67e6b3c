import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { growFile } from '../../src/host/files.js';
import { NotQcow2Image, fileDiskBytes, fileDiskBytesSync, parseQcow2VirtualBytes, qcow2VirtualBytes, qcow2VirtualBytesSync } from '../../src/host/qcow2.js';
import { describeReal } from '../support/real.js';

describe('growFile', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oe-host-files-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('grows a file sparsely and reports the sizes before and after', async () => {
    const f = join(dir, 'grow.raw');
    await writeFile(f, Buffer.alloc(512));
    expect(await growFile(f, 4096)).toEqual({ before: 512, after: 4096 });
    expect((await stat(f)).size).toBe(4096);
  });

  it('never shrinks a file', async () => {
    const f = join(dir, 'big.raw');
    await writeFile(f, Buffer.alloc(8192));
    expect(await growFile(f, 4096)).toEqual({ before: 8192, after: 8192 });
    expect((await stat(f)).size).toBe(8192);
  });

  it('rejects a missing file with ENOENT and creates nothing', async () => {
    const f = join(dir, 'missing.raw');
    await expect(growFile(f, 4096)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(existsSync(f)).toBe(false);
  });
});

describe('the qcow2 header reader', () => {
  const header = (bytes: bigint, magic = 0x514649fb): Buffer => {
    const b = Buffer.alloc(32);
    b.writeUInt32BE(magic, 0);
    b.writeUInt32BE(3, 4);
    b.writeBigUInt64BE(bytes, 24);
    return b;
  };

  it.each([
    [header(3n * 2n ** 30n), 3 * 2 ** 30],
    [header(2n ** 51n), 2 ** 51],
    [header(0n), 0],
  ])('reads the virtual size in bytes at offset 24 (%#)', (buf, bytes) => {
    expect(parseQcow2VirtualBytes(buf)).toBe(bytes);
  });

  it.each([
    ['another magic', header(1n, 0x7f454c46)],
    ['a short header', header(1n).subarray(0, 31)],
    ['an empty file', Buffer.alloc(0)],
  ])('refuses %s as NotQcow2Image, whose message names no path', (_what, buf) => {
    expect(() => parseQcow2VirtualBytes(buf, '/secret/v.qcow2')).toThrow(NotQcow2Image);
    expect(() => parseQcow2VirtualBytes(buf, '/secret/v.qcow2')).toThrow(/^the file is not a qcow2 image$/);
  });

  it('rejects a missing file with its errno, not NotQcow2Image', async () => {
    await expect(qcow2VirtualBytes('/nonexistent/oe/v.qcow2')).rejects.toMatchObject({ code: 'ENOENT' });
    expect(() => qcow2VirtualBytesSync('/nonexistent/oe/v.qcow2')).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });
});

// qemu-img is a real part: in CI its absence fails the run; locally the block is skipped loudly.
describeReal(existsSync('/usr/bin/qemu-img') ? undefined : 'qemu-img is not installed (apt-get install qemu-utils)')('file disk sizes of qemu-img images', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oe-host-qcow2-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads a qcow2 virtual size (async and sync) and a raw file size, and follows a resize', async () => {
    const q = join(dir, 'v.qcow2');
    const r = join(dir, 'v.raw');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', q, '3G']);
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', r, '5M']);
    expect(await fileDiskBytes(q, 'qcow2')).toBe(3 * 2 ** 30);
    expect(fileDiskBytesSync(q, 'qcow2')).toBe(3 * 2 ** 30);
    expect(await fileDiskBytes(r)).toBe(5 * 2 ** 20);
    execFileSync('qemu-img', ['resize', '-q', '-f', 'qcow2', q, '4G']);
    expect(await qcow2VirtualBytes(q)).toBe(4 * 2 ** 30);
    await expect(fileDiskBytes(r, 'qcow2')).rejects.toThrow(NotQcow2Image);
    expect(() => fileDiskBytesSync(r, 'qcow2')).toThrow(NotQcow2Image);
  });
});
