/**
 * `serve`'s four APIs count their answers in the one /metrics, each under its own `api` label:
 * compute, volume, image and identity (logins refused included, which an operator watches), by
 * route pattern, with durations. Real service (fake driver, real HTTP, the identity API).
 */
import { STATUS_CODES } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeService, PROJECT, type ServiceHarness } from '../support/service.js';
import { parsePrometheusText } from '../support/prometheus.js';
import { pipelined, rawRequest } from '../support/rawHttp.js';
import { DEFAULT_HTTP_LIMITS } from '../../src/api/transport.js';

let h: ServiceHarness;
beforeAll(async () => {
  h = await makeService();
});
afterAll(async () => h.cleanup());

const scrape = async () => {
  const res = await fetch(`${h.service.computeUrl}/metrics`);
  expect(res.status).toBe(200);
  return parsePrometheusText(await res.text());
};
const key = (api: string, method: string, route: string, status: number) => `online_extend_http_requests_total{api="${api}",method="${method}",route="${route}",status="${status}"}`;
const login = (password: string) =>
  fetch(`${h.service.identityUrl}/v3/auth/tokens`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name: 'nobody', domain: { id: 'default' }, password } } }, scope: { project: { name: PROJECT, domain: { id: 'default' } } } } }),
  });

describe('GET /metrics: every API of serve', () => {
  it.each([
    { api: 'identity', method: 'POST', route: '/v3/auth/tokens', status: 401, send: () => login('wrong') },
    { api: 'identity', method: 'GET', route: 'unmatched', status: 404, send: () => fetch(`${h.service.identityUrl}/v3/nowhere/secret-id`) },
    { api: 'image', method: 'GET', route: '/v2/images', status: 200, send: () => fetch(`${h.service.imageUrl}/v2/images`, { headers: { 'x-auth-token': h.token } }) },
    { api: 'image', method: 'GET', route: '/v2/images', status: 401, send: () => fetch(`${h.service.imageUrl}/v2/images`) },
    { api: 'volume', method: 'GET', route: '/v3/:project_id/volumes', status: 200, send: () => fetch(`${h.service.volumeUrl}/v3/${PROJECT}/volumes`, { headers: { 'x-auth-token': h.token } }) },
  ])('counts $api $method $route $status once, with its duration, and no URL or id in the labels', async ({ api, method, route, status, send }) => {
    const before = await scrape();
    const res = await send();
    expect(res.status).toBe(status);
    const after = await scrape();
    expect(after.get(key(api, method, route, status))).toBe((before.get(key(api, method, route, status)) ?? 0) + 1);
    const count = `online_extend_http_request_duration_seconds_count{api="${api}",route="${route}"}`;
    expect(after.get(count)).toBe((before.get(count) ?? 0) + 1);
    expect([...after.keys()].some((k) => k.includes('secret-id') || k.includes('wrong'))).toBe(false);
  });
});

describe("the identity API's answers before any route: Keystone's error format, counted", () => {
  it.each([
    { name: 'a malformed percent-escape', raw: 'GET /v3/auth/%zz HTTP/1.1\r\nHost: x\r\n\r\n', method: 'GET', status: 400 },
    { name: 'an unknown method', raw: 'FROB /v3 HTTP/1.1\r\nHost: x\r\n\r\n', method: 'unparsed', status: 405 },
    { name: 'headers past the limit', raw: `GET /v3 HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, method: 'unparsed', status: 431 },
    { name: 'a malformed request line', raw: 'GET /v3 HTTP/9.9\r\nHost: x\r\n\r\n', method: 'unparsed', status: 400 },
    { name: 'CONNECT', raw: 'CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n', method: 'CONNECT', status: 405 },
  ])('$name: $status in Keystone\'s format, counted once under unmatched', async ({ raw, method, status }) => {
    const k = key('identity', method, 'unmatched', status);
    const before = (await scrape()).get(k) ?? 0;
    const res = await rawRequest(Number(new URL(h.service.identityUrl!).port), raw);
    expect(res.status).toBe(status);
    const body = JSON.parse(res.body) as { error?: { code?: number; message?: string; title?: string } };
    expect(body.error).toMatchObject({ code: status, title: STATUS_CODES[status] });
    expect(typeof body.error?.message).toBe('string');
    expect(res.headers['x-openstack-request-id']).toMatch(/^req-[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect((await scrape()).get(k)).toBe(before + 1);
  });

  it(`refuses a request pipelined past the limit (${DEFAULT_HTTP_LIMITS.maxPipelined}) with Keystone's 503 and closes, after answering those before it; counted once`, async () => {
    const limit = DEFAULT_HTTP_LIMITS.maxPipelined;
    const refusedKey = key('identity', 'GET', 'unmatched', 503);
    const routedKey = key('identity', 'GET', '/v3', 200);
    const before = await scrape();
    const { responses, closed } = await pipelined(Number(new URL(h.service.identityUrl!).port), Array.from({ length: 200 }, () => 'GET /v3 HTTP/1.1\r\nHost: x\r\n\r\n'));
    expect(responses.map((r) => r.status)).toEqual([...Array<number>(limit).fill(200), 503]);
    expect(closed).toBe(true);
    const refusal = responses.at(-1)!;
    expect(refusal.headers.connection).toBe('close');
    expect(JSON.parse(refusal.body)).toEqual({ error: { code: 503, title: 'Service Unavailable', message: expect.stringContaining(`More than ${limit} requests`) as unknown } });
    const after = await scrape();
    expect(after.get(refusedKey)).toBe((before.get(refusedKey) ?? 0) + 1);
    expect(after.get(routedKey)).toBe((before.get(routedKey) ?? 0) + limit);
  });
});


describe('request ids across the APIs of serve', () => {
  it('are req- and a UUIDv7 on the identity API as on the others, so ids made in different milliseconds sort by time across APIs', async () => {
    const urls = [h.service.identityUrl!, `${h.service.computeUrl}/`, `${h.service.identityUrl!}/v3`, h.service.imageUrl!, `${h.service.identityUrl!}/nowhere`];
    const ids: string[] = [];
    for (const url of urls) {
      const res = await fetch(url);
      await res.arrayBuffer();
      ids.push(res.headers.get('x-openstack-request-id') ?? '');
      await new Promise((r) => setTimeout(r, 3));
    }
    for (const id of ids) expect(id).toMatch(/^req-[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect([...ids].sort()).toEqual(ids);
  });
});
