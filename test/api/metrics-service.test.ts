/**
 * Metrics of a whole `serve` (fake driver, file backend) over real HTTP: an extend moves the
 * extend and workflow metrics, the volumes gauge is counted from the store at scrape time, and
 * metricsPort moves GET /metrics off the compute API's port.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VOLUME_STATUSES } from '../../src/volume/lifecycle.js';
import { makeService, PROJECT, type ServiceHarness } from '../support/service.js';
import { parsePrometheusText as parse } from '../support/prometheus.js';
import { serverTimingParts } from '../support/serverTiming.js';

async function scrape(base: string): Promise<Map<string, number>> {
  const res = await fetch(`${base}/metrics`);
  expect(res.status).toBe(200);
  return parse(await res.text());
}

const serverTiming = serverTimingParts;

describe('serve with /metrics on the compute API port (the default)', () => {
  let h: ServiceHarness;
  beforeAll(async () => {
    h = await makeService();
  });
  afterAll(async () => h?.cleanup());

  const volumeCall = (method: string, path: string, body?: unknown) =>
    fetch(`${h.service.volumeUrl}/v3/${PROJECT}${path}`, {
      method,
      headers: { 'x-auth-token': h.token, 'openstack-api-version': 'volume 3.42', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  async function settle(id: string, want: string): Promise<void> {
    for (let i = 0; i < 500; i++) {
      const v = (await (await volumeCall('GET', `/volumes/${id}`)).json()) as { volume: { status: string } };
      if (v.volume.status === want) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`volume ${id} never became ${want}`);
  }

  it('counts a finished extend by result and backend, times its steps, and counts volumes by status from the store', async () => {
    const before = await scrape(h.service.computeUrl);
    expect(h.service.metricsUrl).toBeUndefined();
    const created = await volumeCall('POST', '/volumes', { volume: { size: 1 } });
    expect(created.status).toBe(202);
    const id = ((await created.json()) as { volume: { id: string } }).volume.id;
    await settle(id, 'available');
    expect((await volumeCall('POST', `/volumes/${id}/action`, { 'os-extend': { new_size: 2 } })).status).toBe(202);
    await settle(id, 'available');
    const after = await scrape(h.service.computeUrl);
    const extends_ = 'online_extend_volume_extends_total{result="success",backend="file"}';
    expect((after.get(extends_) ?? 0) - (before.get(extends_) ?? 0)).toBe(1);
    const steps = [...after.keys()].filter((k) => k.startsWith('online_extend_workflow_step_duration_seconds_count{'));
    expect(steps.length).toBeGreaterThan(0);
    expect([...after.keys()].some((k) => k.startsWith('online_extend_workflow_step_duration_seconds_bucket{le="0.001"'))).toBe(true);
    const listed = ((await (await volumeCall('GET', '/volumes/detail?all_tenants=1')).json()) as { volumes: { status: string }[] }).volumes;
    expect(after.get('online_extend_volumes{status="available"}')).toBe(listed.filter((v) => v.status === 'available').length);
    // Requests of the volume API are counted under its own api label and route patterns.
    expect([...after.keys()].some((k) => k.startsWith('online_extend_http_requests_total{api="volume",method="POST",route="/v3/:project_id/volumes/:volume_id/action",status="202"'))).toBe(true);
  });

  it('shows every volume status, at 0 when no volume has it (a series does not vanish when its last volume goes)', async () => {
    const scraped = await scrape(h.service.computeUrl);
    for (const status of VOLUME_STATUSES) expect(scraped.has(`online_extend_volumes{status="${status}"}`), status).toBe(true);
    expect(scraped.get('online_extend_volumes{status="error_extending"}')).toBe(0);
  });

  it('reports store time in Server-Timing on a volume API answer by default (serverTimingDetail), within the total', async () => {
    const res = await volumeCall('GET', '/volumes');
    expect(res.status).toBe(200);
    const parts = serverTiming(res.headers.get('server-timing'));
    expect(parts.store).toBeGreaterThan(0);
    expect(parts.auth).toBeGreaterThan(0);
    expect(parts.total).toBeGreaterThanOrEqual(parts.store!);
    expect(parts.total).toBeGreaterThanOrEqual(parts.auth!);
  });
});

describe('serve with serverTimingDetail false', () => {
  let h: ServiceHarness;
  beforeAll(async () => {
    h = await makeService({ config: { serverTimingDetail: false } });
  });
  afterAll(async () => h?.cleanup());

  it('reports only auth and total in Server-Timing on a volume API answer', async () => {
    const res = await fetch(`${h.service.volumeUrl}/v3/${PROJECT}/volumes`, { headers: { 'x-auth-token': h.token } });
    expect(res.status).toBe(200);
    const parts = serverTiming(res.headers.get('server-timing'));
    expect(Object.keys(parts).sort()).toEqual(['auth', 'total']);
    expect(parts.auth).toBeGreaterThan(0);
    expect(parts.total).toBeGreaterThanOrEqual(parts.auth!);
  });
});

describe('serve with metricsPort set', () => {
  let h: ServiceHarness;
  beforeAll(async () => {
    h = await makeService({ config: { metricsPort: 0, metricsHost: '127.0.0.1' } });
  });
  afterAll(async () => h?.cleanup());

  it('serves GET /metrics on its own address and no longer on the compute API port', async () => {
    expect(h.service.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(h.service.metricsUrl).not.toBe(h.service.computeUrl);
    expect((await fetch(`${h.service.computeUrl}/metrics`)).status).toBe(404);
    const m = await scrape(h.service.metricsUrl!);
    expect(m.get('online_extend_http_requests_total{api="compute",method="GET",route="unmatched",status="404"}')).toBe(1);
    expect((await fetch(`${h.service.metricsUrl}/other`)).status).toBe(404);
  });
});
