/**
 * The whole service on the fake driver, over real HTTP: a server created through POST /servers
 * takes a volume, and DELETE /servers detaches it through the volume service first, so the volume
 * is `available` with no attachment once the server is gone. Also the image API (Glance's reads)
 * on its own port, and a delete whose detach the volume service refuses, which keeps the server.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../src/db/sqlite.js';
import { issueToken } from '../../src/auth/tokens.js';
import { ApiClient, ApiError } from '../../src/rpc/httpClient.js';
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

  it('keeps the server, idle again, when the volume service refuses the detach, and the delete action says so', async () => {
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
    expect(actions.find((a) => a.action === 'delete')).toMatchObject({ result: 'Error' });
    expect(await status(h.compute, id)).toBe('ACTIVE');
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
