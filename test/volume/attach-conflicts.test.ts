/**
 * Attach conflicts as Nova answers them, through os-volume_attachments (compute → volume service
 * → compute over real HTTP, fake driver): a volume already attached to this server or to another
 * is Nova's InvalidVolume (400), a device name in use on the server Nova's DevicePathInUse (409,
 * "The supplied device path (/dev/vdX) is in use."). Each refusal changes nothing, and a server
 * never ends with two disks on one device. The same rows run on the libvirt driver in
 * test/e2e/external-event.e2e.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiError } from '../../src/rpc/httpClient.js';
import type { FakeDriver } from '../../src/virt/fake/driver.js';
import { makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;
const SECOND = '5d7e0c4a-6666-4a22-9b33-0c4d5e6f7a8b';

let h: ServiceHarness;
beforeAll(async () => {
  h = await makeService({
    inventory: { servers: [SERVER, SECOND].map((id, i) => ({ id, name: `vm-${i}`, project_id: PROJECT, state: 'active', disks: [] })) },
  });
});
afterAll(async () => h?.cleanup());

const driver = () => h.service.driver as FakeDriver;
const createVolume = async () => (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 64 * MiB } })).body.volume.id;
const attach = (server: string, volumeId: string, device?: string) =>
  h.compute.request<{ volumeAttachment: { device: string } }>('POST', `/v2/${PROJECT}/servers/${server}/os-volume_attachments`, { volumeAttachment: { volumeId, ...(device === undefined ? {} : { device }) } });
const view = async (id: string) => (await h.volume.request<{ volume: Record<string, unknown> }>('GET', `/v3/${PROJECT}/volumes/${id}`)).body.volume;
const failure = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: unknown) => e as ApiError,
  );
/** Every server's disks: device names must be unique on each. */
const devices = (server: string) => driver().snapshot(server).disks.map((d) => d.device);

describe('attach conflicts answer as Nova does and change nothing', () => {
  it.each([
    {
      name: 'the volume is already attached to this server',
      arrange: async (id: string) => (await attach(SERVER, id), { server: SERVER, device: undefined }),
      status: 400,
      code: 'InvalidVolume',
      message: (id: string) => `Invalid volume: volume ${id} already attached`,
    },
    {
      name: 'the volume is already attached to this server, asked on another device',
      arrange: async (id: string) => (await attach(SERVER, id), { server: SERVER, device: '/dev/vdx' }),
      status: 400,
      code: 'InvalidVolume',
      message: (id: string) => `Invalid volume: volume ${id} already attached`,
    },
    {
      name: 'the volume (not multiattach) is attached to another server',
      arrange: async (id: string) => (await attach(SECOND, id), { server: SERVER, device: undefined }),
      status: 400,
      code: 'InvalidVolume',
      message: (id: string) => `Invalid volume: volume ${id} is already attached to instances: ${SECOND}`,
    },
    {
      name: 'the device path is in use on that server (with /dev/)',
      arrange: async () => (await attach(SERVER, await createVolume(), '/dev/vdp'), { server: SERVER, device: '/dev/vdp' }),
      status: 409,
      code: 'DevicePathInUse',
      message: () => 'The supplied device path (/dev/vdp) is in use.',
    },
    {
      name: 'the device path is in use on that server (without /dev/)',
      arrange: async () => (await attach(SERVER, await createVolume(), 'vdo'), { server: SERVER, device: 'vdo' }),
      status: 409,
      code: 'DevicePathInUse',
      message: () => 'The supplied device path (/dev/vdo) is in use.',
    },
  ])('$name → $status $code', async ({ arrange, status, code, message }) => {
    const id = await createVolume();
    const { server, device } = await arrange(id);
    const before = { volume: await view(id), disks: [SERVER, SECOND].map((s) => driver().snapshot(s).disks), attaches: driver().calls.attachVolume };
    const err = await failure(attach(server, id, device));
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status, code, message: message(id), final: true });
    expect({ volume: await view(id), disks: [SERVER, SECOND].map((s) => driver().snapshot(s).disks), attaches: driver().calls.attachVolume }).toEqual(before);
  });

  it('lets the same device name be used on another server', async () => {
    await attach(SERVER, await createVolume(), '/dev/vdn');
    const res = await attach(SECOND, await createVolume(), '/dev/vdn');
    expect(res.body.volumeAttachment.device).toBe('/dev/vdn');
  });

  it('never ends with two disks on one device when attaches race for it', async () => {
    const ids = await Promise.all([createVolume(), createVolume(), createVolume(), createVolume()]);
    const results = await Promise.all(ids.map((id) => failure(attach(SERVER, id, '/dev/vdm'))));
    // One wins; the others are refused (the device, or the server busy with the winner's attach).
    expect(results.filter((r) => r === undefined)).toHaveLength(1);
    for (const r of results.filter((x) => x !== undefined)) expect(['DevicePathInUse', 'InstanceBusy']).toContain(r!.code);
    const all = devices(SERVER);
    expect(all.filter((d) => d === 'vdm')).toHaveLength(1);
    expect(new Set(all).size).toBe(all.length);
    const losers = ids.filter((_, i) => results[i] !== undefined);
    for (const id of losers) expect(await view(id)).toMatchObject({ status: 'available', attachments: [] });
  });
});
