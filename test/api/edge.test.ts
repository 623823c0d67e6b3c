/**
 * Every answer is in the API's format, including the ones Fastify's router and Node's HTTP
 * parser would give by themselves: a Nova fault body with the catalogue's error_code, and an
 * x-openstack-request-id. Each row goes over a bare TCP socket to a listening server, because
 * no HTTP client sends these requests, and `inject` would skip the parser they test.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AddressInfo } from 'node:net';
import { BLOCK_VOL, TENANT, makeComputeApp, observableState, url, type TestComputeApp } from '../support/computeApp.js';
import { rawRequest, type Chunk } from '../support/rawHttp.js';

const REQUEST_ID = /^req-[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

interface Row {
  name: string;
  /** The bytes to send; `TOKEN` is replaced with an admin token. */
  send: Chunk | Chunk[];
  status: number;
  code: string;
  message?: RegExp;
}

const get = (path: string, headers = 'Host: api\r\nX-Auth-Token: TOKEN\r\n') => `GET ${path} HTTP/1.1\r\n${headers}\r\n`;
const post = (path: string, head: string, body: string) =>
  `POST ${path} HTTP/1.1\r\nHost: api\r\nX-Auth-Token: TOKEN\r\nContent-Type: application/json\r\n${head}\r\n${body}`;

const rows: Row[] = [
  // The router (find-my-way) and Fastify's own answers.
  { name: 'a bad percent-escape in a server id', send: get(`/v2/${TENANT}/servers/%ZZ`), status: 400, code: 'BadRequest', message: /percent-encoding/ },
  { name: 'a truncated UTF-8 escape in the project', send: get('/v2/%E0%A4%A/servers'), status: 400, code: 'BadRequest', message: /percent-encoding/ },
  { name: 'a path parameter over 1,024 characters', send: get(url.volume(BLOCK_VOL, 'a'.repeat(1100))), status: 400, code: 'InvalidInput', message: /must NOT have more than 255 characters/ },
  { name: 'a path parameter over the URL limit', send: get(url.volume(BLOCK_VOL, 'a'.repeat(2100))), status: 414, code: 'UriTooLong', message: /longer than 2048/ },
  { name: 'a URL over 2,048 characters on no route', send: get(`/nowhere?${'q'.repeat(3000)}`), status: 414, code: 'UriTooLong' },
  { name: 'a method HTTP knows and no route takes (PROPFIND)', send: `PROPFIND /v2/${TENANT}/servers HTTP/1.1\r\nHost: api\r\n\r\n`, status: 404, code: 'NotFound', message: /No route for PROPFIND/ },
  { name: 'OPTIONS *', send: 'OPTIONS * HTTP/1.1\r\nHost: api\r\n\r\n', status: 404, code: 'NotFound' },
  // Node's HTTP parser (llhttp) and Node's own answers.
  { name: 'headers over 16 KB in one header', send: get(url.volume(), `Host: api\r\nX-Pad: ${'a'.repeat(17_000)}\r\n`), status: 431, code: 'HeadersTooLarge', message: /16384 bytes/ },
  { name: 'headers over 16 KB in many small ones', send: get(url.volume(), `Host: api\r\n${Array.from({ length: 400 }, (_, i) => `X-H${i}: ${'b'.repeat(40)}\r\n`).join('')}`), status: 431, code: 'HeadersTooLarge' },
  { name: 'a request line over 16 KB', send: get(`/v2/${'x'.repeat(17_000)}`), status: 431, code: 'HeadersTooLarge' },
  { name: 'a garbage request line', send: 'HELLO THERE\r\n\r\n', status: 400, code: 'BadRequest', message: /Malformed HTTP request/ },
  { name: 'binary garbage', send: Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03]), status: 400, code: 'BadRequest' },
  { name: 'an unknown method', send: `FOO ${url.volume()} HTTP/1.1\r\nHost: api\r\n\r\n`, status: 405, code: 'MethodNotAllowed', message: /Method FOO is not allowed/ },
  { name: 'a lower-case method', send: `get ${url.volume()} HTTP/1.1\r\nHost: api\r\n\r\n`, status: 405, code: 'MethodNotAllowed' },
  { name: 'CONNECT (Node would drop the socket)', send: 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', status: 405, code: 'MethodNotAllowed', message: /CONNECT/ },
  { name: 'an HTTP/2 preface', send: 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', status: 400, code: 'BadRequest', message: /HTTP\/2/ },
  { name: 'an unknown HTTP version', send: 'GET / HTTP/9.9\r\nHost: api\r\n\r\n', status: 400, code: 'BadRequest' },
  { name: 'HTTP/1.1 without Host (Node would send a bare 400)', send: `GET ${url.volume()} HTTP/1.1\r\nX-Auth-Token: TOKEN\r\n\r\n`, status: 400, code: 'BadRequest', message: /Host header/ },
  { name: 'a NUL in a header value', send: get(url.volume(), 'Host: api\r\nX-A: a\u0000b\r\n'), status: 400, code: 'BadRequest' },
  { name: 'a space in a header name', send: get(url.volume(), 'Host: api\r\nX A: b\r\n'), status: 400, code: 'BadRequest' },
  { name: 'a raw non-ASCII byte in the URL', send: Buffer.concat([Buffer.from('GET /v2/'), Buffer.from([0xff, 0x00]), Buffer.from(' HTTP/1.1\r\nHost: api\r\n\r\n')]), status: 400, code: 'BadRequest' },
  { name: 'an invalid chunk size', send: post(url.volume(), 'Transfer-Encoding: chunked\r\n', 'ZZ\r\nabc\r\n'), status: 400, code: 'BadRequest', message: /chunk size/ },
  { name: 'a chunk without its CRLF', send: post(url.volume(), 'Transfer-Encoding: chunked\r\n', '5\r\nabcdefgh'), status: 400, code: 'BadRequest' },
  { name: 'Content-Length and Transfer-Encoding together', send: post(url.volume(), 'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n', '0\r\n\r\n'), status: 400, code: 'BadRequest' },
  { name: 'two different Content-Lengths', send: post(url.volume(), 'Content-Length: 5\r\nContent-Length: 6\r\n', '{}'), status: 400, code: 'BadRequest' },
  { name: 'a negative Content-Length', send: post(url.volume(), 'Content-Length: -1\r\n', '{}'), status: 400, code: 'BadRequest' },
  { name: 'an unknown Transfer-Encoding', send: post(url.volume(), 'Transfer-Encoding: gzip, identity\r\n', '{}'), status: 400, code: 'BadRequest' },
  // Node answers an unknown Expect with a bare 417; we serve the request (RFC 9110 allows it): here, no token.
  { name: 'an unknown Expect value', send: `GET ${url.volume()} HTTP/1.1\r\nHost: api\r\nExpect: teapot\r\n\r\n`, status: 401, code: 'Unauthorized' },
];

describe('every answer is a Nova fault with an error_code and a request id, whoever gives it', () => {
  let t: TestComputeApp;
  let port: number;
  beforeAll(async () => {
    t = await makeComputeApp();
    await t.app.listen({ host: '127.0.0.1', port: 0 });
    port = (t.app.server.address() as AddressInfo).port;
  });
  afterAll(async () => t.close());

  it.each(rows)('$name → $status $code', async (row) => {
    const before = observableState(t);
    const fill = (c: Chunk): Chunk => (typeof c === 'string' ? c.replace('TOKEN', t.tokens.admin) : c);
    const send = Array.isArray(row.send) ? row.send.map(fill) : fill(row.send);
    const res = await rawRequest(port, send);
    expect(res.status).toBe(row.status);
    expect(res.headers['x-openstack-request-id']).toMatch(REQUEST_ID);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    const body = JSON.parse(res.body) as Record<string, { code: number; message: string; error_code: string; final: boolean }>;
    const faults = Object.values(body);
    expect(faults).toHaveLength(1);
    expect(faults[0]).toMatchObject({ code: row.status, error_code: row.code, final: expect.any(Boolean) as boolean });
    if (row.message) expect(faults[0]!.message).toMatch(row.message);
    expect(observableState(t)).toEqual(before);
  });

  it('answers a well-formed request on the same kind of socket normally (the inverse)', async () => {
    const res = await rawRequest(port, get(url.volume()).replace('TOKEN', t.tokens.admin));
    expect(res.status).toBe(200);
    expect(res.headers['x-openstack-request-id']).toMatch(REQUEST_ID);
    expect(JSON.parse(res.body)).toEqual({ volume_blockdev: { id: BLOCK_VOL, bytes: expect.any(Number) as number } });
  });

  it('answers a body that turns out malformed after routing, then closes the connection', async () => {
    // The request was routed (and got its id) before the parser failed in the body.
    const res = await rawRequest(port, [post(url.volume(), 'Transfer-Encoding: chunked\r\n', '').replace('TOKEN', t.tokens.admin), { afterMs: 100, data: 'ZZ\r\n' }], {
      waitForClose: true,
    });
    expect(res.status).toBe(400);
    expect(res.headers['x-openstack-request-id']).toMatch(REQUEST_ID);
    expect(res.closed).toBe(true);
  });
});
