/** The volume API's input rules: bad input is a clear 400 and changes nothing. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiError } from '../../src/rpc/httpClient.js';
import { makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';
import type { FakeDriver } from '../../src/virt/fake/driver.js';

const MiB = 2 ** 20;
let h: ServiceHarness;
let volumeId: string;
beforeAll(async () => {
  h = await makeService();
  volumeId = (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: 'v', size_bytes: 64 * MiB } })).body.volume.id;
});
afterAll(async () => h.cleanup());

async function fails(method: string, path: string, body: unknown): Promise<ApiError> {
  const err = await h.volume.request(method, path, body).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ApiError);
  return err as ApiError;
}

const cases: Array<{ name: string; path?: string; body: unknown; status: number; message: RegExp }> = [
  { name: 'size and size_bytes both given', body: { volume: { size: 1, size_bytes: GiBx(1) } }, status: 400, message: /exactly one of volume.size/ },
  { name: 'no size at all', body: { volume: { name: 'x' } }, status: 400, message: /exactly one of volume.size/ },
  { name: 'size 0 GiB', body: { volume: { size: 0 } }, status: 400, message: /size: must be >= 1/ },
  { name: 'size_bytes not a multiple of 512', body: { volume: { size_bytes: 1000 } }, status: 400, message: /multiple of 512/ },
  { name: 'size as a string that is not a number', body: { volume: { size: 'one' } }, status: 400, message: /volume\.size/ },
  { name: 'size as a string of 0 GiB', body: { volume: { size: '0' } }, status: 400, message: /volume\.size/ },
  { name: 'unknown volume type', body: { volume: { size: 1, volume_type: 'ceph' } }, status: 400, message: /Unknown volume type "ceph"/ },
  { name: 'format on a non-file backend is unknown here', body: { volume: { size: 1, format: 'vmdk' } }, status: 400, message: /format/ },
  // Unknown keys inside `volume` are ignored, as Cinder does (test/api/volume-cinder.test.ts); beside it, refused.
  { name: 'unknown top-level field', body: { volume: { size: 1 }, bootable: true }, status: 400, message: /'bootable' was unexpected/ },
];

function GiBx(n: number) {
  return n * 2 ** 30;
}

describe('volume API input', () => {
  it.each(cases)('create: $name → $status', async (c) => {
    const before = (await h.volume.request<{ volumes: unknown[] }>('GET', `/v3/${PROJECT}/volumes`)).body.volumes.length;
    const err = await fails('POST', `/v3/${PROJECT}/volumes`, c.body);
    expect(err.status).toBe(c.status);
    expect(err.message).toMatch(c.message);
    expect((await h.volume.request<{ volumes: unknown[] }>('GET', `/v3/${PROJECT}/volumes`)).body.volumes.length).toBe(before);
  });

  it.each([
    { name: 'two actions at once', body: { 'os-extend': { new_size: 2 }, 'os-extend-bytes': { new_bytes: 128 * MiB } }, message: /Invalid input/ },
    { name: 'an unknown action', body: { 'os-reset_status': { status: 'available' } }, message: /Invalid input/ },
    { name: 'new_size as a float', body: { 'os-extend': { new_size: 1.5 } }, message: /Invalid input/ },
    { name: 'new_bytes not a multiple of 512', body: { 'os-extend-bytes': { new_bytes: 128 * MiB + 1 } }, message: /Invalid input/ },
    { name: 'a shrink', body: { 'os-extend-bytes': { new_bytes: 32 * MiB } }, message: /never shrunk/ },
    { name: 'the same size', body: { 'os-extend-bytes': { new_bytes: 64 * MiB } }, message: /must be greater than the current size/ },
  ])('extend: $name → 400 and the volume is unchanged', async (c) => {
    const err = await fails('POST', `/v3/${PROJECT}/volumes/${volumeId}/action`, c.body);
    expect(err.status).toBe(400);
    expect(err.message).toMatch(c.message);
    const v = (await h.volume.request<{ volume: { size_bytes: number; status: string } }>('GET', `/v3/${PROJECT}/volumes/${volumeId}/os-online-extend`)).body.volume;
    expect(v).toMatchObject({ size_bytes: 64 * MiB, status: 'available' });
  });

  it("answers 400 on another project's URL (not the token's) and 404 for an unknown volume", async () => {
    expect((await fails('GET', `/v3/other-project/volumes/${volumeId}/os-online-extend`, undefined)).code).toBe('ProjectMismatch');
    expect((await fails('POST', `/v3/${PROJECT}/volumes/00000000-0000-4000-8000-000000000000/action`, { 'os-extend': { new_size: 2 } })).status).toBe(404);
  });

  it('refuses to delete an in-use volume (409) and deletes an available one', async () => {
    const id = (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 64 * MiB } })).body.volume.id;
    await h.compute.request('POST', `/v2/${PROJECT}/servers/5d7e0c4a-1111-4a22-9b33-0c4d5e6f7a8b/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
    expect((await fails('DELETE', `/v3/${PROJECT}/volumes/${id}`, undefined)).status).toBe(409);
    await h.compute.request('DELETE', `/v2/${PROJECT}/servers/5d7e0c4a-1111-4a22-9b33-0c4d5e6f7a8b/os-volume_attachments/${id}`);
    await h.volume.request('DELETE', `/v3/${PROJECT}/volumes/${id}`);
    expect((await fails('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`, undefined)).status).toBe(404);
  });
});

/**
 * Refusals found by the property-based fuzz (test/api/fuzz.load.test.ts), each once a refusal that
 * had already changed the volume (its status went through attaching or extending and back, a new
 * version) or answered 500. Each row sets its volume up through the APIs, asks, and checks the
 * answer and that the volume is exactly as before (updated_at included: every change bumps it).
 */
describe('refusals found by the fuzz change nothing', () => {
  const STOPPED = '5d7e0c4a-4444-4a22-9b33-0c4d5e6f7a8b';
  const vol = async (size = 64 * MiB) => (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: size } })).body.volume.id;
  const attach = (server: string, volumeId: string, device?: string) =>
    h.compute.request('POST', `/v2/${PROJECT}/servers/${server}/os-volume_attachments`, { volumeAttachment: { volumeId, ...(device ? { device } : {}) } });
  const view = async (id: string) => (await h.volume.request<{ volume: Record<string, unknown> }>('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`)).body.volume;

  beforeAll(async () => {
    (h.service.driver as FakeDriver).addServer({ id: STOPPED, name: 'stopped', projectId: PROJECT, state: 'shutoff', disks: [] });
    await h.service.syncInventory();
  });

  it.each([
    {
      name: 'attach to a shut-off server',
      arrange: async (id: string) => ({ client: h.compute, method: 'POST', path: `/v2/${PROJECT}/servers/${STOPPED}/os-volume_attachments`, body: { volumeAttachment: { volumeId: id } } as unknown }),
      status: 409,
      code: 'InstanceStopped',
    },
    {
      name: 'attach on a device name another volume has on that server',
      arrange: async (id: string) => {
        await attach(SERVER, await vol(), 'vdq');
        return { client: h.compute, method: 'POST', path: `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, body: { volumeAttachment: { volumeId: id, device: '/dev/vdq' } } as unknown };
      },
      status: 409,
      code: 'DevicePathInUse',
    },
    {
      name: "extend a detached volume to less than its storage holds (grown by QEMU while attached, the record behind)",
      arrange: async (id: string) => {
        await attach(SERVER, id);
        // assist_extend on a file disk: QEMU grows the file itself; the volume service is not told.
        await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-online_extend_volume/${id}`, { onlineExtendVolume: { bytes: 128 * MiB } });
        await h.compute.request('DELETE', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments/${id}`);
        return { client: h.volume, method: 'POST', path: `/v3/${PROJECT}/volumes/${id}/action`, body: { 'os-extend-bytes': { new_bytes: 64 * MiB + 512 } } as unknown };
      },
      status: 400,
      code: 'VolumeShrinkRefused',
    },
  ])('$name → $status $code, the volume as it was', async (row) => {
    const id = await vol();
    const req = await row.arrange(id);
    const before = await view(id);
    const err = await req.client.request(req.method, req.path, req.body).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: row.status, code: row.code });
    expect(await view(id)).toEqual(before);
  });

  it('answers 403 TooManyDiskDevices (not 500) when a server has no device name left, and the volume stays available', async () => {
    const server = '5d7e0c4a-5555-4a22-9b33-0c4d5e6f7a8b';
    (h.service.driver as FakeDriver).addServer({ id: server, name: 'full', projectId: PROJECT, state: 'active', disks: [] });
    await h.service.syncInventory();
    // The fake names disks vdb..vdz: 25 of them.
    for (let i = 0; i < 25; i++) await attach(server, await vol(MiB));
    const id = await vol(MiB);
    const before = await view(id);
    const calls = (h.service.driver as FakeDriver).calls.attachVolume;
    const err = await attach(server, id).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ status: 403, code: 'TooManyDiskDevices' });
    // Refused before the volume is reserved: nothing about it changed, not even its version.
    expect(await view(id)).toEqual(before);
    expect((h.service.driver as FakeDriver).calls.attachVolume).toBe(calls);
  });
});
