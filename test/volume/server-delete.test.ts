/**
 * The whole service on the fake driver, over real HTTP: a server created through POST /servers
 * takes a volume, and DELETE /servers detaches it through the volume service first, so the volume
 * is `available` with no attachment once the server is gone. A delete while a volume of the
 * server is attaching, detaching or extending is refused up front (409) and changes nothing; a
 * volume that starts extending after the 204 is waited for (the detach retried); a detach the
 * volume service refuses for good leaves the server in ERROR with the fault, as Nova does. Also
 * the image API (Glance's reads) on its own port.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../src/db/sqlite.js';
import { issueToken } from '../../src/auth/tokens.js';
import { ApiClient, ApiError } from '../../src/rpc/httpClient.js';
import type { FakeDriver } from '../../src/virt/fake/driver.js';
import type { VolumeStatus } from '../../src/db/store.js';
import { makeService, PROJECT, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;
let h: ServiceHarness | undefined;
let policyDir: string | undefined;
afterEach(async () => {
  await h?.cleanup();
  h = undefined;
  if (policyDir) rmSync(policyDir, { recursive: true, force: true });
  policyDir = undefined;
});

async function until<T>(fn: () => Promise<T | undefined | false>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The service with an image and a flavor registered in its data dir, as the CLI does. */
async function serviceWithCatalog(policy?: Record<string, string>): Promise<ServiceHarness> {
  let policyFile: string | undefined;
  if (policy) {
    policyDir = mkdtempSync(join(tmpdir(), 'oe-policy-'));
    policyFile = join(policyDir, 'policy.json');
    writeFileSync(policyFile, JSON.stringify(policy));
  }
  const svc = await makeService(policyFile ? { config: { policyFile } } : {});
  const store = new SqliteStore(join(svc.config.dataDir, 'online-extend.sqlite'));
  try {
    await store.putImage({ id: 'img-1', name: 'guest', kind: 'disk', diskPath: '/nonexistent/guest.qcow2', diskFormat: 'qcow2', kernelPath: null, ramdiskPath: null, cmdline: null, minDiskGb: 0, minRamMb: 0, createdAt: '2026-11-30T01:02:03.456Z' });
    await store.putFlavor({ id: 'f-1', name: 'small', vcpus: 1, ramMb: 128, diskGb: 1, ephemeralGb: 0, swapMb: 0, isPublic: true, description: null });
  } finally {
    await store.close();
  }
  return svc;
}

const status = (c: ApiClient, id: string) =>
  c.request<{ server: { status: string } }>('GET', `/v2/${PROJECT}/servers/${id}`).then(
    (r) => r.body.server.status,
    (e: unknown) => (e instanceof ApiError ? e.status : Promise.reject(e)),
  );

/** A server built through POST /servers (ACTIVE) with a new volume attached (in-use). */
async function serverWithVolume(svc: ServiceHarness): Promise<{ id: string; vol: string }> {
  const id = (await svc.compute.request<{ server: { id: string } }>('POST', `/v2.1/${PROJECT}/servers`, { server: { name: 'vm', imageRef: 'img-1', flavorRef: 'f-1' } })).body.server.id;
  await until(async () => (await status(svc.compute, id)) === 'ACTIVE');
  const vol = (await svc.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 64 * MiB } })).body.volume.id;
  await svc.compute.request('POST', `/v2/${PROJECT}/servers/${id}/os-volume_attachments`, { volumeAttachment: { volumeId: vol } });
  return { id, vol };
}

/** Sets a volume's status in the service's database (another connection), as an operation under way would. */
async function setVolumeStatus(svc: ServiceHarness, vol: string, from: VolumeStatus, to: VolumeStatus): Promise<void> {
  const store = new SqliteStore(join(svc.config.dataDir, 'online-extend.sqlite'));
  try {
    expect(await store.updateVolume(vol, [from], { status: to })).toBe(true);
  } finally {
    await store.close();
  }
}

type ServerView = { status: string; 'OS-EXT-STS:task_state': string | null; fault?: { code: number; message: string } };
const serverView = async (svc: ServiceHarness, id: string) => (await svc.compute.request<{ server: ServerView }>('GET', `/v2/${PROJECT}/servers/${id}`)).body.server;
const volumeView = async (svc: ServiceHarness, vol: string) =>
  (await svc.volume.request<{ volume: { status: string; size: number; attachments: Array<{ server_id: string }> } }>('GET', `/v3/${PROJECT}/volumes/${vol}`)).body.volume;
const deleteActions = async (svc: ServiceHarness, id: string) =>
  (await svc.compute.request<{ instanceActions: Array<{ action: string; request_id: string }> }>('GET', `/v2/${PROJECT}/servers/${id}/os-instance-actions`)).body.instanceActions.filter((a) => a.action === 'delete');

describe('deleting a server by the state of its attached volume', () => {
  it.each([
    ['attaching', 409],
    ['detaching', 409],
    ['extending', 409],
    ['in-use', 204],
  ] as const)('with the volume %s, answers %i (409: InstanceBusy and nothing changed; 204: the server goes, the volume is available)', async (volStatus, code) => {
    h = await serviceWithCatalog();
    const { id, vol } = await serverWithVolume(h);
    if (volStatus !== 'in-use') await setVolumeStatus(h, vol, 'in-use', volStatus);
    const res = await h.compute.request('DELETE', `/v2/${PROJECT}/servers/${id}`).catch((e: unknown) => e as ApiError);
    if (code === 409) {
      expect(res).toBeInstanceOf(ApiError);
      const err = res as ApiError;
      expect([err.status, err.code, err.final]).toEqual([409, 'InstanceBusy', false]);
      expect(err.message).toBe(`Cannot 'delete' instance ${id} while its volume ${vol} is ${volStatus}; try again when it is done.`);
      expect(await serverView(h, id)).toMatchObject({ status: 'ACTIVE', 'OS-EXT-STS:task_state': null });
      expect(await deleteActions(h, id)).toEqual([]);
      expect(await volumeView(h, vol)).toMatchObject({ status: volStatus, attachments: [{ server_id: id }] });
      // Once the volume's operation is over, the same delete goes through.
      await setVolumeStatus(h, vol, volStatus, 'in-use');
      expect((await h.compute.request('DELETE', `/v2/${PROJECT}/servers/${id}`)).status).toBe(204);
    } else {
      expect((res as { status: number }).status).toBe(204);
    }
    await until(async () => (await status(h!.compute, id)) === 404);
    expect(await volumeView(h, vol)).toMatchObject({ status: 'available', attachments: [] });
  });

  it('refuses the delete while an in-use extend runs (os-extend at 3.42), then deletes once the extend is done, the volume grown and available', async () => {
    h = await serviceWithCatalog();
    await h.stop();
    await h.start({ extendStepDelayMs: 300 });
    const { id, vol } = await serverWithVolume(h);
    const v342 = new ApiClient({ url: h.service.volumeUrl!, token: h.token, headers: { 'OpenStack-API-Version': 'volume 3.42' } });
    expect((await v342.request('POST', `/v3/${PROJECT}/volumes/${vol}/action`, { 'os-extend': { new_size: 2 } })).status).toBe(202);
    expect((await volumeView(h, vol)).status).toBe('extending');
    const refused = await h.compute.request('DELETE', `/v2/${PROJECT}/servers/${id}`).catch((e: unknown) => e as ApiError);
    expect(refused).toMatchObject({ status: 409, code: 'InstanceBusy' });
    expect(await serverView(h, id)).toMatchObject({ status: 'ACTIVE', 'OS-EXT-STS:task_state': null });
    await until(async () => (await volumeView(h!, vol)).status === 'in-use', 30_000);
    expect((await h.compute.request('DELETE', `/v2/${PROJECT}/servers/${id}`)).status).toBe(204);
    await until(async () => (await status(h!.compute, id)) === 404);
    expect(await volumeView(h, vol)).toMatchObject({ status: 'available', size: 2, attachments: [] });
  });

  it('retries a detach refused for now after the 204 (the volume turned busy meanwhile) and deletes once it is idle: the server stays deleting meanwhile', async () => {
    h = await serviceWithCatalog();
    const { id, vol } = await serverWithVolume(h);
    // The delete's first step (reading the server on the host) takes 300 ms: the volume turns busy
    // then, as another operation on it would make it (the reconciler leaves a fresh record alone).
    (h.service.driver as FakeDriver).latencyMs = 300;
    expect((await h.compute.request('DELETE', `/v2/${PROJECT}/servers/${id}`)).status).toBe(204);
    await setVolumeStatus(h, vol, 'in-use', 'detaching');
    await new Promise((r) => setTimeout(r, 1_500));
    // Still being deleted: the detach was refused for now (VolumeBusy) and is being retried.
    expect(await serverView(h, id)).toMatchObject({ 'OS-EXT-STS:task_state': 'deleting' });
    expect(await volumeView(h, vol)).toMatchObject({ status: 'detaching', attachments: [{ server_id: id }] });
    await setVolumeStatus(h, vol, 'detaching', 'in-use');
    await until(async () => (await status(h!.compute, id)) === 404);
    expect(await volumeView(h, vol)).toMatchObject({ status: 'available', attachments: [] });
  });
});

describe('deleting a server with an attached volume', () => {
  it('detaches the volume through the volume service first: once the server is gone the volume is available with no attachment', async () => {
    h = await serviceWithCatalog();
    const c = h.compute;
    const created = await c.request<{ server: { id: string } }>('POST', `/v2.1/${PROJECT}/servers`, { server: { name: 'vm', imageRef: 'img-1', flavorRef: 'f-1' } });
    expect(created.status).toBe(202);
    const id = created.body.server.id;
    await until(async () => (await status(c, id)) === 'ACTIVE');
    const vol = (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 64 * MiB } })).body.volume.id;
    await c.request('POST', `/v2/${PROJECT}/servers/${id}/os-volume_attachments`, { volumeAttachment: { volumeId: vol } });
    expect((await h.volume.request<{ volume: { status: string } }>('GET', `/v3/${PROJECT}/volumes/${vol}`)).body.volume.status).toBe('in-use');

    const del = await c.request('DELETE', `/v2/${PROJECT}/servers/${id}`);
    expect(del.status).toBe(204);
    await until(async () => (await status(c, id)) === 404);
    const v = (await h.volume.request<{ volume: { status: string; attachments: unknown[] } }>('GET', `/v3/${PROJECT}/volumes/${vol}`)).body.volume;
    expect(v).toMatchObject({ status: 'available', attachments: [] });
    // The volume can be deleted now: nothing points at the gone server.
    expect((await h.volume.request('DELETE', `/v3/${PROJECT}/volumes/${vol}`)).status).toBe(202);
  });

  it('leaves the server in ERROR with the fault (as Nova) when the volume service refuses the detach for good, and the delete action says so', async () => {
    // Members may delete their servers but not detach volumes (whatever the defaults of the day).
    h = await serviceWithCatalog({ 'volume:detach': 'role:admin' });
    const id = (await h.compute.request<{ server: { id: string } }>('POST', `/v2.1/${PROJECT}/servers`, { server: { name: 'vm', imageRef: 'img-1', flavorRef: 'f-1' } })).body.server.id;
    await until(async () => (await status(h!.compute, id)) === 'ACTIVE');
    const vol = (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 64 * MiB } })).body.volume.id;
    await h.compute.request('POST', `/v2/${PROJECT}/servers/${id}/os-volume_attachments`, { volumeAttachment: { volumeId: vol } });
    const store = new SqliteStore(join(h.config.dataDir, 'online-extend.sqlite'));
    const { token: member } = await issueToken(store, { userId: 'm', projectId: PROJECT, roles: ['member'], ttlMs: 60_000 }).finally(() => store.close());
    const asMember = new ApiClient({ url: h.service.computeUrl, token: member });
    expect((await asMember.request('DELETE', `/v2/${PROJECT}/servers/${id}`)).status).toBe(204);
    const actions = await until(async () => {
      const list = (await h!.compute.request<{ instanceActionDetails: Array<{ action: string; result: string | null; message: string | null }> }>('GET', `/v2/${PROJECT}/servers/${id}/os-instance-action-details`)).body.instanceActionDetails;
      return list.find((a) => a.action === 'delete' && a.result !== null) && list;
    });
    const refusal = actions.find((a) => a.action === 'delete')!;
    expect(refusal).toMatchObject({ result: 'Error' });
    expect(refusal.message).toMatch(/policy|not allowed|Policy/i);
    const server = await serverView(h, id);
    expect(server).toMatchObject({ status: 'ERROR', 'OS-EXT-STS:task_state': null, fault: { code: 403, message: refusal.message } });
    // It can be deleted again (Nova deletes servers in ERROR): refused the same way while the policy holds.
    expect((await asMember.request('DELETE', `/v2/${PROJECT}/servers/${id}`)).status).toBe(204);
    const v = (await h.volume.request<{ volume: { status: string; attachments: Array<{ server_id: string }> } }>('GET', `/v3/${PROJECT}/volumes/${vol}`)).body.volume;
    expect(v).toMatchObject({ status: 'in-use', attachments: [{ server_id: id }] });
  });
});

describe('the image API', () => {
  it('answers Glance’s version list (300 at /, 200 at /versions) without a token, and the images in Glance v2’s shape', async () => {
    h = await serviceWithCatalog();
    const base = h.service.imageUrl;
    const root = await fetch(`${base}/`);
    expect(root.status).toBe(300);
    const versions = (await root.json()) as { versions: Array<{ id: string; status: string; links: Array<{ rel: string; href: string }> }> };
    expect(versions.versions[0]).toEqual({ id: 'v2.9', status: 'CURRENT', links: [{ rel: 'self', href: `${base}/v2/` }] });
    expect((await fetch(`${base}/versions`)).status).toBe(200);
    const images = new ApiClient({ url: base, token: h.token });
    const list = (await images.request<{ images: Array<Record<string, unknown>>; first: string }>('GET', '/v2/images')).body;
    expect(list.first).toBe('/v2/images');
    expect(list.images).toHaveLength(1);
    const one = (await images.request<Record<string, unknown>>('GET', '/v2/images/img-1')).body;
    expect(one).toEqual(list.images[0]);
    expect(one).toMatchObject({ id: 'img-1', name: 'guest', status: 'active', visibility: 'public', disk_format: 'qcow2', container_format: 'bare', created_at: '2026-11-30T01:02:03Z', self: '/v2/images/img-1', file: '/v2/images/img-1/file', schema: '/v2/schemas/image' });
    expect(JSON.stringify(one)).not.toContain('/nonexistent');
    const missing = await images.request('GET', '/v2/images/nope').catch((e: unknown) => e as ApiError);
    expect((missing as ApiError).status).toBe(404);
    const anonymous = await fetch(`${base}/v2/images`);
    expect(anonymous.status).toBe(401);
  });
});
