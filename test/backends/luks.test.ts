// LUKS volumes on the storage backends that need no daemon (file; the loop device's backing file is
// written the same way, test/e2e/luks.e2e.test.ts covers block and iSCSI on a real guest): the
// header is real qemu-img output, read back by qemu-img itself.
import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileBackend } from '../../src/volume/backends/file.js';
import { parseLuksHeader, readLuksHeader } from '../../src/volume/backends/luks.js';
import { newPassphrase } from '../../src/volume/encryption.js';
import { newVolumeId } from './backend.contract.js';

const MiB = 1024 * 1024;

function qemuImgInfo(path: string): { 'virtual-size': number; encrypted?: boolean; format: string; 'format-specific'?: { data: { 'payload-offset': number } } } {
  return JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', path], { encoding: 'utf8' })) as ReturnType<typeof qemuImgInfo>;
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'oe-luks-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('LUKS volumes on the file backend', () => {
  it('makes a volume of exactly the size asked whose LUKS payload is that size minus the header qemu-img reports', () =>
    withDir(async (dir) => {
      const b = new FileBackend({ dir });
      const id = newVolumeId();
      const made = await b.create(id, 64 * MiB, { encryption: { format: 'luks', passphrase: newPassphrase() } });
      const path = join(dir, `${id}.raw`);
      expect((await stat(path)).size).toBe(64 * MiB);
      expect((await stat(path)).mode & 0o777).toBe(0o600);
      const info = qemuImgInfo(path);
      expect(info.format).toBe('luks');
      expect(info.encrypted).toBe(true);
      const offset = info['format-specific']!.data['payload-offset'];
      expect(made.encryption).toEqual({ format: 'luks', payloadOffset: offset });
      expect(info['virtual-size']).toBe(64 * MiB - offset);
      expect(await b.getBytes(id)).toBe(64 * MiB);
      // No key file is left next to the volume.
      expect((await readdir(dir)).sort()).toEqual([`${id}.raw`]);
    }));

  it('grows a detached encrypted volume by its storage: the payload grows by the same bytes', () =>
    withDir(async (dir) => {
      const b = new FileBackend({ dir });
      const id = newVolumeId();
      const { encryption } = await b.create(id, 64 * MiB, { encryption: { format: 'luks', passphrase: newPassphrase() } });
      expect(await b.extend(id, 96 * MiB)).toBe(96 * MiB);
      expect(qemuImgInfo(join(dir, `${id}.raw`))['virtual-size']).toBe(96 * MiB - encryption!.payloadOffset);
      await expect(b.extend(id, 64 * MiB)).rejects.toMatchObject({ code: 'VolumeShrinkRefused' });
    }));

  it('is idempotent for the same encryption and refuses to call an unencrypted volume encrypted', () =>
    withDir(async (dir) => {
      const b = new FileBackend({ dir });
      const enc = newVolumeId();
      const plain = newVolumeId();
      const first = await b.create(enc, 32 * MiB, { encryption: { format: 'luks', passphrase: newPassphrase() } });
      expect(await b.create(enc, 32 * MiB, { encryption: { format: 'luks', passphrase: newPassphrase() } })).toEqual(first);
      await b.create(plain, 32 * MiB);
      await expect(b.create(plain, 32 * MiB, { encryption: { format: 'luks', passphrase: newPassphrase() } })).rejects.toMatchObject({ code: 'VolumeInvalidState' });
    }));

  it.each([
    ['a qcow2 format', { format: 'qcow2' as const }, 64 * MiB],
    ['a size no larger than the header', {}, 1 * MiB],
  ])('refuses an encrypted volume with %s (400) and leaves nothing behind', (_what, extra, bytes) =>
    withDir(async (dir) => {
      const b = new FileBackend({ dir });
      await expect(b.create(newVolumeId(), bytes, { ...extra, encryption: { format: 'luks', passphrase: newPassphrase() } })).rejects.toMatchObject({ code: 'InvalidInput', status: 400 });
      expect(await readdir(dir).catch(() => [])).toEqual([]);
    }));
});

describe('the LUKS header reader', () => {
  it('reads no header from a file that does not start with LUKS1 magic, or is missing', () =>
    withDir(async (dir) => {
      const b = new FileBackend({ dir });
      const id = newVolumeId();
      await b.create(id, MiB);
      expect(await readLuksHeader(join(dir, `${id}.raw`))).toBeUndefined();
      expect(await readLuksHeader(join(dir, 'missing'))).toBeUndefined();
      expect(parseLuksHeader(Buffer.from('LUKS'))).toBeUndefined();
    }));
});
