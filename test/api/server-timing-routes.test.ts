/**
 * Server-Timing's per-layer parts on a representative route of each route file, through a whole
 * `serve` (fake driver, file backend, serverTimingDetail on: its default) over real HTTP.
 *
 * A request's timings are current only while its code runs synchronously (util/timing.ts): each
 * handler re-enters them (`inRequest`) for the store and service calls it makes after an await
 * (authorization, a lookup). A call it forgets is missing from the header; these answers show
 * whether each route remembered. The second table shows the services' own re-entries after their
 * awaits where the fake driver's latency makes them measurable (each call's attribution:
 * server-timing-services.test.ts).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeDriver } from '../../src/virt/fake/driver.js';
import { makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';
import { serverTimingParts } from '../support/serverTiming.js';

const MiB = 2 ** 20;

let h: ServiceHarness;
let volumeId: string;

/** A new 64 MiB volume of `on`'s, once it is available. */
async function availableVolume(on: ServiceHarness): Promise<string> {
  const id = (await on.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 64 * MiB } })).body.volume.id;
  for (let i = 0; ; i++) {
    const { body } = await on.volume.request<{ volume: { status: string } }>('GET', `/v3/${PROJECT}/volumes/${id}`);
    if (body.volume.status === 'available') return id;
    if (i >= 500) throw new Error(`volume ${id} never became available`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

beforeAll(async () => {
  h = await makeService();
  volumeId = await availableVolume(h);
});
afterAll(async () => h?.cleanup());

const parts = serverTimingParts;

type Api = 'compute' | 'volume' | 'image';

interface Case {
  /** The route, as the test name says it. */
  route: string;
  api: Api;
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  path: () => string;
  /** The JSON body (made when called: it may name the test's volume). */
  body?: () => unknown;
  status: number;
  /** The per-layer parts the route goes through, each expected above 0. */
  parts: readonly string[];
}

async function call(c: Case, on = h): Promise<Response> {
  const headers: Record<string, string> = { 'x-auth-token': on.token };
  if (c.api === 'volume') headers['openstack-api-version'] = 'volume 3.42';
  if (c.body !== undefined) headers['content-type'] = 'application/json';
  const url = c.api === 'compute' ? on.service.computeUrl : c.api === 'volume' ? on.service.volumeUrl! : on.service.imageUrl;
  return fetch(`${url}${c.path()}`, { method: c.method, headers, ...(c.body === undefined ? {} : { body: JSON.stringify(c.body()) }) });
}

const compute = (p: string) => `/v2/${PROJECT}${p}`;
const volume = (p: string) => `/v3/${PROJECT}${p}`;

const cases: Case[] = [
  // compute/servers.ts
  { route: 'GET servers', api: 'compute', method: 'GET', path: () => compute('/servers'), status: 200, parts: ['store'] },
  { route: 'GET servers/detail', api: 'compute', method: 'GET', path: () => compute('/servers/detail'), status: 200, parts: ['store'] },
  { route: 'GET servers/{id}', api: 'compute', method: 'GET', path: () => compute(`/servers/${SERVER}`), status: 200, parts: ['store'] },
  { route: 'GET os-volume_attachments', api: 'compute', method: 'GET', path: () => compute(`/servers/${SERVER}/os-volume_attachments`), status: 200, parts: ['store'] },
  { route: 'GET os-instance-actions', api: 'compute', method: 'GET', path: () => compute(`/servers/${SERVER}/os-instance-actions`), status: 200, parts: ['store'] },
  { route: 'GET os-instance-action-details', api: 'compute', method: 'GET', path: () => compute(`/servers/${SERVER}/os-instance-action-details`), status: 200, parts: ['store'] },
  // compute/flavors.ts
  { route: 'GET flavors', api: 'compute', method: 'GET', path: () => compute('/flavors'), status: 200, parts: ['store'] },
  { route: 'GET flavors/detail', api: 'compute', method: 'GET', path: () => compute('/flavors/detail'), status: 200, parts: ['store'] },
  // compute/services.ts: ComputeServices has its own (timed) store.
  { route: 'GET os-services', api: 'compute', method: 'GET', path: () => compute('/os-services'), status: 200, parts: ['store'] },
  // image/images.ts: the image app has its own (timed) store.
  { route: 'GET image v2/images', api: 'image', method: 'GET', path: () => '/v2/images', status: 200, parts: ['store'] },
  // volume/volumes.ts
  { route: 'GET volumes', api: 'volume', method: 'GET', path: () => volume('/volumes'), status: 200, parts: ['store'] },
  { route: 'GET volumes/detail', api: 'volume', method: 'GET', path: () => volume('/volumes/detail'), status: 200, parts: ['store'] },
  { route: 'GET volumes/os-online-extend', api: 'volume', method: 'GET', path: () => volume('/volumes/os-online-extend'), status: 200, parts: ['store'] },
  { route: 'GET volumes/{id}', api: 'volume', method: 'GET', path: () => volume(`/volumes/${volumeId}`), status: 200, parts: ['store'] },
  { route: 'GET volumes/{id}/os-online-extend', api: 'volume', method: 'GET', path: () => volume(`/volumes/${volumeId}/os-online-extend`), status: 200, parts: ['store'] },
  { route: 'GET volumes/{id}/os-volume-actions', api: 'volume', method: 'GET', path: () => volume(`/volumes/${volumeId}/os-volume-actions`), status: 200, parts: ['store'] },
  { route: 'GET volumes/{id}/metadata', api: 'volume', method: 'GET', path: () => volume(`/volumes/${volumeId}/metadata`), status: 200, parts: ['store'] },
  { route: 'POST volumes/{id}/metadata', api: 'volume', method: 'POST', path: () => volume(`/volumes/${volumeId}/metadata`), body: () => ({ metadata: { purpose: 'timing' } }), status: 200, parts: ['store'] },
  { route: 'PUT volumes/{id}', api: 'volume', method: 'PUT', path: () => volume(`/volumes/${volumeId}`), body: () => ({ volume: { description: 'timed' } }), status: 200, parts: ['store'] },
  { route: 'POST volumes', api: 'volume', method: 'POST', path: () => volume('/volumes'), body: () => ({ volume: { size_bytes: 64 * MiB } }), status: 202, parts: ['store'] },
  // Last: it attaches the volume. The volume service is reached over HTTP (rpc) from the server's task.
  { route: 'POST os-volume_attachments', api: 'compute', method: 'POST', path: () => compute(`/servers/${SERVER}/os-volume_attachments`), body: () => ({ volumeAttachment: { volumeId } }), status: 200, parts: ['store', 'rpc'] },
];

async function expectParts(c: Case): Promise<void> {
  const res = await call(c);
  expect(res.status, await res.clone().text()).toBe(c.status);
  const p = parts(res.headers.get('server-timing'));
  expect(p.total).toBeGreaterThan(0);
  for (const name of c.parts) expect(p[name] ?? 0, `${name} in ${res.headers.get('server-timing')}`).toBeGreaterThan(0);
  // The calls of these routes run one after another: no part can exceed the request's wall time.
  for (const [name, ms] of Object.entries(p)) if (name !== 'total') expect(ms, name).toBeLessThanOrEqual(p.total!);
}

describe('Server-Timing on each route file with serverTimingDetail on', () => {
  const rows = (list: Case[]) => list.map((c) => [c.route, c.parts.join(' and '), c] as const);

  it.each(rows(cases))('%s answers with its %s time above 0, each part within the total', (_route, _parts, c) => expectParts(c));
});

/** The fake driver's latency per call in the second service (ms): compute's work behind a call takes at least this per driver call. */
const LATENCY_MS = 40;
/**
 * How early a timer of the fake's latency may end against a clock read at the call: libuv counts a
 * timer from the event loop's cached time, which can be up to ~1 ms before the call (a part of
 * 39.86 ms was seen for one 40 ms call). Per driver call.
 */
const TIMER_EARLY_MS = 1;
/** The least a part holding `calls` driver calls can show. */
const atLeast = (calls: number) => calls * (LATENCY_MS - TIMER_EARLY_MS);

/**
 * Calls a service makes after its own first await (no route wraps them): their part is in the
 * header only if the service re-enters the request's timings there. The fake driver's latency
 * makes each such call's share of the part measurable: the part is at least the latency times
 * the driver calls behind the calls made after the first await.
 */
describe('Server-Timing holds the calls a service makes after its own awaits (fake driver latency)', () => {
  let slow: ServiceHarness;
  beforeAll(async () => {
    slow = await makeService({ config: { fakeLatencyMs: LATENCY_MS } });
  });
  afterAll(async () => slow?.cleanup());

  /**
   * `c` answered with `status` on the slow service; its Server-Timing parts, each within the total
   * unless the service makes calls at once (`concurrent`: their times add up, so a part may exceed it).
   */
  async function timedCall(c: Omit<Case, 'route' | 'parts' | 'status'>, status: number, opts: { concurrent?: boolean } = {}): Promise<Record<string, number>> {
    const res = await call({ ...c, route: '', parts: [], status }, slow);
    expect(res.status, await res.clone().text()).toBe(status);
    const p = parts(res.headers.get('server-timing'));
    if (!opts.concurrent) for (const [name, ms] of Object.entries(p)) if (name !== 'total') expect(ms, name).toBeLessThanOrEqual(p.total!);
    return p;
  }

  it("gives the volume API's attach and detach an rpc part holding compute's plug and unplug (after the volume's read: two driver calls each)", async () => {
    const id = await availableVolume(slow);
    // checkConnect, then connect: the driver's attach and the server's sync, each LATENCY_MS.
    const attached = await timedCall({ api: 'volume', method: 'POST', path: () => volume('/attachments'), body: () => ({ attachment: { volume_uuid: id, instance_uuid: SERVER } }) }, 200);
    expect(attached.rpc ?? 0).toBeGreaterThanOrEqual(atLeast(2));
    // disconnect: the server's fresh read, the driver's detach and the server's sync.
    const detached = await timedCall({ api: 'volume', method: 'DELETE', path: () => volume(`/attachments/${id}?instance_uuid=${SERVER}`) }, 204);
    expect(detached.rpc ?? 0).toBeGreaterThanOrEqual(atLeast(2));
  });

  it('gives an external event naming a server only the host knows an rpc part holding its lookup on the host (one driver call)', async () => {
    const hostOnly = randomUUID();
    (slow.service.driver as FakeDriver).addServer({ id: hostOnly, name: 'vm-host-only', projectId: PROJECT, state: 'active', disks: [] });
    const events = [{ name: 'network-changed', server_uuid: SERVER }, { name: 'network-changed', server_uuid: hostOnly }];
    // The events are handled at once (each server's own records): their store times add up.
    const p = await timedCall({ api: 'compute', method: 'POST', path: () => compute('/os-server-external-events'), body: () => ({ events }) }, 200, { concurrent: true });
    // The store's miss comes first; the lookup on the host (the driver's getServer) after its await.
    expect(p.rpc ?? 0).toBeGreaterThanOrEqual(atLeast(1));
  });
});
