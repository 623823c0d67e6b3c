/**
 * Encrypted (LUKS) volumes through the volume API, on the file backend (real qemu-img headers) and
 * the fake hypervisor: the create's ways and refusals, the views, the sizes the guest sees before
 * and after an online extend, and the passphrase staying out of every answer.
 */
import Database from 'better-sqlite3';
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiError } from '../../src/rpc/httpClient.js';
import { FAKE_LUKS_PAYLOAD_OFFSET, type FakeDriver } from '../../src/virt/fake/driver.js';
import { until } from '../support/rawHttp.js';
import { volumeStorageFile } from '../support/files.js';
import { makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;
let h: ServiceHarness;
beforeAll(async () => {
  h = await makeService();
}, 60_000);
afterAll(async () => h.cleanup());

interface OurView {
  id: string;
  size_bytes: number;
  status: string;
  volume_type: string;
  encryption: string | null;
  payload_offset: number | null;
  guest_size_bytes: number | null;
}

const base = `/v3/${PROJECT}/volumes`;
async function create(volume: Record<string, unknown>): Promise<string> {
  return (await h.volume.request<{ volume: { id: string } }>('POST', base, { volume })).body.volume.id;
}
async function ours(id: string): Promise<OurView> {
  return (await h.volume.request<{ volume: OurView }>('GET', `${base}/${id}/os-online-extend`)).body.volume;
}
function fileOf(id: string): string {
  return volumeStorageFile(h.config.dataDir, id);
}
function qemuPayloadOffset(path: string): number {
  const info = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', path], { encoding: 'utf8' })) as { format: string; 'format-specific': { data: { 'payload-offset': number } } };
  expect(info.format).toBe('luks');
  return info['format-specific'].data['payload-offset'];
}
function storedPassphrase(id: string): string {
  const db = new Database(join(h.config.dataDir, 'online-extend.sqlite'), { readonly: true });
  try {
    return (db.prepare('SELECT encryption_key FROM volumes WHERE id = ?').get(id) as { encryption_key: string }).encryption_key;
  } finally {
    db.close();
  }
}

describe('creating an encrypted volume', () => {
  it.each([
    ['encryption: luks', { encryption: 'luks' }, 'file-luks'],
    ['the volume type luks', { volume_type: 'luks' }, 'file-luks'],
    ['the volume type file-luks', { volume_type: 'file-luks' }, 'file-luks'],
  ])('through %s makes a LUKS volume of exactly its size, shown encrypted with the payload offset qemu-img reads', async (_how, extra, type) => {
    const id = await create({ name: 'enc', size_bytes: 64 * MiB, ...extra });
    const v = await ours(id);
    const offset = qemuPayloadOffset(fileOf(id));
    expect(v).toMatchObject({ status: 'available', size_bytes: 64 * MiB, volume_type: type, encryption: 'luks', payload_offset: offset, guest_size_bytes: 64 * MiB - offset });
    expect(statSync(fileOf(id)).size).toBe(64 * MiB);
    const cinder = (await h.volume.request<{ volume: Record<string, unknown> }>('GET', `${base}/${id}`)).body.volume;
    expect(cinder).toMatchObject({ encrypted: true, volume_type: type, size: 0 });
  });

  it('shows an unencrypted volume as before: encrypted false, its whole size to the guest', async () => {
    const id = await create({ size_bytes: 64 * MiB });
    expect(await ours(id)).toMatchObject({ volume_type: 'file', encryption: null, payload_offset: null, guest_size_bytes: 64 * MiB });
    expect((await h.volume.request<{ volume: Record<string, unknown> }>('GET', `${base}/${id}`)).body.volume.encrypted).toBe(false);
  });

  it.each([
    ['an unknown encryption', { size: 1, encryption: 'aes-xts-plain' }, /Unknown volume encryption "aes-xts-plain"/],
    ['an empty encryption (not "none": a template\'s empty variable)', { size: 1, encryption: '' }, /Unknown volume encryption ""/],
    ['an encrypted qcow2', { size: 1, encryption: 'luks', format: 'qcow2' }, /format must be raw/],
    ['an encrypted volume smaller than its header allows', { size_bytes: 2 * MiB, encryption: 'luks' }, /at least 4194304 bytes/],
  ])('refuses %s with a 400 and creates nothing', async (_what, volume, message) => {
    const before = (await h.volume.request<{ volumes: unknown[] }>('GET', base)).body.volumes.length;
    const err = await h.volume.request('POST', base, { volume }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(400);
    expect((err as ApiError).message).toMatch(message);
    expect((await h.volume.request<{ volumes: unknown[] }>('GET', base)).body.volumes.length).toBe(before);
  });
});

describe('an unknown volume type', () => {
  // The service here has the file backend only.
  it.each([
    ['an encrypted type of a backend that does not exist', 'nfs-luks'],
    ['an encrypted type of a backend this service does not enable', 'iscsi-luks'],
    ['an encrypted type that names no backend', '-luks'],
    ['an encrypted type of an encrypted type', 'file-luks-luks'],
    ['a plain type of a backend that does not exist', 'ceph'],
  ])('is refused for %s with a 400 naming the type as given (%s) and every type the service accepts, creating nothing', async (_what, type) => {
    const before = (await h.volume.request<{ volumes: unknown[] }>('GET', base)).body.volumes.length;
    const err = await h.volume.request('POST', base, { volume: { size: 1, volume_type: type } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(400);
    expect((err as ApiError).message).toBe(`Unknown volume type "${type}"; available: file, file-luks, luks.`);
    expect((await h.volume.request<{ volumes: unknown[] }>('GET', base)).body.volumes.length).toBe(before);
  });

  it('lists only types a create then accepts', async () => {
    const err = (await h.volume.request('POST', base, { volume: { size: 1, volume_type: 'nfs' } }).catch((e: unknown) => e)) as ApiError;
    const listed = /available: (.*)\.$/.exec(err.message)![1]!.split(', ');
    expect(listed.length).toBeGreaterThan(1);
    for (const type of listed) {
      const id = await create({ name: `listed-${type}`, size_bytes: 8 * MiB, volume_type: type });
      expect((await ours(id)).status, type).toBe('available');
    }
  });
});

describe('an encrypted volume attached to the fake hypervisor', () => {
  it('shows the guest the volume minus the payload offset, before and after an online extend, and never answers the passphrase', async () => {
    const id = await create({ name: 'enc-attached', size_bytes: 64 * MiB, encryption: 'luks' });
    const offset = qemuPayloadOffset(fileOf(id));
    await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
    const fake = h.service.driver as FakeDriver;
    expect(await fake.getGuestBytes(SERVER, id)).toBe(64 * MiB - offset);

    await h.volume.request('POST', `${base}/${id}/action`, { 'os-extend-bytes': { new_bytes: 96 * MiB } });
    await until(async () => (await ours(id)).status === 'in-use', 30_000, 'the extend to finish');
    expect(await ours(id)).toMatchObject({ size_bytes: 96 * MiB, guest_size_bytes: 96 * MiB - offset, payload_offset: offset });
    expect(await fake.getGuestBytes(SERVER, id)).toBe(96 * MiB - offset);
    // QEMU's LUKS driver grows the file to the payload plus the header: the volume's size.
    expect(statSync(fileOf(id)).size).toBe(96 * MiB);
    expect(qemuPayloadOffset(fileOf(id))).toBe(offset);

    // A shrink below the volume's size is refused whatever the guest sees.
    const shrink = await h.volume.request('POST', `${base}/${id}/action`, { 'os-extend-bytes': { new_bytes: 96 * MiB - 512 } }).catch((e: unknown) => e);
    expect((shrink as ApiError).status).toBe(400);

    const passphrase = storedPassphrase(id);
    expect(passphrase.length).toBeGreaterThanOrEqual(32);
    const answers = [
      await h.volume.request('GET', `${base}/${id}`),
      await h.volume.request('GET', `${base}/detail`),
      await h.volume.request('GET', `${base}/${id}/os-online-extend`),
      await h.volume.request('GET', `${base}/${id}/os-volume-actions`).catch((e: unknown) => ({ body: String(e) })),
      await h.compute.request('GET', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`),
    ];
    for (const a of answers) expect(JSON.stringify(a.body)).not.toContain(passphrase);
    await h.compute.request('DELETE', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments/${id}`);
  });

  it('refuses a guest size the host cannot hold past the header (HostSizeTooSmall names what the guest could get)', async () => {
    const fake = h.service.driver as FakeDriver;
    const vol = 'luks-fake-block';
    fake.addServer({ id: '6e8f1d5b-2222-4b33-8c44-1d5e6f7a8b9c', name: 'blk', projectId: PROJECT, state: 'active', disks: [] });
    await fake.attachVolume('6e8f1d5b-2222-4b33-8c44-1d5e6f7a8b9c', { volumeId: vol, kind: 'network', source: 'iqn.2026-11.test:x/1', encryption: { format: 'luks', passphrase: 'p' } });
    fake.setBackingBytes(vol, 64 * MiB);
    const guest = 64 * MiB - FAKE_LUKS_PAYLOAD_OFFSET;
    expect(await fake.extendAttached('6e8f1d5b-2222-4b33-8c44-1d5e6f7a8b9c', vol, guest)).toBe(guest);
    // Past the header but within what the host sees (the spec's flow: assist_extend with
    // get_blockdev's bytes): final, naming the header; waiting would not help.
    await expect(fake.extendAttached('6e8f1d5b-2222-4b33-8c44-1d5e6f7a8b9c', vol, guest + 512)).rejects.toMatchObject({ code: 'HostSizeTooSmall', status: 409, final: true });
    await expect(fake.extendAttached('6e8f1d5b-2222-4b33-8c44-1d5e6f7a8b9c', vol, 64 * MiB)).rejects.toMatchObject({
      code: 'HostSizeTooSmall',
      final: true,
      message: expect.stringContaining(`minus the ${FAKE_LUKS_PAYLOAD_OFFSET}-byte header, at most ${guest} bytes`),
    });
    // Past what the host sees: the storage may still grow (rescan and wait), uncertain.
    await expect(fake.extendAttached('6e8f1d5b-2222-4b33-8c44-1d5e6f7a8b9c', vol, 64 * MiB + 512)).rejects.toMatchObject({ code: 'HostSizeTooSmall', final: false });
    expect(await fake.getHostBytes('6e8f1d5b-2222-4b33-8c44-1d5e6f7a8b9c', vol)).toBe(64 * MiB);
  });
});

describe('an encrypted volume extended while its server is shut off', () => {
  it('grows the storage offline; the guest sees the new size minus the payload offset when the server starts', async () => {
    const fake = h.service.driver as FakeDriver;
    const server = '8a0b3f7d-4444-4d55-8e66-3f7a8b9c0d1e';
    fake.addServer({ id: server, name: 'off', projectId: PROJECT, state: 'active', disks: [] });
    await h.service.syncInventory();
    const id = await create({ name: 'enc-offline', size_bytes: 64 * MiB, encryption: 'luks' });
    const offset = qemuPayloadOffset(fileOf(id));
    await h.compute.request('POST', `/v2/${PROJECT}/servers/${server}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
    expect(await fake.getGuestBytes(server, id)).toBe(64 * MiB - offset);
    fake.setState(server, 'shutoff');
    await h.service.syncInventory();
    await h.volume.request('POST', `${base}/${id}/action`, { 'os-extend-bytes': { new_bytes: 80 * MiB } });
    await until(async () => (await ours(id)).status === 'in-use', 30_000, 'the offline extend to finish');
    expect(await ours(id)).toMatchObject({ size_bytes: 80 * MiB, guest_size_bytes: 80 * MiB - offset });
    expect(statSync(fileOf(id)).size).toBe(80 * MiB);
    expect(qemuPayloadOffset(fileOf(id))).toBe(offset);
    fake.setState(server, 'active');
    expect(await fake.getGuestBytes(server, id)).toBe(80 * MiB - offset);
  });
});

describe('a volume-extended event for an encrypted disk', () => {
  it('grows the guest to the host size minus the payload offset, not to the host size (Nova grew LUKS guests past their header)', async () => {
    const fake = h.service.driver as FakeDriver;
    const server = '7f9a2e6c-3333-4c44-9d55-2e6f7a8b9c0d';
    const vol = 'luks-event-vol';
    fake.addServer({ id: server, name: 'ev', projectId: PROJECT, state: 'active', disks: [] });
    await fake.attachVolume(server, { volumeId: vol, kind: 'network', source: 'iqn.2026-11.test:ev/1', encryption: { format: 'luks', passphrase: 'p' } });
    fake.setBackingBytes(vol, 64 * MiB);
    await h.service.syncInventory();
    expect(await fake.getPayloadOffset(server, vol)).toBe(FAKE_LUKS_PAYLOAD_OFFSET);
    fake.setBackingBytes(vol, 96 * MiB);
    const res = await fetch(`${h.service.computeUrl}/v2.1/os-server-external-events`, {
      method: 'POST',
      headers: { 'x-auth-token': h.token, 'x-openstack-nova-api-version': '2.51', 'content-type': 'application/json' },
      body: JSON.stringify({ events: [{ name: 'volume-extended', server_uuid: server, tag: vol }] }),
    });
    expect(res.status).toBe(200);
    await until(async () => (await fake.getGuestBytes(server, vol)) === 96 * MiB - FAKE_LUKS_PAYLOAD_OFFSET, 10_000, 'the guest to grow to the host size minus the header');
    // Not past it: the host has no room for more.
    await new Promise((r) => setTimeout(r, 200));
    expect(await fake.getGuestBytes(server, vol)).toBe(96 * MiB - FAKE_LUKS_PAYLOAD_OFFSET);
    expect(await fake.getHostBytes(server, vol)).toBe(96 * MiB);
  });
});

describe('volume create --encryption on the command line', () => {
  async function cli(...args: string[]): Promise<string[]> {
    const lines: string[] = [];
    const { buildProgram } = await import('../../src/cli.js');
    const program = buildProgram((s) => lines.push(s), {});
    program.exitOverride();
    await program.parseAsync(['node', 'online-extend', 'volume', ...args, '--url', h.service.volumeUrl!, '--token', h.token, '--project', PROJECT, '-f', 'json']);
    return lines;
  }

  it('creates a LUKS volume with --encryption luks and shows its payload offset and guest size', async () => {
    const [printed] = await cli('create', '--size', '64MiB', '--encryption', 'luks');
    const v = (JSON.parse(printed!) as { volume: OurView }).volume;
    expect(v).toMatchObject({ encryption: 'luks', size_bytes: 64 * MiB, volume_type: 'file-luks' });
    expect(v.guest_size_bytes).toBe(64 * MiB - v.payload_offset!);
    expect(v.payload_offset).toBe(qemuPayloadOffset(fileOf(v.id)));
  });

  it('passes an encryption the service does not have to it, which refuses it with a 400', async () => {
    await expect(cli('create', '--size', '64MiB', '--encryption', 'plain')).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/Unknown volume encryption "plain"/) });
  });
});

describe('an encrypted volume left creating by a stopped service', () => {
  it('is made again at start with its stored passphrase, which unlocks it', async () => {
    const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { SqliteStore } = await import('../../src/db/sqlite.js');
    const svc = await makeService();
    try {
      const id = (await svc.volume.request<{ volume: { id: string } }>('POST', base, { volume: { size_bytes: 64 * MiB, encryption: 'luks' } })).body.volume.id;
      await svc.stop();
      const file = join(svc.config.dataDir, 'volumes', 'file', `${id}.raw`);
      rmSync(file);
      const db = new SqliteStore(join(svc.config.dataDir, 'online-extend.sqlite'));
      expect(await db.updateVolume(id, {}, { status: 'creating', payloadOffset: null })).toBe(true);
      const passphrase = (await db.getVolumeEncryptionKey(id))!;
      await db.close();
      await svc.start();
      const v = (await svc.volume.request<{ volume: OurView }>('GET', `${base}/${id}/os-online-extend`)).body.volume;
      expect(v).toMatchObject({ status: 'available', encryption: 'luks', size_bytes: 64 * MiB });
      const info = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', file], { encoding: 'utf8' })) as { 'format-specific': { data: { 'payload-offset': number } } };
      expect(v.payload_offset).toBe(info['format-specific'].data['payload-offset']);
      // The stored passphrase unlocks it (a wrong one does not).
      const dir = mkdtempSync(join(tmpdir(), 'oe-luks-key-'));
      try {
        const open = (key: string): string => {
          writeFileSync(join(dir, 'key'), key, { mode: 0o600 });
          // qemu-img info opens without I/O (no unlock); qemu-io reads through the decryption.
          return execFileSync('qemu-io', ['-r', '-U', '--object', `secret,id=k,file=${join(dir, 'key')}`, '--image-opts', `driver=luks,key-secret=k,file.filename=${file}`, '-c', `read ${64 * MiB - v.payload_offset! - 512} 512`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
        };
        // The last sector of the payload: the payload is exactly the volume minus the header.
        expect(open(passphrase)).toContain(`read 512/512 bytes at offset ${64 * MiB - v.payload_offset! - 512}`);
        expect(() => open(`${passphrase}x`)).toThrow(/Invalid password/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    } finally {
      await svc.cleanup();
    }
  });
});
