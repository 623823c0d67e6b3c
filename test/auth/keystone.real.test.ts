/**
 * `online-extend serve --auth keystone` (the built bin, fake driver) against Debian's real
 * Keystone (test/support/keystone.ts): tokens that
 * Keystone issued carry their user, project and roles into our policy; a revoked token stops
 * working within the cache time; bad tokens get 401 with `WWW-Authenticate`; Keystone away is a
 * 503 (uncertain), and the volume service reaches compute with the Keystone service user's token.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBuilt } from '../support/build.js';
import { startServe } from '../support/clients.js';
import { describeReal } from '../support/real.js';
import { keystoneMissing, startKeystone, type KeystoneHarness } from '../support/keystone.js';

const MiB = 2 ** 20;
const MEMBER_SERVER = '6a1f0c4a-2222-4a22-9b33-0c4d5e6f7a01';
const ADMIN_SERVER = '6a1f0c4a-3333-4a22-9b33-0c4d5e6f7a02';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Answer {
  status: number;
  headers: Headers;
  body: Record<string, Record<string, unknown>>;
}

/** One request with `token` as X-Auth-Token; the answer as it came (status, headers, JSON body). */
async function call(base: string, method: string, path: string, token: string, body?: unknown): Promise<Answer> {
  const res = await fetch(`${base}${path}`, {
    method,
    // Volume calls at Cinder's 3.42, which extending an attached volume needs (compute ignores the header).
    headers: { 'x-auth-token': token, 'openstack-api-version': 'volume 3.42', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? (JSON.parse(text) as Answer['body']) : {} };
}

/** A running `online-extend serve` process and its APIs' URLs. */
interface Served {
  computeUrl: string;
  volumeUrl: string;
  /** SIGTERM by pid, and wait for the exit. */
  stop(): Promise<void>;
}

/**
 * `online-extend serve --driver fake --auth keystone …` against `ks` (the built bin, as an operator
 * runs it); servers in the member's and the admin's projects.
 */
async function serveWithKeystone(ks: KeystoneHarness, root: string, cacheMs: number): Promise<Served> {
  const inv = join(root, 'inventory.json');
  writeFileSync(
    inv,
    JSON.stringify({
      capabilities: { extend_volume: true },
      servers: [
        { id: MEMBER_SERVER, name: 'vm-member', project_id: ks.member.projectId, state: 'active', disks: [] },
        { id: ADMIN_SERVER, name: 'vm-admin', project_id: ks.admin.projectId, state: 'active', disks: [] },
      ],
    }),
  );
  // Members may list servers and create and read volumes; everything else stays admin-only (the spec's default).
  const policy = join(root, 'policy.json');
  const memberOrAdmin = 'role:admin or role:member';
  writeFileSync(policy, JSON.stringify({ 'os_compute_api:servers:index': memberOrAdmin, 'volume:create': memberOrAdmin, 'volume:get': memberOrAdmin, 'volume:get_all': memberOrAdmin }));
  // dist/ must match src/ (the real tier has no global build step).
  ensureBuilt();
  const args = ['--driver', 'fake', '--fake-inventory', inv, '--policy', policy];
  args.push('--auth', 'keystone', '--keystone-url', ks.url, '--keystone-service-user', ks.service.name, '--keystone-service-project', ks.service.projectName);
  args.push('--keystone-service-password-file', ks.service.passwordFile, '--keystone-token-cache', String(cacheMs));
  const served = await startServe({ dataDir: join(root, 'data'), args });
  return { computeUrl: served.urls.compute!, volumeUrl: served.urls.volume!, stop: served.stop };
}

type Vol = { id: string; status: string; size_bytes: number };

/** Create a volume in the admin's project, attach it to the admin's server (volume service → compute with the service token), extend it in use. */
async function attachAndExtend(svc: Served, ks: KeystoneHarness, token: string): Promise<Vol> {
  const p = ks.admin.projectId;
  const created = await call(svc.volumeUrl, 'POST', `/v3/${p}/volumes`, token, { volume: { name: 'ks', size_bytes: 64 * MiB } });
  expect(created.status).toBe(202);
  const id = (created.body.volume as unknown as Vol).id;
  const attached = await call(svc.computeUrl, 'POST', `/v2/${p}/servers/${ADMIN_SERVER}/os-volume_attachments`, token, { volumeAttachment: { volumeId: id } });
  expect(attached.status).toBe(200);
  const extend = await call(svc.volumeUrl, 'POST', `/v3/${p}/volumes/${id}/action`, token, { 'os-extend-bytes': { new_bytes: 128 * MiB } });
  expect(extend.status).toBe(202);
  const until = Date.now() + 20_000;
  let v: Vol;
  do {
    await sleep(50);
    v = (await call(svc.volumeUrl, 'GET', `/v3/${p}/volumes/${id}/os-online-extend`, token)).body.volume as unknown as Vol;
  } while (v.status === 'extending' && Date.now() < until);
  return v;
}

function expectKeystone401(a: Answer, ks: KeystoneHarness): void {
  expect(a.status).toBe(401);
  expect(a.headers.get('www-authenticate')).toBe(`Keystone uri="${ks.url}"`);
  expect(a.body.unauthorized).toMatchObject({ code: 401, error_code: 'Unauthorized', final: true });
}

describeReal(keystoneMissing())('serve --auth keystone against a real Keystone', () => {
  const CACHE_MS = 1_000;
  let ks: KeystoneHarness;
  let svc: Served;
  let root: string;

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'oe-ks-'));
    ks = await startKeystone();
    console.info(`keystone: set up in ${Math.round(ks.timings.setupMs)} ms, serving after ${Math.round(ks.timings.serveMs)} ms`);
    svc = await serveWithKeystone(ks, root, CACHE_MS);
  });
  afterAll(async () => {
    await svc?.stop();
    await ks?.stop();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  it("takes a member token's project and roles from Keystone: allowed where policy lets members, 403 where it says admin", async () => {
    const token = await ks.token(ks.member);
    const p = ks.member.projectId;
    const servers = await call(svc.computeUrl, 'GET', `/v2/${p}/servers`, token);
    expect(servers.status).toBe(200);
    expect((servers.body.servers as unknown as { id: string }[]).map((s) => s.id)).toEqual([MEMBER_SERVER]);
    const created = await call(svc.volumeUrl, 'POST', `/v3/${p}/volumes`, token, { volume: { name: 'member-vol', size_bytes: 8 * MiB } });
    expect(created.status).toBe(202);
    const listed = await call(svc.volumeUrl, 'GET', `/v3/${p}/volumes`, token);
    expect(listed.status).toBe(200);
    expect((listed.body.volumes as unknown as { name: string }[]).map((v) => v.name)).toContain('member-vol');
    // Admin-only by the spec's policy: the member is known (not 401) but not allowed.
    const vid = (created.body.volume as unknown as { id: string }).id;
    const blockdev = await call(svc.computeUrl, 'GET', `/v2/${p}/servers/${MEMBER_SERVER}/os-online_extend_volume/${vid}`, token);
    expect(blockdev.status).toBe(403);
    expect(blockdev.body.forbidden).toMatchObject({ error_code: 'Forbidden' });
    // Another project's URL: the token's project is Keystone's, not the URL's.
    const other = await call(svc.computeUrl, 'GET', `/v2/${ks.admin.projectId}/servers`, token);
    expect(other.status).toBe(400);
    expect(other.body.badRequest).toMatchObject({ error_code: 'ProjectMismatch' });
  });

  it("lets an admin token use the spec's admin-only routes, and attaches and extends through the volume service's Keystone service token", async () => {
    const token = await ks.token(ks.admin);
    const v = await attachAndExtend(svc, ks, token);
    expect(v).toMatchObject({ status: 'in-use', size_bytes: 128 * MiB });
    const blockdev = await call(svc.computeUrl, 'GET', `/v2/${ks.admin.projectId}/servers/${ADMIN_SERVER}/os-online_extend_volume/${v.id}`, token);
    expect(blockdev.status).toBe(200);
    expect(blockdev.body.volume_blockdev).toMatchObject({ bytes: 128 * MiB });
    const rescan = await call(svc.computeUrl, 'PUT', `/v2/${ks.admin.projectId}/servers/${ADMIN_SERVER}/os-online_extend_volume`, token, { onlineExtendVolume: { volume_id: v.id } });
    expect(rescan.status).toBeLessThan(300);
  });

  it('stops accepting a token revoked at Keystone once the cache time has passed since its last validation', async () => {
    const token = await ks.token(ks.member);
    const path = `/v2/${ks.member.projectId}/servers`;
    expect((await call(svc.computeUrl, 'GET', path, token)).status).toBe(200);
    await ks.revoke(token);
    // The last validation was before the revocation: its cache entry ends within CACHE_MS of it.
    await sleep(CACHE_MS + 100);
    expectKeystone401(await call(svc.computeUrl, 'GET', path, token), ks);
    expectKeystone401(await call(svc.volumeUrl, 'GET', `/v3/${ks.member.projectId}/volumes`, token), ks);
  });

  it.each([
    { name: 'garbage', token: 'not-a-keystone-token' },
    { name: 'a Fernet-looking token Keystone never issued', token: `gAAAAA${'x'.repeat(180)}` },
    { name: 'a token with a space (never sent on to Keystone)', token: 'two words' },
  ])('answers $name with 401 and WWW-Authenticate naming Keystone, on both APIs', async ({ token }) => {
    expectKeystone401(await call(svc.computeUrl, 'GET', `/v2/${ks.member.projectId}/servers`, token), ks);
    expectKeystone401(await call(svc.volumeUrl, 'GET', `/v3/${ks.member.projectId}/volumes`, token), ks);
  });

  it('answers 401 with WWW-Authenticate when no token is sent', async () => {
    const res = await fetch(`${svc.computeUrl}/v2/${ks.member.projectId}/servers`);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe(`Keystone uri="${ks.url}"`);
  });

  it('answers 503 IdentityUnreachable (uncertain, never 401) while Keystone is down, and serves again once it is back', async () => {
    const token = await ks.token(ks.member);
    const path = `/v2/${ks.member.projectId}/servers`;
    await ks.kill();
    try {
      const down = await call(svc.computeUrl, 'GET', path, token);
      expect(down.status).toBe(503);
      expect(down.headers.get('www-authenticate')).toBeNull();
      expect(down.body.serviceUnavailable).toMatchObject({ code: 503, error_code: 'IdentityUnreachable', final: false });
      expect(String(down.body.serviceUnavailable!.message)).not.toMatch(/\/tmp|\/work/);
    } finally {
      await ks.restart();
    }
    expect((await call(svc.computeUrl, 'GET', path, token)).status).toBe(200);
  });

  // Last: Keystone is restarted (same data and keys) to issue tokens that live 6 s.
  describe('with tokens that live 6 s', () => {
    const LIFE_S = 6;
    let short: Served;

    beforeAll(async () => {
      await ks.restart({ tokenExpirationS: LIFE_S });
      // A cache time far past the tokens' life: only their expiry can end a cached validation.
      short = await serveWithKeystone(ks, mkdtempSync(join(root, 'short-')), 600_000);
    });
    afterAll(async () => {
      await short?.stop();
    });

    it('refuses an expired token with 401 and WWW-Authenticate even while its validation is cached, and renews its own service token past its life', async () => {
      const token = await ks.token(ks.admin);
      const path = `/v2/${ks.admin.projectId}/servers`;
      expect((await call(short.computeUrl, 'GET', path, token)).status).toBe(200);
      // Past the token's expires_at (whole seconds at Keystone) and so past the first service token's.
      await sleep((LIFE_S + 1) * 1000);
      expectKeystone401(await call(short.computeUrl, 'GET', path, token), ks);
      // The volume service still reaches compute: its Keystone token was renewed before it expired.
      const v = await attachAndExtend(short, ks, await ks.token(ks.admin));
      expect(v).toMatchObject({ status: 'in-use', size_bytes: 128 * MiB });
    });
  });
});
