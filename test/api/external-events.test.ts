/**
 * os-server-external-events as Nova answers it (docs/notes/f-openstack-on-the-wire.md §1.5), and
 * what `volume-extended` does on the fake driver: an `extend_volume` action in the caller's
 * name, the host rescanned, the guest grown to what the host sees — never smaller.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { issueToken } from '../../src/auth/tokens.js';
import { buildComputeApp } from '../../src/app.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { errors } from '../../src/errors.js';
import { FakeDriver } from '../../src/virt/fake/driver.js';
import { PolicyEnforcer } from '../../src/auth/policy.js';
import {
  BLOCK_VOL, FILE_VOL, GiB, OFF_SERVER, OFF_VOL, OTHER_SERVER, OTHER_TENANT, SERVER, TENANT, UNKNOWN,
  makeComputeApp, observableState, sampleServers, type TestComputeApp,
} from '../support/computeApp.js';

const PATH = '/v2.1/os-server-external-events';
const AT_2_51: Record<string, string> = { 'x-openstack-nova-api-version': '2.51' };
const NO_VERSION: Record<string, string> = {};

let t: TestComputeApp;
let serviceToken: string;

beforeEach(async () => {
  t = await makeComputeApp();
  // What Cinder holds: its service user's token, in the service project.
  serviceToken = (await issueToken(t.store, { userId: 'cinder', projectId: 'service', roles: ['service'], ttlMs: 3_600_000 })).token;
});
afterEach(async () => t.close());

type Ev = { name: string; server_uuid: string; tag?: string; status?: string };
const post = (events: unknown, opts: { token?: string; headers?: Record<string, string>; url?: string } = {}) =>
  t.app.inject({ method: 'POST', url: opts.url ?? PATH, headers: { 'x-auth-token': opts.token ?? serviceToken, ...(opts.headers ?? AT_2_51) }, payload: { events } });
const extended = (server: string, volume?: string): Ev => ({ name: 'volume-extended', server_uuid: server, ...(volume === undefined ? {} : { tag: volume }) });
const disk = (server: string, volume: string) => t.driver.snapshot(server).disks.find((d) => d.volumeId === volume)!;

describe('os-server-external-events: the answer, event by event', () => {
  it.each([
    { name: 'every event accepted → 200', events: [{ name: 'network-changed', server_uuid: SERVER }, { name: 'network-vif-plugged', server_uuid: OTHER_SERVER, tag: 'port-1' }], status: 200, codes: [200, 200] },
    { name: 'an unknown server → 207, that event failed 404', events: [{ name: 'network-changed', server_uuid: SERVER }, { name: 'network-changed', server_uuid: UNKNOWN }], status: 207, codes: [200, 404] },
    { name: 'only unknown servers → 207, not 404 (Nova since Ussuri)', events: [{ name: 'network-changed', server_uuid: UNKNOWN }], status: 207, codes: [404] },
    { name: 'volume-extended without a tag → 207, failed 400', events: [extended(SERVER), { name: 'network-changed', server_uuid: SERVER }], status: 207, codes: [400, 200] },
    { name: 'volume-extended for an unknown server → 404 before the missing tag', events: [extended(UNKNOWN)], status: 207, codes: [404] },
    { name: 'volume-extended of an attached volume → 200', events: [extended(SERVER, BLOCK_VOL)], status: 200, codes: [200] },
  ])('$name', async ({ events, status, codes }) => {
    const res = await post(events);
    expect(res.statusCode, res.body).toBe(status);
    const body = res.json() as { events: Array<Ev & { code: number; status: string }> };
    expect(body.events.map((e) => e.code)).toEqual(codes);
    // Each event echoed as sent, with its status set by its code.
    body.events.forEach((e, i) => expect(e).toEqual({ ...events[i], status: codes[i] === 200 ? 'completed' : 'failed', code: codes[i] }));
    expect(res.headers['x-openstack-nova-api-version']).toBe('2.51');
  });

  it('answers 422 for a server that has no host yet, and records nothing for it', async () => {
    const homeless = '7e57e57e-0000-4000-8000-000000000422';
    await t.store.upsertServer('', { id: homeless, name: 'building', projectId: TENANT, state: 'building', attachments: [] });
    const res = await post([extended(homeless, BLOCK_VOL)]);
    expect(res.statusCode).toBe(207);
    expect(res.json().events[0]).toMatchObject({ code: 422, status: 'failed' });
    expect(await t.store.listActions(homeless)).toEqual([]);
  });

  it('answers a status sent as in-progress with completed, and one left out defaults to completed', async () => {
    const res = await post([{ name: 'network-changed', server_uuid: SERVER, status: 'in-progress' }, { name: 'network-changed', server_uuid: SERVER }]);
    expect(res.json().events.map((e: Ev) => e.status)).toEqual(['completed', 'completed']);
  });

  it.each([
    { name: 'a name not in any version (power-update is 2.76)', events: [{ name: 'power-update', server_uuid: SERVER, tag: 'POWER_ON' }], headers: AT_2_51, field: 'body.events.0.name' },
    { name: 'volume-extended at 2.1 (no version header)', events: [{ name: 'network-changed', server_uuid: SERVER }, extended(SERVER, BLOCK_VOL)], headers: NO_VERSION, field: 'body.events.1.name' },
    { name: 'volume-extended at 2.50', events: [extended(SERVER, BLOCK_VOL)], headers: { 'x-openstack-nova-api-version': '2.50' }, field: 'body.events.0.name' },
    { name: 'no events (minItems 1)', events: [], headers: AT_2_51, field: 'body.events' },
    { name: 'a tag longer than 255', events: [{ ...extended(SERVER), tag: 'x'.repeat(256) }], headers: AT_2_51, field: 'body.events.0.tag' },
    { name: 'a key Nova does not have', events: [{ ...extended(SERVER, BLOCK_VOL), volume_id: BLOCK_VOL }], headers: AT_2_51, field: 'body.events.0' },
    { name: 'a server_uuid that is not a UUID', events: [extended('not-a-uuid', BLOCK_VOL)], headers: AT_2_51, field: 'body.events.0.server_uuid' },
    { name: 'a status Nova does not have', events: [{ ...extended(SERVER, BLOCK_VOL), status: 'done' }], headers: AT_2_51, field: 'body.events.0.status' },
  ])('refuses the whole request with 400 for $name, and nothing happens', async ({ events, headers, field }) => {
    const before = observableState(t);
    const res = await post(events, { headers });
    expect(res.statusCode, res.body).toBe(400);
    expect(res.json().badRequest.message).toContain(`Invalid input for field/attribute ${field}`);
    await t.compute.externalEventsSettled();
    expect(observableState(t)).toEqual(before);
    expect(await t.store.listActions(SERVER)).toEqual([]);
  });

  it('lists the names of the request’s version when it refuses one', async () => {
    const res = await post([extended(SERVER, BLOCK_VOL)], { headers: {} });
    expect(res.json().badRequest.message).toBe(
      'Invalid input for field/attribute body.events.0.name: must be one of "network-changed", "network-vif-plugged", "network-vif-unplugged", "network-vif-deleted" at microversion 2.1',
    );
  });

  it.each([
    { name: 'a project member', token: () => t.tokens.member, status: 403 },
    { name: 'an admin', token: () => t.tokens.admin, status: 200 },
    { name: "an admin of another project (events name servers of any project)", token: () => t.tokens.otherAdmin, status: 200 },
    { name: 'the service role (Cinder)', token: () => serviceToken, status: 200 },
    { name: 'no token', token: () => '', status: 401 },
  ])('policy: $name → $status', async ({ token, status }) => {
    const res = await post([{ name: 'network-changed', server_uuid: SERVER }], { token: token() });
    expect(res.statusCode, res.body).toBe(status);
  });

  it.each([
    { url: PATH, token: () => serviceToken },
    { url: `/v2.1/${TENANT}/os-server-external-events`, token: () => t.tokens.admin },
    { url: `/v2/${TENANT}/os-server-external-events`, token: () => t.tokens.admin },
    { url: `/v2/service/os-server-external-events`, token: () => serviceToken },
  ])('is served under $url', async ({ url, token }) => {
    const res = await post([extended(SERVER, BLOCK_VOL)], { url, token: token() });
    expect(res.statusCode, res.body).toBe(200);
  });

  it("refuses another project's URL with 400 ProjectMismatch", async () => {
    const res = await post([{ name: 'network-changed', server_uuid: SERVER }], { url: `/v2.1/${OTHER_TENANT}/os-server-external-events`, token: t.tokens.admin });
    expect(res.statusCode).toBe(400);
    expect(res.json().badRequest.error_code).toBe('ProjectMismatch');
  });

  it('accepts and ignores the network events: nothing is recorded or done', async () => {
    const before = observableState(t);
    await post([{ name: 'network-vif-unplugged', server_uuid: SERVER, tag: BLOCK_VOL }, { name: 'network-vif-deleted', server_uuid: SERVER }]);
    await t.compute.externalEventsSettled();
    expect(observableState(t)).toEqual(before);
    expect(await t.store.listActions(SERVER)).toEqual([]);
  });
});

describe('volume-extended acts as Nova’s compute extend_volume', () => {
  it('grows the guest to the size the host sees after a rescan, and records extend_volume / compute_extend_volume with Success in the caller’s name', async () => {
    // Cinder grew the storage out of band (a loop device's file): the host sees it only after a rescan.
    t.driver.setBackingBytes(BLOCK_VOL, 3 * GiB);
    expect(disk(SERVER, BLOCK_VOL)).toMatchObject({ hostBytes: GiB, guestBytes: GiB });
    const res = await post([extended(SERVER, BLOCK_VOL)]);
    expect(res.statusCode).toBe(200);
    const requestId = res.headers['x-openstack-request-id'] as string;
    await t.compute.externalEventsSettled();
    expect(disk(SERVER, BLOCK_VOL)).toMatchObject({ hostBytes: 3 * GiB, guestBytes: 3 * GiB });
    expect(t.driver.calls.rescan).toBe(1);
    const action = await t.store.getAction(SERVER, requestId);
    expect(action).toMatchObject({
      action: 'extend_volume',
      event: 'compute_extend_volume',
      userId: 'cinder',
      projectId: 'service',
      result: 'Success',
      details: { trigger: 'volume-extended', volume_ids: [BLOCK_VOL], volumes: [{ volume_id: BLOCK_VOL, outcome: 'grown', host_bytes: 3 * GiB, guest_bytes_before: GiB, bytes: 3 * GiB }] },
    });
    expect(action!.finishTime).not.toBeNull();
    // The owner sees it in the server's actions, as Nova shows Cinder's extend to the user.
    const list = await t.app.inject({ method: 'GET', url: `/v2/${TENANT}/servers/${SERVER}/os-instance-actions`, headers: { 'x-auth-token': t.tokens.admin } });
    expect(list.json().instanceActions.map((a: { request_id: string; action: string }) => [a.request_id, a.action])).toContainEqual([requestId, 'extend_volume']);
  });

  it('answers before the work is done (asynchronous, as Nova), and the action finishes afterwards', async () => {
    t.driver.latencyMs = 100;
    t.driver.setBackingBytes(BLOCK_VOL, 2 * GiB);
    const res = await post([extended(SERVER, BLOCK_VOL)]);
    expect(res.statusCode).toBe(200);
    const requestId = res.headers['x-openstack-request-id'] as string;
    const started = await t.store.getAction(SERVER, requestId);
    expect(started).toMatchObject({ action: 'extend_volume', finishTime: null, result: null });
    expect(disk(SERVER, BLOCK_VOL).guestBytes).toBe(GiB);
    await t.compute.externalEventsSettled();
    expect(await t.store.getAction(SERVER, requestId)).toMatchObject({ result: 'Success' });
    expect(disk(SERVER, BLOCK_VOL).guestBytes).toBe(2 * GiB);
  });

  it('never shrinks: a host that sees less than the guest changes nothing and the action says why', async () => {
    const server = '5ca1ab1e-0000-4000-8000-000000000001';
    const volume = '5ca1ab1e-0000-4000-8000-0000000000f0';
    t.driver.addServer({ id: server, name: 'ahead', projectId: TENANT, state: 'active', disks: [{ volumeId: volume, device: 'vdb', kind: 'block', backingBytes: GiB, hostBytes: GiB, guestBytes: 2 * GiB }] });
    await t.manager.syncInventory();
    const res = await post([extended(server, volume)]);
    await t.compute.externalEventsSettled();
    expect(disk(server, volume).guestBytes).toBe(2 * GiB);
    expect(t.driver.resizes).toBe(0);
    expect(t.driver.calls.extendAttached).toBe(0);
    const action = await t.store.getAction(server, res.headers['x-openstack-request-id'] as string);
    expect(action).toMatchObject({ result: 'Success', details: { volumes: [{ outcome: 'unchanged', host_bytes: GiB, guest_bytes: 2 * GiB }] } });
    expect(action!.message).toMatch(/nothing changed \(a volume is never shrunk\)/);
  });

  it('does nothing when the host sees what the guest already has', async () => {
    const res = await post([extended(SERVER, FILE_VOL)]);
    await t.compute.externalEventsSettled();
    expect(t.driver.calls.extendAttached).toBe(0);
    expect(await t.store.getAction(SERVER, res.headers['x-openstack-request-id'] as string)).toMatchObject({ result: 'Success', details: { volumes: [{ outcome: 'unchanged' }] } });
  });

  it('warns and changes nothing for a volume not attached to that server (as Nova), the action Success', async () => {
    const before = observableState(t);
    const res = await post([extended(OTHER_SERVER, BLOCK_VOL)]);
    expect(res.json().events[0]).toMatchObject({ code: 200, status: 'completed' });
    await t.compute.externalEventsSettled();
    expect(observableState(t)).toEqual(before);
    const action = await t.store.getAction(OTHER_SERVER, res.headers['x-openstack-request-id'] as string);
    expect(action).toMatchObject({ result: 'Success', message: `Volume ${BLOCK_VOL} is not attached to instance ${OTHER_SERVER}; nothing changed.`, details: { volumes: [{ outcome: 'not_attached' }] } });
  });

  it('rescans a shut-off server’s volume and leaves the guest to see it at its next start', async () => {
    const res = await post([extended(OFF_SERVER, OFF_VOL)]);
    await t.compute.externalEventsSettled();
    expect(t.driver.calls.rescan).toBe(1);
    expect(t.driver.resizes).toBe(0);
    expect(await t.store.getAction(OFF_SERVER, res.headers['x-openstack-request-id'] as string)).toMatchObject({ result: 'Success', details: { volumes: [{ outcome: 'offline', host_bytes: 2 * GiB }] } });
  });

  it('finishes the action as Error with the reason when the host fails', async () => {
    t.driver.setBackingBytes(BLOCK_VOL, 2 * GiB);
    t.driver.injectFault('extendAttached', errors.driverFailed('QEMU said no'));
    const res = await post([extended(SERVER, BLOCK_VOL)]);
    expect(res.statusCode).toBe(200);
    await t.compute.externalEventsSettled();
    const action = await t.store.getAction(SERVER, res.headers['x-openstack-request-id'] as string);
    expect(action).toMatchObject({ result: 'Error', message: 'Hypervisor driver failed: QEMU said no', details: { volumes: [{ outcome: 'error', error_code: 'DriverFailed' }] } });
    expect(disk(SERVER, BLOCK_VOL).guestBytes).toBe(GiB);
  });

  it('finishes as Error ExtendVolumeNotSupported on a driver that cannot extend', async () => {
    await t.close();
    t = await makeComputeApp({ capabilities: { extendVolume: false } });
    const token = (await issueToken(t.store, { userId: 'cinder', projectId: 'service', roles: ['service'], ttlMs: 60_000 })).token;
    const res = await post([extended(SERVER, BLOCK_VOL)], { token });
    await t.compute.externalEventsSettled();
    expect(await t.store.getAction(SERVER, res.headers['x-openstack-request-id'] as string)).toMatchObject({ result: 'Error', details: { volumes: [{ error_code: 'ExtendVolumeNotSupported' }] } });
  });

  it('records one action per server for several volumes of one request, each volume once', async () => {
    t.driver.setBackingBytes(BLOCK_VOL, 2 * GiB);
    const res = await post([extended(SERVER, BLOCK_VOL), extended(SERVER, FILE_VOL), extended(SERVER, BLOCK_VOL)]);
    expect(res.statusCode).toBe(200);
    await t.compute.externalEventsSettled();
    const actions = await t.store.listActions(SERVER);
    expect(actions).toHaveLength(1);
    expect(actions[0]!.details).toMatchObject({ volume_ids: [BLOCK_VOL, FILE_VOL], volumes: [{ volume_id: BLOCK_VOL, outcome: 'grown' }, { volume_id: FILE_VOL, outcome: 'unchanged' }] });
  });

  it('runs one operation on a volume at a time: events and assist_extend of one volume never overlap in the driver', async () => {
    t.driver.latencyMs = 20;
    t.driver.setBackingBytes(BLOCK_VOL, 4 * GiB);
    await t.app.inject({ method: 'PUT', url: `/v2/${TENANT}/servers/${SERVER}/os-online_extend_volume`, headers: { 'x-auth-token': t.tokens.admin }, payload: { onlineExtendVolume: { volume_id: BLOCK_VOL } } });
    const assist = (bytes: number) =>
      t.app.inject({ method: 'POST', url: `/v2/${TENANT}/servers/${SERVER}/os-online_extend_volume/${BLOCK_VOL}`, headers: { 'x-auth-token': t.tokens.admin }, payload: { onlineExtendVolume: { bytes } } });
    await Promise.all([post([extended(SERVER, BLOCK_VOL)]), assist(2 * GiB), post([extended(SERVER, BLOCK_VOL)]), assist(3 * GiB)]);
    await t.compute.externalEventsSettled();
    expect(t.driver.maxConcurrentPerVolume).toBe(1);
    // Whatever the order, the guest ends at what the host sees: an assist_extend after an event is a refused shrink, never a shrink.
    expect(disk(SERVER, BLOCK_VOL).guestBytes).toBe(4 * GiB);
  });
});

describe('volume-extended survives a restart', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'oe-events-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('runs again at start-up an action a dead process left unfinished and finishes it; one whose server is gone ends as Error', async () => {
    const store = new SqliteStore(join(dir, 'db.sqlite'));
    try {
      const servers = sampleServers();
      servers[0]!.disks[0]!.backingBytes = 3 * GiB;
      // The process that accepted the event died before the host did anything: the action is on disk, unfinished.
      await store.upsertServer('compute-1', { id: SERVER, name: 'web-1', projectId: TENANT, state: 'active', attachments: [] });
      await store.startAction({
        requestId: 'req-00000000-0000-7000-8000-000000000001', serverId: SERVER, action: 'extend_volume', event: 'compute_extend_volume',
        userId: 'cinder', projectId: 'service', startTime: new Date().toISOString(), message: null, details: { trigger: 'volume-extended', volume_ids: [BLOCK_VOL] },
      });
      // An unfinished assist_extend (the volume service resumes its own) is left alone.
      await store.startAction({
        requestId: 'req-00000000-0000-7000-8000-000000000002', serverId: SERVER, action: 'extend_volume', event: 'compute_extend_volume',
        userId: 'admin', projectId: TENANT, startTime: new Date().toISOString(), message: null, details: { volume_id: FILE_VOL, requested_bytes: 2 * GiB },
      });
      // One whose server is gone by now: finished as Error, not left open forever.
      await store.startAction({
        requestId: 'req-00000000-0000-7000-8000-000000000003', serverId: UNKNOWN, action: 'extend_volume', event: 'compute_extend_volume',
        userId: 'cinder', projectId: 'service', startTime: new Date().toISOString(), message: null, details: { trigger: 'volume-extended', volume_ids: [BLOCK_VOL] },
      });
      const driver = new FakeDriver({ servers });
      const built = await buildComputeApp({ store, driver, logger: pino({ level: 'silent' }), policy: new PolicyEnforcer() });
      await built.compute.externalEventsSettled();
      expect(driver.snapshot(SERVER).disks[0]).toMatchObject({ volumeId: BLOCK_VOL, hostBytes: 3 * GiB, guestBytes: 3 * GiB });
      expect(await store.getAction(SERVER, 'req-00000000-0000-7000-8000-000000000001')).toMatchObject({ result: 'Success', details: { resumed: true, volumes: [{ outcome: 'grown', bytes: 3 * GiB }] } });
      expect(await store.getAction(SERVER, 'req-00000000-0000-7000-8000-000000000002')).toMatchObject({ finishTime: null, result: null });
      expect(await store.getAction(UNKNOWN, 'req-00000000-0000-7000-8000-000000000003')).toMatchObject({ result: 'Error', message: `Instance ${UNKNOWN} could not be found.` });
      await built.app.close();
    } finally {
      await store.close();
    }
  });
});
