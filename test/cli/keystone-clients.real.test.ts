/**
 * Debian's own OpenStack clients (`openstack` 6.0, `cinder` 9.1) with Keystone v3 password auth
 * against `serve --driver fake`'s embedded Keystone: they discover /v3, get a token and its
 * catalog, and reach the volume API through it. Real processes on 127.0.0.1, ended by pid.
 * Needs the clients (a real part): skipped locally without them, fails in CI.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeReal } from '../support/real.js';
import { ensureBuilt } from '../support/build.js';
import { oeCli, startServe, type Served } from '../support/clients.js';
import { fakeInventory, PROJECT } from '../support/service.js';
import { tempestMissing } from '../support/tempestSchemas.js';

const CLIENTS = ['/usr/bin/openstack', '/usr/bin/cinder'];
const missing = CLIENTS.filter((c) => !existsSync(c));
const noTempest = tempestMissing();
const PASSWORD = 'client matrix pw';

let root: string;
let serve: Served | undefined;
let urls: Record<string, string> = {};

/** Run one of Debian's clients with a private HOME and Debian's Python, as a user would. */
function client(bin: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(bin, args, { env: { PATH: '/usr/bin:/bin', HOME: join(root, 'home'), LANG: 'C.UTF-8' }, timeout: 120_000, encoding: 'utf8' }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    ),
  );
}

const auth = (password = PASSWORD) => [
  '--os-auth-url', `${urls.identity}/v3`, '--os-username', 'alice', '--os-password', password,
  '--os-project-name', PROJECT, '--os-user-domain-name', 'Default', '--os-project-domain-name', 'Default',
];

describeReal(
  missing.length
    ? `Debian's OpenStack clients are not installed (${missing.join(', ')}): apt-get install python3-openstackclient python3-cinderclient`
    : noTempest,
)(
  "Debian's openstack and cinder clients against serve: password auth through the embedded Keystone, and noauth",
  () => {
    let volumeId: string;

    beforeAll(async () => {
      ensureBuilt();
      root = mkdtempSync(join(tmpdir(), 'oe-clients-'));
      mkdirSync(join(root, 'home'));
      const data = join(root, 'data');
      writeFileSync(join(root, 'inv.json'), JSON.stringify(fakeInventory()));
      expect(oeCli(['user', 'create', '--project', PROJECT, '--user', 'alice', '--roles', 'admin,member', '--password-stdin', '--data-dir', data], `${PASSWORD}\n`).status).toBe(0);
      serve = await startServe({ dataDir: data, args: ['--driver', 'fake', '--fake-inventory', join(root, 'inv.json')] });
      urls = serve.urls;
      // A volume to list, made with a token from the same Keystone.
      const res = await fetch(`${urls.identity}/v3/auth/tokens`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name: 'alice', domain: { name: 'Default' }, password: PASSWORD } } }, scope: { project: { id: PROJECT } } } }),
      });
      const token = res.headers.get('x-subject-token')!;
      const v = await fetch(`${urls.volume}/v3/${PROJECT}/volumes`, { method: 'POST', headers: { 'x-auth-token': token, 'content-type': 'application/json' }, body: JSON.stringify({ volume: { size: 1, name: 'matrix-vol' } }) });
      expect(v.status).toBe(202);
      volumeId = ((await v.json()) as { volume: { id: string } }).volume.id;
    });

    afterAll(async () => {
      await serve?.stop();
      if (root) rmSync(root, { recursive: true, force: true });
    });

    it('openstack token issue gets a project-scoped token for the user', async () => {
      const r = await client('/usr/bin/openstack', [...auth(), '--os-identity-api-version', '3', 'token', 'issue', '-f', 'json']);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ project_id: PROJECT, user_id: expect.stringMatching(/^[0-9a-f]{32}$/), id: expect.stringMatching(/^oe-/) });
    });

    it('openstack volume list finds the volume through the catalog', async () => {
      const r = await client('/usr/bin/openstack', [...auth(), '--os-identity-api-version', '3', 'volume', 'list', '-f', 'json']);
      expect(r.code).toBe(0);
      expect((JSON.parse(r.stdout) as Array<Record<string, unknown>>).map((v) => [v.ID, v.Name, v.Size])).toEqual([[volumeId, 'matrix-vol', 1]]);
    });

    it('cinder list finds the volume through the catalog', async () => {
      const r = await client('/usr/bin/cinder', [...auth(), 'list']);
      expect(r.code).toBe(0);
      const row = r.stdout.split('\n').find((l) => l.includes(volumeId));
      expect(row).toMatch(new RegExp(`\\|\\s*${volumeId}\\s*\\|\\s*available\\s*\\|\\s*matrix-vol\\s*\\|\\s*1\\s*\\|`));
    });

    it("tempest's own Keystone v3 auth provider gets a token and finds volumev3, compute and identity in its catalog", async () => {
      const script = [
        'import json, sys',
        'from tempest.lib import auth',
        "c = auth.KeystoneV3Credentials(username='alice', password=sys.argv[2], user_domain_name='Default', project_name=sys.argv[3], project_domain_name='Default')",
        'p = auth.KeystoneV3AuthProvider(c, sys.argv[1])',
        'p.get_token()',
        "urls = {s: p.base_url({'service': s, 'endpoint_type': 'publicURL', 'region': 'RegionOne'}) for s in ('volumev3', 'compute', 'identity')}",
        "print(json.dumps({'expired': p.is_expired(p.auth_data), 'project_id': p.credentials.project_id, 'urls': urls}))",
      ].join('\n');
      const r = await client('/usr/bin/python3', ['-c', script, `${urls.identity}/v3`, PASSWORD, PROJECT]);
      expect(r.stderr).toBe('');
      expect(JSON.parse(r.stdout)).toEqual({
        expired: false,
        project_id: PROJECT,
        urls: { volumev3: `${urls.volume}/v3/${PROJECT}`, compute: `${urls.compute}/v2.1`, identity: `${urls.identity}/v3` },
      });
    });

    it("cinder with noauth is refused by a serve that is not in noauth mode (401)", async () => {
      const r = await client('/usr/bin/cinder', ['--os-auth-type', 'noauth', '--os-endpoint', `${urls.volume}/v3/${PROJECT}`, '--os-user-id', 'alice', '--os-project-id', PROJECT, 'list']);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/HTTP 401/);
    });

    it("cinder with noauth lists a noauth serve's volumes", async () => {
      const data = join(root, 'noauth-data');
      const lab = await startServe({ dataDir: data, args: ['--auth', 'noauth', '--fake-inventory', join(root, 'inv.json')] });
      try {
        const volume = lab.urls.volume!;
        const v = await fetch(`${volume}/v3/${PROJECT}/volumes`, { method: 'POST', headers: { 'x-auth-token': `alice:${PROJECT}`, 'content-type': 'application/json' }, body: JSON.stringify({ volume: { size: 1, name: 'lab-vol' } }) });
        const id = ((await v.json()) as { volume: { id: string } }).volume.id;
        const r = await client('/usr/bin/cinder', ['--os-auth-type', 'noauth', '--os-endpoint', `${volume}/v3/${PROJECT}`, '--os-user-id', 'alice', '--os-project-id', PROJECT, 'list']);
        expect(r.code).toBe(0);
        expect(r.stdout).toMatch(new RegExp(`\\|\\s*${id}\\s*\\|\\s*available\\s*\\|\\s*lab-vol\\s*\\|`));
      } finally {
        await lab.stop();
      }
    });

    it.each([['openstack', ['--os-identity-api-version', '3', 'volume', 'list']], ['cinder', ['list']]])('%s fails with a wrong password, saying the authentication failed', async (name, args) => {
      const r = await client(`/usr/bin/${name}`, [...auth('wrong'), ...args]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/authentication|Unauthorized|401/i);
    });
  },
);
