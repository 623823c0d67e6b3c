import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { buildComputeApp, type ComputeApp } from '../../src/app.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { FakeDriver } from '../../src/virt/fake/driver.js';
import { PolicyEnforcer } from '../../src/auth/policy.js';
import { issueToken } from '../../src/auth/tokens.js';
import { Metrics } from '../../src/util/metrics.js';
import { BLOCK_VOL, FILE_VOL, GiB, TENANT, sampleServers, url } from '../support/computeApp.js';
import { parsePrometheusText as parse } from '../support/prometheus.js';
import { rawRequest } from '../support/rawHttp.js';
import { connect } from 'node:net';
import { serverTimingParts } from '../support/serverTiming.js';


let built: ComputeApp;
let base: string;
let token: string;
let store: SqliteStore;

beforeEach(async () => {
  store = new SqliteStore(':memory:');
  built = await buildComputeApp({ store, driver: new FakeDriver({ servers: sampleServers() }), logger: pino({ level: 'silent' }), policy: new PolicyEnforcer({}), metrics: new Metrics() });
  token = (await issueToken(store, { userId: 'u', projectId: TENANT, roles: ['admin'], ttlMs: 3_600_000 })).token;
  base = await built.app.listen({ host: '127.0.0.1', port: 0 });
});
afterEach(async () => {
  await built.app.close();
  store.close();
});

const scrape = async () => {
  const res = await fetch(`${base}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parse(await res.text());
};
const get = (path: string) => fetch(`${base}${path}`, { headers: { 'x-auth-token': token } });
const series = (m: Map<string, number>, prefix: string) => [...m.keys()].filter((k) => k.startsWith(prefix));

describe('GET /metrics', () => {
  it('answers Prometheus text format without a token', async () => {
    expect((await fetch(`${base}${url.volume(BLOCK_VOL)}`)).status).toBe(401);
    const m = await scrape();
    expect(series(m, 'online_extend_http_requests_total{').length).toBe(1);
    expect(m.get('online_extend_http_requests_total{api="compute",method="GET",route="/v2/:tenant_id/servers/:server_id/os-online_extend_volume/:volume_id",status="401"}')).toBe(1);
  });

  it('counts requests by route pattern and status, and the RPC calls an assist_extend makes, with histogram buckets', async () => {
    const key = (status: number) => `online_extend_http_requests_total{api="compute",method="GET",route="/v2/:tenant_id/servers/:server_id/os-online_extend_volume/:volume_id",status="${status}"}`;
    const before = await scrape();
    expect((await get(url.volume(BLOCK_VOL))).status).toBe(200);
    expect((await get(url.volume(BLOCK_VOL))).status).toBe(200);
    const grown = await fetch(`${base}${url.volume(FILE_VOL)}`, { method: 'POST', headers: { 'x-auth-token': token, 'content-type': 'application/json' }, body: JSON.stringify({ onlineExtendVolume: { bytes: 2 * GiB } }) });
    expect(grown.status).toBe(200);
    const after = await scrape();
    expect((after.get(key(200)) ?? 0) - (before.get(key(200)) ?? 0)).toBe(2);
    expect(after.get('online_extend_compute_rpc_duration_seconds_count{method="extendAttached"}')).toBe(1);
    expect(after.get('online_extend_compute_rpc_duration_seconds_bucket{le="+Inf",method="extendAttached"}')).toBe(1);
    expect(series(after, 'online_extend_compute_rpc_duration_seconds_bucket{le=').filter((k) => k.endsWith('method="extendAttached"}')).length).toBeGreaterThan(5);
    expect(series(after, 'online_extend_http_request_duration_seconds_bucket').length).toBeGreaterThan(5);
  });

  it('counts 1,000 distinct unknown URLs under one bounded route label, adding no series per URL', async () => {
    // The first unknown URL and the first scrape make their series; from here nothing new should.
    await get('/nowhere/0');
    await scrape();
    const before = await scrape();
    for (let i = 1; i <= 1000; i++) expect((await get(`/nowhere/${i}?x=${i}`)).status).toBe(404);
    const after = await scrape();
    expect(after.size).toBe(before.size);
    expect(after.get('online_extend_http_requests_total{api="compute",method="GET",route="unmatched",status="404"}')).toBe(1001);
    expect([...after.keys()].some((k) => k.includes('nowhere'))).toBe(false);
  });
});

describe('GET /metrics: answers the router makes', () => {
  it.each([
    { name: 'a malformed percent-escape', path: `/v2.1/${TENANT}/servers/%zz`, status: 400 },
    { name: 'a parameter past the URL limit', path: `/v2.1/${TENANT}/servers/${'a'.repeat(9000)}`, status: 414 },
  ])('counts $name ($status) under the unmatched route, though it skips the hooks', async ({ path, status }) => {
    const key = `online_extend_http_requests_total{api="compute",method="GET",route="unmatched",status="${status}"}`;
    const before = (await scrape()).get(key) ?? 0;
    const res = await get(path);
    expect(res.status).toBe(status);
    expect((await scrape()).get(key)).toBe(before + 1);
  });
});

describe('GET /metrics: answers Node\'s HTTP layer makes before any route', () => {
  const port = () => Number(new URL(base).port);
  it.each([
    { name: 'an unknown method', raw: 'FROB /v2.1/servers HTTP/1.1\r\nHost: x\r\n\r\n', method: 'unparsed', status: 405 },
    { name: 'headers past the limit', raw: `GET /v2.1/servers HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, method: 'unparsed', status: 431 },
    { name: 'a malformed request line', raw: 'GET /v2.1/servers HTTP/9.9\r\nHost: x\r\n\r\n', method: 'unparsed', status: 400 },
    { name: 'CONNECT', raw: 'CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n', method: 'CONNECT', status: 405 },
  ])('counts $name ($status) under the unmatched route, with no URL in its labels', async ({ raw, method, status }) => {
    const key = `online_extend_http_requests_total{api="compute",method="${method}",route="unmatched",status="${status}"}`;
    const before = (await scrape()).get(key) ?? 0;
    const res = await rawRequest(port(), raw);
    expect(res.status).toBe(status);
    const after = await scrape();
    expect(after.get(key)).toBe(before + 1);
    expect([...after.keys()].some((k) => k.includes('v2.1/servers') || k.includes('example.org'))).toBe(false);
  });
});

describe('GET /metrics: answers never sent, or sent for a route, are not counted again', () => {
  const total = (m: Map<string, number>) => [...m].filter(([k]) => k.startsWith('online_extend_http_requests_total{')).reduce((n, [, v]) => n + v, 0);
  it.each([
    { name: 'headers sent, then the client closes', raw: 'GET /v2.1/ HTTP/1.1\r\nHost: x\r\n', end: true, answers: 0 },
    { name: 'a keep-alive client that starts a second request and closes', raw: `GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\nGE`, end: true, answers: 1 },
    {
      name: 'a malformed chunk on a real route',
      raw: `PUT /v2/${TENANT}/servers/s/os-online_extend_volume HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n`,
      end: false,
      answers: 1,
    },
  ])('$name: $answers answer(s) counted', async ({ raw, end, answers }) => {
    const before = total(await scrape());
    await new Promise<void>((resolve) => {
      const s = connect(Number(new URL(base).port), '127.0.0.1', () => (end ? s.end(raw) : s.write(raw)));
      s.resume();
      s.on('error', () => undefined);
      s.once('close', () => resolve());
      setTimeout(() => s.destroy(), 3000).unref();
    });
    await new Promise((r) => setTimeout(r, 100));
    // The scrape itself is not counted before it is answered.
    expect(total(await scrape()) - before).toBe(answers + 1);
  });
});

describe('GET /metrics: the connection guard\'s own answer', () => {
  it('counts the 503 that refuses a request pipelined past the limit (16) under the unmatched route', async () => {
    const key = 'online_extend_http_requests_total{api="compute",method="GET",route="unmatched",status="503"}';
    const before = (await scrape()).get(key) ?? 0;
    const one = `GET ${url.volume(BLOCK_VOL)} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: ${token}\r\n\r\n`;
    const res = await rawRequest(Number(new URL(base).port), one.repeat(20), { waitForClose: true });
    expect(res.status).toBe(200);
    expect((await scrape()).get(key)).toBe(before + 1);
  });
});

describe('Server-Timing', () => {
  const parts = serverTimingParts;

  // Without detail (the default) only auth and total; with it, each layer the request went through.
  it.each([
    ['a success', false, url.volume(BLOCK_VOL), 200, ['auth']],
    ['an error from the handler', false, url.volume('99999999-9999-4999-8999-999999999999'), 404, ['auth']],
    ['an unknown route', false, '/nowhere', 404, []],
    ['a success', true, url.volume(BLOCK_VOL), 200, ['auth', 'store', 'rpc', 'driver']],
    ['an error from the handler', true, url.volume('99999999-9999-4999-8999-999999999999'), 404, ['auth', 'store']],
    ['an unknown route', true, '/nowhere', 404, []],
  ])('is on %s (detail %s) with numeric durations, exactly its parts, total at least each part', async (_what, detail, path, status, expected) => {
    if (detail) {
      await built.app.close();
      built = await buildComputeApp({ store, driver: new FakeDriver({ servers: sampleServers() }), logger: pino({ level: 'silent' }), policy: new PolicyEnforcer({}), metrics: new Metrics(), timingDetail: true });
      base = await built.app.listen({ host: '127.0.0.1', port: 0 });
    }
    const res = await get(path);
    expect(res.status).toBe(status);
    const p = parts(res.headers.get('server-timing'));
    expect(p.total).toBeGreaterThanOrEqual(0);
    expect(Object.keys(p).sort()).toEqual([...expected, 'total'].sort());
    for (const name of expected) expect(p[name], name).toBeGreaterThanOrEqual(0);
    for (const [name, ms] of Object.entries(p)) if (name !== 'total') expect(ms, name).toBeLessThanOrEqual(p.total!);
  });
});
