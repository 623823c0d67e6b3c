// POST /servers and DELETE /servers/{id} on the fake driver: Nova's build and delete states, the
// create and delete actions, validation, policy (members create and delete their own servers),
// and the flavor reads.
import { afterEach, beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { OTHER_TENANT, TENANT, makeComputeApp, type TestComputeApp } from '../support/computeApp.js';
import { issueToken } from '../../src/auth/tokens.js';
import type { ServerStatePatch } from '../../src/db/store.js';

let t: TestComputeApp;
const IMAGE = 'img-lab';
const FLAVOR = 'lab.small';

async function until<T>(fn: () => Promise<T | undefined | false>, ms = 3000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('condition not met');
    await new Promise((r) => setTimeout(r, 5));
  }
}

beforeEach(async () => {
  t = await makeComputeApp();
  await t.store.putImage({
    id: IMAGE,
    name: 'lab-guest',
    kind: 'kernel',
    diskPath: null,
    diskFormat: null,
    kernelPath: '/boot/vmlinux',
    ramdiskPath: '/boot/initramfs.gz',
    cmdline: 'console=ttyS0',
    minDiskGb: 0,
    minRamMb: 128,
    createdAt: '2026-11-30T00:00:00.000Z',
  });
  await t.store.putFlavor({ id: FLAVOR, name: 'lab.small', vcpus: 2, ramMb: 256, diskGb: 1, ephemeralGb: 0, swapMb: 0, isPublic: true, description: null });
});
afterEach(async () => {
  await t.servers.idle();
  await t.close();
});

const create = (token: string, server: Record<string, unknown>, prefix = `/v2.1/${TENANT}`) =>
  t.app.inject({ method: 'POST', url: `${prefix}/servers`, headers: { 'x-auth-token': token }, payload: { server } });
const del = (token: string, id: string, prefix = `/v2/${TENANT}`) =>
  t.app.inject({ method: 'DELETE', url: `${prefix}/servers/${id}`, headers: { 'x-auth-token': token, 'content-type': 'application/json' } });
const show = (id: string, token = t.tokens.admin) => t.app.inject({ method: 'GET', url: `/v2/${TENANT}/servers/${id}`, headers: { 'x-auth-token': token } });
const good = { name: 'vm-new', imageRef: IMAGE, flavorRef: FLAVOR };

describe('POST /servers', () => {
  it('answers 202 with Nova’s create view and a request id, then the server is BUILD and becomes ACTIVE', async () => {
    t.driver.latencyMs = 50;
    const res = await create(t.tokens.admin, { ...good, metadata: { role: 'db' }, networks: 'none' });
    expect(res.statusCode).toBe(202);
    expect(res.headers['x-openstack-request-id']).toMatch(/^req-/);
    expect(res.headers.location).toBe(`http://localhost:80/v2.1/${TENANT}/servers/${res.json().server.id}`);
    const body = res.json();
    expect(Object.keys(body.server).sort()).toEqual(['OS-DCF:diskConfig', 'adminPass', 'id', 'links', 'security_groups']);
    expect(body.server.security_groups).toEqual([{ name: 'default' }]);
    expect(body.server.adminPass.length).toBeGreaterThanOrEqual(8);
    expect(body.server.links).toEqual([
      { rel: 'self', href: `http://localhost:80/v2.1/${TENANT}/servers/${body.server.id}` },
      { rel: 'bookmark', href: `http://localhost:80/${TENANT}/servers/${body.server.id}` },
    ]);
    const building = (await show(body.server.id)).json().server;
    expect(building.status).toBe('BUILD');
    await until(async () => (await show(body.server.id)).json().server.status === 'ACTIVE');
    const s = await t.store.getServer(body.server.id);
    expect(s).toMatchObject({ state: 'active', taskState: null, imageRef: IMAGE, flavorRef: FLAVOR, metadata: { role: 'db' }, projectId: TENANT });
    expect(t.driver.spawned.get(body.server.id)).toMatchObject({ vcpus: 2, ramMb: 256, rootDiskGb: 1, image: { kind: 'kernel', kernelPath: '/boot/vmlinux' } });
  });

  it('goes through Nova’s build task states in order, then records a successful create action with its build event', async () => {
    const seen: Array<ServerStatePatch> = [];
    const real = t.store.setServerState.bind(t.store);
    t.store.setServerState = async (id, patch, expected) => {
      seen.push(patch);
      return real(id, patch, expected);
    };
    const res = await create(t.tokens.admin, good);
    const id = res.json().server.id as string;
    await t.servers.idle();
    expect(seen.map((p) => `${p.state}/${p.taskState}`)).toEqual(['building/block_device_mapping', 'building/networking', 'building/spawning', 'active/null']);
    const actions = await t.store.listActions(id);
    expect(actions).toHaveLength(1);
    expect(actions[0]).toMatchObject({ action: 'create', event: 'compute__do_build_and_run_instance', result: 'Success', requestId: res.headers['x-openstack-request-id'] });
  });

  it('leaves a server whose spawn failed in ERROR with a fault, and nothing on the host', async () => {
    const { errors } = await import('../../src/errors.js');
    t.driver.injectFault('spawn', errors.driverFailed('no room on the host'));
    const id = (await create(t.tokens.admin, good)).json().server.id as string;
    await t.servers.idle();
    const s = await t.store.getServer(id);
    expect(s).toMatchObject({ state: 'error', taskState: null, fault: { code: 500, message: 'Hypervisor driver failed: no room on the host' } });
    expect((await show(id)).json().server.status).toBe('ERROR');
    expect(await t.driver.getServer(id)).toBeUndefined();
    await t.manager.syncInventory();
    expect((await t.store.getServer(id))?.state).toBe('error');
    expect((await t.store.listActions(id))[0]).toMatchObject({ action: 'create', result: 'Error' });
  });

  it.each([
    ['an unknown image', { ...good, imageRef: 'nope' }, 'Can not find requested image'],
    ['an unknown flavor', { ...good, flavorRef: 'nope' }, 'Invalid flavorRef provided.'],
    ['a flavor with less RAM than the image needs', { ...good, flavorRef: 'tiny' }, "Flavor's memory is too small for requested image."],
  ])('refuses %s with Nova’s 400 and creates nothing', async (_name, server, message) => {
    await t.store.putFlavor({ id: 'tiny', name: 'tiny', vcpus: 1, ramMb: 64, diskGb: 0, ephemeralGb: 0, swapMb: 0, isPublic: true, description: null });
    const before = (await t.store.listServers()).length;
    const res = await create(t.tokens.admin, server);
    expect(res.statusCode).toBe(400);
    expect(res.json().badRequest.message).toBe(message);
    expect((await t.store.listServers()).length).toBe(before);
    expect(t.driver.calls.spawn).toBe(0);
  });

  it.each([
    ['no name', { imageRef: IMAGE, flavorRef: FLAVOR }],
    ['an unknown key', { ...good, colour: 'blue' }],
    ['two servers at once', { ...good, min_count: 2 }],
    ['networks of the wrong type', { ...good, networks: 7 }],
  ])('refuses a body with %s (400)', async (_name, server) => {
    const res = await create(t.tokens.admin, server);
    expect(res.statusCode).toBe(400);
    expect(t.driver.calls.spawn).toBe(0);
  });

  it('takes image and flavor links as Nova does, and the networks clients send', async () => {
    const res = await create(t.tokens.admin, { ...good, imageRef: `http://glance:9292/v2/images/${IMAGE}`, flavorRef: `http://nova/flavors/${FLAVOR}`, networks: [{ uuid: 'x' }] });
    expect(res.statusCode).toBe(202);
  });

  it('answers 501 CreateServerNotSupported on a driver that cannot create servers', async () => {
    await t.close();
    t = await makeComputeApp({ capabilities: { spawnServer: false } });
    await t.store.putImage({ id: IMAGE, name: 'i', kind: 'disk', diskPath: '/i.qcow2', diskFormat: 'qcow2', kernelPath: null, ramdiskPath: null, cmdline: null, minDiskGb: 0, minRamMb: 0, createdAt: '2026-11-30T00:00:00.000Z' });
    await t.store.putFlavor({ id: FLAVOR, name: 'f', vcpus: 1, ramMb: 256, diskGb: 1, ephemeralGb: 0, swapMb: 0, isPublic: true, description: null });
    const res = await create(t.tokens.admin, good);
    expect(res.statusCode).toBe(501);
    expect(res.json().HTTPNotImplemented.error_code).toBe('CreateServerNotSupported');
  });

  it('serves the project-less /v2.1 prefix with the token’s project', async () => {
    const res = await create(t.tokens.member, good, '/v2.1');
    expect(res.statusCode).toBe(202);
    expect(res.json().server.links[0].href).toBe(`http://localhost:80/v2.1/servers/${res.json().server.id}`);
    expect((await t.store.getServer(res.json().server.id))?.projectId).toBe(TENANT);
  });
});

describe('DELETE /servers/{id}', () => {
  it('answers 204 with no body, goes through task state deleting, and then the server is gone (404)', async () => {
    const id = (await create(t.tokens.admin, good)).json().server.id as string;
    await t.servers.idle();
    t.driver.latencyMs = 50;
    const res = await del(t.tokens.admin, id);
    expect(res.statusCode).toBe(204);
    expect(res.body).toBe('');
    expect((await show(id)).json().server['OS-EXT-STS:task_state']).toBe('deleting');
    await until(async () => (await show(id)).statusCode === 404);
    expect(await t.driver.getServer(id)).toBeUndefined();
    expect((await t.store.listActions(id)).map((a) => [a.action, a.event, a.result])).toEqual([
      ['delete', 'compute_terminate_instance', 'Success'],
      ['create', 'compute__do_build_and_run_instance', 'Success'],
    ]);
  });

  it('deletes a server in ERROR (its build failed) and one still building', async () => {
    const { errors } = await import('../../src/errors.js');
    t.driver.injectFault('spawn', errors.driverFailed('no room'));
    const failed = (await create(t.tokens.admin, good)).json().server.id as string;
    await t.servers.idle();
    t.driver.latencyMs = 100;
    const building = (await create(t.tokens.admin, good)).json().server.id as string;
    expect((await del(t.tokens.admin, failed)).statusCode).toBe(204);
    expect((await del(t.tokens.admin, building)).statusCode).toBe(204);
    await t.servers.idle();
    expect((await show(failed)).statusCode).toBe(404);
    expect((await show(building)).statusCode).toBe(404);
    expect(await t.driver.getServer(building)).toBeUndefined();
  });

  it('refuses to delete a domain it did not create (found on the host: 409), which runs on', async () => {
    const { SERVER } = await import('../support/computeApp.js');
    const res = await del(t.tokens.admin, SERVER);
    expect(res.statusCode).toBe(409);
    expect(res.json().conflictingRequest.message).toMatch(/not created through this API/);
    expect((await t.driver.getServer(SERVER))?.state).toBe('active');
    expect(t.driver.calls.destroy).toBe(0);
  });

  it('refuses a second delete while the first runs (409) and answers 404 for an unknown server', async () => {
    const id = (await create(t.tokens.admin, good)).json().server.id as string;
    await t.servers.idle();
    t.driver.latencyMs = 100;
    expect((await del(t.tokens.admin, id)).statusCode).toBe(204);
    expect((await del(t.tokens.admin, id)).statusCode).toBe(409);
    expect((await del(t.tokens.admin, '99999999-9999-4999-8999-999999999999')).statusCode).toBe(404);
  });
});

describe('a delete an earlier process left under way (recover at start)', () => {
  it('is resumed: the server destroyed and gone, its open delete action finished Success; a second recover changes nothing', async () => {
    const id = (await create(t.tokens.admin, good)).json().server.id as string;
    await t.servers.idle();
    // As a process that died after accepting the delete: task_state deleting, the action open.
    expect(await t.store.setTaskState(id, 'deleting', null)).toBe(true);
    await t.store.startAction({ requestId: 'req-died', serverId: id, action: 'delete', event: 'compute_terminate_instance', userId: 'user-admin', projectId: TENANT, startTime: new Date().toISOString(), message: null, details: {} });
    expect(await t.servers.recover(t.manager.host)).toEqual([id]);
    await t.servers.idle();
    expect(await t.store.getServer(id)).toBeUndefined();
    expect(await t.driver.getServer(id)).toBeUndefined();
    expect((await t.store.listActions(id)).find((a) => a.requestId === 'req-died')).toMatchObject({ result: 'Success' });
    expect(await t.servers.recover(t.manager.host)).toEqual([]);
  });

  it('records a delete action when the process died before writing one, and finishes it', async () => {
    const id = (await create(t.tokens.admin, good)).json().server.id as string;
    await t.servers.idle();
    expect(await t.store.setTaskState(id, 'deleting', null)).toBe(true);
    await t.servers.recover(t.manager.host);
    await t.servers.idle();
    expect(await t.store.getServer(id)).toBeUndefined();
    expect((await t.store.listActions(id)).filter((a) => a.action === 'delete').map((a) => a.result)).toEqual(['Success']);
  });
});

describe('a delete whose detach the volume service keeps refusing for now', () => {
  it('retries within its bound, then ends as Nova ends a failed delete: ERROR with the fault, task_state null, the action Error; nothing destroyed', async () => {
    const pino = (await import('pino')).default;
    const { LocalComputeRpc } = await import('../../src/compute/rpc.js');
    const { ServerLifecycle } = await import('../../src/compute/servers.js');
    const { errors } = await import('../../src/errors.js');
    const id = (await create(t.tokens.admin, good)).json().server.id as string;
    await t.servers.idle();
    const vol = '11111111-2222-4333-8444-555555555555';
    const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'oe-del-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'vol.raw'), Buffer.alloc(1024 * 1024));
    await t.driver.attachVolume(id, { volumeId: vol, kind: 'file', format: 'raw', source: join(dir, 'vol.raw') });
    await t.manager.syncInventory();
    const server = (await t.store.getServer(id))!;
    expect(server.attachments.map((a) => a.volumeId)).toEqual([vol]);
    // The volume service's answers: the volume reads idle (so the delete is accepted), its detach is refused for now, every time.
    let detaches = 0;
    const volumes = {
      attach: () => Promise.reject(new Error('not used')),
      detach: () => {
        detaches++;
        return Promise.reject(errors.volumeBusy(vol, 'extending', 'detach'));
      },
      volume: () => Promise.resolve({ value: { status: 'in-use', serverIds: [id] }, requestId: undefined }),
    };
    const lifecycle = new ServerLifecycle({ store: t.store, rpc: new LocalComputeRpc(t.manager), logger: pino({ level: 'silent' }), host: t.manager.host, volumes, detachRetryMs: 400 });
    const ctx = { requestId: 'req-bounded', userId: 'user-admin', projectId: TENANT, roles: ['admin'] };
    await lifecycle.delete(ctx, server, 'token');
    await lifecycle.idle();
    expect(detaches).toBeGreaterThan(1);
    const after = (await t.store.getServer(id))!;
    expect(after).toMatchObject({ state: 'error', taskState: null, fault: { code: 409, message: expect.stringContaining(`Cannot 'detach' volume ${vol}`) } });
    expect((await show(id)).json().server).toMatchObject({ status: 'ERROR', fault: { code: 409 } });
    expect((await t.store.getAction(id, 'req-bounded'))).toMatchObject({ action: 'delete', result: 'Error' });
    expect(await t.driver.getServer(id)).toBeDefined();
  });
});

describe('policy: members and projects', () => {
  it('lets a project member create and delete their own server', async () => {
    const res = await create(t.tokens.member, good);
    expect(res.statusCode).toBe(202);
    const id = res.json().server.id as string;
    await t.servers.idle();
    expect((await t.store.getServer(id))?.userId).toBe('user-member');
    expect((await del(t.tokens.member, id)).statusCode).toBe(204);
    await t.servers.idle();
    expect(await t.store.getServer(id)).toBeUndefined();
  });

  it('refuses a reader (403) and hides a server of another project (404)', async () => {
    const { token: reader } = await issueToken(t.store, { userId: 'r', projectId: TENANT, roles: ['reader'], ttlMs: 60_000 });
    expect((await create(reader, good)).statusCode).toBe(403);
    const id = (await create(t.tokens.admin, good)).json().server.id as string;
    await t.servers.idle();
    expect((await del(t.tokens.otherAdmin, id, `/v2/${OTHER_TENANT}`)).statusCode).toBe(404);
    expect((await del(t.tokens.otherAdmin, id, '/v2.1')).statusCode).toBe(404);
    expect((await t.store.getServer(id))?.taskState).toBeNull();
  });
});

describe('GET /flavors', () => {
  it('lists, details and shows flavors in Nova’s 2.1 shapes (swap "" when 0)', async () => {
    const list = await t.app.inject({ method: 'GET', url: `/v2.1/${TENANT}/flavors`, headers: { 'x-auth-token': t.tokens.member } });
    expect(list.json().flavors).toEqual([
      { id: FLAVOR, name: 'lab.small', links: [
        { rel: 'self', href: `http://localhost:80/v2.1/${TENANT}/flavors/${FLAVOR}` },
        { rel: 'bookmark', href: `http://localhost:80/${TENANT}/flavors/${FLAVOR}` },
      ] },
    ]);
    const one = (await t.app.inject({ method: 'GET', url: `/v2.1/flavors/${FLAVOR}`, headers: { 'x-auth-token': t.tokens.member } })).json().flavor;
    expect(one).toMatchObject({ id: FLAVOR, ram: 256, disk: 1, swap: '', vcpus: 2, 'OS-FLV-EXT-DATA:ephemeral': 0, 'OS-FLV-DISABLED:disabled': false, 'os-flavor-access:is_public': true, rxtx_factor: 1 });
    const detail = (await t.app.inject({ method: 'GET', url: `/v2/${TENANT}/flavors/detail`, headers: { 'x-auth-token': t.tokens.member } })).json();
    expect(detail.flavors).toHaveLength(1);
    expect(detail.flavors[0].links[0].href).toBe(`http://localhost:80/v2/${TENANT}/flavors/${FLAVOR}`);
    const missing = await t.app.inject({ method: 'GET', url: '/v2.1/flavors/nope', headers: { 'x-auth-token': t.tokens.member } });
    expect(missing.statusCode).toBe(404);
    expect(missing.json().itemNotFound.message).toBe('Flavor nope could not be found.');
  });

  it('has no extra specs: an empty set for a flavor, 404 for an unknown one', async () => {
    const get = (id: string) => t.app.inject({ method: 'GET', url: `/v2.1/${TENANT}/flavors/${id}/os-extra_specs`, headers: { 'x-auth-token': t.tokens.member } });
    expect((await get(FLAVOR)).json()).toEqual({ extra_specs: {} });
    expect((await get('nope')).statusCode).toBe(404);
  });

  it('needs a token (401)', async () => {
    expect((await t.app.inject({ method: 'GET', url: '/v2.1/flavors' })).statusCode).toBe(401);
  });
});
