/**
 * Sizes inside the API's documented range (≤ 1 PiB) but beyond what the storage can hold: every
 * backend declares its limit (measured on its filesystem, or the image format's own), and a size
 * above it is a clear 400 naming the limit, checked before anything is created or grown — no row
 * left in `error`, no file, no server path in the message. The same holds for compute's
 * assist_extend on a file disk (QEMU would fail half-way with EFBIG).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ApiError } from '../../src/rpc/httpClient.js';
import { maxFileBytes } from '../../src/util/fsLimits.js';
import type { FakeDriver } from '../../src/virt/fake/driver.js';
import { FileBackend } from '../../src/volume/backends/file.js';
import { makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const PiB = 2 ** 50;
let h: ServiceHarness;
let limit: number;

beforeAll(async () => {
  h = await makeService();
  limit = await maxFileBytes(h.dir);
});
afterAll(async () => h?.cleanup());

type Vol = { id: string; status: string; size_bytes: number };
const list = async () => (await h.volume.request<{ volumes: Vol[] }>('GET', `/v3/${PROJECT}/volumes/os-online-extend`)).body.volumes;
const files = () => {
  try {
    return readdirSync(join(h.config.dataDir, 'volumes', 'file'));
  } catch {
    return [];
  }
};
async function refused(p: Promise<unknown>): Promise<ApiError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ApiError);
  return err as ApiError;
}

function expectLimitError(err: ApiError, requested: number, max: number): void {
  expect(err.status).toBe(400);
  expect(err.code).toBe('SizeLimitExceeded');
  expect(err.final).toBe(true);
  expect(err.message).toContain(`Requested ${requested} bytes`);
  expect(err.message).toContain(`at most ${max} bytes`);
  expect(err.message).not.toContain(h.dir);
}

describe('sizes the storage cannot hold', () => {
  it('measures a real limit on this filesystem, inside the API range', () => {
    console.log(`[limits] largest file here: ${limit} bytes`);
    expect(limit % 512).toBe(0);
    expect(limit).toBeGreaterThan(GiB);
  });

  it('measures the limit of a pool directory that does not exist yet, making it private (0700) on the way', async () => {
    const dir = join(h.dir, 'pool-not-made-yet', 'raw');
    expect(await new FileBackend({ dir }).maxBytes({ format: 'raw' })).toBe(limit);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
  });

  const over = () => (limit + 512 <= PiB ? [{ name: 'one sector above the limit', bytes: limit + 512 }] : []);

  it('refuses to create a raw volume above the limit with 400, and leaves no row and no file', async () => {
    const cases = [...over(), { name: 'the API maximum, 1 PiB', bytes: PiB }].filter((c) => c.bytes > limit);
    if (limit < 16 * 2 ** 40) cases.push({ name: '16 TiB in GiB (the red team’s case)', bytes: 16384 * GiB });
    expect(cases.length).toBeGreaterThan(0);
    for (const c of cases) {
      const before = await list();
      const body = c.bytes % GiB === 0 && c.bytes / GiB <= 1024 * 1024 ? { size: c.bytes / GiB } : { size_bytes: c.bytes };
      const err = await refused(h.volume.request('POST', `/v3/${PROJECT}/volumes`, { volume: { name: c.name, ...body } }));
      expectLimitError(err, c.bytes, limit);
      expect(await list(), c.name).toEqual(before);
      expect(files()).toEqual([]);
    }
  });

  it('creates a qcow2 volume far above the raw limit (the image format holds it, the file stays small)', async () => {
    if (limit >= PiB) return;
    const made = (await h.volume.request<{ volume: Vol }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: 'big', size_bytes: PiB, format: 'qcow2' } })).body.volume;
    const v = (await h.volume.request<{ volume: Vol }>('GET', `/v3/${PROJECT}/volumes/${made.id}/os-online-extend`)).body.volume;
    expect(v).toMatchObject({ status: 'available', size_bytes: PiB });
    await h.volume.request('DELETE', `/v3/${PROJECT}/volumes/${v.id}`);
  });

  it('refuses to extend a detached raw volume above the limit, and changes nothing', async () => {
    const v = (await h.volume.request<{ volume: Vol }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: 'small', size_bytes: 64 * MiB } })).body.volume;
    const err = await refused(h.volume.request('POST', `/v3/${PROJECT}/volumes/${v.id}/action`, { 'os-extend-bytes': { new_bytes: Math.min(PiB, limit + 512) } }));
    expectLimitError(err, Math.min(PiB, limit + 512), limit);
    expect((await h.volume.request<{ volume: Vol }>('GET', `/v3/${PROJECT}/volumes/${v.id}/os-online-extend`)).body.volume).toMatchObject({ status: 'available', size_bytes: 64 * MiB });
    expect(statSync(join(h.config.dataDir, 'volumes', 'file', `${v.id}.raw`)).size).toBe(64 * MiB);
    await h.volume.request('DELETE', `/v3/${PROJECT}/volumes/${v.id}`);
  });

  it('refuses an attached extend above the limit up front (400), nothing changes, the guest keeps its size', async () => {
    const v = (await h.volume.request<{ volume: Vol }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: 'att', size_bytes: 64 * MiB } })).body.volume;
    await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: v.id } });
    const target = Math.min(PiB, limit + 512);
    const err = await refused(h.volume.request('POST', `/v3/${PROJECT}/volumes/${v.id}/action`, { 'os-extend-bytes': { new_bytes: target } }));
    expectLimitError(err, target, limit);
    expect((await h.volume.request<{ volume: Vol }>('GET', `/v3/${PROJECT}/volumes/${v.id}/os-online-extend`)).body.volume).toMatchObject({ status: 'in-use', size_bytes: 64 * MiB });

    // compute's own assist_extend on the same file disk: 400 too, before any resize.
    const driver = h.service.driver as FakeDriver;
    const resizes = driver.resizes;
    const err2 = await refused(h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-online_extend_volume/${v.id}`, { onlineExtendVolume: { bytes: target } }));
    expectLimitError(err2, target, limit);
    expect(driver.resizes).toBe(resizes);
    expect(driver.snapshot(SERVER).disks.find((d) => d.volumeId === v.id)!.guestBytes).toBe(64 * MiB);
    expect(statSync(join(h.config.dataDir, 'volumes', 'file', `${v.id}.raw`)).size).toBe(64 * MiB);
  });
});
