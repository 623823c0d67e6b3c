/**
 * The identity API's transport (identity/app.ts over api/transport): the pipelining limit of the
 * other APIs' ConnectionGuard, its 503 in Keystone's error format and counted once in the metrics;
 * every answer given before a route titled with its HTTP reason phrase; request ids `req-` and a
 * UUIDv7. Real HTTP on 127.0.0.1, real SQLite (in memory), a low pipelining limit (4).
 */
import { STATUS_CODES } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { SqliteStore } from '../../src/db/sqlite.js';
import { SqliteUserStore } from '../../src/db/users.js';
import { IdentityService } from '../../src/identity/keystone.js';
import { buildIdentityApp } from '../../src/identity/app.js';
import { Metrics } from '../../src/util/metrics.js';
import { parsePrometheusText } from '../support/prometheus.js';
import { pipelined, rawRequest } from '../support/rawHttp.js';

const LIMIT = 4;
const HEADERS_TIMEOUT_MS = 300;
const REQUEST_ID_V7 = /^req-[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

let store: SqliteStore;
let metrics: Metrics;
let app: Awaited<ReturnType<typeof buildIdentityApp>>;
let port: number;

beforeAll(async () => {
  store = new SqliteStore(':memory:');
  const identity = new IdentityService({ store, users: new SqliteUserStore(store.db), endpoints: { urls: () => ({}) }, tokenTtlMs: 60_000 });
  metrics = new Metrics();
  let base = '';
  app = await buildIdentityApp({ identity, logger: pino({ level: 'silent' }), baseUrl: () => base, metrics, limits: { maxPipelined: LIMIT, headersTimeoutMs: HEADERS_TIMEOUT_MS } });
  base = await app.listen({ host: '127.0.0.1', port: 0 });
  port = Number(new URL(base).port);
});
afterAll(async () => {
  await app?.close();
  await store?.close();
});

const counted = async (method: string, route: string, status: number): Promise<number> => {
  const samples = parsePrometheusText((await metrics.scrape()).body);
  return samples.get(`online_extend_http_requests_total{api="identity",method="${method}",route="${route}",status="${status}"}`) ?? 0;
};
/**
 * pipelined() for HEAD: answers to HEAD carry a Content-Length but no body, so each answer is
 * its head alone. Sends `requests` in one write and reads until the server closes or `expect` came.
 */
function pipelinedHeads(requests: string[], expectAnswers?: number): Promise<{ responses: Array<{ status: number; headers: Record<string, string>; body: string }>; closed: boolean; trailing: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(requests.join('')));
    let text = '';
    const heads = () => text.split('\r\n\r\n').slice(0, -1);
    const done = (closed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      const responses = heads().map((head) => {
        const [line, ...rest] = head.split('\r\n');
        const headers = Object.fromEntries(rest.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
        return { status: Number(/^HTTP\/1\.1 (\d{3}) /.exec(line ?? '')?.[1] ?? 0), headers, body: '' };
      });
      resolve({ responses, closed, trailing: text.slice(text.lastIndexOf('\r\n\r\n') + 4) });
    };
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`pipelinedHeads: ${heads().length} answers and no close`));
    }, 10_000);
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (expectAnswers !== undefined && heads().length >= expectAnswers) done(false);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => done(true));
  });
}
const keystoneError = (body: string) => (JSON.parse(body) as { error: { code: number; title: string; message: string } }).error;

describe('a client pipelining requests on the identity API (limit 4)', () => {
  it.each([
    { sent: 1, method: 'GET', name: 'answers a single request and keeps the connection open' },
    { sent: LIMIT, method: 'GET', name: 'answers as many pipelined requests as the limit and keeps the connection open' },
    { sent: LIMIT + 1, method: 'GET', name: "answers the limit, refuses the next with Keystone's 503 and closes" },
    { sent: 1000, method: 'GET', name: 'answers the limit of 1,000 pipelined requests, refuses one, closes, and never routes the rest' },
    { sent: 50, method: 'HEAD', name: 'answers the limit of 50 pipelined HEADs, refuses one with a 503 without a body, and closes' },
  ])('$name', async ({ sent, method }) => {
    const answered = Math.min(sent, LIMIT);
    const refused = sent > LIMIT;
    const routedBefore = await counted(method, '/v3', 200);
    const refusedBefore = await counted(method, 'unmatched', 503);
    const request = `${method} /v3 HTTP/1.1\r\nHost: keystone\r\n\r\n`;
    const requests = Array.from({ length: sent }, () => request);
    const { responses, closed, trailing } = method === 'HEAD' ? await pipelinedHeads(requests, refused ? undefined : sent) : { ...(await pipelined(port, requests, refused ? {} : { expect: sent })), trailing: '' };

    // Answers counted, not bytes: what one connection made the process build is the limit and one refusal.
    expect(responses.map((r) => r.status)).toEqual([...Array<number>(answered).fill(200), ...(refused ? [503] : [])]);
    expect(closed).toBe(refused);
    for (const r of responses) expect(r.headers['x-openstack-request-id']).toMatch(REQUEST_ID_V7);
    expect(new Set(responses.map((r) => r.headers['x-openstack-request-id'])).size).toBe(responses.length);
    expect(await counted(method, '/v3', 200)).toBe(routedBefore + answered);
    expect(await counted(method, 'unmatched', 503)).toBe(refusedBefore + (refused ? 1 : 0));
    const last = responses.at(-1)!;
    if (!refused) {
      expect(last.headers.connection).toBe('keep-alive');
      return;
    }
    expect(last.headers.connection).toBe('close');
    expect(last.headers['content-type']).toMatch(/^application\/json/);
    // A HEAD answer has no body (it would be read as the start of the next answer).
    if (method === 'HEAD') {
      expect(responses.every((r) => r.status > 0)).toBe(true);
      expect(trailing).toBe('');
      return;
    }
    const error = keystoneError(last.body);
    expect(error).toEqual({ code: 503, title: 'Service Unavailable', message: expect.stringContaining(`More than ${LIMIT} requests`) as unknown });
    expect(Object.keys(JSON.parse(last.body) as object)).toEqual(['error']);
  });
});

describe("the identity API's answers before any route: Keystone's format, titled with the HTTP reason phrase", () => {
  const LONG_ID = 'p'.repeat(300);
  it.each([
    { name: 'a malformed percent-escape', raw: 'GET /v3/auth/%zz HTTP/1.1\r\nHost: x\r\n\r\n', method: 'GET', route: 'unmatched', status: 400 },
    { name: 'an HTTP/1.1 request without Host', raw: 'GET /v3 HTTP/1.1\r\n\r\n', method: 'GET', route: '/v3', status: 400 },
    { name: 'an unknown method', raw: 'FROB /v3 HTTP/1.1\r\nHost: x\r\n\r\n', method: 'unparsed', route: 'unmatched', status: 405 },
    { name: 'CONNECT', raw: 'CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n', method: 'CONNECT', route: 'unmatched', status: 405 },
    { name: 'headers still arriving at the deadline', raw: 'GET /v3 HTTP/1.1\r\nHost: x\r\n', method: 'unparsed', route: 'unmatched', status: 408 },
    { name: 'a path parameter past the router limit', raw: `GET /v3/projects/${LONG_ID} HTTP/1.1\r\nHost: x\r\n\r\n`, method: 'GET', route: 'unmatched', status: 414 },
    { name: 'headers past the limit', raw: `GET /v3 HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, method: 'unparsed', route: 'unmatched', status: 431 },
  ])('$name: $status, counted once', async ({ raw, method, route, status }) => {
    const before = await counted(method, route, status);
    const res = await rawRequest(port, raw);
    expect(res.status).toBe(status);
    const error = keystoneError(res.body);
    expect(error).toEqual({ code: status, title: STATUS_CODES[status], message: expect.any(String) as unknown });
    expect(error.title).not.toBe('Error');
    expect(res.headers['x-openstack-request-id']).toMatch(REQUEST_ID_V7);
    expect(await counted(method, route, status)).toBe(before + 1);
  });
});

describe("the identity API's request ids", () => {
  it('are req- and a UUIDv7 on success and error answers alike, and sort by the time they were made', async () => {
    const ids: string[] = [];
    for (const path of ['/v3', '/nowhere', '/v3/auth/tokens', '/']) {
      const res = await fetch(`http://127.0.0.1:${port}${path}`);
      ids.push(res.headers.get('x-openstack-request-id') ?? '');
      await res.arrayBuffer();
      // UUIDv7 orders by millisecond: ids of different milliseconds sort in the order they were made.
      await new Promise((r) => setTimeout(r, 3));
    }
    for (const id of ids) expect(id).toMatch(REQUEST_ID_V7);
    expect([...ids].sort()).toEqual(ids);
  });
});
