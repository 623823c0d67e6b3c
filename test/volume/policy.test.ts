/**
 * Attached-volume rules key on the attachment, never on the status: with a policy that lets
 * members extend and read volumes but keeps `volume:extend_attached_volume` for admins, a member
 * is refused (403) on every volume that has an attachment — in-use or left in error_extending —
 * and nothing changes, while a detached volume grows.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiClient, ApiError, VOLUME_LATEST } from '../../src/rpc/httpClient.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { issueToken } from '../../src/auth/tokens.js';
import type { FakeDriver } from '../../src/virt/fake/driver.js';
import { errors } from '../../src/errors.js';
import { makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;
let h: ServiceHarness;
let member: ApiClient;

beforeAll(async () => {
  h = await makeService();
  const policy = join(h.dir, 'policy.json');
  writeFileSync(policy, JSON.stringify({ 'volume:extend': 'role:member or role:admin', 'volume:get': 'role:member or role:admin', 'volume:extend_attached_volume': 'role:admin' }));
  await h.stop();
  await h.start({ policyFile: policy });
  const db = new SqliteStore(join(h.config.dataDir, 'online-extend.sqlite'));
  const { token } = await issueToken(db, { userId: 'member', projectId: PROJECT, roles: ['member'], ttlMs: 3_600_000 });
  await db.close();
  member = new ApiClient({ url: h.service.volumeUrl!, token, headers: VOLUME_LATEST });
});
afterAll(async () => h?.cleanup());

type Vol = { id: string; status: string; size_bytes: number };
const show = async (id: string) => (await h.volume.request<{ volume: Vol }>('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`)).body.volume;
async function settle(id: string): Promise<Vol> {
  for (let i = 0; i < 500; i++) {
    const v = await show(id);
    if (v.status !== 'extending') return v;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('still extending');
}
async function volume(attached: boolean): Promise<Vol> {
  const v = (await h.volume.request<{ volume: Vol }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: 'p', size_bytes: 64 * MiB } })).body.volume;
  if (attached) await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: v.id } });
  return show(v.id);
}
const memberExtend = (id: string, bytes: number) => member.request('POST', `/v3/${PROJECT}/volumes/${id}/action`, { 'os-extend-bytes': { new_bytes: bytes } });

describe('volume:extend_attached_volume follows the attachment', () => {
  it('refuses a member on an in-use volume', async () => {
    const v = await volume(true);
    const err = (await memberExtend(v.id, 128 * MiB).catch((e: unknown) => e)) as ApiError;
    expect(err.status).toBe(403);
    expect(err.message).toMatch(/volume:extend_attached_volume/);
    expect(await show(v.id)).toMatchObject({ status: 'in-use', size_bytes: 64 * MiB });
  });

  it('refuses a member on a still-attached volume left in error_extending, and the guest keeps its size', async () => {
    const v = await volume(true);
    const driver = h.service.driver as FakeDriver;
    driver.injectFault('extendAttached', errors.diskReadOnly(v.id, 'vdb', SERVER));
    await h.volume.request('POST', `/v3/${PROJECT}/volumes/${v.id}/action`, { 'os-extend-bytes': { new_bytes: 96 * MiB } });
    expect((await settle(v.id)).status).toBe('error_extending');
    const resizes = driver.resizes;
    const err = (await memberExtend(v.id, 128 * MiB).catch((e: unknown) => e)) as ApiError;
    expect(err.status).toBe(403);
    expect(err.message).toMatch(/volume:extend_attached_volume/);
    expect(await show(v.id)).toMatchObject({ status: 'error_extending', size_bytes: 64 * MiB });
    expect(driver.resizes).toBe(resizes);
    expect(driver.snapshot(SERVER).disks.find((d) => d.volumeId === v.id)!.guestBytes).toBe(64 * MiB);
  });

  it('lets the member extend a detached volume', async () => {
    const v = await volume(false);
    expect((await memberExtend(v.id, 128 * MiB)).status).toBe(202);
    expect(await settle(v.id)).toMatchObject({ status: 'available', size_bytes: 128 * MiB });
    expect(statSync(join(h.config.dataDir, 'volumes', 'file', `${v.id}.raw`)).size).toBe(128 * MiB);
  });
});
