/**
 * A volume whose storage was removed by hand (its record is still there): every request that
 * needs the storage answers VolumeStorageMissing (500, final) saying so, never a 404 for a volume
 * the API lists, and nothing changes; it can still be deleted.
 * Real service (fake driver, file backend, real HTTP), real files.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { ApiError } from '../../src/rpc/httpClient.js';
import { makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';
import { volumeStorageFile } from '../support/files.js';

const MiB = 2 ** 20;
let h: ServiceHarness;
beforeAll(async () => {
  h = await makeService();
});
afterAll(async () => h.cleanup());

interface Vol { id: string; status: string; size_bytes: number; extend: { error: string | null } | null }
const show = async (id: string) => (await h.volume.request<{ volume: Vol }>('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`)).body.volume;
const fails = (p: Promise<unknown>) => p.then(() => { throw new Error('expected a refusal'); }, (e: unknown) => e as ApiError);

async function volumeWithoutStorage(attach: boolean): Promise<string> {
  const id = (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 64 * MiB } })).body.volume.id;
  if (attach) await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
  rmSync(volumeStorageFile(h.config.dataDir, id));
  return id;
}

it.each([
  { name: 'an extend of a detached volume', attach: false, call: (id: string) => h.volume.request('POST', `/v3/${PROJECT}/volumes/${id}/action`, { 'os-extend-bytes': { new_bytes: 128 * MiB } }) },
  { name: 'an attach', attach: false, call: (id: string) => h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } }) },
])('answers $name with VolumeStorageMissing (500, final), saying so, and changes nothing', async ({ attach, call }) => {
  const id = await volumeWithoutStorage(attach);
  const before = await show(id);
  const err = await fails(call(id));
  expect(err).toMatchObject({ code: 'VolumeStorageMissing', status: 500, final: true });
  expect(err.message).toBe(`The storage of volume ${id} is missing from its file backend; nothing was changed. An operator must restore it, or delete the volume.`);
  expect(err.message).not.toMatch(/\//);
  expect(await show(id)).toMatchObject({ status: before.status, size_bytes: before.size_bytes });
});

it('still deletes a volume whose storage is missing', async () => {
  const id = await volumeWithoutStorage(false);
  expect((await h.volume.request('DELETE', `/v3/${PROJECT}/volumes/${id}`)).status).toBe(202);
  const end = Date.now() + 5_000;
  let gone = false;
  while (!gone && Date.now() < end) {
    gone = (await h.volume.request('GET', `/v3/${PROJECT}/volumes/${id}`).catch((e: unknown) => e as ApiError)) instanceof ApiError;
    if (!gone) await new Promise((r) => setTimeout(r, 50));
  }
  expect(gone).toBe(true);
});
