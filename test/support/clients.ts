/**
 * The peer-suite harness: Debian's OpenStack clients (`openstack`, `cinder`, `nova`) and tempest
 * run against a real `online-extend serve` process, as an OpenStack user would run them.
 *
 * - `clientsMissing()`: why the clients cannot run here (for describeReal; `.ci/run` installs
 *   them with `online-extend lab install-clients`).
 * - `runClient()`: one client command with Debian's /usr/bin/python3 and nothing of the caller's
 *   environment (no PYTHONPATH, PATH=/usr/bin:/bin, a private HOME: the clients write caches there).
 * - `startServe()`: `bin/online-extend.js serve` on free ports with a temp data dir, killed by pid.
 * - `fixtureApi()`: the service's own native routes (`/v2/{p}`, `/v3/{p}`), to set up what a row needs.
 * - `pool()`: run rows a few at a time (each client's Python start-up takes about a second).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

export const BIN = resolve(import.meta.dirname, '../../bin/online-extend.js');
export const CLIENT_BINARIES = ['/usr/bin/openstack', '/usr/bin/cinder', '/usr/bin/nova'] as const;

/** Why Debian's OpenStack clients cannot run here, or undefined. */
export function clientsMissing(): string | undefined {
  for (const bin of CLIENT_BINARIES) {
    if (!existsSync(bin)) return `${bin} is not installed (online-extend lab install-clients)`;
  }
  return undefined;
}

/** What one client command did. `ms`: its wall time. */
export interface ClientResult {
  argv: string[];
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Lines the clients print on every run that say nothing about the outcome. */
const NOISE = [/^nova CLI is deprecated/, /^WARNING:/, /^\s*$/, /DeprecationWarning/, /warnings\.warn/, /^\s+from /, /^\s+import /];

/** The first line that says what went wrong (stderr first, then stdout), at most 200 characters. */
export function firstErrorLine(r: Pick<ClientResult, 'stdout' | 'stderr'>): string {
  for (const text of [r.stderr, r.stdout]) {
    const line = text.split('\n').find((l) => !NOISE.some((n) => n.test(l)));
    if (line !== undefined) return line.trim().slice(0, 200);
  }
  return '(no output)';
}

/** Debian's interpreter and nothing of the caller's Python environment; `home` is private. */
export function clientEnv(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: '/usr/bin:/bin', HOME: home, LANG: 'C.UTF-8', ...extra };
}

/** Runs `argv` (argv[0] a client under /usr/bin) to completion or `timeoutMs` (then SIGKILL, code null). */
export function runClient(argv: string[], opts: { home: string; env?: Record<string, string>; timeoutMs?: number; cwd?: string }): Promise<ClientResult> {
  const started = Date.now();
  return new Promise((res) => {
    const child = spawn(argv[0]!.startsWith('/') ? argv[0]! : `/usr/bin/${argv[0]}`, argv.slice(1), {
      env: clientEnv(opts.home, opts.env),
      cwd: opts.cwd ?? opts.home,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.once('close', (code) => {
      clearTimeout(timer);
      res({ argv, code, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** Runs `fn` over `items`, at most `n` at a time; results in the items' order. */
export async function pool<T, R>(items: readonly T[], n: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

/** A running `serve`: the URL of each API it announced (`compute`, `volume`, and `identity`/`image` when it has them). */
export interface Served {
  child: ChildProcess;
  dataDir: string;
  urls: Record<string, string>;
  /** Its output so far. */
  output: string[];
  stop(): Promise<void>;
}

/**
 * Starts `node bin/online-extend.js serve` on free ports (every port 0, the embedded Keystone
 * and image ports included, through their environment keys) with `dataDir`, and resolves once
 * every API listens: `serve` announces the image API last, after the compute, volume and (auth
 * `token`) identity APIs. Rejects with its output if it exits first.
 */
export async function startServe(opts: { dataDir: string; args: string[]; env?: Record<string, string> }): Promise<Served> {
  const child = spawn(process.execPath, [BIN, 'serve', '--data-dir', opts.dataDir, '--port', '0', '--volume-port', '0', '--sync-interval', '0', ...opts.args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      ONLINE_EXTEND_LOG_LEVEL: 'warn',
      ONLINE_EXTEND_IDENTITY_PORT: '0',
      ONLINE_EXTEND_IMAGE_PORT: '0',
      ...opts.env,
    },
  });
  const urls: Record<string, string> = {};
  const output: string[] = [];
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
    }
  };
  try {
    await new Promise<void>((res, rej) => {
      for (const s of [child.stdout!, child.stderr!]) {
        createInterface({ input: s }).on('line', (line) => {
          output.push(line);
          // "compute API listening on http://127.0.0.1:P (…)", "identity (Keystone v3) listening on …"
          const m = /^(\w+)\b.*\blistening on (http:\/\/127\.0\.0\.1:\d+)/.exec(line);
          if (m) urls[m[1]!.toLowerCase()] = m[2]!;
          if (urls.image) res();
        });
      }
      void exited.then(() => rej(new Error(`serve exited (${child.exitCode}): ${output.join('\n')}`)));
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return { child, dataDir: opts.dataDir, urls, output, stop };
}

/** Runs the online-extend CLI to completion (`input` on its stdin). */
export function oeCli(args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', input, env: { ...process.env, ONLINE_EXTEND_LOG_LEVEL: 'warn' }, timeout: 30_000 });
  return { status: r.status, stdout: r.stdout.trim(), stderr: r.stderr.trim() };
}

/** A fresh private HOME under `root` (the clients write caches there; clouds.yaml goes in it). */
export function privateHome(root: string, clouds?: string): string {
  mkdirSync(root, { recursive: true });
  const home = mkdtempSync(join(root, 'home-'));
  if (clouds !== undefined) {
    mkdirSync(join(home, '.config', 'openstack'), { recursive: true });
    writeFileSync(join(home, '.config', 'openstack', 'clouds.yaml'), clouds);
  }
  return home;
}

export function tempRoot(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A response from the service's native routes: status and parsed JSON body (undefined when empty). */
export interface NativeResponse {
  status: number;
  body: Record<string, unknown> | undefined;
}

/**
 * The service's own routes (`/v2/{project}` compute, `/v3/{project}` volume) with a token: what a
 * row sets up (volumes, attachments) and how a row's effect is read back, independent of the
 * clients under test. Only Cinder's and Nova's own fields are used (`size` in GiB, `status`).
 */
export function fixtureApi(urls: { compute: string; volume: string }, token: string, project: string) {
  const call = async (base: string, method: string, path: string, body?: unknown): Promise<NativeResponse> => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { 'x-auth-token': token, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : undefined };
  };
  const must = (r: NativeResponse, what: string): Record<string, unknown> => {
    if (r.status >= 300) throw new Error(`${what}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
    return r.body ?? {};
  };
  type Volume = { id: string; name: string; status: string; size: number; attachments?: Array<{ server_id: string }> };
  const api = {
    compute: (method: string, path: string, body?: unknown) => call(urls.compute, method, `/v2/${project}${path}`, body),
    volume: (method: string, path: string, body?: unknown) => call(urls.volume, method, `/v3/${project}${path}`, body),
    /** The volume, or undefined on 404. */
    async getVolume(id: string): Promise<Volume | undefined> {
      const r = await api.volume('GET', `/volumes/${id}`);
      if (r.status === 404) return undefined;
      return must(r, `GET volume ${id}`).volume as Volume;
    },
    /** Polls the volume until `pred` holds or `timeoutMs` passes; returns the last state seen. */
    async waitVolume(id: string, pred: (v: Volume | undefined) => boolean, timeoutMs = 15_000): Promise<Volume | undefined> {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const v = await api.getVolume(id);
        if (pred(v) || Date.now() > until) return v;
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    /** A new available volume of `sizeGiB`. */
    async createVolume(name: string, sizeGiB = 1): Promise<Volume> {
      const v = must(await api.volume('POST', '/volumes', { volume: { name, size: sizeGiB } }), `create volume ${name}`).volume as Volume;
      const ready = await api.waitVolume(v.id, (x) => x?.status === 'available');
      if (ready?.status !== 'available') throw new Error(`volume ${name} did not become available: ${JSON.stringify(ready)}`);
      return ready;
    },
    /** Attaches `volumeId` to `serverId` and waits for in-use. */
    async attach(serverId: string, volumeId: string): Promise<void> {
      must(await api.compute('POST', `/servers/${serverId}/os-volume_attachments`, { volumeAttachment: { volumeId } }), `attach ${volumeId}`);
      const v = await api.waitVolume(volumeId, (x) => x?.status === 'in-use');
      if (v?.status !== 'in-use') throw new Error(`volume ${volumeId} did not become in-use: ${JSON.stringify(v)}`);
    },
    /** The server's instance actions, newest first as Nova lists them. */
    async actions(serverId: string): Promise<Array<{ action: string; request_id: string }>> {
      return must(await api.compute('GET', `/servers/${serverId}/os-instance-actions`), `actions of ${serverId}`).instanceActions as Array<{ action: string; request_id: string }>;
    },
  };
  return api;
}
export type FixtureApi = ReturnType<typeof fixtureApi>;
