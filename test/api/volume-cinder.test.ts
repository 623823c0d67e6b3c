/**
 * The volume API speaks Cinder 3.x to its clients: the create bodies cinderclient and OSC send
 * (nulls, unknown keys), 400s naming the features this service does not have, the extend's
 * `extending` visible before its empty 202, the 3.42 gate on in-use volumes, the list filters,
 * the shapes per microversion and viewer, and our own extras on our own route.
 */
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteStore } from '../../src/db/sqlite.js';
import { issueToken } from '../../src/auth/tokens.js';
import { PROJECT, SERVER, type ServiceHarness } from '../support/service.js';
import { makeWireService, wire } from '../support/volumeWire.js';

const GiB = 2 ** 30;
const OTHER = 'p-other';
let h: ServiceHarness & { member: string };
let otherAdmin: string;

beforeAll(async () => {
  h = await makeWireService();
  // Each extend step waits a little, so what the 202 left behind can be seen before it moves on.
  await h.stop();
  await h.start({ policyFile: h.config.policyFile, extendStepDelayMs: 150 });
  const db = new SqliteStore(join(h.config.dataDir, 'online-extend.sqlite'));
  otherAdmin = (await issueToken(db, { userId: 'other-admin', projectId: OTHER, roles: ['admin'], ttlMs: 3_600_000 })).token;
  await db.close();
});
afterAll(async () => h?.cleanup());

type Json = Record<string, unknown>;
const call = (method: string, path: string, opts: { token?: string; version?: string; body?: unknown } = {}) =>
  wire(h.service.volumeUrl!, method, path, opts.token ?? h.token, opts.version ?? '3.42', opts.body);
const volumesPath = `/v3/${PROJECT}/volumes`;
const count = async () => ((await call('GET', `${volumesPath}?all_tenants=1`)).json as { volumes: unknown[] }).volumes.length;
const show = async (id: string, token = h.token, version = '3.42') => ((await call('GET', `${volumesPath}/${id}`, { token, version })).json as { volume: Json }).volume;
const ours = async (id: string) => ((await call('GET', `${volumesPath}/${id}/os-online-extend`)).json as { volume: Json }).volume;
async function create(volume: Json, token = h.token): Promise<string> {
  const a = await call('POST', volumesPath, { token, body: { volume } });
  expect(a.status, a.text).toBe(202);
  return ((a.json as { volume: { id: string } }).volume).id;
}
async function settle(id: string, want: string): Promise<Json> {
  for (let i = 0; i < 1000; i++) {
    const v = await show(id);
    if (v.status === want) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`volume ${id} never became ${want}`);
}
async function attached(): Promise<string> {
  const id = await create({ size: 1 });
  await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
  await settle(id, 'in-use');
  return id;
}
async function detachAndDelete(id: string): Promise<void> {
  await h.compute.request('DELETE', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments/${id}`);
  await settle(id, 'available');
  expect((await call('DELETE', `${volumesPath}/${id}`)).status).toBe(202);
}

/** What cinderclient 9.1 `volumes.create` always sends, most of it null. */
const CINDERCLIENT = {
  size: 1,
  consistencygroup_id: null,
  snapshot_id: null,
  name: null,
  description: null,
  volume_type: null,
  availability_zone: null,
  metadata: {},
  imageRef: null,
  source_volid: null,
  backup_id: null,
};

describe('POST /volumes takes what Cinder takes', () => {
  it.each([
    { name: "cinderclient's body, nulls and all", volume: CINDERCLIENT, shows: { size: 1, name: '', description: null, metadata: {}, volume_type: 'file' } },
    { name: 'with a name, description and metadata', volume: { ...CINDERCLIENT, name: 'n', description: 'd', metadata: { a: 'b' } }, shows: { name: 'n', description: 'd', metadata: { a: 'b' } } },
    { name: "Cinder's v1 names display_name and display_description", volume: { size: 1, display_name: 'dn', display_description: 'dd' }, shows: { name: 'dn', description: 'dd' } },
    { name: 'keys Cinder ignores (aP: true)', volume: { size: 1, bootable: true, something_new: { x: 1 } }, shows: { bootable: 'false' } },
    { name: 'the size as decimal text', volume: { size: '2' }, shows: { size: 2 } },
    { name: 'the one availability zone and multiattach false', volume: { size: 1, availability_zone: 'nova', multiattach: false }, shows: { availability_zone: 'nova', multiattach: false } },
    { name: 'empty ids, as some clients send them', volume: { size: 1, snapshot_id: '', source_volid: '', imageRef: '' }, shows: { snapshot_id: null, source_volid: null } },
    { name: 'our exact size in bytes', volume: { size_bytes: 3 * GiB, size: null }, shows: { size: 3 } },
  ])('accepts $name (202) and shows it', async (c) => {
    const id = await create(c.volume);
    expect(await settle(id, 'available')).toMatchObject({ ...c.shows, user_id: 'tester', encrypted: false, consistencygroup_id: null });
    expect((await call('DELETE', `${volumesPath}/${id}`)).status).toBe(202);
  });

  it('accepts scheduler hints at the top level', async () => {
    const a = await call('POST', volumesPath, { body: { volume: { size: 1 }, 'OS-SCH-HNT:scheduler_hints': { same_host: [] } } });
    expect(a.status, a.text).toBe(202);
    await call('DELETE', `${volumesPath}/${(a.json as { volume: { id: string } }).volume.id}`);
  });

  it.each([
    { name: 'a snapshot to copy', volume: { size: 1, snapshot_id: '0f0e0d0c-0000-4000-8000-000000000001' }, message: /volume\.snapshot_id is not supported: this service does not offer volumes from snapshots/ },
    { name: 'a volume to clone', volume: { size: 1, source_volid: '0f0e0d0c-0000-4000-8000-000000000002' }, message: /volume\.source_volid is not supported/ },
    { name: 'an image (imageRef)', volume: { size: 1, imageRef: '0f0e0d0c-0000-4000-8000-000000000003' }, message: /volume\.imageRef is not supported: .*images/ },
    { name: 'an image (image_id)', volume: { size: 1, image_id: 'x' }, message: /volume\.image_id is not supported/ },
    { name: 'a backup', volume: { size: 1, backup_id: '0f0e0d0c-0000-4000-8000-000000000004' }, message: /volume\.backup_id is not supported: .*backups/ },
    { name: 'a consistency group', volume: { size: 1, consistencygroup_id: 'cg' }, message: /volume\.consistencygroup_id is not supported/ },
    { name: 'a group', volume: { size: 1, group_id: 'g' }, message: /volume\.group_id is not supported/ },
    { name: 'multiattach', volume: { size: 1, multiattach: true }, message: /volume\.multiattach true is not supported/ },
    { name: 'another availability zone', volume: { size: 1, availability_zone: 'az2' }, message: /Availability zone 'az2' is invalid/ },
    { name: 'no size at all (cinderclient with size null)', volume: { ...CINDERCLIENT, size: null }, message: /exactly one of volume\.size/ },
    { name: 'a metadata value that is not a string', volume: { size: 1, metadata: { a: 1 } }, message: /volume\.metadata/ },
    { name: 'a name too long', volume: { size: 1, name: 'x'.repeat(256) }, message: /volume\.name/ },
  ])('refuses $name with a 400 naming it, creating nothing', async (c) => {
    const before = await count();
    const a = await call('POST', volumesPath, { body: { volume: c.volume } });
    expect(a.status).toBe(400);
    expect((a.json as { badRequest: { message: string } }).badRequest.message).toMatch(c.message);
    expect(await count()).toBe(before);
  });
});

describe('extend as Cinder', () => {
  it('an in-use volume at 3.42: 202 with no bytes, and the volume is already extending when the answer arrives', async () => {
    const id = await attached();
    const a = await call('POST', `${volumesPath}/${id}/action`, { body: { 'os-extend': { new_size: 2 } } });
    expect(a.status).toBe(202);
    expect(a.text).toBe('');
    expect(a.headers.get('content-length') ?? '0').toBe('0');
    // Tempest's waiter returns at once if it still sees in-use here.
    expect((await show(id)).status).toBe('extending');
    expect(await settle(id, 'in-use')).toMatchObject({ size: 2 });
    await detachAndDelete(id);
  });

  it.each(['3.0', '3.41'])('an in-use volume below 3.42 (%s): Cinder’s 400, and nothing changes', async (version) => {
    const id = await attached();
    const a = await call('POST', `${volumesPath}/${id}/action`, { version, body: { 'os-extend': { new_size: 2 } } });
    expect(a.status).toBe(400);
    expect((a.json as { badRequest: { message: string } }).badRequest.message).toMatch(new RegExp(`Volume ${id} status must be 'available' to extend, currently in-use: .*3\\.42`));
    expect(a.headers.get('openstack-api-version')).toBe(`volume ${version}`);
    expect(await ours(id)).toMatchObject({ status: 'in-use', size_bytes: GiB, extend: null });
    await detachAndDelete(id);
  });

  it('an available volume at 3.0: 202 with no bytes, grown when it answers', async () => {
    const id = await create({ size: 1 });
    await settle(id, 'available');
    const a = await call('POST', `${volumesPath}/${id}/action`, { version: '3.0', body: { 'os-extend': { new_size: 3 } } });
    expect([a.status, a.text]).toEqual([202, '']);
    expect(await settle(id, 'available')).toMatchObject({ size: 3 });
    const d = await call('DELETE', `${volumesPath}/${id}`, { version: '3.0' });
    expect([d.status, d.text]).toEqual([202, '']);
  });
});

describe('list filters as Cinder', () => {
  let mine: string[];
  let theirs: string;
  beforeAll(async () => {
    mine = [await create({ size: 1, name: 'filter-a' }), await create({ size: 1, name: 'filter-b' }), await create({ size: 1, name: 'filter-a' })];
    theirs = ((await wire(h.service.volumeUrl!, 'POST', `/v3/${OTHER}/volumes`, otherAdmin, '3.42', { volume: { size: 1, name: 'filter-a' } })).json as { volume: { id: string } }).volume.id;
  });
  afterAll(async () => {
    for (const id of mine) await call('DELETE', `${volumesPath}/${id}`);
    await wire(h.service.volumeUrl!, 'DELETE', `/v3/${OTHER}/volumes/${theirs}`, otherAdmin, '3.42');
  });
  const ids = async (query: string, token = h.token, version = '3.42') => {
    const a = await call('GET', `${volumesPath}/detail?${query}`, { token, version });
    expect(a.status, a.text).toBe(200);
    return (a.json as { volumes: Array<{ id: string }> }).volumes.map((v) => v.id);
  };

  it.each([
    { name: 'name, exactly', query: 'name=filter-a', want: () => [mine[0], mine[2]] },
    { name: 'name and status', query: 'name=filter-b&status=available', want: () => [mine[1]] },
    { name: 'a status none has', query: 'name=filter-a&status=error', want: () => [] },
    { name: "all_tenants for an admin: every project's", query: 'all_tenants=1&name=filter-a', want: () => [mine[0], mine[2], theirs] },
    { name: 'all_tenants=false', query: 'all_tenants=false&name=filter-a', want: () => [mine[0], mine[2]] },
  ])('$name', async (c) => {
    expect(await ids(c.query)).toEqual(c.want());
  });

  it.each(['3.0', '3.33', '3.42'])("an admin's project_id with all_tenants lists that project's only, on every list (%s)", async (version) => {
    expect(await ids(`all_tenants=1&project_id=${OTHER}&name=filter-a`, h.token, version)).toEqual([theirs]);
    expect(await ids(`all_tenants=1&project_id=${PROJECT}&name=filter-a`, h.token, version)).toEqual([mine[0], mine[2]]);
    expect(await ids('all_tenants=1&project_id=p-nobody', h.token, version)).toEqual([]);
    for (const list of ['', '/os-online-extend']) {
      const a = await call('GET', `${volumesPath}${list}?all_tenants=1&project_id=${OTHER}&name=filter-a`, { version });
      expect(a.status, a.text).toBe(200);
      expect((a.json as { volumes: Array<{ id: string }> }).volumes.map((v) => v.id)).toEqual([theirs]);
    }
  });

  it("keeps an admin's project_id without all_tenants within the admin's own project, never listing another's", async () => {
    expect(await ids(`project_id=${PROJECT}&name=filter-a`)).toEqual([mine[0], mine[2]]);
    expect(await ids(`project_id=${OTHER}&name=filter-a`)).toEqual([]);
    expect(await ids(`all_tenants=0&project_id=${OTHER}`)).toEqual([]);
  });

  it("treats a member's project_id as Cinder does: dropped below 3.33, refused from 3.33", async () => {
    expect(await ids(`all_tenants=1&project_id=${OTHER}&name=filter-a`, h.member, '3.32')).toEqual([mine[0], mine[2]]);
    const a = await call('GET', `${volumesPath}/detail?project_id=${OTHER}`, { token: h.member, version: '3.33' });
    expect(a.status).toBe(400);
    expect((a.json as { badRequest: { message: string } }).badRequest.message).toBe('Invalid filters project_id are found in query options.');
  });

  it("ignores all_tenants for a member, as Cinder does: the project's own", async () => {
    expect(await ids('all_tenants=1&name=filter-a', h.member)).toEqual([mine[0], mine[2]]);
  });

  it('pages a filtered list with an absolute next link that keeps the filter', async () => {
    const a = await call('GET', `${volumesPath}?name=filter-a&limit=1`);
    const body = a.json as { volumes: Array<{ id: string }>; volumes_links: Array<{ rel: string; href: string }> };
    expect(body.volumes.map((v) => v.id)).toEqual([mine[0]]);
    const next = new URL(body.volumes_links[0]!.href);
    expect(next.origin).toBe(h.service.volumeUrl);
    expect(Object.fromEntries(next.searchParams)).toEqual({ name: 'filter-a', limit: '1', marker: mine[0] });
  });

  it("drops a member's unknown filter below 3.33 and refuses it from 3.33, as Cinder", async () => {
    expect(await ids('name=filter-b&colour=red', h.member, '3.32')).toEqual([mine[1]]);
    const a = await call('GET', `${volumesPath}/detail?name=filter-b&colour=red`, { token: h.member, version: '3.33' });
    expect(a.status).toBe(400);
    expect((a.json as { badRequest: { message: string } }).badRequest.message).toBe('Invalid filters colour are found in query options.');
  });

  it.each(['3.0', '3.32', '3.42'])("refuses an admin's unknown filter at %s, since Cinder would filter on it and we cannot: never more than asked", async (version) => {
    const a = await call('GET', `${volumesPath}/detail?all_tenants=1&user_id=someone`, { version });
    expect(a.status, a.text).toBe(400);
    expect((a.json as { badRequest: { message: string } }).badRequest.message).toBe('Invalid filters user_id are found in query options.');
  });

  it.each(['sort=name', 'sort_key=name&sort_dir=asc', 'with_count=true', 'offset=1', 'all_tenants=maybe'])('refuses %s at every version with a 400', async (query) => {
    for (const version of ['3.0', '3.42']) expect((await call('GET', `${volumesPath}/detail?${query}`, { version })).status).toBe(400);
  });
});

describe('shapes by microversion and viewer', () => {
  let id: string;
  beforeAll(async () => {
    id = await attached();
  });
  afterAll(async () => detachAndDelete(id));

  it.each([
    { version: '3.0', viewer: 'admin', has: ['migration_status', 'os-vol-host-attr:host', 'os-vol-mig-status-attr:migstat'], lacks: ['group_id', 'provider_id'] },
    { version: '3.13', viewer: 'admin', has: ['group_id'], lacks: ['provider_id'] },
    { version: '3.21', viewer: 'admin', has: ['group_id', 'provider_id'], lacks: [] },
    { version: '3.42', viewer: 'member', has: ['group_id', 'os-vol-tenant-attr:tenant_id'], lacks: ['provider_id', 'migration_status', 'os-vol-host-attr:host', 'os-vol-mig-status-attr:migstat'] },
  ])('$version as $viewer', async (c) => {
    const v = await show(id, c.viewer === 'admin' ? h.token : h.member, c.version);
    for (const k of c.has) expect(v, k).toHaveProperty([k]);
    for (const k of c.lacks) expect(v, k).not.toHaveProperty([k]);
    const host = (v.attachments as Array<{ host_name: string | null }>)[0]!.host_name;
    expect(host === null).toBe(c.viewer === 'member');
    if (c.viewer === 'admin') expect(v['os-vol-host-attr:host']).toMatch(/^[^@]+@file#file$/);
  });

  it('never shows our extras on the Cinder views; they are on …/os-online-extend', async () => {
    const extras = ['size_bytes', 'format', 'extend'];
    const cinder = [await show(id), ...((await call('GET', `${volumesPath}/detail`)).json as { volumes: Json[] }).volumes];
    for (const v of cinder) for (const k of extras) expect(v).not.toHaveProperty([k]);
    expect(await ours(id)).toMatchObject({ id, size_bytes: GiB, format: 'raw', extend: null, status: 'in-use', project_id: PROJECT });
    const list = (await call('GET', `${volumesPath}/os-online-extend?limit=1000`)).json as { volumes: Json[] };
    expect(list.volumes.find((v) => v.id === id)).toMatchObject({ size_bytes: GiB });
  });

  it('builds absolute links from the Host the client used', async () => {
    const url = new URL(h.service.volumeUrl!);
    const a = await new Promise<Json>((resolve, reject) => {
      const req = httpRequest({ host: url.hostname, port: url.port, path: `${volumesPath}/${id}`, headers: { host: 'volumes.example:8776', 'x-auth-token': h.token } }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve(JSON.parse(text) as Json));
      });
      req.on('error', reject);
      req.end();
    });
    expect((a.volume as { links: unknown }).links).toEqual([
      { rel: 'self', href: `http://volumes.example:8776/v3/${PROJECT}/volumes/${id}` },
      { rel: 'bookmark', href: `http://volumes.example:8776/${PROJECT}/volumes/${id}` },
    ]);
  });
});

describe("an admin acts on any project's volume by id, as Cinder; others see a 404", () => {
  let theirs: string;
  const theirPath = () => `${volumesPath}/${theirs}`;
  beforeAll(async () => {
    const a = await wire(h.service.volumeUrl!, 'POST', `/v3/${OTHER}/volumes`, otherAdmin, '3.42', { volume: { size: 1, name: 'theirs' } });
    theirs = (a.json as { volume: { id: string } }).volume.id;
    for (let i = 0; i < 1000 && (await ours(theirs)).status !== 'available'; i++) await new Promise((r) => setTimeout(r, 20));
  });
  afterAll(async () => {
    await wire(h.service.volumeUrl!, 'DELETE', `/v3/${OTHER}/volumes/${theirs}`, otherAdmin, '3.42');
  });

  it.each([
    { name: 'show', method: 'GET', path: '' },
    { name: 'our show', method: 'GET', path: '/os-online-extend' },
    { name: 'its actions', method: 'GET', path: '/os-volume-actions' },
    { name: 'os-extend', method: 'POST', path: '/action', body: { 'os-extend': { new_size: 2 } } },
    { name: 'os-extend-bytes', method: 'POST', path: '/action', body: { 'os-extend-bytes': { new_bytes: 2 * GiB } } },
    { name: 'update', method: 'PUT', path: '', body: { volume: { name: 'taken' } } },
    { name: 'delete', method: 'DELETE', path: '' },
  ])("a member of another project gets a 404 on $name, and the volume is unchanged", async (c) => {
    const a = await call(c.method, `${theirPath()}${c.path}`, { token: h.member, body: c.body });
    expect(a.status, a.text).toBe(404);
    expect((a.json as { itemNotFound: { message: string } }).itemNotFound.message).toMatch(theirs);
    const v = (await wire(h.service.volumeUrl!, 'GET', `/v3/${OTHER}/volumes/${theirs}/os-online-extend`, otherAdmin, '3.42')).json as { volume: Json };
    expect(v.volume).toMatchObject({ name: 'theirs', size_bytes: GiB, status: 'available' });
  });

  it('an admin of another project reads, renames, extends, lists the actions of and deletes it through its own URL', async () => {
    expect(await show(theirs)).toMatchObject({ id: theirs, 'os-vol-tenant-attr:tenant_id': OTHER, name: 'theirs' });
    expect(await ours(theirs)).toMatchObject({ id: theirs, project_id: OTHER });
    const put = await call('PUT', theirPath(), { body: { volume: { name: 'renamed-by-admin' } } });
    expect(put.status, put.text).toBe(200);
    const extend = await call('POST', `${theirPath()}/action`, { version: '3.0', body: { 'os-extend': { new_size: '2' } } });
    expect(extend.status, extend.text).toBe(202);
    expect(await settle(theirs, 'available')).toMatchObject({ size: 2, name: 'renamed-by-admin' });
    const actions = await call('GET', `${theirPath()}/os-volume-actions`);
    expect((actions.json as { volumeActions: Array<{ action: string; project_id: string }> }).volumeActions[0]).toMatchObject({ action: 'extend', project_id: PROJECT });
    expect((await call('DELETE', theirPath())).status).toBe(202);
    for (let i = 0; i < 1000 && (await call('GET', theirPath())).status !== 404; i++) await new Promise((r) => setTimeout(r, 20));
    expect((await wire(h.service.volumeUrl!, 'GET', `/v3/${OTHER}/volumes/${theirs}`, otherAdmin, '3.42')).status).toBe(404);
  });
});

describe("PUT /volumes/{id}: Cinder's update", () => {
  let id: string;
  beforeAll(async () => {
    id = await create({ size: 1, name: 'before', description: 'old', metadata: { keep: 'no' } });
    await settle(id, 'available');
  });
  afterAll(async () => {
    await call('DELETE', `${volumesPath}/${id}`);
  });

  it.each([
    { name: 'a new name (cinder rename, openstack volume set --name)', body: { name: 'after' }, shows: { name: 'after', description: 'old', metadata: { keep: 'no' } } },
    { name: "Cinder's v1 names", body: { display_name: 'dn', display_description: 'dd' }, shows: { name: 'dn', description: 'dd' } },
    { name: 'a description null (none)', body: { description: null }, shows: { description: null } },
    { name: 'metadata, replacing the whole set', body: { metadata: { a: 'b' } }, shows: { metadata: { a: 'b' } } },
    { name: 'nothing', body: {}, shows: {} },
  ])('sets $name: 200 with the volume as it is now, shown the same afterwards', async (c) => {
    const before = await show(id);
    const a = await call('PUT', `${volumesPath}/${id}`, { token: h.member, body: { volume: c.body } });
    expect(a.status, a.text).toBe(200);
    const v = (a.json as { volume: Json }).volume;
    expect(v).toMatchObject({ ...c.shows, id, status: 'available', size: 1 });
    // Cinder's update view has no show extensions (tempest's update_volume schema refuses them).
    expect(v).not.toHaveProperty(['os-vol-tenant-attr:tenant_id']);
    const after = await show(id);
    expect(after).toMatchObject(c.shows);
    if (Object.keys(c.body).length > 0) expect(after.updated_at).not.toBe(before.updated_at);
  });

  it.each([
    { name: 'an unknown key', body: { volume: { size: 2 } }, status: 400 },
    { name: 'no volume object', body: { name: 'x' }, status: 400 },
    { name: 'a name too long', body: { volume: { name: 'x'.repeat(256) } }, status: 400 },
    { name: 'metadata that is not strings', body: { volume: { metadata: { a: 1 } } }, status: 400 },
  ])('refuses $name with a 400, changing nothing', async (c) => {
    const before = await show(id);
    const a = await call('PUT', `${volumesPath}/${id}`, { body: c.body });
    expect(a.status, a.text).toBe(c.status);
    expect(await show(id)).toEqual(before);
  });

  it('answers 404 for a volume that does not exist', async () => {
    const a = await call('PUT', `${volumesPath}/0f0e0d0c-0000-4000-8000-00000000dead`, { body: { volume: { name: 'x' } } });
    expect(a.status).toBe(404);
  });
});

describe("os-extend's new_size as Cinder's volume_size", () => {
  let id: string;
  beforeAll(async () => {
    id = await create({ size: 1 });
    await settle(id, 'available');
  });
  afterAll(async () => {
    await call('DELETE', `${volumesPath}/${id}`);
  });

  it.each([
    { new_size: '0', message: /os-extend\.new_size: 0 is not a size in GiB/ },
    { new_size: '99999999999', message: /os-extend\.new_size: 99999999999 is not a size in GiB/ },
    { new_size: 'two', message: /new_size/ },
    { new_size: '2.5', message: /new_size/ },
    { new_size: 2.5, message: /new_size/ },
    { new_size: '', message: /new_size/ },
  ])('refuses $new_size with a 400, changing nothing', async (c) => {
    const a = await call('POST', `${volumesPath}/${id}/action`, { body: { 'os-extend': { new_size: c.new_size } } });
    expect(a.status, a.text).toBe(400);
    expect((a.json as { badRequest: { message: string } }).badRequest.message).toMatch(c.message);
    expect(await ours(id)).toMatchObject({ size_bytes: GiB, status: 'available', extend: null });
  });

  it('takes its decimal text as the integer', async () => {
    const a = await call('POST', `${volumesPath}/${id}/action`, { body: { 'os-extend': { new_size: '3' } } });
    expect([a.status, a.text]).toEqual([202, '']);
    expect(await settle(id, 'available')).toMatchObject({ size: 3 });
  });
});
