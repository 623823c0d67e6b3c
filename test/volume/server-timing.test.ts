/**
 * Server-Timing on the volume API: the time its requests spend in compute's API (get_blockdev and
 * the server's state before an in-use extend; in-process in `serve`) is their `rpc` part, not
 * unaccounted time. Real service (fake driver with a call latency), real HTTP.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';
import { serverTimingParts } from '../support/serverTiming.js';

const MiB = 2 ** 20;
let h: ServiceHarness;
beforeAll(async () => {
  h = await makeService({ config: { fakeLatencyMs: 50 } });
});
afterAll(async () => h.cleanup());

const parts = serverTimingParts;

it("gives an in-use extend's answer an rpc part holding compute's checks (at least their driver latency)", async () => {
  const id = (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 64 * MiB } })).body.volume.id;
  await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
  const res = await fetch(`${h.service.volumeUrl}/v3/${PROJECT}/volumes/${id}/action`, {
    method: 'POST',
    headers: { 'x-auth-token': h.token, 'content-type': 'application/json', 'openstack-api-version': 'volume 3.42' },
    body: JSON.stringify({ 'os-extend-bytes': { new_bytes: 128 * MiB } }),
  });
  expect(res.status).toBe(202);
  const p = parts(res.headers.get('server-timing'));
  // get_blockdev reads the host's size through the driver (50 ms of latency); the state read runs beside it.
  // (Less 1 ms: Node's timers, and so the fake's latency, count from the event loop's cached time.)
  expect(p.rpc).toBeGreaterThanOrEqual(49);
  // The two calls run at once and a part adds both (RequestTimings), so it may exceed the total.
  expect(p.total).toBeGreaterThanOrEqual(49);
});
