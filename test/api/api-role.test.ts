/**
 * The `api` role (startApiService) without a broker: two compute hosts in this process (each a
 * ComputeManager over its own fake driver, reached through MultiHostRpc, which routes by host as
 * the AMQP RPC does by topic), one SQLite database by URL, real HTTP. Calls go to the host that
 * owns the server; a host whose heartbeat is stale is refused at once with 503
 * ComputeHostUnavailable and no call reaches it; os-services lists both hosts up or down; new
 * servers go to the host up and enabled with the fewest servers; a server's host_status follows
 * its host's service; two api services on the one
 * database serve the same volumes, each with its own service token.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApiService, type RunningApiService } from '../../src/app.js';
import { issueToken, SERVICE_USER } from '../../src/auth/tokens.js';
import { ComputeManager } from '../../src/compute/manager.js';
import { COMPUTE_TOPIC, NOVA_COMPUTE } from '../../src/compute/services.js';
import { loadConfig, type Config } from '../../src/config.js';
import { openStoreUrl, type OpenedStore } from '../../src/db/open.js';
import { FakeDriver, type FakeServer } from '../../src/virt/fake/driver.js';
import { GiB, TEST_FLAVOR, TEST_IMAGE } from '../support/computeApp.js';
import { MultiHostRpc } from '../support/multiHostRpc.js';

const PROJECT = 'f66d7df4b59f4ab98a358a0dab0b238f';
const SERVER_A = 'aaaaaaaa-0000-4000-8000-00000000000a';
const SERVER_B = 'bbbbbbbb-0000-4000-8000-00000000000b';
const VOL_A = 'aaaaaaaa-1111-4111-8111-00000000000a';
const VOL_B = 'bbbbbbbb-1111-4111-8111-00000000000b';

function server(id: string, name: string, volumeId: string, hostBytes: number): FakeServer {
  return { id, name, projectId: PROJECT, state: 'active', vcpus: 1, memoryMb: 512, disks: [{ volumeId, device: 'vdb', kind: 'block', backingBytes: hostBytes, hostBytes, guestBytes: GiB }] };
}

let dir: string;
let url: string;
let shared: OpenedStore;
let rpc: MultiHostRpc;
let config: Config;
let api1: RunningApiService;
let admin: string;
let member: string;
const logger = pino({ level: 'silent' });

/** A heartbeat of `host`'s compute service `ageMs` ago. */
const beat = (host: string, ageMs = 0) => shared.store.serviceHeartbeat(host, NOVA_COMPUTE, COMPUTE_TOPIC, new Date(Date.now() - ageMs));
/** Past the services cache (ComputeServices: 1 s), so a heartbeat just written is what the API reads. */
const pastCache = () => new Promise((r) => setTimeout(r, 1_100));

/** A parsed JSON body, read loosely (each test asserts the shape it reads). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON answers, read field by field
type Json = Record<string, any>;

async function call(base: string, method: string, path: string, token: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { 'x-auth-token': token, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Json) : null };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'oe-api-role-'));
  url = `sqlite://${join(dir, 'shared.sqlite')}`;
  shared = await openStoreUrl(url);
  const managers = [
    new ComputeManager({ host: 'host-a', driver: new FakeDriver({ servers: [server(SERVER_A, 'on-a', VOL_A, 3 * GiB)] }), store: shared.store, defaultProjectId: PROJECT, logger }),
    new ComputeManager({ host: 'host-b', driver: new FakeDriver({ servers: [server(SERVER_B, 'on-b', VOL_B, 5 * GiB)] }), store: shared.store, defaultProjectId: PROJECT, logger }),
  ];
  for (const m of managers) {
    await m.syncInventory();
    await beat(m.host);
  }
  await shared.store.putFlavor(TEST_FLAVOR);
  await shared.store.putImage(TEST_IMAGE);
  rpc = new MultiHostRpc(managers);
  config = loadConfig({}, { port: 0, volumePort: 0, identityPort: 0, imagePort: 0, dataDir: join(dir, 'data'), databaseUrl: url, logLevel: 'silent' });
  api1 = await startApiService(config, { rpc, store: shared, logger });
  admin = (await issueToken(shared.store, { userId: 'admin-user', projectId: PROJECT, roles: ['admin'], ttlMs: 3_600_000 })).token;
  member = (await issueToken(shared.store, { userId: 'member-user', projectId: PROJECT, roles: ['member', 'reader'], ttlMs: 3_600_000 })).token;
});

afterAll(async () => {
  await api1?.close();
  await shared?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('the api role routes each call to the host of the server', () => {
  const cases = [
    { server: SERVER_A, volume: VOL_A, host: 'host-a', bytes: 3 * GiB },
    { server: SERVER_B, volume: VOL_B, host: 'host-b', bytes: 5 * GiB },
  ];
  for (const c of cases) {
    it(`reads get_blockdev of a server on ${c.host} from ${c.host} only`, async () => {
      const before = rpc.calls.length;
      const res = await call(api1.computeUrl, 'GET', `/v2/${PROJECT}/servers/${c.server}/os-online_extend_volume/${c.volume}`, admin);
      expect(res.status).toBe(200);
      expect(res.body!.volume_blockdev).toEqual({ id: c.volume, bytes: c.bytes });
      const hosts = new Set(rpc.calls.slice(before).map((x) => x.host));
      expect([...hosts]).toEqual([c.host]);
    });
  }
});

describe('a host whose compute service is down', () => {
  it('is refused at once with 503 ComputeHostUnavailable (uncertain), no call reaching it, and served again once its heartbeat is back', async () => {
    await beat('host-b', config.serviceDownTimeMs + 5_000);
    await pastCache();
    const before = rpc.callsTo('host-b').length;
    const res = await call(api1.computeUrl, 'GET', `/v2/${PROJECT}/servers/${SERVER_B}/os-online_extend_volume/${VOL_B}`, admin);
    expect(res.status).toBe(503);
    const fault = Object.values(res.body!)[0] as { code: number; error_code: string; final: boolean; message: string };
    expect(fault).toMatchObject({ code: 503, error_code: 'ComputeHostUnavailable', final: false });
    expect(fault.message).toContain('host-b');
    expect(rpc.callsTo('host-b').length).toBe(before);
    // The other host is not affected.
    expect((await call(api1.computeUrl, 'GET', `/v2/${PROJECT}/servers/${SERVER_A}/os-online_extend_volume/${VOL_A}`, admin)).status).toBe(200);

    await beat('host-b');
    await pastCache();
    expect((await call(api1.computeUrl, 'GET', `/v2/${PROJECT}/servers/${SERVER_B}/os-online_extend_volume/${VOL_B}`, admin)).status).toBe(200);
  });
});

describe("a server's host_status (2.16, admins) in the api role", () => {
  const hostStatus = async (serverId: string) =>
    (await call(api1.computeUrl, 'GET', `/v2.1/servers/${serverId}`, admin, undefined, { 'openstack-api-version': 'compute 2.16' })).body!.server.host_status as string;

  it("is its host's compute service: UP, UNKNOWN once the heartbeat is stale, MAINTENANCE while disabled", async () => {
    await beat('host-a');
    await beat('host-b', config.serviceDownTimeMs + 5_000);
    await shared.store.setServiceDisabled('host-a', NOVA_COMPUTE, true, 'patching');
    try {
      await pastCache();
      expect([await hostStatus(SERVER_A), await hostStatus(SERVER_B)]).toEqual(['MAINTENANCE', 'UNKNOWN']);
      await shared.store.setServiceDisabled('host-a', NOVA_COMPUTE, false, null);
      await beat('host-b');
      await pastCache();
      expect([await hostStatus(SERVER_A), await hostStatus(SERVER_B)]).toEqual(['UP', 'UP']);
    } finally {
      await shared.store.setServiceDisabled('host-a', NOVA_COMPUTE, false, null);
      await beat('host-b');
    }
  });
});

describe('os-services', () => {
  it('lists both compute hosts with state up or down from their heartbeats, under every URL form', async () => {
    await beat('host-a');
    await beat('host-b', config.serviceDownTimeMs + 5_000);
    try {
      for (const path of ['/v2.1/os-services', `/v2.1/${PROJECT}/os-services`, `/v2/${PROJECT}/os-services`]) {
        const res = await call(api1.computeUrl, 'GET', path, admin);
        expect(res.status, path).toBe(200);
        const services = res.body!.services as Array<Record<string, unknown>>;
        expect(services.map((s) => [s.host, s.binary, s.state, s.status, s.zone])).toEqual([
          ['host-a', 'nova-compute', 'up', 'enabled', 'nova'],
          ['host-b', 'nova-compute', 'down', 'enabled', 'nova'],
        ]);
        for (const s of services) {
          expect(Object.keys(s).sort()).toEqual(['binary', 'disabled_reason', 'host', 'id', 'state', 'status', 'updated_at', 'zone']);
          expect(s.updated_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$/);
          expect(Number.isInteger(s.id)).toBe(true);
        }
      }
    } finally {
      await beat('host-b');
    }
  });

  it('filters by host and binary, adds forced_down from 2.11, and is for admins only', async () => {
    const byHost = await call(api1.computeUrl, 'GET', '/v2.1/os-services?host=host-b', admin);
    expect((byHost.body!.services as Array<{ host: string }>).map((s) => s.host)).toEqual(['host-b']);
    const byBinary = await call(api1.computeUrl, 'GET', '/v2.1/os-services?binary=nova-scheduler', admin);
    expect(byBinary.body!.services).toEqual([]);
    const v211 = await call(api1.computeUrl, 'GET', '/v2.1/os-services', admin, undefined, { 'openstack-api-version': 'compute 2.11' });
    expect((v211.body!.services as Array<{ forced_down: unknown }>).map((s) => s.forced_down)).toEqual([false, false]);
    const refused = await call(api1.computeUrl, 'GET', '/v2.1/os-services', member);
    expect(refused.status).toBe(403);
  });

  it('disables a host (with a reason) and enables it again; an unknown host is 404 and another binary 400, changing nothing', async () => {
    const disabled = await call(api1.computeUrl, 'PUT', '/v2.1/os-services/disable-log-reason', admin, { host: 'host-a', binary: 'nova-compute', disabled_reason: 'maintenance' });
    expect(disabled).toEqual({ status: 200, body: { service: { host: 'host-a', binary: 'nova-compute', status: 'disabled', disabled_reason: 'maintenance' } } });
    const listed = await call(api1.computeUrl, 'GET', '/v2.1/os-services?host=host-a', admin);
    expect(listed.body!.services[0]).toMatchObject({ status: 'disabled', disabled_reason: 'maintenance', state: 'up' });
    // A disabled host still serves its servers (only new builds avoid it).
    expect((await call(api1.computeUrl, 'GET', `/v2/${PROJECT}/servers/${SERVER_A}/os-online_extend_volume/${VOL_A}`, admin)).status).toBe(200);
    const enabled = await call(api1.computeUrl, 'PUT', '/v2.1/os-services/enable', admin, { host: 'host-a', binary: 'nova-compute' });
    expect(enabled).toEqual({ status: 200, body: { service: { host: 'host-a', binary: 'nova-compute', status: 'enabled' } } });
    expect((await call(api1.computeUrl, 'PUT', '/v2.1/os-services/disable', admin, { host: 'host-z', binary: 'nova-compute' })).status).toBe(404);
    expect((await call(api1.computeUrl, 'PUT', '/v2.1/os-services/disable', admin, { host: 'host-a', binary: 'nova-scheduler' })).status).toBe(400);
    expect((await call(api1.computeUrl, 'PUT', '/v2.1/os-services/disable', member, { host: 'host-a', binary: 'nova-compute' })).status).toBe(403);
    const after = await shared.store.listServices({ host: 'host-a' });
    expect(after.map((s) => [s.disabled, s.disabledReason])).toEqual([[false, null]]);
  });
});

describe('POST /servers in the api role', () => {
  async function create(name: string): Promise<string> {
    const res = await call(api1.computeUrl, 'POST', `/v2.1/${PROJECT}/servers`, member, { server: { name, imageRef: TEST_IMAGE.id, flavorRef: TEST_FLAVOR.id } });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    return (res.body!.server as { id: string }).id;
  }

  it('builds on the host up and enabled with the fewest servers (ties by name), never on a disabled or down one', async () => {
    await beat('host-a');
    await beat('host-b');
    // One server each: a tie, so host-a; then host-b has fewer.
    const first = await create('sched-1');
    const second = await create('sched-2');
    expect((await shared.store.getServer(first))!.host).toBe('host-a');
    expect((await shared.store.getServer(second))!.host).toBe('host-b');
    // host-b disabled: host-a even though it has more servers.
    await shared.store.setServiceDisabled('host-b', NOVA_COMPUTE, true, 'drain');
    const third = await create('sched-3');
    expect((await shared.store.getServer(third))!.host).toBe('host-a');
    await shared.store.setServiceDisabled('host-b', NOVA_COMPUTE, false, null);
    // Both down: refused with 503 before anything is recorded.
    await beat('host-a', config.serviceDownTimeMs + 5_000);
    await beat('host-b', config.serviceDownTimeMs + 5_000);
    const count = (await shared.store.listServers()).length;
    const refused = await call(api1.computeUrl, 'POST', `/v2.1/${PROJECT}/servers`, member, { server: { name: 'nowhere', imageRef: TEST_IMAGE.id, flavorRef: TEST_FLAVOR.id } });
    expect(refused.status).toBe(503);
    expect((await shared.store.listServers()).length).toBe(count);
    await beat('host-a');
    await beat('host-b');
    await pastCache();
  });

  it('builds on another host when the chosen one looks up but no agent listens on it (its agent just died)', async () => {
    await beat('host-a');
    await beat('host-b');
    // Fewest servers and first by name: the chooser's first pick, had it an agent.
    const ghost = await shared.store.serviceHeartbeat('host-0ghost', NOVA_COMPUTE, 'compute');
    try {
      const before = rpc.callsTo('host-0ghost').length;
      const id = await create('sched-ghost');
      expect(rpc.callsTo('host-0ghost').length).toBe(before + 1);
      expect(['host-a', 'host-b']).toContain((await shared.store.getServer(id))!.host);
    } finally {
      await shared.store.deleteService(ghost.id);
    }
  });
});

describe('two api services on one database', () => {
  it('serve the same volumes, each with its own service token, which the other never revokes', async () => {
    // The second opens the database by its URL itself, as a separate process would.
    const api2 = await startApiService(config, { rpc, logger });
    try {
      const created = await call(api1.volumeUrl!, 'POST', `/v3/${PROJECT}/volumes`, member, { volume: { size: 1, name: 'shared' } });
      expect(created.status).toBe(202);
      const id = (created.body!.volume as { id: string }).id;
      let status = '';
      for (let i = 0; i < 100 && status !== 'available'; i++) {
        const seen = await call(api2.volumeUrl!, 'GET', `/v3/${PROJECT}/volumes/${id}`, member);
        expect(seen.status).toBe(200);
        status = (seen.body!.volume as { status: string }).status;
        if (status !== 'available') await new Promise((r) => setTimeout(r, 50));
      }
      expect(status).toBe('available');
      // Attached through the second, whose volume service calls its compute API with its own token.
      const attached = await call(api2.computeUrl, 'POST', `/v2.1/${PROJECT}/servers/${SERVER_A}/os-volume_attachments`, member, { volumeAttachment: { volumeId: id } });
      expect(attached.status, JSON.stringify(attached.body)).toBe(200);
      const inUse = await call(api1.volumeUrl!, 'GET', `/v3/${PROJECT}/volumes/${id}`, member);
      expect(inUse.body!.volume).toMatchObject({ status: 'in-use' });
      expect(rpc.callsTo('host-a').some((c) => c.method === 'attachVolume')).toBe(true);
      // Detached through the second too: the SQLite store caches server records per connection
      // (it assumes one writer), so the first's copy of this server may be stale; the volume is
      // read through the first.
      const detached = await call(api2.computeUrl, 'DELETE', `/v2.1/${PROJECT}/servers/${SERVER_A}/os-volume_attachments/${id}`, member);
      expect(detached.status, JSON.stringify(detached.body)).toBe(202);
      expect((await call(api1.volumeUrl!, 'GET', `/v3/${PROJECT}/volumes/${id}`, member)).body!.volume).toMatchObject({ status: 'available' });
      // One service token per process, under its own user: the second's start revoked none of the first's.
      const serviceTokens = (await shared.store.listTokens()).filter((t) => t.userId.startsWith(`${SERVICE_USER}.`));
      expect(new Set(serviceTokens.map((t) => t.userId))).toEqual(new Set([`${SERVICE_USER}.${api1.instanceId}`, `${SERVICE_USER}.${api2.instanceId}`]));
      // The data dir holds only the volume files: no database, lock, marker or token file.
      expect(readdirSync(config.dataDir)).toEqual(['volumes']);
    } finally {
      await api2.close();
    }
  });
});
