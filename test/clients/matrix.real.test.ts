/**
 * The client matrix: Debian's own `openstack` (6.0), `cinder` (9.1) and `nova` (18.1) against a
 * real `online-extend serve --driver fake`, each command with each way of authenticating that a
 * user has:
 *
 * - `token`: this service's admin token through keystoneauth's `admin_token` plugin (openstack:
 *   a clouds.yaml with the compute endpoint and a block-storage endpoint override; cinder and nova:
 *   `--os-auth-type admin_token --os-endpoint`), at the standard URLs (`/v2.1`, `/v3/{project}`);
 * - `password`: Keystone v3 password auth through the embedded Keystone endpoint (a user made by
 *   `online-extend user create … --password-stdin`; the endpoints come from the token's catalog);
 * - `keystone`: Keystone v3 password auth through a real Keystone (Debian's, started by
 *   test/support/keystone.ts, with this service registered in its catalog) and serve `--auth
 *   keystone` validating the tokens against it;
 * - `noauth`: Cinder's noauth (`X-Auth-Token: user:project`) against a serve with `auth: noauth`.
 *
 * Rows are data: COMMANDS × the modes each supports. Every row runs (a few at a time; each
 * client's Python start-up takes about a second), its own server and volumes set up through the
 * service's native routes, and is judged by its exit status AND by what proves it worked (the
 * server's name in the output, the volume's new size read back, …). The measured matrix goes to
 * `test-results/client-matrix.md` and the console. Tests assert the rows marked as expected to
 * work; the rows in EXPECTED_FAILURES are listed as todo with the reason (the server-side piece
 * that is missing), so none fails silently and none is claimed without working.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describeReal } from '../support/real.js';
import { keystoneMissing, startKeystone, type KeystoneHarness } from '../support/keystone.js';
import { ensureBuilt } from '../support/build.js';
import {
  clientsMissing,
  firstErrorLine,
  fixtureApi,
  oeCli,
  pool,
  privateHome,
  runClient,
  startServe,
  tempRoot,
  type ClientResult,
  type FixtureApi,
  type Served,
} from '../support/clients.js';

const PROJECT = 'p-demo';
const USER = 'mx-admin';
const PASSWORD = 'mx-secret-password-1';
const RESULTS = resolve(import.meta.dirname, '../../test-results/client-matrix.md');
/** Rows run this many at a time (each client is a Python process that mostly waits on its start-up and on HTTP). */
const CONCURRENCY = 4;

type Mode = 'token' | 'password' | 'keystone' | 'noauth';
const MODES: Mode[] = ['token', 'password', 'keystone', 'noauth'];
type Tool = 'openstack' | 'cinder' | 'nova';

/** What a row gets: its own server (in the fake inventory), and the volume it asked for. */
interface Fixture {
  serverId: string;
  serverName: string;
  volumeId: string;
  volumeName: string;
  /** The request id of the volume's attach action (when the row asked for it). */
  requestId: string;
  /** A name for what the row creates. */
  newName: string;
  api: FixtureApi;
}

interface Command {
  name: string;
  tool: Tool;
  modes: Mode[];
  /** The volume the row needs: none, an available one, or one attached to the row's server. */
  volume?: 'available' | 'in-use';
  args(f: Fixture): string[];
  /** Undefined when the output (or the effect, read back natively) proves the command worked; else what is missing. */
  proves(r: ClientResult, f: Fixture): Promise<string | undefined> | string | undefined;
}

/** Parsed `-f json` output, or undefined. */
function json(r: ClientResult): unknown {
  try {
    return JSON.parse(r.stdout) as unknown;
  } catch {
    return undefined;
  }
}

/** The first of `keys` that `o` has (the clients title-case some columns: `Name`, `Volume ID`). */
function field(o: unknown, ...keys: string[]): unknown {
  if (typeof o !== 'object' || o === null) return undefined;
  const rec = o as Record<string, unknown>;
  for (const k of keys) if (k in rec) return rec[k];
  return undefined;
}

/** Undefined if `-f json` output is a list with an item whose `keys` field equals `want`. */
function listHas(r: ClientResult, want: string, ...keys: string[]): string | undefined {
  const list = json(r);
  if (!Array.isArray(list)) return `output is not a JSON list: ${r.stdout.slice(0, 120)}`;
  return list.some((i) => field(i, ...keys) === want) ? undefined : `no item with ${keys[0]} ${want} in ${list.length} item(s)`;
}

/** Undefined if table output (cinder/nova) has a cell equal to `want`. */
function tableHas(r: ClientResult, want: string): string | undefined {
  const cells = r.stdout.split('\n').flatMap((l) => l.split('|').map((c) => c.trim()));
  return cells.includes(want) ? undefined : `no cell "${want}" in the table`;
}

/** cinder/nova `show` tables: the value of `prop`. */
function tableProp(r: ClientResult, prop: string): string | undefined {
  for (const l of r.stdout.split('\n')) {
    const cells = l.split('|').map((c) => c.trim());
    if (cells[1] === prop) return cells[2];
  }
  return undefined;
}

/** Undefined once the volume reads back at `size` GiB and no longer extending. */
async function grewTo(f: Fixture, size: number): Promise<string | undefined> {
  const v = await f.api.waitVolume(f.volumeId, (x) => x !== undefined && x.status !== 'extending' && x.size === size);
  return v?.size === size && v.status === 'in-use' ? undefined : `volume reads back as ${JSON.stringify({ status: v?.status, size: v?.size })}, not in-use at ${size} GiB`;
}

const COMMANDS: Command[] = [
  {
    name: 'openstack server list',
    tool: 'openstack',
    modes: ['token', 'password', 'keystone'],
    args: () => ['server', 'list', '-f', 'json'],
    proves: (r, f) => listHas(r, f.serverName, 'Name', 'name'),
  },
  {
    name: 'openstack server show',
    tool: 'openstack',
    modes: ['token', 'password', 'keystone'],
    args: (f) => ['server', 'show', f.serverName, '-f', 'json'],
    proves: (r, f) => (field(json(r), 'id') === f.serverId && field(json(r), 'name') === f.serverName ? undefined : `no id ${f.serverId} / name ${f.serverName} in the output`),
  },
  {
    name: 'openstack server volume list',
    tool: 'openstack',
    modes: ['token', 'password', 'keystone'],
    volume: 'in-use',
    args: (f) => ['server', 'volume', 'list', f.serverName, '-f', 'json'],
    proves: (r, f) => listHas(r, f.volumeId, 'Volume ID', 'volume_id', 'volumeId'),
  },
  {
    name: 'openstack server event list',
    tool: 'openstack',
    modes: ['token', 'password', 'keystone'],
    volume: 'in-use',
    args: (f) => ['server', 'event', 'list', f.serverName, '-f', 'json'],
    proves: (r, f) => listHas(r, f.requestId, 'Request ID', 'request_id'),
  },
  {
    name: 'openstack server event show',
    tool: 'openstack',
    modes: ['token', 'password', 'keystone'],
    volume: 'in-use',
    args: (f) => ['server', 'event', 'show', f.serverName, f.requestId, '-f', 'json'],
    proves: (r, f) => (field(json(r), 'request_id') === f.requestId && field(json(r), 'action') === 'attach_volume' ? undefined : `no attach_volume action ${f.requestId} in the output`),
  },
  {
    name: 'openstack volume list',
    tool: 'openstack',
    modes: ['token', 'password', 'keystone'],
    volume: 'available',
    args: () => ['volume', 'list', '-f', 'json'],
    proves: (r, f) => listHas(r, f.volumeName, 'Name', 'Display Name', 'name'),
  },
  {
    name: 'openstack volume show',
    tool: 'openstack',
    modes: ['token', 'password', 'keystone'],
    volume: 'available',
    args: (f) => ['volume', 'show', f.volumeName, '-f', 'json'],
    proves: (r, f) => (field(json(r), 'id') === f.volumeId && field(json(r), 'size') === 1 ? undefined : `no id ${f.volumeId} with size 1 in the output`),
  },
  {
    name: 'openstack volume create',
    tool: 'openstack',
    modes: ['token', 'password', 'keystone'],
    args: (f) => ['volume', 'create', '--size', '1', f.newName, '-f', 'json'],
    async proves(r, f) {
      const id = field(json(r), 'id');
      if (field(json(r), 'name') !== f.newName || typeof id !== 'string') return `no name ${f.newName} and id in the output`;
      const v = await f.api.waitVolume(id, (x) => x?.status === 'available');
      return v?.status === 'available' && v.size === 1 ? undefined : `volume ${id} reads back as ${JSON.stringify(v)}`;
    },
  },
  {
    name: 'openstack volume set --size (3.42, in-use)',
    tool: 'openstack',
    modes: ['token', 'password', 'keystone'],
    volume: 'in-use',
    args: (f) => ['--os-volume-api-version', '3.42', 'volume', 'set', '--size', '2', f.volumeName],
    proves: (_r, f) => grewTo(f, 2),
  },
  {
    name: 'openstack volume delete',
    tool: 'openstack',
    modes: ['token', 'password', 'keystone'],
    volume: 'available',
    args: (f) => ['volume', 'delete', f.volumeName],
    async proves(_r, f) {
      const v = await f.api.waitVolume(f.volumeId, (x) => x === undefined);
      return v === undefined ? undefined : `volume still there: ${JSON.stringify(v)}`;
    },
  },
  {
    name: 'openstack server add volume',
    tool: 'openstack',
    modes: ['token', 'password', 'keystone'],
    volume: 'available',
    args: (f) => ['server', 'add', 'volume', f.serverName, f.volumeName],
    async proves(_r, f) {
      const v = await f.api.waitVolume(f.volumeId, (x) => x?.status === 'in-use');
      return v?.status === 'in-use' && v.attachments?.some((a) => a.server_id === f.serverId) ? undefined : `volume reads back as ${JSON.stringify(v)}`;
    },
  },
  {
    name: 'openstack server remove volume',
    tool: 'openstack',
    modes: ['token', 'password', 'keystone'],
    volume: 'in-use',
    args: (f) => ['server', 'remove', 'volume', f.serverName, f.volumeName],
    async proves(_r, f) {
      const v = await f.api.waitVolume(f.volumeId, (x) => x?.status === 'available');
      return v?.status === 'available' ? undefined : `volume reads back as ${JSON.stringify(v)}`;
    },
  },
  {
    name: 'cinder list',
    tool: 'cinder',
    modes: ['token', 'password', 'keystone', 'noauth'],
    volume: 'available',
    args: () => ['list'],
    proves: (r, f) => tableHas(r, f.volumeId),
  },
  {
    name: 'cinder show',
    tool: 'cinder',
    modes: ['token', 'password', 'keystone', 'noauth'],
    volume: 'available',
    args: (f) => ['show', f.volumeId],
    proves: (r, f) => (tableProp(r, 'id') === f.volumeId && tableProp(r, 'size') === '1' ? undefined : `no id ${f.volumeId} with size 1 in the table`),
  },
  {
    name: 'cinder extend (3.42, in-use)',
    tool: 'cinder',
    modes: ['token', 'password', 'keystone', 'noauth'],
    volume: 'in-use',
    args: (f) => ['--os-volume-api-version', '3.42', 'extend', f.volumeId, '2'],
    proves: (_r, f) => grewTo(f, 2),
  },
  {
    name: 'nova list',
    tool: 'nova',
    modes: ['token', 'password', 'keystone'],
    args: () => ['list'],
    proves: (r, f) => tableHas(r, f.serverName),
  },
  {
    name: 'nova volume-attachments',
    tool: 'nova',
    modes: ['token', 'password', 'keystone'],
    volume: 'in-use',
    args: (f) => ['volume-attachments', f.serverName],
    proves: (r, f) => tableHas(r, f.volumeId),
  },
  {
    name: 'nova instance-action-list',
    tool: 'nova',
    modes: ['token', 'password', 'keystone'],
    volume: 'in-use',
    args: (f) => ['instance-action-list', f.serverName],
    proves: (r, f) => tableHas(r, f.requestId),
  },
];

/**
 * Rows known to fail on this build, `"<command> | <mode>"` → why (the server-side piece that is
 * missing). Every other row must work. A row listed here that works is reported as such, so the
 * list can shrink as the pieces land.
 */
const EXPECTED_FAILURES: Record<string, string> = {
  // e.g. 'openstack server list | keystone': 'the missing piece, and what the client got',
  // Empty since 2026-11-30 04:48 UTC: all 57 rows measured working on main.
};

interface Row {
  key: string;
  command: Command;
  mode: Mode;
  serverId: string;
  serverName: string;
}

const ROWS: Row[] = COMMANDS.flatMap((command) =>
  command.modes.map((mode, i) => ({
    key: `${command.name} | ${mode}`,
    command,
    mode,
    serverId: randomUUID(),
    serverName: `mx-${COMMANDS.indexOf(command)}-${i}-${mode}`,
  })),
);

interface Measured {
  row: Row;
  /** False when the row could not be run (what it needs is missing in this build); `error` says what. */
  ran: boolean;
  code: number | null;
  /** Undefined when the command worked (exit 0 and its proof held). */
  error: string | undefined;
  ms: number;
}

function inventory(rows: Row[], project: string): object {
  return {
    capabilities: { extend_volume: true },
    servers: rows.map((r) => ({ id: r.serverId, name: r.serverName, project_id: project, state: 'active', disks: [] })),
  };
}

/** Keystone v3 password credentials for the clients. */
interface PasswordAuth {
  /** `http://127.0.0.1:P/v3` */
  authUrl: string;
  username: string;
  password: string;
  project: string;
}

/** One serve (its data dir, inventory, admin token and the project its servers are in), for the rows of some modes. */
interface Instance {
  served: Served;
  project: string;
  token: string;
  /** The token the native fixture calls use (under noauth: `user:project`). */
  fixtureToken: string;
  /** The password auth its rows use, or why there is none. */
  password?: PasswordAuth;
  noPassword?: string;
  stop(): Promise<void>;
}

/** Rows whose instance could not start: each is reported as not run, with `reason`. */
type Unavailable = { unavailable: string };

function instanceDir(root: string, name: string, rows: Row[], project: string): { data: string; inv: string } {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  const inv = join(dir, 'inventory.json');
  writeFileSync(inv, JSON.stringify(inventory(rows, project)));
  return { data: join(dir, 'data'), inv };
}

/** serve --driver fake with this service's own tokens (`token` and the embedded Keystone's `password`), or with `env` (noauth). */
async function startInstance(root: string, name: string, rows: Row[], env: Record<string, string> = {}): Promise<Instance> {
  const { data, inv } = instanceDir(root, name, rows, PROJECT);
  const t = oeCli(['token', 'create', '--project', PROJECT, '--user', 'mx-token-admin', '--roles', 'admin', '--ttl', '1h', '--data-dir', data]);
  if (t.status !== 0) throw new Error(`token create failed: ${t.stderr}`);
  const u = oeCli(['user', 'create', '--project', PROJECT, '--user', USER, '--roles', 'admin,member', '--password-stdin', '--data-dir', data], `${PASSWORD}\n`);
  const served = await startServe({ dataDir: data, args: ['--driver', 'fake', '--fake-inventory', inv], env });
  const inst: Instance = { served, project: PROJECT, token: t.stdout, fixtureToken: t.stdout, stop: () => served.stop() };
  if (u.status !== 0) inst.noPassword = `not run: \`online-extend user create\` failed: ${u.stderr.split('\n')[0]}`;
  else if (!served.urls.identity) inst.noPassword = 'not run: serve announced no identity (Keystone) endpoint';
  else inst.password = { authUrl: `${served.urls.identity}/v3`, username: USER, password: PASSWORD, project: PROJECT };
  // Under noauth the service trusts `user:project`; until noauth is wired, the admin token serves.
  if (env.ONLINE_EXTEND_AUTH === 'noauth') {
    const probe = await fetch(`${served.urls.volume}/v3/${PROJECT}/volumes`, { headers: { 'x-auth-token': `admin:${PROJECT}` } });
    if (probe.ok) inst.fixtureToken = `admin:${PROJECT}`;
  }
  return inst;
}

/**
 * Debian's Keystone (test/support/keystone.ts) with this service in its catalog, and serve
 * --auth keystone validating against it; the clients log in as Keystone's bootstrap admin.
 */
async function startKeystoneInstance(root: string, rows: Row[]): Promise<Instance | Unavailable> {
  const missing = keystoneMissing();
  if (missing) return { unavailable: `not run: ${missing}` };
  const ks = await startKeystone();
  let served: Served | undefined;
  try {
    const { data, inv } = instanceDir(root, 'keystone', rows, ks.admin.projectId);
    served = await startServe({
      dataDir: data,
      args: ['--driver', 'fake', '--fake-inventory', inv, '--auth', 'keystone', '--keystone-url', ks.url, '--keystone-service-user', ks.service.name, '--keystone-service-project', ks.service.projectName, '--keystone-service-password-file', ks.service.passwordFile],
    });
    await registerCatalog(ks, served.urls);
    const token = await ks.token(ks.admin);
    const running = served;
    return {
      served: running,
      project: ks.admin.projectId,
      token,
      fixtureToken: token,
      password: { authUrl: ks.url, username: ks.admin.name, password: ks.admin.password, project: ks.admin.projectName },
      stop: async () => {
        await running.stop();
        await ks.stop();
      },
    };
  } catch (err) {
    await served?.stop();
    await ks.stop();
    throw err;
  }
}

/**
 * Registers this service's APIs in Keystone's catalog (public endpoints in RegionOne) through
 * Keystone's API, as an operator (or devstack) would. Debian's Keystone 22 on SQLite here often
 * leaves its database locked after a write or a login (the next write waits 5 s and answers 500
 * "database is locked"), so each write goes to a freshly restarted Keystone (the harness keeps
 * its data, keys and port; tokens stay valid).
 */
async function registerCatalog(ks: KeystoneHarness, urls: Record<string, string>): Promise<void> {
  const post = async (path: string, body: unknown): Promise<Record<string, { id: string }>> => {
    await ks.restart();
    const token = await ks.token(ks.admin);
    const res = await fetch(`${ks.url}${path}`, { method: 'POST', headers: { 'x-auth-token': token, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (!res.ok) throw new Error(`POST ${path}: HTTP ${res.status} ${await res.text()}`);
    return (await res.json()) as Record<string, { id: string }>;
  };
  // Keystone fills in $(project_id)s per token.
  const entries: Array<[string, string, string]> = [
    ['compute', 'nova', `${urls.compute}/v2.1`],
    ['volumev3', 'cinderv3', `${urls.volume}/v3/$(project_id)s`],
    ['block-storage', 'cinder', `${urls.volume}/v3/$(project_id)s`],
    ...(urls.image ? [['image', 'glance', urls.image] as [string, string, string]] : []),
  ];
  for (const [type, name, url] of entries) {
    const service = (await post('/services', { service: { type, name, enabled: true } })).service!;
    await post('/endpoints', { endpoint: { service_id: service.id, interface: 'public', region_id: 'RegionOne', url } });
  }
}

/** The argv prefix, environment and clouds.yaml of `tool` in `mode` against `inst`. */
function auth(tool: Tool, mode: Mode, inst: Instance): { argv: string[]; env: Record<string, string>; clouds?: string } {
  const { compute, volume } = inst.served.urls;
  const computeUrl = `${compute}/v2.1`;
  const volumeUrl = `${volume}/v3/${inst.project}`;
  // measure() runs password and keystone rows only where the instance has password auth.
  const pw = inst.password ?? { authUrl: '', username: '', password: '', project: '' };
  const password = ['--os-auth-url', pw.authUrl, '--os-username', pw.username, '--os-password', pw.password, '--os-project-name', pw.project, '--os-user-domain-name', 'Default', '--os-project-domain-name', 'Default'];
  if (tool === 'openstack') {
    const clouds =
      mode === 'token'
        ? // admin_token gives every service its one endpoint; the block-storage override separates volumes.
          `clouds:\n  oe:\n    auth_type: admin_token\n    auth:\n      endpoint: ${computeUrl}\n      token: ${inst.token}\n    block_storage_endpoint_override: ${volumeUrl}\n`
        : `clouds:\n  oe:\n    auth_type: password\n    auth:\n      auth_url: ${pw.authUrl}\n      username: ${pw.username}\n      password: ${pw.password}\n      project_name: ${pw.project}\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: RegionOne\n`;
    return { argv: ['openstack', '--os-cloud', 'oe'], env: {}, clouds };
  }
  if (tool === 'cinder') {
    if (mode === 'token') return { argv: ['cinder', '--os-auth-type', 'admin_token', '--os-endpoint', volumeUrl, '--os-token', inst.token, '--os-project-id', inst.project], env: {} };
    if (mode === 'noauth') return { argv: ['cinder', '--os-auth-type', 'noauth', '--os-endpoint', volumeUrl, '--os-user-id', 'admin', '--os-project-id', inst.project], env: {} };
    return { argv: ['cinder', ...password], env: {} };
  }
  // novaclient insists on a project and an auth URL even with admin_token; neither is used.
  if (mode === 'token') return { argv: ['nova', '--os-auth-type', 'admin_token', '--os-endpoint', computeUrl, '--os-token', inst.token], env: { OS_PROJECT_ID: inst.project, OS_AUTH_URL: 'http://127.0.0.1:9/v3' } };
  return { argv: ['nova', ...password], env: {} };
}

async function measure(row: Row, inst: Instance | Unavailable, homes: string): Promise<Measured> {
  if ('unavailable' in inst) return { row, ran: false, code: null, error: inst.unavailable, ms: 0 };
  if ((row.mode === 'password' || row.mode === 'keystone') && !inst.password) return { row, ran: false, code: null, error: inst.noPassword ?? 'not run: no password auth', ms: 0 };
  const api = fixtureApi(inst.served.urls as { compute: string; volume: string }, inst.fixtureToken, inst.project);
  const f: Fixture = { serverId: row.serverId, serverName: row.serverName, volumeId: '', volumeName: '', requestId: '', newName: `${row.serverName}-new`, api };
  try {
    if (row.command.volume) {
      f.volumeName = `${row.serverName}-vol`;
      f.volumeId = (await api.createVolume(f.volumeName)).id;
      if (row.command.volume === 'in-use') {
        await api.attach(f.serverId, f.volumeId);
        f.requestId = (await api.actions(f.serverId)).find((a) => a.action === 'attach_volume')?.request_id ?? '';
      }
    }
  } catch (err) {
    return { row, ran: false, code: null, error: `not run: fixture failed: ${(err as Error).message.slice(0, 160)}`, ms: 0 };
  }
  const a = auth(row.command.tool, row.mode, inst);
  const r = await runClient([...a.argv, ...row.command.args(f)], { home: privateHome(homes, a.clouds), env: a.env });
  if (r.code !== 0) return { row, ran: true, code: r.code, error: firstErrorLine(r), ms: r.ms };
  const why = await row.command.proves(r, f);
  return { row, ran: true, code: r.code, error: why === undefined ? undefined : `exit 0, but ${why}`, ms: r.ms };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : s[Math.floor(s.length / 2)]!;
}

function report(results: Measured[]): string {
  const modes = MODES;
  const cell = (c: Command, m: Mode): string => {
    const r = results.find((x) => x.row.command === c && x.row.mode === m);
    if (!r) return '—';
    if (r.error === undefined) return EXPECTED_FAILURES[r.row.key] ? 'works (listed as failing)' : 'works';
    return r.ran ? 'fails' : 'not run';
  };
  const lines = [
    `# Client matrix (measured ${new Date().toISOString()})`,
    '',
    "Debian's openstack 6.0, cinder 9.1, nova 18.1 against `online-extend serve --driver fake`.",
    `${results.filter((r) => r.error === undefined).length} of ${results.length} rows work; ${results.filter((r) => !r.ran).length} could not be run. Client wall time per row: median ${median(results.filter((r) => r.ran).map((r) => r.ms))} ms.`,
    '',
    `| command | ${modes.join(' | ')} |`,
    `|---|${modes.map(() => '---').join('|')}|`,
    ...COMMANDS.map((c) => `| ${c.name} | ${modes.map((m) => cell(c, m)).join(' | ')} |`),
    '',
    '## Failures (first error line)',
    '',
    ...results.filter((r) => r.error !== undefined).map((r) => `- **${r.row.key}**${r.code === null ? '' : ` (exit ${r.code})`}: ${r.error!.replace(/\|/g, '\\|')}`),
    '',
  ];
  return lines.join('\n');
}

describeReal(clientsMissing())("Debian's OpenStack clients against serve --driver fake", () => {
  let root: string;
  const instances: Instance[] = [];
  let results: Measured[] = [];

  beforeAll(async () => {
    // The real tier has no build step of its own: serve runs from dist/.
    ensureBuilt();
    root = tempRoot('oe-matrix-');
    const of = (...modes: Mode[]) => ROWS.filter((r) => modes.includes(r.mode));
    const started = await Promise.allSettled([
      startInstance(root, 'token', of('token', 'password')),
      startInstance(root, 'noauth', of('noauth'), { ONLINE_EXTEND_AUTH: 'noauth' }),
      startKeystoneInstance(root, of('keystone')).catch((err: Error): Unavailable => ({ unavailable: `not run: Keystone or serve --auth keystone failed: ${err.message.split('\n')[0]}` })),
    ]);
    // Whatever started is stopped by afterAll, even if another one failed.
    for (const r of started) if (r.status === 'fulfilled' && !('unavailable' in r.value)) instances.push(r.value);
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    const [own, noauth, keystone] = started.map((r) => (r as PromiseFulfilledResult<Instance | Unavailable>).value) as [Instance, Instance, Instance | Unavailable];
    const instanceOf = (m: Mode) => (m === 'noauth' ? noauth : m === 'keystone' ? keystone : own);
    results = await pool(ROWS, CONCURRENCY, (row) => measure(row, instanceOf(row.mode), join(root, 'homes')));
    const text = report(results);
    mkdirSync(resolve(RESULTS, '..'), { recursive: true });
    writeFileSync(RESULTS, text);
    console.log(`\n${text}\n(written to ${RESULTS})`);
    // About 40 s on an idle 2-core machine (each client starts in about 1 s); a busy one (load
    // 15) takes 12 s per client start and about 3 minutes in all.
  }, 600_000);

  afterAll(async () => {
    await Promise.all(instances.map((i) => i.stop()));
    if (root) rmSync(root, { recursive: true, force: true });
  });

  const works = ROWS.filter((r) => EXPECTED_FAILURES[r.key] === undefined);
  const fails = ROWS.filter((r) => EXPECTED_FAILURES[r.key] !== undefined);

  it.each(works.map((r) => [r.key, r] as const))('%s: exits 0 and its output or effect shows it worked', (_key, row) => {
    const r = results.find((x) => x.row === row)!;
    expect(r.error, `${row.key}: ${r.error}`).toBeUndefined();
    expect(r.code).toBe(0);
  });

  for (const row of fails) it.todo(`${row.key}: known to fail — ${EXPECTED_FAILURES[row.key]}`);

  it('lists no row as failing that is not in the table', () => {
    expect(Object.keys(EXPECTED_FAILURES).filter((k) => !ROWS.some((r) => r.key === k))).toEqual([]);
  });
});
