/**
 * Hostile input changes nothing and reaches no driver: each row is a request that must be
 * refused with the given status and message, with the hypervisor's state and the driver's
 * acting calls (resize, rescan) exactly as before.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InjectOptions } from 'fastify';
import { BLOCK_VOL, GiB, OFF_SERVER, OFF_VOL, OTHER_SERVER, OTHER_TENANT, SERVER, TENANT, UNKNOWN, makeComputeApp, observableState, url, type TestComputeApp } from '../support/computeApp.js';

type Tok = 'admin' | 'member' | 'otherAdmin' | 'expired' | 'none' | 'garbage';
interface Row {
  name: string;
  method: 'GET' | 'PUT' | 'POST' | 'DELETE';
  path: string;
  token?: Tok;
  body?: string | object | null;
  contentType?: string | null;
  headers?: Record<string, string>;
  status: number;
  fault: string;
  message: RegExp;
}

const post = (body: unknown, extra: Partial<Row> = {}): Omit<Row, 'name' | 'status' | 'fault' | 'message'> => ({
  method: 'POST',
  path: url.volume(),
  body: typeof body === 'string' ? body : JSON.stringify(body),
  ...extra,
});
const put = (body: unknown, extra: Partial<Row> = {}): Omit<Row, 'name' | 'status' | 'fault' | 'message'> => ({
  method: 'PUT',
  path: url.rescan(),
  body: typeof body === 'string' ? body : JSON.stringify(body),
  ...extra,
});
const bad = (message: RegExp) => ({ status: 400, fault: 'badRequest', message });
const BYTES = /Invalid input for field\/attribute body\.onlineExtendVolume\.bytes/;

const rows: Row[] = [
  { name: 'bytes as a string', ...post({ onlineExtendVolume: { bytes: '2147483648' } }), ...bad(/bytes: must be integer/) },
  { name: 'bytes as a hex string', ...post({ onlineExtendVolume: { bytes: '0x80000000' } }), ...bad(BYTES) },
  { name: 'bytes fractional', ...post('{"onlineExtendVolume":{"bytes":1073741824.5}}'), ...bad(/must be integer/) },
  { name: 'bytes negative', ...post({ onlineExtendVolume: { bytes: -512 } }), ...bad(/must be >= 512/) },
  { name: 'bytes zero', ...post({ onlineExtendVolume: { bytes: 0 } }), ...bad(/must be >= 512/) },
  { name: 'bytes not a multiple of 512', ...post({ onlineExtendVolume: { bytes: 2 * GiB + 1 } }), ...bad(/must be a multiple of 512/) },
  { name: 'bytes above the maximum', ...post({ onlineExtendVolume: { bytes: 2 ** 60 } }), ...bad(/must be <= 1125899906842624/) },
  { name: 'bytes beyond double precision (Infinity)', ...post('{"onlineExtendVolume":{"bytes":1e400}}'), ...bad(BYTES) },
  { name: 'bytes null', ...post({ onlineExtendVolume: { bytes: null } }), ...bad(/must be integer/) },
  { name: 'bytes an array', ...post({ onlineExtendVolume: { bytes: [2147483648] } }), ...bad(/must be integer/) },
  { name: 'bytes an object', ...post({ onlineExtendVolume: { bytes: { $gt: 0 } } }), ...bad(/must be integer/) },
  { name: 'bytes a boolean', ...post({ onlineExtendVolume: { bytes: true } }), ...bad(/must be integer/) },
  { name: 'bytes missing', ...post({ onlineExtendVolume: {} }), ...bad(/'bytes' is a required property/) },
  { name: 'wrapper missing', ...post({}), ...bad(/'onlineExtendVolume' is a required property/) },
  { name: 'wrong wrapper key', ...post({ extend: { bytes: 2 * GiB } }), ...bad(/'onlineExtendVolume' is a required property/) },
  { name: 'unknown top-level field', ...post({ onlineExtendVolume: { bytes: 2 * GiB }, force: true }), ...bad(/'force' was unexpected/) },
  { name: 'unknown inner field', ...post({ onlineExtendVolume: { bytes: 2 * GiB, allow_shrink: true } }), ...bad(/'allow_shrink' was unexpected/) },
  { name: 'body a JSON array', ...post([{ onlineExtendVolume: { bytes: 2 * GiB } }]), ...bad(/body: must be object/) },
  { name: 'body a JSON string', ...post('"grow please"'), ...bad(/body: must be object/) },
  { name: 'body JSON null', ...post('null'), ...bad(/body/) },
  { name: 'malformed JSON', ...post('{"onlineExtendVolume":{"bytes":'), ...bad(/Malformed request body/) },
  { name: 'JSON with a trailing comma', ...post('{"onlineExtendVolume":{"bytes":2147483648,}}'), ...bad(/Malformed request body/) },
  { name: 'prototype pollution via __proto__', ...post('{"onlineExtendVolume":{"bytes":2147483648},"__proto__":{"isAdmin":true}}'), ...bad(/the key '__proto__' is not allowed/) },
  { name: 'prototype pollution via constructor', ...post('{"onlineExtendVolume":{"bytes":2147483648},"constructor":{"prototype":{"x":1}}}'), ...bad(/the key 'constructor' with a 'prototype' is not allowed/) },
  { name: 'duplicate keys, the last one a shrink', ...post('{"onlineExtendVolume":{"bytes":4294967296,"bytes":512}}'), ...bad(/Refusing to shrink/) },
  { name: 'a shrink to one sector', ...post({ onlineExtendVolume: { bytes: 512 } }), ...bad(/Refusing to shrink volume .* destroys data/) },
  { name: 'content type text/plain', ...post('{"onlineExtendVolume":{"bytes":2147483648}}', { contentType: 'text/plain' }), ...bad(/Unsupported Content-Type/) },
  { name: 'content type form-urlencoded', ...post('bytes=2147483648', { contentType: 'application/x-www-form-urlencoded' }), ...bad(/Unsupported Content-Type/) },
  { name: 'content type xml', ...post('<bytes>2147483648</bytes>', { contentType: 'application/xml' }), ...bad(/Unsupported Content-Type/) },
  { name: 'empty body with a JSON content type', ...post('', {}), ...bad(/empty/) },
  { name: 'oversized body', ...post(JSON.stringify({ onlineExtendVolume: { bytes: 2 * GiB }, pad: 'x'.repeat(100_000) })), status: 413, fault: 'overLimit', message: /larger than 65536 bytes/ },
  { name: 'rescan: volume_id not a UUID', ...put({ onlineExtendVolume: { volume_id: 'vol-1' } }), ...bad(/volume_id: must match pattern/) },
  { name: 'rescan: volume_id SQL injection', ...put({ onlineExtendVolume: { volume_id: "x' OR '1'='1" } }), ...bad(/volume_id/) },
  { name: 'rescan: volume_id a number', ...put({ onlineExtendVolume: { volume_id: 12345 } }), ...bad(/volume_id: must be string/) },
  { name: 'rescan: volume_id missing', ...put({ onlineExtendVolume: {} }), ...bad(/'volume_id' is a required property/) },
  { name: 'rescan: extra field', ...put({ onlineExtendVolume: { volume_id: BLOCK_VOL, force: 1 } }), ...bad(/'force' was unexpected/) },
  { name: 'rescan: volume not attached', ...put({ onlineExtendVolume: { volume_id: UNKNOWN } }), status: 404, fault: 'itemNotFound', message: /is not attached to instance/ },
  { name: 'rescan: unknown server', ...put({ onlineExtendVolume: { volume_id: BLOCK_VOL } }, { path: url.rescan(UNKNOWN) }), status: 404, fault: 'itemNotFound', message: /Instance .* could not be found/ },
  { name: 'path traversal in the server id', method: 'GET', path: `/v2/${TENANT}/servers/..%2F..%2Fetc%2Fpasswd/os-online_extend_volume/${BLOCK_VOL}`, status: 404, fault: 'itemNotFound', message: /could not be found/ },
  { name: 'SQL injection in the volume id', method: 'GET', path: url.volume("1'%20OR%20'1'%3D'1"), status: 404, fault: 'itemNotFound', message: /is not attached/ },
  { name: 'an over-long server id', method: 'GET', path: url.volume(BLOCK_VOL, 'a'.repeat(300)), ...bad(/must NOT have more than 255 characters/) },
  { name: 'a server of another tenant', ...post({ onlineExtendVolume: { bytes: 2 * GiB } }, { path: url.volume(BLOCK_VOL, OTHER_SERVER) }), status: 404, fault: 'itemNotFound', message: /could not be found/ },
  { name: 'another tenant’s admin reaching our server through its own URL', ...post({ onlineExtendVolume: { bytes: 2 * GiB } }, { path: url.volume(BLOCK_VOL, SERVER, OTHER_TENANT), token: 'otherAdmin' }), status: 404, fault: 'itemNotFound', message: /could not be found/ },
  { name: 'another tenant’s admin on our tenant’s URL', ...post({ onlineExtendVolume: { bytes: 2 * GiB } }, { token: 'otherAdmin' }), ...bad(/URL's project_id 'f66d7df4b59f4ab98a358a0dab0b238f' doesn't match Context's project_id '0ther0000000000000000000000000000'/) },
  { name: 'our admin on another tenant’s URL', ...post({ onlineExtendVolume: { bytes: 2 * GiB } }, { path: url.volume(BLOCK_VOL, SERVER, OTHER_TENANT) }), ...bad(/doesn't match Context's project_id/) },
  { name: 'path traversal in the tenant id', ...put({ onlineExtendVolume: { volume_id: BLOCK_VOL } }, { path: url.rescan(SERVER, '..%2F..%2Fetc') }), ...bad(/Malformed request URL: a project id is/) },
  { name: 'CRLF in the tenant id', ...put({ onlineExtendVolume: { volume_id: BLOCK_VOL } }, { path: url.rescan(SERVER, 'a%0D%0Ab') }), ...bad(/Malformed request URL/) },
  { name: 'a volume of another server', ...post({ onlineExtendVolume: { bytes: 2 * GiB } }, { path: url.volume(OFF_VOL) }), status: 404, fault: 'itemNotFound', message: /not attached/ },
  { name: 'a shut-off server', ...post({ onlineExtendVolume: { bytes: 2 * GiB } }, { path: url.volume(OFF_VOL, OFF_SERVER) }), status: 409, fault: 'conflictingRequest', message: /state shutoff/ },
  { name: 'no token', ...post({ onlineExtendVolume: { bytes: 2 * GiB } }, { token: 'none' }), status: 401, fault: 'unauthorized', message: /requires authentication/ },
  { name: 'a garbage token', ...post({ onlineExtendVolume: { bytes: 2 * GiB } }, { token: 'garbage' }), status: 401, fault: 'unauthorized', message: /invalid or has expired/ },
  { name: 'an expired token', ...post({ onlineExtendVolume: { bytes: 2 * GiB } }, { token: 'expired' }), status: 401, fault: 'unauthorized', message: /invalid or has expired/ },
  { name: 'a token in the Authorization header instead', ...post({ onlineExtendVolume: { bytes: 2 * GiB } }, { token: 'none', headers: { authorization: 'Bearer x' } }), status: 401, fault: 'unauthorized', message: /requires authentication/ },
  { name: 'a member (non-admin) token', ...post({ onlineExtendVolume: { bytes: 2 * GiB } }, { token: 'member' }), status: 403, fault: 'forbidden', message: /os_compute_api:os-online-extend-volume:assist_extend/ },
  { name: 'a member rescanning', ...put({ onlineExtendVolume: { volume_id: BLOCK_VOL } }, { token: 'member' }), status: 403, fault: 'forbidden', message: /rescan/ },
  { name: 'an unsupported method', method: 'DELETE', path: url.volume(), status: 404, fault: 'itemNotFound', message: /No route for DELETE/ },
];

describe('hostile input changes nothing and reaches no driver', () => {
  let t: TestComputeApp;
  beforeAll(async () => {
    t = await makeComputeApp();
  });
  afterAll(async () => t.close());

  it.each(rows)('$name → $status', async (row) => {
    const before = observableState(t);
    const tokens: Record<Tok, string | undefined> = { ...t.tokens, none: undefined, garbage: 'oe-garbage' };
    const token = tokens[row.token ?? 'admin'];
    const headers: Record<string, string> = { ...row.headers };
    if (token) headers['x-auth-token'] = token;
    if (row.body !== undefined && row.contentType !== null) headers['content-type'] = row.contentType ?? 'application/json';
    const req: InjectOptions = { method: row.method, url: row.path, headers };
    if (row.body !== undefined && row.body !== null) req.payload = row.body as string;
    const res = await t.app.inject(req);
    expect(res.statusCode).toBe(row.status);
    const body = res.json() as Record<string, { code: number; message: string }>;
    expect(Object.keys(body)).toEqual([row.fault]);
    expect(body[row.fault]!.code).toBe(row.status);
    expect(body[row.fault]!.message).toMatch(row.message);
    expect(observableState(t)).toEqual(before);
    expect(t.driver.calls.extendAttached).toBe(0);
    expect(t.driver.calls.rescan).toBe(0);
  });
});
