/**
 * Tempest (Debian's `tempest` 33) as a peer suite: a tempest.conf and accounts.yaml for a served
 * instance, one test run by id, and its outcome read per test.
 *
 * The test runs as `python3 -m subunit.run <id>` rather than `python3 -m testtools.run`: the same
 * loader and runner, but testtools' text output does not show skips at all (a test that skips
 * inside its body reads "Ran 1 test … OK", and a class-level skip reads "Ran 0 tests … OK", exit
 * 0 both times). The subunit stream gives every test id with its status (`success`, `fail`,
 * `skip`, and `setUpClass (…)` pseudo-tests for class-level skips and errors), read with
 * `subunit2csv`; `subunit-trace` renders the same stream for people (skip reasons, tracebacks).
 * On the lab, tempest_gated_run.py runs it the same way with two timing gates (guestWatch.ts).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { clientEnv } from './clients.js';

const GATED_RUNNER = join(import.meta.dirname, 'tempest_gated_run.py');

export const EXTEND_ATTACHED_TEST = 'tempest.api.volume.test_volumes_extend.VolumesExtendAttachedTest.test_extend_attached_volume';

/** Why tempest cannot run here, or undefined. */
export function tempestRunnerMissing(): string | undefined {
  for (const bin of ['/usr/bin/subunit2csv', '/usr/bin/subunit-trace']) if (!existsSync(bin)) return `${bin} is not installed (python3-subunit, a dependency of tempest)`;
  const r = spawnSync('/usr/bin/python3', ['-c', 'import tempest.api.volume.test_volumes_extend, subunit.run'], { env: clientEnv('/tmp') });
  return r.status === 0 ? undefined : "Debian's tempest package is not installed (online-extend lab install-clients)";
}

/** One pre-provisioned account (tempest's accounts.yaml). */
export interface TempestAccount {
  username: string;
  password: string;
  project: string;
  /** `['admin']` for the admin account; member accounts name roles instead. */
  types?: string[];
  roles?: string[];
}

export interface TempestSetup {
  /** The embedded Keystone, `http://127.0.0.1:P/v3`. */
  identityUri: string;
  admin: TempestAccount;
  member: TempestAccount;
  imageRef: string;
  flavorRef: string;
  /** Seconds tempest waits for a server or volume state (default 300: TCG guests are slow on a busy host). */
  buildTimeout?: number;
}

/** Writes `<dir>/etc/tempest.conf` and `<dir>/etc/accounts.yaml`; returns the etc dir (TEMPEST_CONFIG_DIR). */
export function writeTempestConfig(dir: string, s: TempestSetup): string {
  const etc = join(dir, 'etc');
  mkdirSync(etc, { recursive: true });
  mkdirSync(join(dir, 'lock'), { recursive: true });
  const timeout = s.buildTimeout ?? 300;
  const account = (a: TempestAccount) =>
    [`- username: '${a.username}'`, `  password: '${a.password}'`, `  project_name: '${a.project}'`, `  domain_name: 'Default'`, ...(a.types ? [`  types: [${a.types.map((t) => `'${t}'`).join(', ')}]`] : []), ...(a.roles ? [`  roles: [${a.roles.map((t) => `'${t}'`).join(', ')}]`] : [])].join('\n');
  writeFileSync(join(etc, 'accounts.yaml'), `${account(s.admin)}\n${account(s.member)}\n`);
  const conf = `[DEFAULT]
log_dir = ${dir}
log_file = tempest.log
debug = true

[auth]
use_dynamic_credentials = false
test_accounts_file = ${join(etc, 'accounts.yaml')}
create_isolated_networks = false
default_credentials_domain_name = Default
admin_domain_name = Default

[identity]
uri_v3 = ${s.identityUri}
auth_version = v3
region = RegionOne
v3_endpoint_type = public

[identity-feature-enabled]
api_v2 = false

[service_available]
cinder = true
nova = true
glance = false
neutron = false
swift = false

[compute]
image_ref = ${s.imageRef}
flavor_ref = ${s.flavorRef}
build_timeout = ${timeout}
build_interval = 1

[volume]
catalog_type = volumev3
max_microversion = 3.42
build_timeout = ${timeout}
build_interval = 1

[volume-feature-enabled]
extend_attached_volume = true

[validation]
run_validation = false

[oslo_concurrency]
lock_path = ${join(dir, 'lock')}
`;
  writeFileSync(join(etc, 'tempest.conf'), conf);
  return etc;
}

/** One test's status in the subunit stream (`success`, `fail`, `skip`, `xfail`, `uxsuccess`, …). */
export interface TempestTest {
  id: string;
  status: string;
}

export interface TempestRun {
  exitCode: number | null;
  tests: TempestTest[];
  /** subunit-trace's rendering: per-test lines, skip reasons, tracebacks. */
  trace: string;
  /** The run's stderr (Python warnings, import errors). */
  stderr: string;
  /** tempest.log: every request tempest made and its answer (`debug = true`). */
  log: string;
  ms: number;
}

/**
 * Runs one tempest test by id in `dir` (config from writeTempestConfig); resolves when it ends or
 * after `timeoutMs`. With `gateDir`, through tempest_gated_run.py (its extend and detach wait for
 * a watcher's gate files there; see guestWatch.ts).
 */
export async function runTempest(testId: string, dir: string, etc: string, timeoutMs: number, gateDir?: string): Promise<TempestRun> {
  const { spawn } = await import('node:child_process');
  const home = join(dir, 'home');
  mkdirSync(home, { recursive: true });
  const started = Date.now();
  const stream = join(dir, 'run.subunit');
  const { exitCode, stderr } = await new Promise<{ exitCode: number | null; stderr: string }>((res) => {
    const args = gateDir ? [GATED_RUNNER, testId] : ['-m', 'subunit.run', testId];
    const env = clientEnv(home, { TEMPEST_CONFIG_DIR: etc, ...(gateDir ? { OE_GATE_DIR: gateDir } : {}) });
    const child = spawn('/usr/bin/python3', args, { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('close', (code) => {
      clearTimeout(timer);
      writeFileSync(stream, Buffer.concat(out));
      res({ exitCode: code, stderr: err });
    });
  });
  const bytes = readFileSync(stream);
  const csv = spawnSync('/usr/bin/subunit2csv', [], { input: bytes, env: clientEnv(home), encoding: 'utf8' });
  const tests = csv.stdout
    .split('\n')
    .slice(1)
    .filter((l) => l.trim() !== '')
    .map((l) => {
      // test,status,start_time,stop_time — the id may hold commas only inside "setUpClass (…)" quotes.
      const m = /^"?(.*?)"?,([a-z]+),[^,]*,[^,]*$/.exec(l);
      return { id: m?.[1] ?? l, status: m?.[2] ?? 'unparsed' };
    });
  const trace = spawnSync('/usr/bin/subunit-trace', ['--no-summary'], { input: bytes, env: clientEnv(home), encoding: 'utf8' });
  const logFile = join(dir, 'tempest.log');
  return { exitCode, tests, trace: `${trace.stdout}${trace.stderr}`, stderr, log: existsSync(logFile) ? readFileSync(logFile, 'utf8') : '', ms: Date.now() - started };
}

/** A test id without tempest's attribute suffix (`…test_extend_attached_volume[compute,id-…]`). */
export function baseTestId(id: string): string {
  return id.replace(/\[[^\]]*\]$/, '');
}

/** Undefined when exactly `testId` ran and passed (1 test, 0 skipped, 0 failed); else what happened. */
export function tempestVerdict(run: TempestRun, testId: string): string | undefined {
  const ran = run.tests.filter((t) => t.status !== 'exists');
  if (ran.length === 1 && baseTestId(ran[0]!.id) === testId && ran[0]!.status === 'success') return undefined;
  const counts = ran.length === 0 ? 'no test ran' : ran.map((t) => `${t.id}: ${t.status}`).join('; ');
  return `${counts} (exit ${run.exitCode})`;
}

/** The requests in tempest.log that failed (status ≥ 400), at most `n`, each with the body the server answered. */
export function failedRequests(log: string, n = 5): string[] {
  const lines = log.split('\n');
  const out: string[] = [];
  lines.forEach((l, i) => {
    if (out.length >= n || !/Request \(.*\): [45]\d\d /.test(l)) return;
    // debug = true logs, after the request line: request headers and body, then response headers and body.
    const rest = lines.slice(i + 1, i + 8);
    const resp = rest.findIndex((x) => x.includes('Response - Headers'));
    const body = resp < 0 ? undefined : rest.slice(resp + 1).find((x) => /^\s+Body: /.test(x));
    const what = l.replace(/^.*?Request \([^)]*\): /, '');
    out.push(`${what}${body ? ` → ${body.trim().replace(/\s+_log_request_full .*$/, '').slice(0, 240)}` : ''}`);
  });
  return out;
}

/** The exception that ended the test (its last `pkg.Class: message` line and a following `Details:` line), or a skip reason. */
export function lastErrorLine(run: TempestRun): string {
  const lines = `${run.trace}\n${run.stderr}`.split('\n').map((l) => l.replace(/^\s*b['"]\s*/, '').replace(/['"]$/, '').trim());
  let found = '(none)';
  lines.forEach((l, i) => {
    if (/SKIPPED:/.test(l) || /^[\w.]*(Error|Exception|exceptions\.\w+|Mismatch\w*|Timeout\w*)\b[\w.]*: /.test(l)) {
      const next = lines[i + 1] ?? '';
      found = /^Details:/.test(next) ? `${l} ${next}` : l;
    }
  });
  return found.slice(0, 300);
}
