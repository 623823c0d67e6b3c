/**
 * Attach and detach across the RPC boundary (compute → volume service → compute, all over real
 * HTTP), and the server's task state that keeps two attaches or detaches on one server from
 * overlapping (Nova's task_state, written with the store's conditional update).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { ApiError } from '../../src/rpc/httpClient.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { issueToken, SERVICE_PROJECT, SERVICE_ROLES } from '../../src/auth/tokens.js';
import { errors } from '../../src/errors.js';
import type { FakeDriver } from '../../src/virt/fake/driver.js';
import { makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;
let h: ServiceHarness | undefined;
afterEach(async () => {
  await h?.cleanup();
  h = undefined;
});

const svc = () => h!;
const driver = () => svc().service.driver as FakeDriver;
const createVolume = async () => (await svc().volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 64 * MiB } })).body.volume.id;
const attach = (volumeId: string) => svc().compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId } });
const detach = (volumeId: string) => svc().compute.request('DELETE', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments/${volumeId}`);
const view = async (id: string) => (await svc().volume.request<{ volume: Record<string, unknown> }>('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`)).body.volume;
const taskState = async () =>
  (await svc().compute.request<{ server: { 'OS-EXT-STS:task_state': string | null } }>('GET', `/v2/${PROJECT}/servers/${SERVER}`)).body.server['OS-EXT-STS:task_state'];
const failure = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: unknown) => e as ApiError,
  );

async function until(fn: () => Promise<boolean>, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('attach and detach go compute → volume service → compute over HTTP', () => {
  it('attaches through the volume service: the volume is in-use on the device the hypervisor gave, and the disk is plugged in', async () => {
    h = await makeService();
    const id = await createVolume();
    const res = await attach(id);
    expect(res.body).toMatchObject({ volumeAttachment: { volumeId: id, serverId: SERVER, device: expect.stringMatching(/^\/dev\/vd[b-z]$/) as string } });
    const device = (res.body as { volumeAttachment: { device: string } }).volumeAttachment.device;
    expect(await view(id)).toMatchObject({ status: 'in-use', attachments: [{ server_id: SERVER, device }] });
    expect(driver().snapshot(SERVER).disks.map((d) => d.volumeId)).toContain(id);
    await detach(id);
    expect(await view(id)).toMatchObject({ status: 'available', attachments: [] });
    expect(driver().snapshot(SERVER).disks.map((d) => d.volumeId)).not.toContain(id);
  });

  it.each([
    ['before the inventory sees it', false],
    ['after an inventory sync saw it', true],
  ])('finishes the detach of a volume whose disk was unplugged behind its back (%s), as Nova does: available, and deletable', async (_when, sync) => {
    h = await makeService();
    const id = await createVolume();
    await attach(id);
    await driver().detachVolume(SERVER, id); // `virsh detach-disk` by hand
    if (sync) await h.service.syncInventory();
    await detach(id);
    expect(await view(id)).toMatchObject({ status: 'available', attachments: [] });
    expect(driver().snapshot(SERVER).disks.map((d) => d.volumeId)).not.toContain(id);
    const del = await svc().volume.request('DELETE', `/v3/${PROJECT}/volumes/${id}`);
    expect(del.status).toBe(202);
  });

  it('still refuses to detach a volume attached to another server, and changes nothing', async () => {
    h = await makeService();
    const id = await createVolume();
    await attach(id);
    const other = '99999999-0000-4000-8000-000000000001';
    expect(await failure(svc().compute.request('DELETE', `/v2/${PROJECT}/servers/${other}/os-volume_attachments/${id}`))).toMatchObject({ status: 404 });
    expect(await view(id)).toMatchObject({ status: 'in-use', attachments: [{ server_id: SERVER }] });
  });

  it('answers attach and detach with 501 VolumeServiceNotConfigured when the volume API is disabled, and changes nothing', async () => {
    h = await makeService();
    const id = await createVolume();
    await h.stop();
    await h.start({ volumeApi: false });
    expect(await failure(attach(id))).toMatchObject({ status: 501, code: 'VolumeServiceNotConfigured', final: true });
    expect(await failure(detach(id))).toMatchObject({ status: 501, code: 'VolumeServiceNotConfigured', final: true });
    expect(await taskState()).toBeNull();
    expect(driver().snapshot(SERVER).disks.map((d) => d.volumeId)).not.toContain(id);
    // The checks come first: an unknown server is still a 404.
    expect(await failure(svc().compute.request('POST', `/v2/${PROJECT}/servers/99999999-0000-4000-8000-000000000001/os-volume_attachments`, { volumeAttachment: { volumeId: id } }))).toMatchObject({ status: 404 });
  });

  it.each([
    ['a member of the server\'s project', ['member']],
    ['an admin of the server\'s project (admins are not the volume service)', ['admin']],
    ['a reader', ['reader']],
  ])("refuses compute's internal connection routes to %s (403): nothing is plugged in, whatever the body names", async (_who, roles) => {
    h = await makeService();
    const store = new SqliteStore(join(h.config.dataDir, 'online-extend.sqlite'));
    const token = (await issueToken(store, { userId: 'caller', projectId: PROJECT, roles, ttlMs: 60_000 })).token;
    await store.close();
    const url = `${h.service.computeUrl}/v2/${PROJECT}/servers/${SERVER}/os-volume_connections`;
    const headers = { 'x-auth-token': token, 'content-type': 'application/json' };
    const before = driver().snapshot(SERVER).disks.length;
    const list = await fetch(url, { headers });
    expect(list.status).toBe(403);
    expect(((await list.json()) as { forbidden: { error_code: string } }).forbidden.error_code).toBe('Forbidden');
    const volumeId = '0b5b5f8e-1111-4a22-8b33-4c44d55e66f7';
    const plug = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ connection: { volumeId, kind: 'file', source: '/etc/passwd' } }) });
    expect(plug.status).toBe(403);
    expect(driver().snapshot(SERVER).disks.length).toBe(before);
  });

  it("keeps compute's internal connection routes out of the OpenAPI document, and answers the volume service's token", async () => {
    h = await makeService();
    const doc = (await (await fetch(`${h.service.computeUrl}/openapi.json`)).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths).filter((p) => p.includes('os-volume_connections'))).toEqual([]);
    const store = new SqliteStore(join(h.config.dataDir, 'online-extend.sqlite'));
    const service = (await issueToken(store, { userId: 'volume-service', projectId: SERVICE_PROJECT, roles: [...SERVICE_ROLES], ttlMs: 60_000 })).token;
    await store.close();
    const res = await fetch(`${h.service.computeUrl}/v2/${PROJECT}/servers/${SERVER}/os-volume_connections`, { headers: { 'x-auth-token': service } });
    expect(res.status).toBe(200);
  });
});

describe("the server's task state during attach and detach", () => {
  it('refuses a second attach to the same server while one is under way (409 InstanceBusy), and the second volume is as it was', async () => {
    h = await makeService();
    const [first, second] = [await createVolume(), await createVolume()];
    const before = await view(second);
    driver().latencyMs = 200;
    const calls = driver().calls.attachVolume;
    const running = attach(first);
    await until(async () => (await taskState()) === 'attaching_volume');
    const err = await failure(attach(second));
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 409, code: 'InstanceBusy', final: false });
    expect(err!.message).toMatch(/task_state attaching_volume/);
    expect(await view(second)).toEqual(before);
    await running;
    // The hypervisor was asked once: for the first attach only.
    expect(driver().calls.attachVolume).toBe(calls + 1);
    expect(await taskState()).toBeNull();
    expect(await view(first)).toMatchObject({ status: 'in-use' });
  });

  it('refuses an attach while a detach on the same server is under way, and clears the task after the detach', async () => {
    h = await makeService();
    const [attached, other] = [await createVolume(), await createVolume()];
    await attach(attached);
    driver().latencyMs = 200;
    const running = detach(attached);
    await until(async () => (await taskState()) === 'detaching_volume');
    expect(await failure(attach(other))).toMatchObject({ status: 409, code: 'InstanceBusy' });
    await running;
    expect(await taskState()).toBeNull();
    expect(await view(other)).toMatchObject({ status: 'available', attachments: [] });
  });

  it('clears the task state after a failed attach, and the volume is available again', async () => {
    h = await makeService();
    const id = await createVolume();
    driver().injectFault('attachVolume', errors.driverFailed('no PCI slot left'));
    expect(await failure(attach(id))).toMatchObject({ status: 500, code: 'DriverFailed' });
    expect(await taskState()).toBeNull();
    expect(await view(id)).toMatchObject({ status: 'available', attachments: [] });
    // Nothing stuck: the next attach goes through.
    await attach(id);
    expect(await view(id)).toMatchObject({ status: 'in-use' });
  });

  it('clears a task state an earlier process left on an attach or detach at start-up, and keeps one it did not set', async () => {
    h = await makeService();
    const other = '5d7e0c4a-2222-4a22-9b33-0c4d5e6f7a8b';
    driver().addServer({ id: other, name: 'migrating', projectId: PROJECT, state: 'active', disks: [] });
    await h.service.syncInventory();
    await h.stop();
    const store = new SqliteStore(join(h.config.dataDir, 'online-extend.sqlite'));
    expect(await store.setTaskState(SERVER, 'attaching_volume', null)).toBe(true);
    expect(await store.setTaskState(other, 'migrating', null)).toBe(true);
    await store.close();
    await h.start();
    expect(await taskState()).toBeNull();
    const kept = await h.compute.request<{ server: { 'OS-EXT-STS:task_state': string | null } }>('GET', `/v2/${PROJECT}/servers/${other}`);
    expect(kept.body.server['OS-EXT-STS:task_state']).toBe('migrating');
    const id = await createVolume();
    await attach(id);
    expect(await view(id)).toMatchObject({ status: 'in-use' });
  });

  it('does not block an extend of another volume of the server while an attach is under way (as in Nova)', async () => {
    h = await makeService();
    const [extended, attaching] = [await createVolume(), await createVolume()];
    await attach(extended);
    driver().latencyMs = 150;
    const running = attach(attaching);
    await until(async () => (await taskState()) === 'attaching_volume');
    const grown = await h.compute.request<{ volume_blockdev: { bytes: number } }>('POST', `/v2/${PROJECT}/servers/${SERVER}/os-online_extend_volume/${extended}`, {
      onlineExtendVolume: { bytes: 128 * MiB },
    });
    expect(grown.body.volume_blockdev.bytes).toBe(128 * MiB);
    await running;
    expect(await taskState()).toBeNull();
  });
});
