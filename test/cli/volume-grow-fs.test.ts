/**
 * `online-extend volume extend --grow-fs` and `volume show` against a real service (in-process,
 * fake driver, real HTTP): the flag reaches os-extend as online_extend:grow_fs, `--no-grow-fs`
 * overrides the volume's metadata, and the outcome shows in the volume's view.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeDriver } from '../../src/virt/fake/driver.js';
import { makeService, PROJECT, runCli, SERVER, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;
let h: ServiceHarness;

beforeAll(async () => {
  h = await makeService();
});
afterAll(async () => h.cleanup());

const cli = (args: string[]) => runCli(h, args);

async function attachedWithExt4(metadata?: Record<string, string>): Promise<string> {
  const id = (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 64 * MiB, ...(metadata ? { metadata } : {}) } })).body.volume.id;
  await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
  (h.service.driver as FakeDriver).setGuestFilesystem(SERVER, id, { type: 'ext4', mountpoint: '/data' });
  return id;
}

describe('online-extend volume extend --grow-fs', () => {
  it('grows the guest filesystem with the extend and shows it (json, then the table of volume show)', async () => {
    const id = await attachedWithExt4();
    const r = await cli(['volume', 'extend', id, '--size', '128MiB', '--grow-fs', '--wait', '-f', 'json']);
    expect(r.status, r.stderr).toBe(0);
    const v = (JSON.parse(r.stdout) as { volume: { status: string; size_bytes: number; fs_growth: Record<string, unknown> } }).volume;
    expect(v).toMatchObject({ status: 'in-use', size_bytes: 128 * MiB, fs_growth: { requested: true, grown: true, fs_type: 'ext4', fs_bytes: 128 * MiB } });
    const table = await cli(['volume', 'show', id]);
    expect(table.status, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/guest_fs/);
    expect(table.stdout).toMatch(/ext4 on \/dev\/vd[a-z]+, 134217728 bytes \(128 MiB\)/);
  });

  it.each([
    ['--grow-fs then --no-grow-fs', ['--grow-fs', '--no-grow-fs']],
    ['--no-grow-fs then --grow-fs', ['--no-grow-fs', '--grow-fs']],
    ['both, with --wait between them', ['--no-grow-fs', '--wait', '--grow-fs']],
  ])('refuses %s with a usage error naming both flags (exit 2), and the volume is left as it was', async (_order, flags) => {
    const id = await attachedWithExt4();
    const actions = async () => (await h.volume.request<{ volumeActions: unknown[] }>('GET', `/v3/${PROJECT}/volumes/${id}/os-volume-actions`)).body.volumeActions.length;
    const before = await actions();
    const r = await cli(['volume', 'extend', id, '--size', '128MiB', ...flags]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^error: options '--grow-fs' and '--no-grow-fs' cannot be used together/);
    expect(r.stdout).toBe('');
    const v = (await h.volume.request<{ volume: { status: string; size_bytes: number; extend: unknown } }>('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`)).body.volume;
    expect(v).toMatchObject({ status: 'in-use', size_bytes: 64 * MiB, extend: null });
    expect(await actions()).toBe(before);
  });

  it('does not grow it without the flag, and --no-grow-fs overrides the volume metadata', async () => {
    const plain = await attachedWithExt4();
    const a = await cli(['volume', 'extend', plain, '--size', '128MiB', '--wait', '-f', 'json']);
    expect(a.status, a.stderr).toBe(0);
    expect((JSON.parse(a.stdout) as { volume: { fs_growth: Record<string, unknown> } }).volume.fs_growth).toMatchObject({ requested: false, grown: null });
    const opted = await attachedWithExt4({ 'online_extend:grow_fs': 'true' });
    const b = await cli(['volume', 'extend', opted, '--size', '128MiB', '--no-grow-fs', '--wait', '-f', 'json']);
    expect(b.status, b.stderr).toBe(0);
    expect((JSON.parse(b.stdout) as { volume: { fs_growth: Record<string, unknown> } }).volume.fs_growth).toMatchObject({ requested: false });
    const guest = (h.service.driver as FakeDriver).snapshot(SERVER).disks.find((d) => d.volumeId === opted)!;
    expect(guest.guestFs?.bytes).toBe(64 * MiB);
  });
});
