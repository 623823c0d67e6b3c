/**
 * Compute services (src/compute/services.ts) on a real SQLite store: up or down by the age of
 * the heartbeat, the services list read at most once per cache period for host checks, the host
 * chooser (fewest servers among up and enabled, ties by name), HostCheckedRpc passing calls that
 * name no host straight through; and `serve`'s one host listed in os-services (buildComputeApp
 * records its heartbeat).
 */
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ComputeServices, HostCheckedRpc, NOVA_COMPUTE, serviceIsUp, ServiceHeartbeat } from '../../src/compute/services.js';
import type { ComputeRpc } from '../../src/compute/rpc.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { isServiceError } from '../../src/errors.js';
import { makeComputeApp, type TestComputeApp } from '../support/computeApp.js';

const DOWN_MS = 30_000;
let store: SqliteStore;
let now: number;

beforeEach(() => {
  store = new SqliteStore(':memory:');
  now = Date.parse('2026-11-30T06:00:00.000Z');
});
afterEach(() => store.close());

const beat = (host: string, ageMs = 0) => store.serviceHeartbeat(host, NOVA_COMPUTE, 'compute', new Date(now - ageMs));
const services = (cacheMs = 1000) => new ComputeServices({ store, downTimeMs: DOWN_MS, cacheMs, now: () => now });

/** The error `p` rejects with (fails the test if it resolves). */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

describe('a compute service is up', () => {
  const cases: Array<[string, number, boolean]> = [
    ['with a heartbeat just now', 0, true],
    ['with a heartbeat exactly service_down_time ago', DOWN_MS, true],
    ['not with a heartbeat older than service_down_time', DOWN_MS + 1, false],
  ];
  for (const [name, age, up] of cases) {
    it(name, () => {
      expect(serviceIsUp({ updatedAt: new Date(now - age).toISOString() }, now, DOWN_MS)).toBe(up);
    });
  }
});

describe('host checks', () => {
  it('refuse a host that is down or never reported with 503 ComputeHostUnavailable (uncertain), and pass one that is up', async () => {
    await beat('up-host');
    await beat('old-host', DOWN_MS + 1);
    const s = services();
    await expect(s.checkHost('up-host')).resolves.toBeUndefined();
    for (const [host, reason] of [['old-host', 'its compute service is down'], ['no-host', 'it has no compute service']] as const) {
      const err = await rejection(s.checkHost(host));
      expect(isServiceError(err) && [err.code, err.status, err.final, err.reason]).toEqual(['ComputeHostUnavailable', 503, false, reason]);
    }
  });

  it('read the services table at most once per cache period, so a heartbeat is seen only after it', async () => {
    await beat('h', DOWN_MS + 1);
    const s = services(1000);
    await expect(s.checkHost('h')).rejects.toThrow(/down/);
    await beat('h');
    now += 999;
    await beat('h');
    await expect(s.checkHost('h')).rejects.toThrow(/down/);
    now += 1;
    await expect(s.checkHost('h')).resolves.toBeUndefined();
  });

  it('see a disable or enable made through them at once (os-services), a host being disabled still taking calls', async () => {
    await beat('h');
    const s = services(60_000);
    await s.checkHost('h');
    expect(await s.setDisabled('h', NOVA_COMPUTE, true, 'maintenance')).toBe(true);
    await expect(s.checkHost('h')).resolves.toBeUndefined();
    expect((await s.list()).map((x) => [x.host, x.disabled, x.disabledReason, x.up])).toEqual([['h', true, 'maintenance', true]]);
    expect(await s.setDisabled('nope', NOVA_COMPUTE, true, null)).toBe(false);
  });

  it('let calls that name no host through to the RPC unchecked, and check every call that names one', async () => {
    const seen: string[] = [];
    const inner = new Proxy({}, { get: (_t, name: string) => async () => void seen.push(name) }) as ComputeRpc;
    const checked: string[] = [];
    const rpc = new HostCheckedRpc(inner, { checkHost: async (h) => void checked.push(h) });
    await rpc.syncInventory();
    await rpc.syncServer(undefined, 'x');
    await rpc.getHostBytes('h1', 's', 'v');
    await rpc.syncServer('h2', 'x');
    expect(seen).toEqual(['syncInventory', 'syncServer', 'getHostBytes', 'syncServer']);
    expect(checked).toEqual(['h1', 'h2']);
  });
});

describe('choosing the host of a new server', () => {
  const server = (id: string) => ({ id, name: id, projectId: 'p', state: 'active' as const, vcpus: 1, memoryMb: 64, attachments: [] });

  it('takes the up and enabled host with the fewest servers, ties by name', async () => {
    for (const h of ['c', 'b', 'a', 'down', 'off']) await beat(h, h === 'down' ? DOWN_MS + 1 : 0);
    await store.setServiceDisabled('off', NOVA_COMPUTE, true, null);
    const s = services();
    expect(await s.chooseHost()).toBe('a');
    await store.syncServers('a', [server('s1')]);
    expect(await s.chooseHost()).toBe('b');
    await store.syncServers('b', [server('s2')]);
    await store.syncServers('c', [server('s3'), server('s4')]);
    expect(await s.chooseHost()).toBe('a');
  });

  it('refuses with 503 (as Nova\'s NoValidHost) when no host is up and enabled', async () => {
    await beat('down', DOWN_MS + 1);
    const err = await rejection(services().chooseHost());
    expect(isServiceError(err) && [err.code, err.status, err.final]).toEqual(['ServiceUnavailable', 503, false]);
  });
});

describe("serve's one host", () => {
  let t: TestComputeApp;
  afterEach(async () => t?.close());

  it('is listed in os-services as an up and enabled nova-compute service once the compute app is built', async () => {
    t = await makeComputeApp();
    const res = await t.app.inject({ method: 'GET', url: '/v2.1/os-services', headers: { 'x-auth-token': t.tokens.admin } });
    expect(res.statusCode).toBe(200);
    expect((res.json() as { services: Array<Record<string, unknown>> }).services.map((s) => [s.host, s.binary, s.state, s.status])).toEqual([[t.manager.host, 'nova-compute', 'up', 'enabled']]);
  });

  it('keeps its heartbeat going once started, and stops when told', async () => {
    const hb = new ServiceHeartbeat({ store, host: 'h', intervalMs: 20, logger: pino({ level: 'silent' }) });
    await hb.start();
    const first = (await store.listServices({ host: 'h' }))[0]!.updatedAt;
    await new Promise((r) => setTimeout(r, 120));
    hb.stop();
    const later = (await store.listServices({ host: 'h' }))[0]!.updatedAt;
    expect(Date.parse(later)).toBeGreaterThan(Date.parse(first));
    await new Promise((r) => setTimeout(r, 60));
    expect((await store.listServices({ host: 'h' }))[0]!.updatedAt).toBe(later);
  });
});
