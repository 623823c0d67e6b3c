import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { errors } from '../../src/errors.js';
import {
  BLOCK_VOL, FILE_VOL, GiB, OFF_SERVER, OFF_VOL, OTHER_SERVER, OTHER_TENANT, RO_VOL, SERVER, TENANT, UNKNOWN,
  makeComputeApp, observableState, url, type TestComputeApp,
} from '../support/computeApp.js';

let t: TestComputeApp;
const auth = () => ({ 'x-auth-token': t.tokens.admin });
const grow = (bytes: number, volume = BLOCK_VOL) =>
  t.app.inject({ method: 'POST', url: url.volume(volume), headers: auth(), payload: { onlineExtendVolume: { bytes } } });
const blockdev = (volume = BLOCK_VOL) => t.app.inject({ method: 'GET', url: url.volume(volume), headers: auth() });
const rescan = (volume = BLOCK_VOL) =>
  t.app.inject({ method: 'PUT', url: url.rescan(), headers: auth(), payload: { onlineExtendVolume: { volume_id: volume } } });

async function until(fn: () => Promise<boolean>, ms = 2000) {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error('condition not met');
    await new Promise((r) => setTimeout(r, 5));
  }
}

beforeEach(async () => {
  t = await makeComputeApp();
});
afterEach(async () => t.close());

describe('os-online_extend_volume: the spec flow', () => {
  it('rescans in the background (202), then get_blockdev shows the host size and assist_extend grows the guest', async () => {
    expect((await blockdev()).json()).toEqual({ volume_blockdev: { id: BLOCK_VOL, bytes: GiB } });
    const r = await rescan();
    expect(r.statusCode).toBe(202);
    expect(r.body).toBe('');
    await until(async () => (await blockdev()).json().volume_blockdev.bytes === 2 * GiB);
    const res = await grow(2 * GiB);
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ volume_blockdev: { id: BLOCK_VOL, bytes: 2 * GiB } });
    expect(t.driver.snapshot(SERVER).disks.find((d) => d.volumeId === BLOCK_VOL)?.guestBytes).toBe(2 * GiB);
  });

  it('answers every response with an x-openstack-request-id of the form req-<uuid>', async () => {
    for (const res of [await blockdev(), await blockdev(UNKNOWN), await t.app.inject({ method: 'GET', url: '/nowhere' })]) {
      expect(res.headers['x-openstack-request-id']).toMatch(/^req-[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    }
  });

  it('reports the size the driver measured, not the one requested', async () => {
    // A driver that rounds up (libvirt does for qcow2): the answer must carry the measured size.
    const original = t.driver.extendAttached.bind(t.driver);
    t.driver.extendAttached = async (s: string, v: string, b: number) => (await original(s, v, b)) + 512;
    const res = await grow(GiB + 4096, FILE_VOL);
    expect(res.json().volume_blockdev.bytes).toBe(GiB + 4096 + 512);
  });

  it('grows a file disk past its file size without a rescan (QEMU grows the file)', async () => {
    const res = await grow(3 * GiB, FILE_VOL);
    expect(res.statusCode).toBe(200);
    expect((await blockdev(FILE_VOL)).json().volume_blockdev.bytes).toBe(3 * GiB);
  });

  it('coalesces duplicate rescans of one volume', async () => {
    await t.close();
    t = await makeComputeApp({ latencyMs: 30 });
    const results = await Promise.all(Array.from({ length: 10 }, () => rescan()));
    expect(results.every((r) => r.statusCode === 202)).toBe(true);
    await until(async () => (await t.store.listActions(SERVER)).filter((a) => a.action === 'rescan_volume').every((a) => a.finishTime !== null), 3000);
    expect(t.driver.calls.rescan).toBeLessThanOrEqual(2);
    expect(t.driver.calls.rescan).toBeGreaterThanOrEqual(1);
  });

  it.each([
    ['the host answers at once', 0],
    ['the host takes a while', 30],
  ])("records a rescan's start, answered 202 only once it is written, and its finish after it, when %s", async (_what, latencyMs) => {
    await t.close();
    t = await makeComputeApp({ latencyMs });
    const r = await rescan();
    expect(r.statusCode).toBe(202);
    const id = r.headers['x-openstack-request-id'];
    // The 202 waited for the start's commit: the action is there at once.
    expect((await t.store.getAction(SERVER, String(id)))?.action).toBe('rescan_volume');
    await until(async () => (await t.store.getAction(SERVER, String(id)))?.finishTime != null, 3000);
    const a = (await t.store.getAction(SERVER, String(id)))!;
    expect(a.result).toBe('Success');
    expect(Date.parse(a.finishTime!)).toBeGreaterThanOrEqual(Date.parse(a.startTime));
  });

  it('answers 500 when the start of a rescan cannot be recorded, and writes no finish for it', async () => {
    const startAction = t.store.startAction.bind(t.store);
    let finishes = 0;
    const finishAction = t.store.finishAction.bind(t.store);
    t.store.startAction = async () => {
      throw new Error('disk full');
    };
    t.store.finishAction = async (...a: Parameters<typeof finishAction>) => {
      finishes++;
      return finishAction(...a);
    };
    const r = await rescan();
    expect(r.statusCode).toBe(500);
    await until(async () => t.driver.calls.rescan >= 1, 3000);
    await new Promise((res) => setTimeout(res, 50));
    expect(finishes).toBe(0);
    expect((await t.store.listActions(SERVER)).filter((x) => x.action === 'rescan_volume')).toEqual([]);
    t.store.startAction = startAction;
  });
});

describe('os-online_extend_volume: rules', () => {
  it('refuses to shrink with a 400 that says so, and never asks the driver to resize', async () => {
    const before = observableState(t);
    const res = await grow(GiB - 512);
    expect(res.statusCode).toBe(400);
    expect(res.json().badRequest.message).toMatch(/Refusing to shrink.*below the 1073741824 bytes the guest sees/);
    expect(observableState(t)).toEqual(before);
    expect(t.driver.calls.extendAttached).toBe(0);
  });

  it('answers 200 and does nothing when asked for the current size (retries are safe)', async () => {
    const res = await grow(GiB);
    expect(res.statusCode).toBe(200);
    expect(res.json().volume_blockdev.bytes).toBe(GiB);
    expect(t.driver.resizes).toBe(0);
    expect(t.driver.calls.extendAttached).toBe(0);
  });

  it('answers 409 when the host does not see the size yet, saying to rescan first', async () => {
    const res = await grow(2 * GiB);
    expect(res.statusCode).toBe(409);
    expect(res.json().conflictingRequest.message).toMatch(/does not see 2147483648 bytes.*rescan first/);
    expect(t.driver.resizes).toBe(0);
  });

  it('answers 404 for an unknown server, a server of another tenant and a volume not attached', async () => {
    const notFound = [
      await t.app.inject({ method: 'GET', url: url.volume(BLOCK_VOL, UNKNOWN), headers: auth() }),
      await t.app.inject({ method: 'GET', url: url.volume(BLOCK_VOL, OTHER_SERVER), headers: auth() }),
      await t.app.inject({ method: 'GET', url: url.volume(UNKNOWN), headers: auth() }),
      await t.app.inject({ method: 'GET', url: url.volume(BLOCK_VOL, SERVER, OTHER_TENANT), headers: { 'x-auth-token': t.tokens.otherAdmin } }),
    ];
    expect(notFound.map((r) => r.statusCode)).toEqual([404, 404, 404, 404]);
    expect(notFound[0]!.json().itemNotFound.message).toBe(`Instance ${UNKNOWN} could not be found.`);
    expect(notFound[2]!.json().itemNotFound.message).toBe(`Volume ${UNKNOWN} is not attached to instance ${SERVER}.`);
  });

  it('answers 409 for a server that is shut off or busy with a task', async () => {
    const off = await t.app.inject({ method: 'POST', url: url.volume(OFF_VOL, OFF_SERVER), headers: auth(), payload: { onlineExtendVolume: { bytes: 2 * GiB } } });
    expect(off.statusCode).toBe(409);
    expect(off.json().conflictingRequest.message).toMatch(/state shutoff/);
    await t.store.setTaskState(SERVER, 'migrating', null);
    const busy = await grow(2 * GiB, FILE_VOL);
    expect(busy.statusCode).toBe(409);
    expect(busy.json().conflictingRequest.message).toMatch(/task_state migrating/);
    expect(t.driver.resizes).toBe(0);
  });

  it('asks the hypervisor again before refusing for the state: a guest started since the last sync is served', async () => {
    t.driver.setState(OFF_SERVER, 'active');
    const res = await t.app.inject({ method: 'POST', url: url.volume(OFF_VOL, OFF_SERVER), headers: auth(), payload: { onlineExtendVolume: { bytes: 2 * GiB } } });
    expect(res.statusCode).toBe(200);
    expect(res.json().volume_blockdev.bytes).toBe(2 * GiB);
  });

  it('answers 501 when the driver cannot extend, before calling it', async () => {
    await t.close();
    t = await makeComputeApp({ capabilities: { extendVolume: false } });
    for (const res of [await grow(2 * GiB, FILE_VOL), await blockdev(), await rescan()]) {
      expect(res.statusCode).toBe(501);
      expect(res.json().HTTPNotImplemented.message).toMatch(/not supported by the fake hypervisor driver/);
    }
    expect(t.driver.calls.extendAttached + t.driver.calls.getHostBytes + t.driver.calls.rescan).toBe(0);
  });

  it('answers 500 with the driver’s reason when it fails', async () => {
    t.driver.injectFault('extendAttached', errors.driverFailed('drain IO failed'));
    const res = await grow(2 * GiB, FILE_VOL);
    expect(res.statusCode).toBe(500);
    expect(res.json().computeFault.message).toBe('Hypervisor driver failed: drain IO failed');
    const ro = await grow(2 * GiB, RO_VOL);
    expect(ro.statusCode).toBe(500);
    expect(ro.json().computeFault.message).toMatch(/read-only/);
  });

  it('runs concurrent calls on one volume one at a time and different volumes in parallel', async () => {
    await t.close();
    t = await makeComputeApp({ latencyMs: 20 });
    t.driver.setBackingBytes(BLOCK_VOL, 2 * GiB);
    await t.driver.rescan(SERVER, BLOCK_VOL);
    const sizes = [2, 3, 4, 5, 6].map((g) => g * GiB);
    const results = await Promise.all([...sizes.map((b) => grow(b, FILE_VOL)), grow(2 * GiB, BLOCK_VOL)]);
    expect(results.map((r) => r.statusCode)).toEqual([200, 200, 200, 200, 200, 200]);
    expect(t.driver.maxConcurrentPerVolume).toBe(1);
    expect(t.driver.maxConcurrentOverall).toBe(2);
    expect(t.driver.snapshot(SERVER).disks.find((d) => d.volumeId === FILE_VOL)!.guestBytes).toBe(6 * GiB);
  });
});

describe('auth and policy', () => {
  it('answers 401 without a token, with an unknown token and with an expired one', async () => {
    for (const headers of [{}, { 'x-auth-token': 'oe-nope' }, { 'x-auth-token': t.tokens.expired }]) {
      const res = await t.app.inject({ method: 'GET', url: url.volume(), headers });
      expect(res.statusCode).toBe(401);
      expect(res.json().unauthorized.code).toBe(401);
    }
  });

  it('answers 403 to a non-admin by default (the spec: admin only)', async () => {
    const res = await t.app.inject({ method: 'GET', url: url.volume(), headers: { 'x-auth-token': t.tokens.member } });
    expect(res.statusCode).toBe(403);
    expect(res.json().forbidden.message).toMatch(/os_compute_api:os-online-extend-volume:get_blockdev/);
  });

  it('follows a policy file that lets project members read their own volumes', async () => {
    await t.close();
    t = await makeComputeApp({ policy: { 'os_compute_api:os-online-extend-volume:get_blockdev': 'role:admin or project_id:%(project_id)s' } });
    const own = await t.app.inject({ method: 'GET', url: url.volume(), headers: { 'x-auth-token': t.tokens.member } });
    expect(own.statusCode).toBe(200);
    const post = await t.app.inject({ method: 'POST', url: url.volume(), headers: { 'x-auth-token': t.tokens.member }, payload: { onlineExtendVolume: { bytes: 2 * GiB } } });
    expect(post.statusCode).toBe(403);
  });
});

describe('audit: instance actions', () => {
  it('records each call with its request id, user, project, start, finish, result and details (os-instance-action-details)', async () => {
    const ok = await grow(2 * GiB, FILE_VOL);
    const bad = await grow(512, FILE_VOL);
    const okId = ok.headers['x-openstack-request-id'];
    const badId = bad.headers['x-openstack-request-id'];
    const list = await t.app.inject({ method: 'GET', url: `/v2/${TENANT}/servers/${SERVER}/os-instance-action-details`, headers: auth() });
    const recorded = list.json().instanceActionDetails as Array<Record<string, unknown>>;
    const mine = recorded.find((a) => a.request_id === okId)!;
    expect(mine).toMatchObject({ action: 'extend_volume', event: 'compute_extend_volume', user_id: 'user-admin', project_id: TENANT, result: 'Success' });
    expect(mine.finish_time).not.toBeNull();
    expect(mine.details).toMatchObject({ volume_id: FILE_VOL, requested_bytes: 2 * GiB });
    const failed = await t.app.inject({ method: 'GET', url: `/v2/${TENANT}/servers/${SERVER}/os-instance-action-details/${badId}`, headers: auth() });
    expect(failed.json().instanceActionDetail).toMatchObject({ request_id: badId, result: 'Error', message: expect.stringMatching(/shrink/) });
  });

  it("shows Nova's view on os-instance-actions: the seven keys, message 'Error' on failure, events with result", async () => {
    const ok = await grow(2 * GiB, FILE_VOL);
    const bad = await grow(512, FILE_VOL);
    const list = await t.app.inject({ method: 'GET', url: `/v2/${TENANT}/servers/${SERVER}/os-instance-actions`, headers: auth() });
    const mine = (list.json().instanceActions as Array<Record<string, unknown>>).find((a) => a.request_id === ok.headers['x-openstack-request-id'])!;
    expect(Object.keys(mine).sort()).toEqual(['action', 'instance_uuid', 'message', 'project_id', 'request_id', 'start_time', 'user_id']);
    expect(mine).toMatchObject({ action: 'extend_volume', message: null });
    const one = await t.app.inject({ method: 'GET', url: `/v2/${TENANT}/servers/${SERVER}/os-instance-actions/${bad.headers['x-openstack-request-id']}`, headers: auth() });
    expect(one.json().instanceAction).toMatchObject({ message: 'Error', events: [{ event: 'compute_extend_volume', result: 'Error', traceback: expect.stringMatching(/shrink/) }] });
    expect(one.json().instanceAction).not.toHaveProperty('result');
    expect(one.json().instanceAction).not.toHaveProperty('finish_time');
  });
});

describe('read-only Nova-shaped resources', () => {
  it('lists servers of the tenant only, shows one, and lists its attachments', async () => {
    const list = await t.app.inject({ method: 'GET', url: `/v2/${TENANT}/servers`, headers: auth() });
    expect(list.json().servers.map((s: { id: string }) => s.id).sort()).toEqual([SERVER, OFF_SERVER].sort());
    const show = await t.app.inject({ method: 'GET', url: `/v2/${TENANT}/servers/${OFF_SERVER}`, headers: auth() });
    expect(show.json().server).toMatchObject({ id: OFF_SERVER, status: 'SHUTOFF' });
    const att = await t.app.inject({ method: 'GET', url: `/v2/${TENANT}/servers/${SERVER}/os-volume_attachments`, headers: auth() });
    expect(att.json().volumeAttachments).toContainEqual({ id: BLOCK_VOL, serverId: SERVER, volumeId: BLOCK_VOL, device: '/dev/vdb' });
  });

  it('serves an OpenAPI document generated from the validating schemas', async () => {
    const doc = (await t.app.inject({ method: 'GET', url: '/openapi.json' })).json();
    const post = doc.paths['/v2/{tenant_id}/servers/{server_id}/os-online_extend_volume/{volume_id}'].post;
    const bytes = post.requestBody.content['application/json'].schema.properties.onlineExtendVolume.properties.bytes;
    expect(bytes).toMatchObject({ type: 'integer', multipleOf: 512, minimum: 512 });
    expect(Object.keys(post.responses)).toEqual(expect.arrayContaining(['200', '400', '404', '409', '500', '501']));
  });
});
