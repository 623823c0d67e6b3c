/**
 * The compute API on the wire (issue F): every route under `/v2.1`, `/v2.1/{project_id}` and
 * `/v2/{tenant_id}`; projects as Nova has them (the token's on project-less URLs, admins' by-id
 * reads across projects, `all_tenants`); the list filters clients send; Nova's views per
 * microversion and caller; and our own extras on os-instance-action-details.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { issueToken } from '../../src/auth/tokens.js';
import { NOVA_SERVER_STATES, serverStateFromNova, type ServerState } from '../../src/rpc/shapes.js';
import { nameFilter } from '../../src/api/routes/compute/nameFilter.js';
import { HOST_DEFINED_FLAVOR_ID, UNMEASURED_EXTRA_SPEC, hostId } from '../../src/api/routes/compute/views.js';
import { isServiceError } from '../../src/errors.js';
import {
  BLOCK_VOL,
  FILE_VOL,
  GiB,
  OFF_SERVER,
  OTHER_SERVER,
  OTHER_TENANT,
  SERVER,
  TENANT,
  TEST_FLAVOR as FLAVOR,
  TEST_IMAGE,
  createServerThroughApi,
  makeComputeApp,
  registerCatalog,
  type TestComputeApp,
} from '../support/computeApp.js';

const IMAGE = TEST_IMAGE.id;

let t: TestComputeApp;
let otherMember: string;

beforeEach(async () => {
  t = await makeComputeApp();
  await registerCatalog(t.store);
  otherMember = (await issueToken(t.store, { userId: 'other-member', projectId: OTHER_TENANT, roles: ['member'], ttlMs: 3_600_000 })).token;
});
afterEach(async () => t.close());

function call(method: string, url: string, token: string, opts: { version?: string; payload?: unknown } = {}) {
  const headers: Record<string, string> = { 'x-auth-token': token };
  if (opts.version) headers['openstack-api-version'] = `compute ${opts.version}`;
  return t.app.inject({ method: method as 'GET', url, headers, ...(opts.payload !== undefined ? { payload: opts.payload as object } : {}) });
}

/** The three URL forms for a caller of `project`. */
const PREFIXES = (project = TENANT) => ['/v2.1', `/v2.1/${project}`, `/v2/${project}`];

describe('every compute route is served under /v2.1, /v2.1/{project_id} and /v2/{tenant_id}', () => {
  const grow = { onlineExtendVolume: { bytes: 2 * GiB } };
  // As the admin of TENANT; statuses as the default policy and the fake driver answer them.
  const routes = [
    { method: 'GET', path: '/servers', status: 200 },
    { method: 'GET', path: '/servers/detail', status: 200 },
    { method: 'GET', path: `/servers/${SERVER}`, status: 200 },
    { method: 'GET', path: `/servers/${SERVER}/os-volume_attachments`, status: 200 },
    { method: 'GET', path: `/servers/${SERVER}/os-volume_attachments/${BLOCK_VOL}`, status: 200 },
    { method: 'GET', path: `/servers/${SERVER}/os-instance-actions`, status: 200 },
    { method: 'GET', path: `/servers/${SERVER}/os-instance-action-details`, status: 200 },
    { method: 'PUT', path: `/servers/${SERVER}/os-online_extend_volume`, payload: { onlineExtendVolume: { volume_id: BLOCK_VOL } }, status: 202 },
    { method: 'GET', path: `/servers/${SERVER}/os-online_extend_volume/${BLOCK_VOL}`, status: 200 },
    { method: 'POST', path: `/servers/${SERVER}/os-online_extend_volume/${FILE_VOL}`, payload: grow, status: 200 },
    // No volume service in this app: attach and detach answer 501 after every other check.
    { method: 'POST', path: `/servers/${SERVER}/os-volume_attachments`, payload: { volumeAttachment: { volumeId: BLOCK_VOL } }, status: 501 },
    { method: 'DELETE', path: `/servers/${SERVER}/os-volume_attachments/${BLOCK_VOL}`, status: 501 },
  ];
  const table = PREFIXES().flatMap((prefix) => routes.map((r) => ({ ...r, prefix, name: `${r.method} ${prefix}${r.path}` })));

  it.each(table)('$name → $status', async ({ method, prefix, path, payload, status }) => {
    const res = await call(method, `${prefix}${path}`, t.tokens.admin, { payload });
    expect(res.statusCode, res.payload).toBe(status);
  });

  it.each(PREFIXES())('%s: instance actions list and show answer the same action on every URL form', async (prefix) => {
    const done = await call('POST', `/v2/${TENANT}/servers/${SERVER}/os-online_extend_volume/${FILE_VOL}`, t.tokens.admin, { payload: { onlineExtendVolume: { bytes: 2 * GiB } } });
    const id = done.headers['x-openstack-request-id'] as string;
    const one = await call('GET', `${prefix}/servers/${SERVER}/os-instance-actions/${id}`, t.tokens.admin);
    expect(one.statusCode).toBe(200);
    expect(one.json().instanceAction).toMatchObject({ request_id: id, action: 'extend_volume', instance_uuid: SERVER });
  });

  it("refuses a URL project that is not the token's on /v2.1/{project_id} as on /v2/{tenant_id} (400)", async () => {
    for (const prefix of [`/v2.1/${OTHER_TENANT}`, `/v2/${OTHER_TENANT}`]) {
      const res = await call('GET', `${prefix}/servers`, t.tokens.admin);
      expect(res.statusCode).toBe(400);
      expect(res.json().badRequest.error_code).toBe('ProjectMismatch');
    }
  });

  it('lists the token’s project on /v2.1/servers: the project comes from the token', async () => {
    const mine = (await call('GET', '/v2.1/servers', t.tokens.member)).json().servers.map((s: { id: string }) => s.id);
    expect(mine.sort()).toEqual([SERVER, OFF_SERVER].sort());
    const theirs = (await call('GET', '/v2.1/servers', otherMember)).json().servers.map((s: { id: string }) => s.id);
    expect(theirs).toEqual([OTHER_SERVER]);
  });

  it.each([
    { prefix: '/v2.1', self: `/v2.1/servers/${SERVER}`, bookmark: `/servers/${SERVER}` },
    { prefix: `/v2.1/${TENANT}`, self: `/v2.1/${TENANT}/servers/${SERVER}`, bookmark: `/${TENANT}/servers/${SERVER}` },
    { prefix: `/v2/${TENANT}`, self: `/v2/${TENANT}/servers/${SERVER}`, bookmark: `/${TENANT}/servers/${SERVER}` },
  ])('$prefix: links are absolute from the Host, with the project only when the URL had one', async ({ prefix, self, bookmark }) => {
    const res = await t.app.inject({ method: 'GET', url: `${prefix}/servers/${SERVER}`, headers: { 'x-auth-token': t.tokens.admin, host: '127.0.0.1:8774' } });
    const server = res.json().server;
    expect(server.links).toEqual([
      { rel: 'self', href: `http://127.0.0.1:8774${self}` },
      { rel: 'bookmark', href: `http://127.0.0.1:8774${bookmark}` },
    ]);
    const p = prefix === '/v2.1' ? '' : `/${TENANT}`;
    // Found on the host: no image; the host-defined flavor, which links where no flavor is.
    expect(server.image).toBe('');
    expect(server.flavor).toEqual({ id: HOST_DEFINED_FLAVOR_ID, links: [{ rel: 'bookmark', href: `http://127.0.0.1:8774${p}/flavors/${HOST_DEFINED_FLAVOR_ID}` }] });
  });

  it.each(['/v2.1', `/v2.1/${TENANT}`, `/v2/${TENANT}`])('%s: a server created through the API links its image and flavor, with the project only when the URL had one', async (prefix) => {
    const id = await createServerThroughApi(t, t.tokens.admin);
    const server = (await t.app.inject({ method: 'GET', url: `${prefix}/servers/${id}`, headers: { 'x-auth-token': t.tokens.admin, host: '127.0.0.1:8774' } })).json().server;
    const p = prefix === '/v2.1' ? '' : `/${TENANT}`;
    expect(server.image).toEqual({ id: IMAGE, links: [{ rel: 'bookmark', href: `http://127.0.0.1:8774${p}/images/${IMAGE}` }] });
    expect(server.flavor).toEqual({ id: FLAVOR.id, links: [{ rel: 'bookmark', href: `http://127.0.0.1:8774${p}/flavors/${FLAVOR.id}` }] });
  });
});

describe('by-id reads cross projects for admins, as Nova looks the instance up by uuid', () => {
  const reads = (id = SERVER) => [`/servers/${id}`, `/servers/${id}/os-volume_attachments`, `/servers/${id}/os-volume_attachments/${BLOCK_VOL}`, `/servers/${id}/os-instance-actions`];

  it("lets another project's admin read the server, its attachments and its instance actions (list and show)", async () => {
    const done = await call('POST', `/v2/${TENANT}/servers/${SERVER}/os-online_extend_volume/${FILE_VOL}`, t.tokens.admin, { payload: { onlineExtendVolume: { bytes: 2 * GiB } } });
    const id = done.headers['x-openstack-request-id'] as string;
    for (const prefix of PREFIXES(OTHER_TENANT)) {
      for (const path of [...reads(), `/servers/${SERVER}/os-instance-actions/${id}`]) {
        const res = await call('GET', `${prefix}${path}`, t.tokens.otherAdmin);
        expect({ url: `${prefix}${path}`, status: res.statusCode }).toEqual({ url: `${prefix}${path}`, status: 200 });
      }
    }
    const shown = (await call('GET', `/v2.1/servers/${SERVER}`, t.tokens.otherAdmin)).json().server;
    expect(shown).toMatchObject({ id: SERVER, tenant_id: TENANT });
  });

  it("answers 404 to a member of another project, as if the server did not exist", async () => {
    for (const prefix of PREFIXES(OTHER_TENANT)) {
      for (const path of reads()) {
        const res = await call('GET', `${prefix}${path}`, otherMember);
        expect({ url: `${prefix}${path}`, status: res.statusCode }).toEqual({ url: `${prefix}${path}`, status: 404 });
        expect(res.json().itemNotFound.error_code).toBe('InstanceNotFound');
      }
    }
  });

  it('lets a member read their own project’s server (Nova’s project reader) and refuses them the spec’s calls (403)', async () => {
    expect((await call('GET', `/v2.1/servers/${SERVER}`, t.tokens.member)).statusCode).toBe(200);
    const res = await call('GET', `/v2.1/servers/${SERVER}/os-online_extend_volume/${BLOCK_VOL}`, t.tokens.member);
    expect(res.statusCode).toBe(403);
  });

  it("does not let another project's admin act on the server: changes stay in the URL's (or token's) project", async () => {
    const before = t.driver.calls.rescan;
    const res = await call('PUT', `/v2.1/servers/${SERVER}/os-online_extend_volume`, t.tokens.otherAdmin, { payload: { onlineExtendVolume: { volume_id: BLOCK_VOL } } });
    expect(res.statusCode).toBe(404);
    expect(t.driver.calls.rescan).toBe(before);
  });
});

describe('server lists: all_tenants, name, ignored parameters', () => {
  const ids = (res: { json(): { servers: Array<{ id: string }> } }) => res.json().servers.map((s) => s.id).sort();

  it.each([
    { name: 'admin, all_tenants=1: every project', token: 'admin', query: 'all_tenants=1', status: 200, servers: [SERVER, OFF_SERVER, OTHER_SERVER] },
    { name: 'admin, all_tenants (empty): every project, as Nova', token: 'admin', query: 'all_tenants', status: 200, servers: [SERVER, OFF_SERVER, OTHER_SERVER] },
    { name: 'admin, all_tenants=True', token: 'admin', query: 'all_tenants=True', status: 200, servers: [SERVER, OFF_SERVER, OTHER_SERVER] },
    { name: 'admin, all_tenants=0: the own project', token: 'admin', query: 'all_tenants=0', status: 200, servers: [SERVER, OFF_SERVER] },
    { name: 'admin, all_tenants with project_id: that project', token: 'admin', query: `all_tenants=1&project_id=${OTHER_TENANT}`, status: 200, servers: [OTHER_SERVER] },
    { name: 'admin, project_id without all_tenants is ignored', token: 'admin', query: `project_id=${OTHER_TENANT}`, status: 200, servers: [SERVER, OFF_SERVER] },
    { name: 'member, all_tenants=1: 403 (get_all_tenants)', token: 'member', query: 'all_tenants=1', status: 403 },
    { name: 'member, all_tenants=0: the own project', token: 'member', query: 'all_tenants=0', status: 200, servers: [SERVER, OFF_SERVER] },
    { name: 'all_tenants=maybe: 400', token: 'admin', query: 'all_tenants=maybe', status: 400 },
  ] as Array<{ name: string; token: 'admin' | 'member'; query: string; status: number; servers?: string[] }>)('$name', async ({ token, query, status, servers }) => {
    for (const path of ['/v2.1/servers', '/v2.1/servers/detail']) {
      const res = await call('GET', `${path}?${query}`, t.tokens[token]);
      expect(res.statusCode, res.payload).toBe(status);
      if (servers) expect(ids(res)).toEqual([...servers].sort());
    }
  });

  it.each([
    { name: 'web', servers: [SERVER] },
    { name: '^db', servers: [OFF_SERVER] },
    { name: '-1$', servers: [SERVER, OFF_SERVER] },
    { name: 'w.b', servers: [SERVER] },
    { name: '^w.*1$', servers: [SERVER] },
    { name: 'nothing', servers: [] },
    { name: '', servers: [SERVER, OFF_SERVER] },
  ])('name=$name keeps the servers whose name matches', async ({ name, servers }) => {
    const res = await call('GET', `/v2.1/servers?name=${encodeURIComponent(name)}`, t.tokens.member);
    expect(res.statusCode).toBe(200);
    expect(ids(res)).toEqual([...servers].sort());
  });

  it('pages a name-filtered list with the filter kept in the next link (Nova keeps the query)', async () => {
    const first = await call('GET', '/v2.1/servers?name=-1&limit=1', t.tokens.member);
    const body = first.json();
    expect(body.servers.map((s: { name: string }) => s.name)).toEqual(['db-1']);
    expect(body.servers_links).toEqual([{ rel: 'next', href: `http://localhost:80/v2.1/servers?limit=1&marker=${OFF_SERVER}&name=-1` }]);
    const second = (await call('GET', body.servers_links[0].href, t.tokens.member)).json();
    expect(second.servers.map((s: { name: string }) => s.name)).toEqual(['web-1']);
    expect(second.servers_links).toBeUndefined();
  });

  it.each(['(a+)+$', 'web|db', '[a-z]+', 'we?b'])('refuses name=%s, regular-expression syntax it does not evaluate, with a 400 naming the subset', async (name) => {
    const res = await call('GET', `/v2.1/servers?name=${encodeURIComponent(name)}`, t.tokens.member);
    expect(res.statusCode).toBe(400);
    expect(res.json().badRequest.message).toMatch(/name filter/);
  });

  it.each(['/v2.1/servers', '/v2.1/servers/detail', `/v2.1/servers/${SERVER}/os-instance-actions`])('%s ignores parameters it does not know (Nova below 2.75) and still refuses a malformed limit', async (path) => {
    expect((await call('GET', `${path}?sort_key=display_name&flavor=1&status=ACTIVE`, t.tokens.admin)).statusCode).toBe(200);
    expect((await call('GET', `${path}?limit=-1&sort_key=x`, t.tokens.admin)).statusCode).toBe(400);
  });
});

describe("Nova's server view at each microversion and for each caller", () => {
  const show = async (token: string, version: string) => (await call('GET', `/v2.1/servers/${SERVER}`, token, { version })).json().server as Record<string, unknown>;
  const ADMIN_KEYS = ['OS-EXT-SRV-ATTR:host', 'OS-EXT-SRV-ATTR:instance_name', 'OS-EXT-SRV-ATTR:hypervisor_hostname'];

  it.each([
    { version: '2.1', has: [], lacks: ['locked', 'host_status', 'description', 'tags', 'OS-EXT-SRV-ATTR:hostname'] },
    { version: '2.3', has: ['OS-EXT-SRV-ATTR:hostname', 'OS-EXT-SRV-ATTR:launch_index'], lacks: ['locked'] },
    { version: '2.9', has: ['locked'], lacks: ['host_status'] },
    { version: '2.16', has: ['locked', 'host_status'], lacks: ['description'] },
    { version: '2.19', has: ['description'], lacks: ['tags'] },
    { version: '2.26', has: ['description', 'tags'], lacks: [] },
  ])('$version (admin): the keys that version adds, none of the later ones', async ({ version, has, lacks }) => {
    const s = await show(t.tokens.admin, version);
    for (const k of [...has, ...ADMIN_KEYS]) expect(s, k).toHaveProperty([k]);
    for (const k of lacks) expect(s, k).not.toHaveProperty([k]);
  });

  it('hides the admin-only keys (OS-EXT-SRV-ATTR:*, host_status) from a member at every version', async () => {
    for (const version of ['2.1', '2.3', '2.16', '2.51']) {
      const s = await show(t.tokens.member, version);
      for (const k of Object.keys(s)) expect(k.startsWith('OS-EXT-SRV-ATTR:'), k).toBe(false);
      expect(s).not.toHaveProperty('host_status');
    }
  });

  it("shows a created server's flavor by its own fields from 2.47 (ram, disk, vcpus, …) and as {id, links} before", async () => {
    const id = await createServerThroughApi(t, t.tokens.member);
    const at = async (version: string) => (await call('GET', `/v2.1/servers/${id}`, t.tokens.member, { version })).json().server.flavor;
    expect(await at('2.46')).toMatchObject({ id: FLAVOR.id });
    expect(await at('2.47')).toEqual({ original_name: 'm1.small', vcpus: 2, ram: 2048, disk: 20, ephemeral: 1, swap: 512, extra_specs: {} });
  });

  it.each([
    { version: '2.1', flavor: { id: HOST_DEFINED_FLAVOR_ID } },
    { version: '2.46', flavor: { id: HOST_DEFINED_FLAVOR_ID } },
    { version: '2.47', flavor: { original_name: HOST_DEFINED_FLAVOR_ID, vcpus: 2, ram: 2048, disk: 0, ephemeral: 0, swap: 0, extra_specs: {} } },
    { version: '2.51', flavor: { original_name: HOST_DEFINED_FLAVOR_ID, vcpus: 2, ram: 2048, disk: 0, ephemeral: 0, swap: 0, extra_specs: {} } },
  ])('$version: a server found on the host shows the host-defined flavor, with the vCPUs and RAM the driver measured from 2.47', async ({ version, flavor }) => {
    const f = (await show(t.tokens.member, version)).flavor as Record<string, unknown>;
    expect(version === '2.47' || version === '2.51' ? f : { id: f.id }).toEqual(flavor);
  });

  it.each(['2.47', '2.51'])('%s: a server whose size the driver could not measure shows 0 for it, named in extra_specs, never a made-up size', async (version) => {
    const s = (await call('GET', `/v2.1/servers/${OFF_SERVER}`, t.tokens.member, { version })).json().server;
    expect(s.flavor).toEqual({ original_name: HOST_DEFINED_FLAVOR_ID, vcpus: 0, ram: 0, disk: 0, ephemeral: 0, swap: 0, extra_specs: { [UNMEASURED_EXTRA_SPEC]: 'vcpus,ram' } });
  });

  it("shows a server found on the host (no image or user recorded) as Nova shows those absences", async () => {
    const s = (await call('GET', `/v2.1/servers/${OFF_SERVER}`, t.tokens.member, { version: '2.47' })).json().server;
    expect(s).toMatchObject({ image: '', user_id: '', metadata: {}, status: 'SHUTOFF', 'OS-EXT-STS:vm_state': 'stopped', 'OS-EXT-STS:power_state': 4 });
    expect(s.created).toBe(s.updated);
    expect(s).not.toHaveProperty('progress');
  });

  it('answers 404 for GET /flavors/host-defined: no flavor has it, its sizes are per server', async () => {
    expect((await call('GET', `/v2.1/flavors/${HOST_DEFINED_FLAVOR_ID}`, t.tokens.member)).statusCode).toBe(404);
  });

  it('gives hostId as sha224(project + host) hex, and progress 0 for an ACTIVE server', async () => {
    const s = await show(t.tokens.member, '2.1');
    expect(s.hostId).toBe(hostId(TENANT, 'compute-1'));
    expect(s.hostId).toMatch(/^[0-9a-f]{56}$/);
    expect(s).toMatchObject({ progress: 0, status: 'ACTIVE', addresses: {} });
  });

  it("shows a created server's user, creation time and metadata", async () => {
    const before = new Date().toISOString();
    const id = await createServerThroughApi(t, t.tokens.member, { metadata: { role: 'web' } });
    const s = (await call('GET', `/v2.1/servers/${id}`, t.tokens.member)).json().server;
    expect(s).toMatchObject({ status: 'ACTIVE', user_id: 'user-member', metadata: { role: 'web' } });
    expect(s.created >= before).toBe(true);
  });

  it('lists attached volumes with delete_on_termination from 2.3 only', async () => {
    expect((await show(t.tokens.member, '2.1'))['os-extended-volumes:volumes_attached']).toContainEqual({ id: BLOCK_VOL });
    expect((await show(t.tokens.member, '2.3'))['os-extended-volumes:volumes_attached']).toContainEqual({ id: BLOCK_VOL, delete_on_termination: false });
  });
});

describe("instance actions as Nova's, and our extras on os-instance-action-details", () => {
  let failed: string;
  beforeEach(async () => {
    const res = await call('POST', `/v2/${TENANT}/servers/${SERVER}/os-online_extend_volume/${FILE_VOL}`, t.tokens.admin, { payload: { onlineExtendVolume: { bytes: 512 } } });
    failed = res.headers['x-openstack-request-id'] as string;
  });
  const action = async (token: string, version: string) => (await call('GET', `/v2.1/servers/${SERVER}/os-instance-actions/${failed}`, token, { version })).json().instanceAction;

  it.each([
    { who: 'member', version: '2.1', events: false, traceback: false },
    { who: 'member', version: '2.50', events: false, traceback: false },
    { who: 'member', version: '2.51', events: true, traceback: false },
    { who: 'admin', version: '2.1', events: true, traceback: true },
    { who: 'admin', version: '2.51', events: true, traceback: true },
  ] as const)('$who at $version: events $events, traceback $traceback', async ({ who, version, events, traceback }) => {
    const a = await action(t.tokens[who], version);
    expect(Object.keys(a).filter((k) => k !== 'events').sort()).toEqual(['action', 'instance_uuid', 'message', 'project_id', 'request_id', 'start_time', 'user_id']);
    expect(a.message).toBe('Error');
    if (!events) return expect(a).not.toHaveProperty('events');
    expect(a.events).toHaveLength(1);
    const keys = Object.keys(a.events[0]).sort();
    expect(keys).toEqual(traceback ? ['event', 'finish_time', 'result', 'start_time', 'traceback'] : ['event', 'finish_time', 'result', 'start_time']);
    expect(a.events[0]).toMatchObject({ event: 'compute_extend_volume', result: 'Error' });
  });

  it('keeps the finish time, result, error message and details on os-instance-action-details (list and show), for members too', async () => {
    const list = (await call('GET', `/v2.1/servers/${SERVER}/os-instance-action-details`, t.tokens.member)).json().instanceActionDetails;
    const mine = list.find((a: { request_id: string }) => a.request_id === failed);
    expect(mine).toMatchObject({ action: 'extend_volume', event: 'compute_extend_volume', result: 'Error', details: { volume_id: FILE_VOL, requested_bytes: 512 } });
    expect(mine.finish_time).not.toBeNull();
    const one = (await call('GET', `/v2.1/servers/${SERVER}/os-instance-action-details/${failed}`, t.tokens.member)).json().instanceActionDetail;
    expect(one).toEqual(mine);
    expect(one.message).toMatch(/shrink/);
    expect((await call('GET', `/v2.1/servers/${SERVER}/os-instance-action-details`, otherMember)).statusCode).toBe(404);
  });
});

describe('attachments as Nova shows them', () => {
  it("shows one attachment by volume id and 404 for a volume the server does not have", async () => {
    const one = await call('GET', `/v2.1/servers/${SERVER}/os-volume_attachments/${BLOCK_VOL}`, t.tokens.member);
    expect(one.json()).toEqual({ volumeAttachment: { id: BLOCK_VOL, serverId: SERVER, volumeId: BLOCK_VOL, device: '/dev/vdb' } });
    const none = await call('GET', `/v2.1/servers/${SERVER}/os-volume_attachments/99999999-9999-4999-8999-999999999999`, t.tokens.member);
    expect(none.statusCode).toBe(404);
  });
});

describe("server states as Nova's vm_state, power_state and status", () => {
  it.each(Object.keys(NOVA_SERVER_STATES) as ServerState[])('%s reads back from its Nova view unchanged (the volume service reads it so)', (state) => {
    const nova = NOVA_SERVER_STATES[state];
    expect(serverStateFromNova(nova)).toBe(state);
  });
});

describe('nameFilter', () => {
  it.each([
    { pattern: 'eb-', name: 'web-1', match: true },
    { pattern: '^eb', name: 'web-1', match: false },
    { pattern: 'b-1$', name: 'web-1', match: true },
    { pattern: 'b-$', name: 'web-1', match: false },
    { pattern: '^web-1$', name: 'web-1', match: true },
    { pattern: '^web-1$', name: 'web-10', match: false },
    { pattern: 'w.b', name: 'wxb', match: true },
    { pattern: 'w\\.b', name: 'wxb', match: false },
    { pattern: 'w\\.b', name: 'w.b', match: true },
    { pattern: 'a.*c.*e', name: 'abcde', match: true },
    { pattern: 'a.*e.*c', name: 'abcde', match: false },
    { pattern: '^a.*e$', name: 'abcde', match: true },
    { pattern: '^.*$', name: '', match: true },
    { pattern: 'Web', name: 'web-1', match: false },
  ])('$pattern on $name: $match', ({ pattern, name, match }) => {
    expect(nameFilter(pattern)(name)).toBe(match);
  });

  it.each(['(a)', 'a|b', 'a+', 'a?', 'a{2}', '[ab]', '*a', 'a\\d'])('refuses %s with InvalidInput', (pattern) => {
    let code: string | undefined;
    try {
      nameFilter(pattern);
    } catch (err) {
      code = isServiceError(err) ? err.code : 'other';
    }
    expect(code).toBe('InvalidInput');
  });

  it('matches a long name against a hostile-looking pattern in linear passes', () => {
    const name = 'a'.repeat(255);
    expect(nameFilter(`^${'a.*'.repeat(40)}b$`)(name)).toBe(false);
  });
});
