/**
 * Issue G benchmark: many hypervisor hosts behind RabbitMQ, state in PostgreSQL.
 *
 *   get_blockdev  GET get_blockdev through `online-extend api` → RabbitMQ 3.10 → compute agents
 *                 (fake driver, BENCH_HOSTS hosts served by one agents process, one PostgreSQL 15),
 *                 with BENCH_SMALL_SERVERS servers and with BENCH_SERVERS × 4 volumes, in one run:
 *                 target p50(large) ≤ 1.2 × p50(small). And the same large inventory through the
 *                 in-process path (`online-extend serve --driver fake`, SQLite, no broker), for
 *                 the RPC path's price.
 *   extends       BENCH_EXTENDS in-use volumes (file backend, attached through the API to servers
 *                 on every host) extended at once through Cinder's os-extend at 3.42, first with
 *                 one api process, then again with two (requests split between them): all must
 *                 finish in-use at the new size, recorded, on the backend and as the host sees
 *                 it; 0 lost updates, 0 stuck, one extend action each. Extends/s and the p50/p99
 *                 of each extend end to end (POST → the volume read back in-use at its new size).
 *
 * Closed-loop latency per request (keep-alive, BENCH_CONNECTIONS connections), medians over
 * BENCH_ROUNDS rounds of BENCH_SECONDS s. The machine has 2 cores shared by every process here,
 * so absolute numbers are low: the ratios are the result.
 *
 *   npm run bench -- scale      (or: node --import tsx bench/scale.ts)
 *   BENCH_HOSTS=50 BENCH_SERVERS=10000 BENCH_SMALL_SERVERS=10 BENCH_EXTENDS=1000 BENCH_ROUNDS=3 BENCH_SECONDS=4 BENCH_CONNECTIONS=8
 *   BENCH_PROFILE=DIR   V8 CPU profiles of the api and serve processes
 *
 * Starts its own PostgreSQL and RabbitMQ (test/support/postgres.ts, rabbitmq.ts) and every
 * process it needs, and stops them all by pid.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import type { ComputeRpcServer as ComputeRpcServerType } from '../src/rpc/amqp/server.js';
import type { FakeServer } from '../src/virt/fake/driver.js';
import { assertBuilt, built } from './built.js';
import { startPostgres } from '../test/support/postgres.js';
import { startRabbitMQ } from '../test/support/rabbitmq.js';

const HOSTS = Number(process.env.BENCH_HOSTS ?? 50);
const SERVERS = Number(process.env.BENCH_SERVERS ?? 10_000);
const SMALL_SERVERS = Number(process.env.BENCH_SMALL_SERVERS ?? 10);
const VOLUMES_PER_SERVER = 4;
const EXTENDS = Number(process.env.BENCH_EXTENDS ?? 1000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 8);
const PROJECT = 'bench';
const GiB = 2 ** 30;
const BIN = fileURLToPath(new URL('../bin/online-extend.js', import.meta.url));

const hex = (n: number, width: number) => n.toString(16).padStart(width, '0');
const serverId = (i: number) => `5e000000-0000-4000-8000-${hex(i, 12)}`;
const volumeId = (i: number, j: number) => `0f${hex(j, 6)}-0000-4000-8000-${hex(i, 12)}`;
const hostOf = (i: number) => `host-${hex(i % HOSTS, 3)}`;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
const round2 = (x: number) => Math.round(x * 100) / 100;

// ------------------------------------------------------------ the agents process (child)

interface AgentsSpec {
  databaseUrl: string;
  transportUrl: string;
  servers: number;
  /** Whether the servers have VOLUMES_PER_SERVER block disks each (get_blockdev), or none (extends attach their own). */
  disks: boolean;
}

/**
 * One process serving every host: a FakeDriver and ComputeManager per host, one store, one broker
 * connection. From the build in dist/, as `online-extend agent` runs them (bench/built.ts).
 */
async function agentsMain(spec: AgentsSpec): Promise<void> {
  const [{ ComputeManager }, { openStoreUrl }, { AmqpConnection }, { ComputeRpcServer }, { FakeDriver }] = await Promise.all([
    built<typeof import('../src/compute/manager.js')>('compute/manager.js'),
    built<typeof import('../src/db/open.js')>('db/open.js'),
    built<typeof import('../src/rpc/amqp/connection.js')>('rpc/amqp/connection.js'),
    built<typeof import('../src/rpc/amqp/server.js')>('rpc/amqp/server.js'),
    built<typeof import('../src/virt/fake/driver.js')>('virt/fake/driver.js'),
  ]);
  const log = pino({ level: 'warn' });
  const opened = await openStoreUrl(spec.databaseUrl);
  const conn = await AmqpConnection.open(spec.transportUrl, { logger: log, name: 'bench agents' });
  const byHost = new Map<string, FakeServer[]>();
  for (let i = 0; i < spec.servers; i++) {
    const list = byHost.get(hostOf(i)) ?? [];
    list.push({
      id: serverId(i),
      name: `vm-${i}`,
      projectId: PROJECT,
      state: 'active',
      disks: spec.disks
        ? Array.from({ length: VOLUMES_PER_SERVER }, (_, j) => ({ volumeId: volumeId(i, j), device: `vd${String.fromCharCode(98 + j)}`, kind: 'block' as const, backingBytes: GiB, hostBytes: GiB, guestBytes: GiB }))
        : [],
    });
    byHost.set(hostOf(i), list);
  }
  const servers: ComputeRpcServerType[] = [];
  for (let h = 0; h < HOSTS; h++) {
    const host = hostOf(h);
    const manager = new ComputeManager({ host, driver: new FakeDriver({ servers: byHost.get(host) ?? [] }), store: opened.store, defaultProjectId: PROJECT, logger: log });
    await manager.syncInventory();
    const server = new ComputeRpcServer({ connection: conn, manager, logger: log });
    await server.start();
    servers.push(server);
    await opened.store.serviceHeartbeat(host, 'nova-compute', 'compute');
  }
  const beat = setInterval(() => {
    for (let h = 0; h < HOSTS; h++) void opened.store.serviceHeartbeat(hostOf(h), 'nova-compute', 'compute').catch(() => undefined);
  }, 2_000);
  process.stdout.write('ready\n');
  process.stdin.resume();
  await once(process.stdin, 'end');
  clearInterval(beat);
  await Promise.all(servers.map((s) => s.close(1_000)));
  await conn.close();
  await opened.close();
}

// ------------------------------------------------------------ processes

interface Proc {
  child: ChildProcess;
  stop(): Promise<void>;
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

async function startAgents(spec: AgentsSpec): Promise<Proc> {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--agents', JSON.stringify(spec)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const rl = createInterface({ input: child.stdout! });
  const [line] = (await Promise.race([once(rl, 'line'), once(child, 'exit').then(() => { throw new Error('the agents process exited'); })])) as [string];
  if (line !== 'ready') throw new Error(`agents: ${line}`);
  return {
    child,
    stop: async () => {
      const exited = once(child, 'exit');
      child.stdin!.end();
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      await stopChild(child, 'SIGKILL');
    },
  };
}

/** Runs the CLI with `args` and waits for lines matching each of `want`; answers the first group of each. */
async function startCli(args: string[], want: RegExp[]): Promise<Proc & { found: string[] }> {
  // BENCH_PROFILE=DIR: the api and serve processes write V8 CPU profiles there (where the time goes).
  const profile = process.env.BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : [];
  const child = spawn(process.execPath, [...profile, BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ONLINE_EXTEND_LOG_LEVEL: 'warn' } });
  const found: string[] = [];
  const rl = createInterface({ input: child.stdout! });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${args[0]} did not start in 60 s: ${stderr}`)), 60_000);
    rl.on('line', (line) => {
      for (const re of want) {
        const m = re.exec(line);
        if (m && found.length < want.length && want[found.length] === re) found.push(m[1]!);
      }
      if (found.length === want.length) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${args[0]} exited (${code}): ${stderr}`));
    });
  });
  child.stdout!.resume();
  return { child, found, stop: () => stopChild(child) };
}

interface Api extends Proc {
  computeUrl: URL;
  volumeUrl: URL;
}

async function startApi(databaseUrl: string, transportUrl: string, dataDir: string, configFile: string): Promise<Api> {
  const p = await startCli(
    ['api', '--database-url', databaseUrl, '--transport-url', transportUrl, '--data-dir', dataDir, '--config', configFile, '--port', '0', '--volume-port', '0', '--identity-port', '0', '--image-port', '0'],
    [/^compute API listening on (\S+)/, /^volume API listening on (\S+)/],
  );
  return { ...p, computeUrl: new URL(p.found[0]!), volumeUrl: new URL(p.found[1]!) };
}

async function cliOutput(args: string[]): Promise<string> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const [code] = (await once(child, 'exit')) as [number];
  if (code !== 0) throw new Error(`online-extend ${args.slice(0, 2).join(' ')} exited ${code}`);
  return out.trim();
}

// ------------------------------------------------------------ HTTP

interface Reply {
  status: number;
  body: string;
}

function call(agent: Agent, url: URL, method: string, path: string, token: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      { agent, host: url.hostname, port: url.port, method, path, headers: { 'x-auth-token': token, ...(payload ? { 'content-type': 'application/json' } : {}), ...headers } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** Runs `fn` over `items` with at most `width` at once. */
async function pool<T>(items: T[], width: number, fn: (item: T, k: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, async () => {
    for (let k = next++; k < items.length; k = next++) await fn(items[k]!, k);
  }));
}

interface LoadResult {
  rps: number;
  p50_ms: number;
  p99_ms: number;
  unexpected: number;
}

/** Closed loop of GET get_blockdev over every server and volume of `servers`, for SECONDS. */
async function blockdevLoad(url: URL, token: string, servers: number): Promise<LoadResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: CONNECTIONS });
  const latencies: number[] = [];
  let unexpected = 0;
  let n = 0;
  const started = performance.now();
  const end = started + SECONDS * 1000;
  await Promise.all(Array.from({ length: CONNECTIONS }, async () => {
    while (performance.now() < end) {
      const k = n++;
      const i = (k * 7919) % servers;
      const t = performance.now();
      const r = await call(agent, url, 'GET', `/v2/${PROJECT}/servers/${serverId(i)}/os-online_extend_volume/${volumeId(i, k % VOLUMES_PER_SERVER)}`, token);
      latencies.push(performance.now() - t);
      if (r.status !== 200) unexpected++;
    }
  }));
  const wall = (performance.now() - started) / 1000;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  return { rps: latencies.length / wall, p50_ms: quantile(latencies, 0.5), p99_ms: quantile(latencies, 0.99), unexpected };
}

async function blockdevRounds(url: URL, token: string, servers: number): Promise<LoadResult> {
  await blockdevLoad(url, token, servers); // warm-up
  const rounds: LoadResult[] = [];
  for (let r = 0; r < ROUNDS; r++) rounds.push(await blockdevLoad(url, token, servers));
  return {
    rps: median(rounds.map((x) => x.rps)),
    p50_ms: median(rounds.map((x) => x.p50_ms)),
    p99_ms: median(rounds.map((x) => x.p99_ms)),
    unexpected: rounds.reduce((a, x) => a + x.unexpected, 0),
  };
}

// ------------------------------------------------------------ phases

async function blockdevThroughRpc(pg: Awaited<ReturnType<typeof startPostgres>>, transportUrl: string, dir: string, configFile: string, servers: number, name: string): Promise<LoadResult> {
  const db = await pg.createDatabase(name);
  const agents = await startAgents({ databaseUrl: db, transportUrl, servers, disks: true });
  const api = await startApi(db, transportUrl, join(dir, name), configFile);
  try {
    const token = await cliOutput(['token', 'create', '--database-url', db, '--project', PROJECT, '--user', 'bench', '--roles', 'admin', '--ttl', '2h']);
    return await blockdevRounds(api.computeUrl, token, servers);
  } finally {
    await api.stop();
    await agents.stop();
  }
}

async function blockdevInProcess(dir: string, servers: number): Promise<LoadResult> {
  const inventory = join(dir, 'inventory.json');
  writeFileSync(
    inventory,
    JSON.stringify({
      servers: Array.from({ length: servers }, (_, i) => ({
        id: serverId(i),
        name: `vm-${i}`,
        project_id: PROJECT,
        state: 'active',
        disks: Array.from({ length: VOLUMES_PER_SERVER }, (_, j) => ({ volume_id: volumeId(i, j), device: `vd${String.fromCharCode(98 + j)}`, bytes: GiB, kind: 'block' })),
      })),
    }),
  );
  const dataDir = join(dir, 'serve');
  const serve = await startCli(
    ['serve', '--driver', 'fake', '--fake-inventory', inventory, '--data-dir', dataDir, '--port', '0', '--volume-port', '0', '--identity-port', '0', '--image-port', '0', '--sync-interval', '0'],
    [/^compute API listening on (\S+)/],
  );
  try {
    const token = await cliOutput(['token', 'create', '--data-dir', dataDir, '--project', PROJECT, '--user', 'bench', '--roles', 'admin', '--ttl', '2h']);
    return await blockdevRounds(new URL(serve.found[0]!), token, servers);
  } finally {
    await serve.stop();
  }
}

interface ExtendRound {
  apis: number;
  extends: number;
  finished: number;
  seconds: number;
  extends_per_s: number;
  p50_ms: number;
  p99_ms: number;
  lost_updates: number;
  stuck: number;
  refused: number;
}

const EXTEND_SERVERS = () => Math.max(HOSTS, Math.ceil(EXTENDS / VOLUMES_PER_SERVER));

/** Creates EXTENDS volumes (1 GiB) and attaches them through the API, VOLUMES_PER_SERVER per server. */
async function prepareVolumes(api: Api, token: string): Promise<string[]> {
  const agent = new Agent({ keepAlive: true, maxSockets: 16 });
  const ids: string[] = new Array(EXTENDS);
  await pool([...Array(EXTENDS).keys()], 16, async (k) => {
    const r = await call(agent, api.volumeUrl, 'POST', `/v3/${PROJECT}/volumes`, token, { volume: { size: 1, name: `bench-${k}` } });
    if (r.status !== 202 && r.status !== 200) throw new Error(`create: ${r.status} ${r.body}`);
    ids[k] = (JSON.parse(r.body) as { volume: { id: string } }).volume.id;
  });
  // One attach at a time per server (Nova refuses a second while one runs: 409 InstanceBusy):
  // slot by slot over the servers, and again after a 409.
  const order = [...Array(EXTENDS).keys()].sort((a, b) => (a % VOLUMES_PER_SERVER) - (b % VOLUMES_PER_SERVER) || a - b);
  await pool(order, 16, async (k) => {
    for (let attempt = 0; ; attempt++) {
      const r = await call(agent, api.computeUrl, 'POST', `/v2.1/${PROJECT}/servers/${serverId(Math.floor(k / VOLUMES_PER_SERVER))}/os-volume_attachments`, token, { volumeAttachment: { volumeId: ids[k] } });
      if (r.status === 200) return;
      if (r.status !== 409 || attempt > 50) throw new Error(`attach: ${r.status} ${r.body}`);
      await new Promise((res) => setTimeout(res, 50));
    }
  });
  // Attachments finish in the background: wait until every volume is in-use.
  for (;;) {
    const states = await volumeStates(agent, api, token);
    if (ids.every((id) => states.get(id)?.status === 'in-use')) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  agent.destroy();
  return ids;
}

async function volumeStates(agent: Agent, api: Api, token: string): Promise<Map<string, { status: string; size: number }>> {
  const out = new Map<string, { status: string; size: number }>();
  let path: string | undefined = `/v3/${PROJECT}/volumes/detail?limit=1000`;
  while (path) {
    const r = await call(agent, api.volumeUrl, 'GET', path, token);
    if (r.status !== 200) throw new Error(`list: ${r.status} ${r.body.slice(0, 200)}`);
    const body = JSON.parse(r.body) as { volumes: Array<{ id: string; status: string; size: number }>; volumes_links?: Array<{ href: string; rel: string }> };
    for (const v of body.volumes) out.set(v.id, { status: v.status, size: v.size });
    const next = body.volumes_links?.find((l) => l.rel === 'next')?.href;
    path = next ? new URL(next).pathname + new URL(next).search : undefined;
  }
  return out;
}

/** Extends every volume to `gib` at once (as many requests in flight as volumes), through `apis` in turn. */
async function extendRound(apis: Api[], token: string, ids: string[], gib: number, dataDir: string): Promise<ExtendRound> {
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const sentAt = new Map<string, number>();
  const doneAt = new Map<string, number>();
  let refused = 0;
  const started = performance.now();
  await pool(ids, 64, async (id, k) => {
    const api = apis[k % apis.length]!;
    sentAt.set(id, performance.now());
    const r = await call(agent, api.volumeUrl, 'POST', `/v3/${PROJECT}/volumes/${id}/action`, token, { 'os-extend': { new_size: gib } }, { 'openstack-api-version': 'volume 3.42' });
    if (r.status !== 202) {
      refused++;
      console.error(`extend refused: ${r.status} ${r.body.slice(0, 300)}`);
    }
  });
  // Poll the listing until every volume is back at rest (in-use or an error) or nothing moved for 60 s.
  let lastProgress = performance.now();
  for (;;) {
    const states = await volumeStates(agent, apis[0]!, token);
    const now = performance.now();
    for (const id of ids) {
      const s = states.get(id);
      if (!doneAt.has(id) && s && s.status !== 'extending') {
        doneAt.set(id, now);
        lastProgress = now;
      }
    }
    if (doneAt.size === ids.length || now - lastProgress > 60_000) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const seconds = (performance.now() - started) / 1000;
  const states = await volumeStates(agent, apis[0]!, token);
  let lost = 0;
  let stuck = 0;
  for (const id of ids) {
    const s = states.get(id);
    const fileBytes = statSync(join(dataDir, 'volumes', 'file', `${id}.raw`), { throwIfNoEntry: false })?.size;
    if (!s || s.status === 'extending') stuck++;
    else if (s.status !== 'in-use' || s.size !== gib || fileBytes !== gib * GiB) {
      lost++;
      console.error(`lost update: volume ${id} ${s.status} ${s.size} GiB, file ${fileBytes} bytes (want in-use ${gib} GiB)`);
    }
  }
  // One extend action per volume per round, each a success.
  await pool(ids, 16, async (id) => {
    // The volume is back at rest a moment before its action's finish is written: an action still
    // without a result is read again (for up to 5 s) before it counts.
    let actions: Array<{ action: string; result?: string | null; message?: string | null }> = [];
    for (let tries = 0; tries < 50; tries++) {
      const r = await call(agent, apis[0]!.volumeUrl, 'GET', `/v3/${PROJECT}/volumes/${id}/os-volume-actions`, token);
      actions = (JSON.parse(r.body) as { volumeActions: typeof actions }).volumeActions.filter((a) => a.action === 'extend');
      if (actions.every((a) => a.result != null)) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    const want = gib - 1;
    if (actions.length !== want || actions.some((a) => a.result !== 'Success')) {
      lost++;
      console.error(`lost update: volume ${id} has ${actions.length} extend actions (want ${want}): ${JSON.stringify(actions)}`);
    }
  });
  agent.destroy();
  const latencies = ids.filter((id) => doneAt.has(id)).map((id) => doneAt.get(id)! - sentAt.get(id)!).sort((a, b) => a - b);
  return {
    apis: apis.length,
    extends: ids.length,
    finished: latencies.length,
    seconds: round2(seconds),
    extends_per_s: round2(latencies.length / seconds),
    p50_ms: Math.round(quantile(latencies, 0.5)),
    p99_ms: Math.round(quantile(latencies, 0.99)),
    lost_updates: lost,
    stuck,
    refused,
  };
}

export async function runScaleBench(): Promise<Record<string, number>> {
  assertBuilt();
  const dir = mkdtempSync(join(tmpdir(), 'oe-bench-scale-'));
  const pg = await startPostgres();
  const rabbit = await startRabbitMQ();
  const configFile = join(dir, 'api.json');
  // Short leases and reconcile rounds are not needed here; the defaults are what operators run.
  writeFileSync(configFile, JSON.stringify({ logLevel: 'warn', backends: ['file'] }));
  const r: Record<string, number> = {};
  try {
    console.error(`scale: get_blockdev through api → RabbitMQ → ${HOSTS} hosts, ${SMALL_SERVERS} servers…`);
    const small = await blockdevThroughRpc(pg, rabbit.url, dir, configFile, SMALL_SERVERS, 'small');
    console.error(`scale: get_blockdev through api → RabbitMQ → ${HOSTS} hosts, ${SERVERS} servers × ${VOLUMES_PER_SERVER} volumes…`);
    const large = await blockdevThroughRpc(pg, rabbit.url, dir, configFile, SERVERS, 'large');
    console.error(`scale: get_blockdev in process (serve, SQLite), ${SERVERS} servers…`);
    const local = await blockdevInProcess(dir, SERVERS);
    Object.assign(r, {
      blockdev_small_p50_ms: round2(small.p50_ms),
      blockdev_small_rps: Math.round(small.rps),
      blockdev_large_p50_ms: round2(large.p50_ms),
      blockdev_large_p99_ms: round2(large.p99_ms),
      blockdev_large_rps: Math.round(large.rps),
      blockdev_large_over_small: round2(large.p50_ms / small.p50_ms),
      blockdev_inprocess_p50_ms: round2(local.p50_ms),
      blockdev_inprocess_rps: Math.round(local.rps),
      blockdev_rpc_over_inprocess: round2(large.p50_ms / local.p50_ms),
      blockdev_unexpected: small.unexpected + large.unexpected + local.unexpected,
    });

    console.error(`scale: ${EXTENDS} in-use extends over ${HOSTS} hosts, one api then two…`);
    const db = await pg.createDatabase('extends');
    const dataDir = join(dir, 'extends');
    const agents = await startAgents({ databaseUrl: db, transportUrl: rabbit.url, servers: EXTEND_SERVERS(), disks: false });
    const apis: Api[] = [];
    try {
      apis.push(await startApi(db, rabbit.url, dataDir, configFile));
      const token = await cliOutput(['token', 'create', '--database-url', db, '--project', PROJECT, '--user', 'bench', '--roles', 'admin', '--ttl', '2h']);
      const ids = await prepareVolumes(apis[0]!, token);
      const one = await extendRound(apis, token, ids, 2, dataDir);
      apis.push(await startApi(db, rabbit.url, dataDir, configFile));
      const two = await extendRound(apis, token, ids, 3, dataDir);
      for (const [k, x] of [['one_api', one], ['two_apis', two]] as const) {
        for (const [f, v] of Object.entries(x)) if (f !== 'apis') r[`extends_${k}_${f}`] = v;
      }
    } finally {
      for (const a of apis) await a.stop();
      await agents.stop();
    }
  } finally {
    await rabbit.remove();
    await pg.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  return r;
}

export function scaleTargetsMet(r: Record<string, number>): boolean {
  return (
    r.blockdev_large_over_small! <= 1.2 &&
    r.blockdev_unexpected === 0 &&
    r.extends_one_api_lost_updates === 0 &&
    r.extends_one_api_stuck === 0 &&
    r.extends_two_apis_lost_updates === 0 &&
    r.extends_two_apis_stuck === 0
  );
}

export function printScaleBench(r: Record<string, number>): void {
  console.log(`Scale benchmark (issue G): ${HOSTS} hosts on fake drivers, RabbitMQ 3.10, PostgreSQL 15; medians of ${ROUNDS} rounds`);
  console.log(`  get_blockdev, ${SMALL_SERVERS} servers, via RPC     p50 ${r.blockdev_small_p50_ms} ms  ${r.blockdev_small_rps} req/s`);
  console.log(`  get_blockdev, ${SERVERS} servers x ${VOLUMES_PER_SERVER}, via RPC  p50 ${r.blockdev_large_p50_ms} ms  p99 ${r.blockdev_large_p99_ms} ms  ${r.blockdev_large_rps} req/s  ratio ${r.blockdev_large_over_small}x (target <= 1.2x)`);
  console.log(`  get_blockdev, ${SERVERS} servers, in process       p50 ${r.blockdev_inprocess_p50_ms} ms  ${r.blockdev_inprocess_rps} req/s  (RPC path ${r.blockdev_rpc_over_inprocess}x its p50)`);
  for (const k of ['one_api', 'two_apis']) {
    console.log(
      `  ${EXTENDS} in-use extends, ${k.replace('_', ' ')}: ${r[`extends_${k}_finished`]} finished in ${r[`extends_${k}_seconds`]} s, ${r[`extends_${k}_extends_per_s`]} extends/s, ` +
        `p50 ${r[`extends_${k}_p50_ms`]} ms p99 ${r[`extends_${k}_p99_ms`]} ms; lost updates ${r[`extends_${k}_lost_updates`]}, stuck ${r[`extends_${k}_stuck`]}, refused ${r[`extends_${k}_refused`]}`,
    );
  }
}

if (process.argv[2] === '--agents') {
  await agentsMain(JSON.parse(process.argv[3]!) as AgentsSpec);
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = await runScaleBench();
  printScaleBench(r);
  console.log(JSON.stringify(r));
  if (!scaleTargetsMet(r)) process.exitCode = 1;
}
