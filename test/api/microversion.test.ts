/**
 * Microversions on the wire, as Nova and Cinder negotiate them (docs/notes/f-openstack-on-the-wire.md
 * §3), and body-less requests that carry `Content-Type: application/json` (tempest's DELETEs):
 * every row goes over real HTTP to a whole service (both APIs) on the fake driver.
 */
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';
import { ApiVersion, COMPUTE_VERSIONS, negotiateVersion, type MicroversionRange } from '../../src/api/microversion.js';
import { createServer } from '../../src/api/server.js';
import { isServiceError } from '../../src/errors.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { TokenAuthenticator } from '../../src/auth/tokens.js';
import { PolicyEnforcer } from '../../src/auth/policy.js';

const MiB = 2 ** 20;
const UNKNOWN_UUID = '99999999-9999-4999-8999-999999999999';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One request exactly as written (node:http sends no header it was not given but Host and, for a body, none we do not set). */
function send(base: string, method: string, path: string, headers: Record<string, string>, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(new URL(path, base), { method, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

let h: ServiceHarness;
beforeAll(async () => {
  h = await makeService();
});
afterAll(async () => h.cleanup());

const api = (which: 'compute' | 'volume') => (which === 'compute' ? h.service.computeUrl : h.service.volumeUrl!);
const probe = { compute: `/v2/${PROJECT}/servers/${SERVER}`, volume: `/v3/${PROJECT}/volumes` };

interface Row {
  name: string;
  api: 'compute' | 'volume';
  headers: Record<string, string>;
  status: number;
  /** The version echoed on a success; undefined: none is echoed (negotiation refused the request). */
  echo?: string;
  message?: string;
}

const COMPUTE_MAX = String(COMPUTE_VERSIONS.max);
const NOT_ACCEPTABLE_COMPUTE = (v: string) => `Version ${v} is not supported by the API. Minimum is 2.1 and maximum is ${COMPUTE_MAX}.`;
const NOT_ACCEPTABLE_VOLUME = (v: string) => `Version ${v} is not supported by the API. Minimum is 3.0 and maximum is 3.42.`;
const INVALID = (v: string) => `API Version String ${v} is of invalid format. Must be of format MajorNum.MinorNum.`;

const rows: Row[] = [
  { name: 'no header gets the minimum', api: 'compute', headers: {}, status: 200, echo: '2.1' },
  { name: 'compute 2.1', api: 'compute', headers: { 'OpenStack-API-Version': 'compute 2.1' }, status: 200, echo: '2.1' },
  { name: 'the service name in capitals', api: 'compute', headers: { 'openstack-api-version': 'COMPUTE 2.1' }, status: 200, echo: '2.1' },
  { name: 'latest gets the maximum', api: 'compute', headers: { 'OpenStack-API-Version': 'compute latest' }, status: 200, echo: COMPUTE_MAX },
  { name: 'several services in one header', api: 'compute', headers: { 'OpenStack-API-Version': 'volume 3.71, compute 2.1, placement 1.39' }, status: 200, echo: '2.1' },
  { name: 'several services, the compute entry out of range', api: 'compute', headers: { 'OpenStack-API-Version': 'volume 3.0, compute 2.52' }, status: 406, message: NOT_ACCEPTABLE_COMPUTE('2.52') },
  { name: 'a header naming only another service falls back to the minimum', api: 'compute', headers: { 'OpenStack-API-Version': 'volume 3.0' }, status: 200, echo: '2.1' },
  { name: 'the legacy header', api: 'compute', headers: { 'X-OpenStack-Nova-API-Version': '2.1' }, status: 200, echo: '2.1' },
  { name: 'the legacy header at latest', api: 'compute', headers: { 'X-OpenStack-Nova-API-Version': 'latest' }, status: 200, echo: COMPUTE_MAX },
  { name: 'the legacy header at 2.51 (Cinder calling Nova)', api: 'compute', headers: { 'X-OpenStack-Nova-API-Version': '2.51' }, status: 200, echo: '2.51' },
  { name: 'the legacy header out of range', api: 'compute', headers: { 'X-OpenStack-Nova-API-Version': '2.52' }, status: 406, message: NOT_ACCEPTABLE_COMPUTE('2.52') },
  { name: 'the standard header wins over the legacy one', api: 'compute', headers: { 'OpenStack-API-Version': 'compute 2.1', 'X-OpenStack-Nova-API-Version': '2.99' }, status: 200, echo: '2.1' },
  { name: 'a version above the maximum', api: 'compute', headers: { 'OpenStack-API-Version': 'compute 3.0' }, status: 406, message: NOT_ACCEPTABLE_COMPUTE('3.0') },
  { name: 'a minor past exact numbers, quoted as sent', api: 'compute', headers: { 'OpenStack-API-Version': 'compute 2.99999999999999999999' }, status: 406, message: NOT_ACCEPTABLE_COMPUTE('2.99999999999999999999') },
  { name: 'a version below the minimum', api: 'compute', headers: { 'OpenStack-API-Version': 'compute 2.0' }, status: 406, message: NOT_ACCEPTABLE_COMPUTE('2.0') },
  { name: 'a version without a minor number', api: 'compute', headers: { 'OpenStack-API-Version': 'compute 2' }, status: 400, message: INVALID('2') },
  { name: 'a minor number with a leading zero', api: 'compute', headers: { 'OpenStack-API-Version': 'compute 2.01' }, status: 400, message: INVALID('2.01') },
  { name: 'latest in capitals (Nova matches it exactly)', api: 'compute', headers: { 'OpenStack-API-Version': 'compute LATEST' }, status: 400, message: INVALID('LATEST') },
  { name: 'a malformed legacy header', api: 'compute', headers: { 'X-OpenStack-Nova-API-Version': 'v2.1' }, status: 400, message: INVALID('v2.1') },

  { name: 'no header gets the minimum', api: 'volume', headers: {}, status: 200, echo: '3.0' },
  { name: 'volume 3.0', api: 'volume', headers: { 'OpenStack-API-Version': 'volume 3.0' }, status: 200, echo: '3.0' },
  { name: 'the service name capitalised', api: 'volume', headers: { 'openstack-api-version': 'Volume 3.0' }, status: 200, echo: '3.0' },
  { name: 'latest gets the maximum', api: 'volume', headers: { 'OpenStack-API-Version': 'volume latest' }, status: 200, echo: '3.42' },
  { name: 'several services in one header', api: 'volume', headers: { 'OpenStack-API-Version': 'compute 2.51, volume 3.0' }, status: 200, echo: '3.0' },
  { name: "tempest's volume 3.42, the maximum", api: 'volume', headers: { 'OpenStack-API-Version': 'volume 3.42' }, status: 200, echo: '3.42' },
  { name: 'volume 3.13, between', api: 'volume', headers: { 'OpenStack-API-Version': 'volume 3.13' }, status: 200, echo: '3.13' },
  { name: "cinderclient's default 3.70, above the maximum", api: 'volume', headers: { 'OpenStack-API-Version': 'volume 3.70' }, status: 406, message: NOT_ACCEPTABLE_VOLUME('3.70') },
  { name: 'volume 3.43, just above the maximum', api: 'volume', headers: { 'OpenStack-API-Version': 'volume 3.43' }, status: 406, message: NOT_ACCEPTABLE_VOLUME('3.43') },
  { name: 'a version below the minimum', api: 'volume', headers: { 'OpenStack-API-Version': 'volume 2.0' }, status: 406, message: NOT_ACCEPTABLE_VOLUME('2.0') },
  { name: 'a version without a minor number', api: 'volume', headers: { 'OpenStack-API-Version': 'volume 3' }, status: 400, message: INVALID('3') },
  { name: 'a header with no volume entry (Cinder refuses it)', api: 'volume', headers: { 'OpenStack-API-Version': 'compute 2.1' }, status: 400 },
  { name: "Nova's legacy header is not read", api: 'volume', headers: { 'X-OpenStack-Nova-API-Version': '2.99' }, status: 200, echo: '3.0' },
];

function expectEcho(a: Answer, which: 'compute' | 'volume', version: string): void {
  expect(a.headers['openstack-api-version']).toBe(`${which} ${version}`);
  if (which === 'compute') expect(a.headers['x-openstack-nova-api-version']).toBe(version);
  else expect(a.headers['x-openstack-nova-api-version']).toBeUndefined();
  const vary = String(a.headers.vary ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase());
  expect(vary).toContain('openstack-api-version');
  if (which === 'compute') expect(vary).toContain('x-openstack-nova-api-version');
  else expect(vary).not.toContain('x-openstack-nova-api-version');
}

describe('microversion negotiation over HTTP', () => {
  it.each(rows)('$api: $name → $status', async (row) => {
    const a = await send(api(row.api), 'GET', probe[row.api], { 'x-auth-token': h.token, ...row.headers });
    expect(a.status, a.body).toBe(row.status);
    if (row.echo !== undefined) {
      expectEcho(a, row.api, row.echo);
      return;
    }
    // Negotiation refused the request: no version was chosen, none is echoed.
    expect(a.headers['openstack-api-version']).toBeUndefined();
    expect(a.headers['x-openstack-nova-api-version']).toBeUndefined();
    const fault = row.status === 406 ? 'computeFault' : 'badRequest';
    const body = JSON.parse(a.body) as Record<string, { code: number; message: string; error_code: string; final: boolean }>;
    expect(Object.keys(body)).toEqual([fault]);
    expect(body[fault]).toMatchObject({ code: row.status, error_code: row.status === 406 ? 'VersionNotAcceptable' : 'BadRequest', final: true });
    if (row.message) expect(body[fault]!.message).toBe(row.message);
    else expect(body[fault]!.message).toMatch(/names no version for the volume API/);
  });

  it.each([
    { name: 'an unknown server (404)', which: 'compute' as const, path: `/v2/${PROJECT}/servers/${UNKNOWN_UUID}`, token: true, status: 404 },
    { name: 'an unknown volume (404)', which: 'volume' as const, path: `/v3/${PROJECT}/volumes/${UNKNOWN_UUID}`, token: true, status: 404 },
    { name: 'no route (404)', which: 'compute' as const, path: '/v2/nowhere', token: true, status: 404 },
    { name: "a bad percent-escape the router refuses (400)", which: 'compute' as const, path: '/v2/%zz/servers', token: true, status: 400 },
    { name: "a bad percent-escape the router refuses (400)", which: 'volume' as const, path: '/v3/%zz/volumes', token: true, status: 400 },
    { name: 'no token (401)', which: 'compute' as const, path: probe.compute, token: false, status: 401 },
    { name: 'no token (401)', which: 'volume' as const, path: probe.volume, token: false, status: 401 },
  ])('$which: an error answer still carries the version and Vary: $name', async (c) => {
    const headers: Record<string, string> = { 'OpenStack-API-Version': `${c.which} latest` };
    if (c.token) headers['x-auth-token'] = h.token;
    const a = await send(api(c.which), 'GET', c.path, headers);
    expect(a.status).toBe(c.status);
    // `latest`: each API's maximum.
    expectEcho(a, c.which, c.which === 'compute' ? COMPUTE_MAX : '3.42');
  });

  it('adds its names to a Vary header once, whatever the case the header was asked with', async () => {
    const a = await send(api('compute'), 'GET', probe.compute, { 'x-auth-token': h.token, 'openstack-api-version': 'compute 2.1', 'x-openstack-nova-api-version': '2.1' });
    expect(String(a.headers.vary)).toBe('OpenStack-API-Version, X-OpenStack-Nova-API-Version');
  });
});

describe('negotiateVersion', () => {
  // A wider range than we advertise, to show the comparisons are numeric (2.10 is above 2.9).
  const wide: MicroversionRange = { ...COMPUTE_VERSIONS, max: new ApiVersion(2, 51) };
  it.each([
    { asked: undefined, served: '2.1' },
    { asked: 'compute 2.9', served: '2.9' },
    { asked: 'compute 2.10', served: '2.10' },
    { asked: 'compute 2.51', served: '2.51' },
    { asked: 'compute latest', served: '2.51' },
    { asked: 'compute 2.1, compute 2.10', served: '2.10' },
    { asked: 'compute 2.52', refused: 406 },
    { asked: 'compute 10.1', refused: 406 },
    { asked: 'compute 2.5.1', refused: 400 },
  ])('serves $asked at $served (or refuses it with $refused) when the range is 2.1–2.51', ({ asked, served, refused }) => {
    const headers = asked === undefined ? {} : { 'openstack-api-version': asked };
    if (refused === undefined) {
      expect(String(negotiateVersion(headers, wide))).toBe(served);
      return;
    }
    let status: number | undefined;
    try {
      negotiateVersion(headers, wide);
    } catch (err) {
      status = isServiceError(err) ? err.status : -1;
    }
    expect(status).toBe(refused);
  });

  it('gives route handlers the negotiated version as req.apiVersion', async () => {
    const store = new SqliteStore(':memory:');
    const app = await createServer({ logger: pino({ level: 'silent' }), auth: new TokenAuthenticator(store), policy: new PolicyEnforcer(), title: 't', service: 'compute' });
    app.get('/probe', async (req) => ({ version: String(req.apiVersion), atLeast21: req.apiVersion.atLeast(new ApiVersion(2, 1)) }));
    try {
      const r = await app.inject({ method: 'GET', url: '/probe', headers: { 'x-openstack-nova-api-version': 'latest' } });
      expect(r.json()).toEqual({ version: COMPUTE_MAX, atLeast21: true });
      expect(r.headers['openstack-api-version']).toBe(`compute ${COMPUTE_MAX}`);
    } finally {
      await app.close();
      await store.close();
    }
  });
});

describe('body-less requests with a JSON content type', () => {
  const JSON_NO_BODY = { 'content-type': 'application/json', 'content-length': '0' };

  async function newVolume(): Promise<string> {
    return (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 64 * MiB } })).body.volume.id;
  }
  async function volumeCount(): Promise<number> {
    return (await h.volume.request<{ volumes: unknown[] }>('GET', `/v3/${PROJECT}/volumes`)).body.volumes.length;
  }

  it('deletes a volume on a DELETE with Content-Type: application/json and no body (202, empty)', async () => {
    const id = await newVolume();
    const a = await send(api('volume'), 'DELETE', `/v3/${PROJECT}/volumes/${id}`, { 'x-auth-token': h.token, ...JSON_NO_BODY });
    expect(a.status, a.body).toBe(202);
    expect(a.body).toBe('');
    expectEcho(a, 'volume', '3.0');
    expect((await send(api('volume'), 'GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`, { 'x-auth-token': h.token })).status).toBe(404);
  });

  it('detaches a volume on a DELETE with Content-Type: application/json and no body (202)', async () => {
    const id = await newVolume();
    await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
    const a = await send(api('compute'), 'DELETE', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments/${id}`, { 'x-auth-token': h.token, ...JSON_NO_BODY });
    expect(a.status, a.body).toBe(202);
    expectEcho(a, 'compute', '2.1');
    const attached = (await h.compute.request<{ volumeAttachments: Array<{ volumeId: string }> }>('GET', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`)).body;
    expect(attached.volumeAttachments.map((x) => x.volumeId)).not.toContain(id);
  });

  it('answers a GET with Content-Type: application/json and no body', async () => {
    const a = await send(api('volume'), 'GET', `/v3/${PROJECT}/volumes`, { 'x-auth-token': h.token, ...JSON_NO_BODY });
    expect(a.status).toBe(200);
  });

  it.each([
    { name: 'create a volume, JSON content type', which: 'volume' as const, path: `/v3/${PROJECT}/volumes`, headers: JSON_NO_BODY },
    { name: 'create a volume, no content type', which: 'volume' as const, path: `/v3/${PROJECT}/volumes`, headers: { 'content-length': '0' } },
    { name: 'attach, JSON content type', which: 'compute' as const, path: `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, headers: JSON_NO_BODY },
  ])('refuses a POST that needs a body and has none with 400, changing nothing: $name', async (c) => {
    const before = await volumeCount();
    const a = await send(api(c.which), 'POST', c.path, { 'x-auth-token': h.token, ...c.headers });
    expect(a.status).toBe(400);
    expect(JSON.parse(a.body)).toEqual({ badRequest: { code: 400, message: 'The request body is empty; a JSON object is required.', error_code: 'BadRequest', final: true } });
    expectEcho(a, c.which, c.which === 'compute' ? '2.1' : '3.0');
    expect(await volumeCount()).toBe(before);
  });
});
