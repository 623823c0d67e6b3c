/**
 * The project in the URL must be the token's (Nova's and Cinder's "Malformed request URL: URL's
 * project_id … doesn't match Context's project_id …"), for admins too; only tokens with the
 * `service` role (our volume service calling compute) are exempt. Project ids outside the
 * documented alphabet are a 400. Every route of both APIs is walked, taken from /openapi.json so
 * a new route cannot be missed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { SqliteStore } from '../../src/db/sqlite.js';
import { issueToken } from '../../src/auth/tokens.js';
import type { FakeDriver } from '../../src/virt/fake/driver.js';
import { makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;
const OTHER = 'project-b';
const REQUEST_ID = /^req-[0-9a-f-]{36}$/;
const FLAVOR = 'f-small';

interface Answer {
  status: number;
  requestId: string | undefined;
  body: Record<string, { code: number; message: string; error_code: string }>;
}

/** node:http sends the path exactly as given (fetch would resolve `..` and re-encode). */
function call(base: string, method: string, path: string, token: string | undefined, body?: unknown): Promise<Answer> {
  const u = new URL(base);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: u.hostname,
        port: u.port,
        method,
        path,
        headers: { ...(token ? { 'x-auth-token': token } : {}), ...(payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          const id = res.headers['x-openstack-request-id'];
          resolve({ status: res.statusCode ?? 0, requestId: typeof id === 'string' ? id : undefined, body: text ? (JSON.parse(text) as Answer['body']) : {} });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

let h: ServiceHarness;
const tokens = { ownAdmin: '', otherAdmin: '', otherMember: '', service: '' };
let attached: string;
let available: string;
let actionId: string;

beforeAll(async () => {
  h = await makeService();
  tokens.ownAdmin = h.token;
  const store = new SqliteStore(join(h.config.dataDir, 'online-extend.sqlite'));
  const mk = async (projectId: string, roles: string[]) => (await issueToken(store, { userId: `u-${projectId}-${roles.join('-')}`, projectId, roles, ttlMs: 3_600_000 })).token;
  tokens.otherAdmin = await mk(OTHER, ['admin']);
  tokens.otherMember = await mk(OTHER, ['member']);
  tokens.service = await mk('service', ['admin', 'service']);
  await store.putFlavor({ id: FLAVOR, name: 'small', vcpus: 1, ramMb: 128, diskGb: 1, ephemeralGb: 0, swapMb: 0, isPublic: true, description: null });
  await store.close();
  const create = async () => (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 64 * MiB } })).body.volume.id;
  attached = await create();
  available = await create();
  await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: attached } });
  const actions = await h.compute.request<{ instanceActions: Array<{ request_id: string }> }>('GET', `/v2/${PROJECT}/servers/${SERVER}/os-instance-actions`);
  actionId = actions.body.instanceActions[0]!.request_id;
});
afterAll(async () => h.cleanup());

/** A valid body for every route that takes one: without the project check, each would succeed. */
function bodyFor(method: string, path: string): unknown {
  // Compute routes are served under /v2/{tenant_id} and /v2.1/{project_id} alike.
  const key = `${method} ${path.replace(/^\/v2\.1\/\{project_id\}/, '/v2/{tenant_id}')}`;
  const bodies: Record<string, unknown> = {
    'PUT /v2/{tenant_id}/servers/{server_id}/os-online_extend_volume': { onlineExtendVolume: { volume_id: attached } },
    'POST /v2/{tenant_id}/servers/{server_id}/os-online_extend_volume/{volume_id}': { onlineExtendVolume: { bytes: 128 * MiB } },
    'POST /v2/{tenant_id}/servers/{server_id}/os-volume_attachments': { volumeAttachment: { volumeId: available } },
    'POST /v3/{project_id}/volumes': { volume: { size_bytes: 64 * MiB } },
    'POST /v2.1/{project_id}/os-server-external-events': { events: [{ name: 'network-changed', server_uuid: SERVER }] },
    'POST /v2/{tenant_id}/os-server-external-events': { events: [{ name: 'network-changed', server_uuid: SERVER }] },
    'POST /v2/{tenant_id}/servers': { server: { name: 'vm', imageRef: 'img', flavorRef: FLAVOR } },
    'POST /v2.1/{project_id}/servers': { server: { name: 'vm', imageRef: 'img', flavorRef: FLAVOR } },
    'POST /v3/{project_id}/volumes/{volume_id}/action': { 'os-extend-bytes': { new_bytes: 128 * MiB } },
    'PUT /v3/{project_id}/volumes/{volume_id}': { volume: { name: 'renamed' } },
    'POST /v3/{project_id}/volumes/{volume_id}/metadata': { metadata: { purpose: 'test' } },
    'PUT /v2/{tenant_id}/os-services/{action}': { host: h.config.computeHost, binary: 'nova-compute' },
  };
  if (method === 'GET' || method === 'DELETE') return undefined;
  if (!(key in bodies)) throw new Error(`no body for ${key}: add one to this table`);
  return bodies[key];
}

async function routes(): Promise<Array<{ base: string; method: string; template: string }>> {
  const out: Array<{ base: string; method: string; template: string }> = [];
  for (const base of [h.service.computeUrl, h.service.volumeUrl!]) {
    const doc = (await (await fetch(`${base}/openapi.json`)).json()) as { paths: Record<string, Record<string, unknown>> };
    // Only the routes with a project in the URL: the version documents (`/`, `/v2.1`, `/v3`) have none.
    for (const [template, ops] of Object.entries(doc.paths)) {
      if (!/\{(tenant_id|project_id)\}/.test(template)) continue;
      for (const m of Object.keys(ops)) out.push({ base, method: m.toUpperCase(), template });
    }
  }
  return out;
}

function fill(template: string, project: string): string {
  return template
    .replace('{tenant_id}', project)
    .replace('{project_id}', project)
    .replace('{server_id}', SERVER)
    .replace('{volume_id}', attached)
    .replace('{request_id}', actionId)
    .replace('{flavor_id}', FLAVOR)
    .replace('{action}', 'disable');
}

/** Everything a request could have changed, seen by the owner of project A and by project B. */
async function observable() {
  const own = await h.volume.request<{ volumes: unknown[] }>('GET', `/v3/${PROJECT}/volumes/detail`);
  const other = await call(h.service.volumeUrl!, 'GET', `/v3/${OTHER}/volumes/detail`, tokens.otherAdmin);
  const servers = await h.compute.request<unknown>('GET', `/v2/${PROJECT}/servers/detail`);
  const actions = await h.compute.request<{ instanceActions: unknown[] }>('GET', `/v2/${PROJECT}/servers/${SERVER}/os-instance-actions`);
  return { own: own.body, other: other.body, servers: servers.body, actions: actions.body.instanceActions.length, hypervisor: (h.service.driver as FakeDriver).snapshot(SERVER) };
}

describe("the URL's project must be the token's", () => {
  it('refuses an admin of project B on every route under /v2/A and /v3/A with 400, and nothing changes', async () => {
    const all = await routes();
    expect(all.length).toBeGreaterThanOrEqual(15);
    const before = await observable();
    for (const r of all) {
      for (const token of [tokens.otherAdmin, tokens.otherMember]) {
        const res = await call(r.base, r.method, fill(r.template, PROJECT), token, bodyFor(r.method, r.template));
        expect({ route: `${r.method} ${r.template}`, status: res.status }).toEqual({ route: `${r.method} ${r.template}`, status: 400 });
        expect(res.body.badRequest).toMatchObject({
          error_code: 'ProjectMismatch',
          message: `Malformed request URL: URL's project_id '${PROJECT}' doesn't match Context's project_id '${OTHER}'.`,
        });
        expect(res.requestId).toMatch(REQUEST_ID);
      }
    }
    expect(await observable()).toEqual(before);
  });

  it("lets the project's own admin read every route, and a service-role token from project 'service' every compute route (the inverse)", async () => {
    for (const r of (await routes()).filter((x) => x.method === 'GET')) {
      for (const token of [tokens.ownAdmin, tokens.service]) {
        const res = await call(r.base, r.method, fill(r.template, PROJECT), token);
        // The service exemption is the compute API's only (our volume service calls it); the
        // volume API holds a service token to its own project like any other.
        const expected = token === tokens.service && r.base === h.service.volumeUrl ? 400 : 200;
        expect({ route: r.template, status: res.status }).toEqual({ route: r.template, status: expected });
      }
    }
  });

  it('lets the volume service extend an attached volume through compute with its service token', async () => {
    await h.volume.request('POST', `/v3/${PROJECT}/volumes/${attached}/action`, { 'os-extend-bytes': { new_bytes: 96 * MiB } });
    const deadline = Date.now() + 10_000;
    let v: { status: string; size_bytes: number } | undefined;
    while (Date.now() < deadline) {
      v = (await h.volume.request<{ volume: { status: string; size_bytes: number } }>('GET', `/v3/${PROJECT}/volumes/${attached}/os-online-extend`)).body.volume;
      if (v.status !== 'extending') break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(v).toMatchObject({ status: 'in-use', size_bytes: 96 * MiB });
  });
});

describe('project ids outside the documented alphabet are a 400', () => {
  const odd = [
    { name: 'a path traversal, escaped', id: '..%2F..%2Fetc%2Fpasswd' },
    { name: 'dot-dot, escaped', id: '%2e%2e' },
    { name: 'dot-dot', id: '..' },
    { name: 'a single dot', id: '.' },
    { name: 'a NUL', id: 'a%00b' },
    { name: 'CR LF (header injection)', id: 'a%0D%0ASet-Cookie:%20x=1' },
    { name: 'double quotes', id: '%22p%22' },
    { name: 'single quotes (SQL)', id: "p'%20OR%20'1'%3D'1" },
    { name: 'an escaped slash', id: 'a%2Fb' },
    { name: 'a backslash', id: 'a%5Cb' },
    { name: 'a space', id: 'a%20b' },
    { name: 'non-ASCII letters', id: '%C3%A9t%C3%A9' },
    { name: 'markup', id: '%3Cscript%3E' },
    { name: 'an at sign', id: 'user@domain' },
    { name: '65 characters', id: 'a'.repeat(65) },
  ];

  it.each(odd)('$name → 400 on the volume and compute APIs, nothing created', async ({ id }) => {
    const before = await observable();
    for (const [base, path, body] of [
      [h.service.volumeUrl!, `/v3/${id}/volumes`, { volume: { size_bytes: 64 * MiB } }],
      [h.service.computeUrl, `/v2/${id}/servers`, undefined],
    ] as const) {
      const res = await call(base, body ? 'POST' : 'GET', path, tokens.ownAdmin, body);
      expect(res.status).toBe(400);
      expect(res.body.badRequest).toMatchObject({ error_code: 'InvalidInput', message: expect.stringMatching(/^Malformed request URL: a project id is 1 to 64 characters/) as string });
      expect(res.requestId).toMatch(REQUEST_ID);
    }
    expect(await observable()).toEqual(before);
  });

  it.each(['f66d7df4b59f4ab98a358a0dab0b238f', 'p-demo', 'service', 'admin', 'Proj_1.a-b', 'a'.repeat(64)])(
    'accepts %s (the ids this suite and the README use fit the alphabet)',
    async (id) => {
      const store = new SqliteStore(join(h.config.dataDir, 'online-extend.sqlite'));
      const token = (await issueToken(store, { userId: 'u', projectId: id, roles: ['admin'], ttlMs: 60_000 })).token;
      await store.close();
      const res = await call(h.service.volumeUrl!, 'GET', `/v3/${id}/volumes`, token);
      expect(res.status).toBe(200);
    },
  );
});
