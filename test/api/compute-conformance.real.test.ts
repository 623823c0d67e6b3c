/**
 * The compute API's answers judged by tempest's own strict schemas (Debian's tempest 33, through
 * test/support/tempestSchemas.ts): live responses at every microversion whose shapes change up
 * to our maximum (2.1, 2.3, 2.9, 2.16, 2.19, 2.26, 2.47, 2.51), as a project member, as its
 * admin and as the admin of another project (Nova's by-id reads cross projects for admins), on
 * the three URL forms (`/v2.1`, `/v2.1/{project_id}`, `/v2/{tenant_id}`). The schema module for
 * each version is the one tempest's ServersClient picks (`schema_versions_info` in
 * tempest/lib/services/compute/servers_client.py, rows up to 2.51), and `list_instance_actions`
 * is always the 2.1 schema, as tempest's client uses it.
 *
 * The servers judged are of every kind the API shows: servers created through POST /servers with
 * a registered flavor and image (one ACTIVE, one in ERROR after a failed spawn, whose `fault` is
 * shown), and servers found on the host (the fake driver's inventory: one whose vCPUs and memory
 * the driver measured, one it could not measure), each read by id and in the lists. Attach
 * (POST, 200) is judged on the whole service, whose volume API the attach goes through.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import pino from 'pino';
import { buildComputeApp, type ComputeApp } from '../../src/app.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { FakeDriver } from '../../src/virt/fake/driver.js';
import { errors } from '../../src/errors.js';
import { issueToken } from '../../src/auth/tokens.js';
import { PolicyEnforcer } from '../../src/auth/policy.js';
import { COMPUTE_VERSIONS } from '../../src/api/microversion.js';
import { describeReal } from '../support/real.js';
import { judge, tempestMissing, type TempestCase } from '../support/tempestSchemas.js';
import { BLOCK_VOL, FILE_VOL, GiB, OFF_SERVER, OTHER_TENANT, SERVER, TENANT, createServerThroughApi, registerCatalog, sampleServers } from '../support/computeApp.js';
import { makeService, PROJECT, SERVER as SERVICE_SERVER, type ServiceHarness } from '../support/service.js';

/** tempest's ServersClient.schema_versions_info, the rows up to 2.51: [min, max, module]. */
const SCHEMA_VERSIONS: Array<[string, string, string]> = [
  ['2.1', '2.2', 'v2_1'],
  ['2.3', '2.5', 'v2_3'],
  ['2.6', '2.7', 'v2_6'],
  ['2.8', '2.8', 'v2_8'],
  ['2.9', '2.15', 'v2_9'],
  ['2.16', '2.18', 'v2_16'],
  ['2.19', '2.25', 'v2_19'],
  ['2.26', '2.44', 'v2_26'],
  ['2.45', '2.46', 'v2_45'],
  ['2.47', '2.47', 'v2_47'],
  ['2.48', '2.50', 'v2_48'],
  ['2.51', '2.53', 'v2_51'],
];
const VERSIONS = ['2.1', '2.3', '2.9', '2.16', '2.19', '2.26', '2.47', '2.51'];

const minor = (v: string) => Number(v.split('.')[1]);
function moduleFor(version: string): string {
  const row = SCHEMA_VERSIONS.find(([lo, hi]) => minor(lo) <= minor(version) && minor(version) <= minor(hi));
  if (!row) throw new Error(`no tempest schema module for ${version}`);
  return row[2];
}

interface Caller {
  name: string;
  token: string;
  project: string;
  admin: boolean;
}

interface Captured extends TempestCase {
  what: string;
  echo: string | null;
  version: string;
}

const describeTempest = describeReal(tempestMissing());

describeTempest('tempest judges the compute API at 2.1–2.51', () => {
  let store: SqliteStore;
  let built: ComputeApp;
  let driver: FakeDriver;
  /** The servers read by id: kind → id. */
  const servers: Record<string, string> = { 'found, measured': SERVER, 'found, not measured': OFF_SERVER };
  let base: string;
  let h: ServiceHarness;
  const callers: Caller[] = [];
  const actions = { ok: '', failed: '' };

  beforeAll(async () => {
    store = new SqliteStore(':memory:');
    await registerCatalog(store);
    driver = new FakeDriver({ servers: sampleServers() });
    built = await buildComputeApp({ store, driver, logger: pino({ level: 'silent' }), policy: new PolicyEnforcer() });
    base = await built.app.listen({ host: '127.0.0.1', port: 0 });
    const mk = async (userId: string, projectId: string, roles: string[]) => (await issueToken(store, { userId, projectId, roles, ttlMs: 3_600_000 })).token;
    callers.push(
      { name: 'member', token: await mk('user-member', TENANT, ['member']), project: TENANT, admin: false },
      { name: 'admin', token: await mk('user-admin', TENANT, ['admin']), project: TENANT, admin: true },
      { name: 'admin of another project', token: await mk('user-other-admin', OTHER_TENANT, ['admin']), project: OTHER_TENANT, admin: true },
    );
    // One action that succeeded and one that failed (a shrink), for the instance action views.
    const grow = async (bytes: number) => {
      const res = await fetch(`${base}/v2/${TENANT}/servers/${SERVER}/os-online_extend_volume/${FILE_VOL}`, {
        method: 'POST',
        headers: { 'x-auth-token': callers[1]!.token, 'content-type': 'application/json' },
        body: JSON.stringify({ onlineExtendVolume: { bytes } }),
      });
      return res.headers.get('x-openstack-request-id')!;
    };
    actions.ok = await grow(2 * GiB);
    actions.failed = await grow(512);
    // Servers created through the API by the member: one built, one whose spawn failed.
    servers.created = await createServerThroughApi(built, callers[0]!.token, { name: 'made', metadata: { role: 'web' } });
    driver.injectFault('spawn', errors.driverFailed('no room on the host'));
    servers['created, failed'] = await createServerThroughApi(built, callers[0]!.token, { name: 'failed' });
    h = await makeService();
  });

  afterAll(async () => {
    await built?.app.close();
    await store?.close();
    await h?.cleanup();
  });

  async function capture(url: string, token: string, version: string, schema: string, what: string, init: { method?: string; body?: unknown } = {}): Promise<Captured> {
    const headers: Record<string, string> = { 'x-auth-token': token };
    // As tempest's compute client: the legacy header, only when a microversion is configured.
    if (version !== '2.1') headers['x-openstack-nova-api-version'] = version;
    if (init.body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(url, { method: init.method ?? 'GET', headers, ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}) });
    const text = await res.text();
    return { what, schema, status: res.status, body: text === '' ? null : (JSON.parse(text) as unknown), echo: res.headers.get('x-openstack-nova-api-version'), version };
  }

  it('advertises 2.51 as the maximum, the highest version judged here', () => {
    expect(String(COMPUTE_VERSIONS.max)).toBe(VERSIONS.at(-1));
  });

  it('has the kinds of server it judges: created ACTIVE and ERROR with a fault, found with and without a measured size', async () => {
    const created = await store.getServer(servers.created!);
    expect(created).toMatchObject({ state: 'active', flavorRef: 'f-small', imageRef: expect.any(String), userId: 'user-member' });
    expect(await store.getServer(servers['created, failed']!)).toMatchObject({ state: 'error', flavorRef: 'f-small', fault: { code: 500 } });
    expect(await store.getServer(SERVER)).toMatchObject({ vcpus: 2, memoryMb: 2048 });
    const off = await store.getServer(OFF_SERVER);
    expect(off?.flavorRef ?? null).toBeNull();
    expect(off).not.toHaveProperty('vcpus');
    expect(off).not.toHaveProperty('memoryMb');
  });

  it("passes tempest's schemas for servers, attachments and instance actions at every version, caller and URL form", async () => {
    const cases: Captured[] = [];
    for (const version of VERSIONS) {
      const mod = `compute.${moduleFor(version)}.servers`;
      for (const c of callers) {
        for (const prefix of ['/v2.1', `/v2.1/${c.project}`, `/v2/${c.project}`]) {
          const at = (path: string) => `${base}${prefix}${path}`;
          const what = (x: string) => `${version} ${c.name} ${prefix} ${x}`;
          const srv = `/servers/${SERVER}`;
          cases.push(
            await capture(at('/servers'), c.token, version, `${mod}.list_servers`, what('GET /servers')),
            await capture(at('/servers?limit=1&name=-1'), c.token, version, `${mod}.list_servers`, what('GET /servers?limit=1&name=-1')),
            await capture(at('/servers/detail'), c.token, version, `${mod}.list_servers_detail`, what('GET /servers/detail')),
            ...(await Promise.all(Object.entries(servers).map(([kind, id]) => capture(at(`/servers/${id}`), c.token, version, `${mod}.get_server`, what(`GET /servers/{${kind}}`))))),
            await capture(at(`${srv}/os-volume_attachments`), c.token, version, `${mod}.list_volume_attachments`, what('GET os-volume_attachments')),
            await capture(at(`${srv}/os-volume_attachments/${BLOCK_VOL}`), c.token, version, `${mod}.show_volume_attachment`, what('GET os-volume_attachments/{id}')),
            await capture(at(`${srv}/os-instance-actions`), c.token, version, 'compute.v2_1.servers.list_instance_actions', what('GET os-instance-actions')),
            await capture(at(`${srv}/os-instance-actions/${actions.ok}`), c.token, version, `${mod}.show_instance_action`, what('GET os-instance-actions/{ok}')),
            await capture(at(`${srv}/os-instance-actions/${actions.failed}`), c.token, version, `${mod}.show_instance_action`, what('GET os-instance-actions/{failed}')),
          );
          if (c.admin) {
            cases.push(await capture(at('/servers/detail?all_tenants=1'), c.token, version, `${mod}.list_servers_detail`, what('GET /servers/detail?all_tenants=1')));
          }
        }
      }
    }
    expect(cases).toHaveLength(VERSIONS.length * 3 * (3 * (8 + Object.keys(servers).length) + 2));
    const verdicts = judge(cases);
    const failures = cases.flatMap((c, i) => (verdicts[i]!.ok ? [] : [`${c.what} (${c.schema}): ${verdicts[i]!.error}\n${JSON.stringify(c.body)}`]));
    expect(failures, failures.slice(0, 5).join('\n\n')).toEqual([]);
    // What was judged is what the cases are about: the failed build's fault, each kind's flavor.
    const shown = (kind: string, version: string) =>
      cases.filter((c) => c.version === version && c.what.endsWith(`GET /servers/{${kind}}`)).map((c) => (c.body as { server: Record<string, unknown> }).server);
    for (const version of VERSIONS) {
      const at247 = minor(version) >= 47;
      for (const s of shown('created, failed', version)) expect(s).toMatchObject({ status: 'ERROR', fault: { code: 500, message: expect.stringContaining('no room') } });
      for (const s of shown('created', version)) expect(s.flavor).toMatchObject(at247 ? { original_name: 'm1.small', vcpus: 2 } : { id: 'f-small' });
      for (const s of shown('found, measured', version)) expect(s.flavor).toMatchObject(at247 ? { original_name: 'host-defined', vcpus: 2, ram: 2048 } : { id: 'host-defined' });
      for (const s of shown('found, not measured', version)) expect(s.flavor).toMatchObject(at247 ? { original_name: 'host-defined', vcpus: 0, ram: 0 } : { id: 'host-defined' });
      expect(shown('found, not measured', version)).toHaveLength(9);
    }
    // tempest's compute client also requires the version it asked for echoed exactly.
    for (const c of cases) expect({ what: c.what, echo: c.echo }).toEqual({ what: c.what, echo: c.version });
  });

  it("passes tempest's schemas for attach (200) and detach (202, empty) at every version and URL form", async () => {
    const cases: Captured[] = [];
    for (const version of VERSIONS) {
      const mod = `compute.${moduleFor(version)}.servers`;
      for (const prefix of ['/v2.1', `/v2.1/${PROJECT}`, `/v2/${PROJECT}`]) {
        const volume = (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size: 1 } })).body.volume.id;
        const at = `${h.service.computeUrl}${prefix}/servers/${SERVICE_SERVER}/os-volume_attachments`;
        const what = `${version} admin ${prefix}`;
        cases.push(await capture(at, h.token, version, `${mod}.attach_volume`, `${what} POST os-volume_attachments`, { method: 'POST', body: { volumeAttachment: { volumeId: volume } } }));
        cases.push(await capture(`${at}/${volume}`, h.token, version, 'compute.v2_1.servers.detach_volume', `${what} DELETE os-volume_attachments/{id}`, { method: 'DELETE' }));
        await h.volume.request('DELETE', `/v3/${PROJECT}/volumes/${volume}`).catch(() => undefined);
      }
    }
    const verdicts = judge(cases);
    const failures = cases.flatMap((c, i) => (verdicts[i]!.ok ? [] : [`${c.what} (${c.schema}): ${verdicts[i]!.error}\n${JSON.stringify(c.body)}`]));
    expect(failures, failures.join('\n\n')).toEqual([]);
  });

  it('a response tempest would refuse is refused: the checker is live', () => {
    const [verdict] = judge([{ schema: 'compute.v2_1.servers.list_instance_actions', status: 200, body: { instanceActions: [{ action: 'x', finish_time: null }] } }]);
    expect(verdict!.ok).toBe(false);
  });
});
