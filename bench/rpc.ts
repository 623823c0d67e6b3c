/**
 * Compute RPC over RabbitMQ vs in-process (issue G): the latency of `getHostBytes` through
 * AmqpComputeRpc → RabbitMQ 3.10 → a compute agent's ComputeRpcServer in another process (fake
 * driver), against LocalComputeRpc on the same kind of manager in this process, in one run.
 * Sequential calls give the medians and p99s; 1,000 calls at once give the throughput.
 *
 *   node --import tsx bench/rpc.ts
 *
 * Starts its own RabbitMQ (test/support/rabbitmq.ts) and agent process, and stops both.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import type { ComputeRpc } from '../src/compute/rpc.js';
import type { FakeServer } from '../src/virt/fake/driver.js';
import { assertBuilt, built } from './built.js';
import { startRabbitMQ } from '../test/support/rabbitmq.js';

// Both sides run the build in dist/, as `online-extend agent` and `api` do (bench/built.ts).
assertBuilt();
const [{ ComputeManager }, { LocalComputeRpc }, { SqliteStore }, { FakeDriver }, { AmqpConnection }, { AmqpComputeRpc }, { ComputeRpcServer }] = await Promise.all([
  built<typeof import('../src/compute/manager.js')>('compute/manager.js'),
  built<typeof import('../src/compute/rpc.js')>('compute/rpc.js'),
  built<typeof import('../src/db/sqlite.js')>('db/sqlite.js'),
  built<typeof import('../src/virt/fake/driver.js')>('virt/fake/driver.js'),
  built<typeof import('../src/rpc/amqp/connection.js')>('rpc/amqp/connection.js'),
  built<typeof import('../src/rpc/amqp/client.js')>('rpc/amqp/client.js'),
  built<typeof import('../src/rpc/amqp/server.js')>('rpc/amqp/server.js'),
]);

const HOST = 'bench-1';
const SERVERS = 100;
const SEQUENTIAL = 3_000;
const WARMUP = 300;
const CONCURRENT = 1_000;
const ROUNDS = 3;
const log = pino({ level: 'silent' });

function servers(): FakeServer[] {
  return Array.from({ length: SERVERS }, (_, i) => ({
    id: `srv-${i}`,
    name: `s${i}`,
    state: 'active' as const,
    disks: [{ volumeId: `vol-${i}`, device: 'vdb', kind: 'block' as const, backingBytes: (i + 1) * 2 ** 20, hostBytes: (i + 1) * 2 ** 20, guestBytes: (i + 1) * 2 ** 20 }],
  }));
}

async function manager(): Promise<{ manager: InstanceType<typeof ComputeManager>; store: InstanceType<typeof SqliteStore> }> {
  const store = new SqliteStore(':memory:');
  const m = new ComputeManager({ host: HOST, driver: new FakeDriver({ servers: servers() }), store, defaultProjectId: 'admin', logger: log });
  await m.syncInventory();
  return { manager: m, store };
}

/** The agent process: serves HOST on the broker until stdin closes. */
async function agentMain(url: string): Promise<void> {
  const { manager: m, store } = await manager();
  const conn = await AmqpConnection.open(url, { logger: log });
  const server = new ComputeRpcServer({ connection: conn, manager: m, logger: log });
  await server.start();
  process.stdout.write('ready\n');
  process.stdin.resume();
  await once(process.stdin, 'end');
  await server.close(1_000);
  await conn.close();
  await store.close();
}

const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};
const median = (xs: number[]): number => quantile(xs, 0.5);

async function sequential(rpc: ComputeRpc): Promise<number[]> {
  const ms: number[] = [];
  for (let n = 0; n < WARMUP + SEQUENTIAL; n++) {
    const i = n % SERVERS;
    const t0 = performance.now();
    const bytes = await rpc.getHostBytes(HOST, `srv-${i}`, `vol-${i}`);
    if (n >= WARMUP) ms.push(performance.now() - t0);
    if (bytes !== (i + 1) * 2 ** 20) throw new Error(`wrong answer for srv-${i}: ${bytes}`);
  }
  return ms;
}

async function concurrent(rpc: ComputeRpc): Promise<number> {
  const t0 = performance.now();
  const answers = await Promise.all(Array.from({ length: CONCURRENT }, (_, n) => rpc.getHostBytes(HOST, `srv-${n % SERVERS}`, `vol-${n % SERVERS}`)));
  const ms = performance.now() - t0;
  answers.forEach((b, n) => {
    if (b !== ((n % SERVERS) + 1) * 2 ** 20) throw new Error('a concurrent call got another call’s answer');
  });
  return ms;
}

async function main(): Promise<void> {
  const rabbit = await startRabbitMQ();
  const agent = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--agent', rabbit.url], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      agent.stdout.on('data', (b: Buffer) => b.toString().includes('ready') && resolve());
      agent.once('exit', (code) => reject(new Error(`agent exited (${code})`)));
    });
    const localSide = await manager();
    const local = new LocalComputeRpc(localSide.manager);
    const conn = await AmqpConnection.open(rabbit.url, { logger: log });
    const amqp = new AmqpComputeRpc({ connection: conn, timeoutMs: 30_000, logger: log });
    await amqp.ready(10_000);
    const rounds: Array<Record<string, number>> = [];
    for (let r = 0; r < ROUNDS; r++) {
      const l = await sequential(local);
      const a = await sequential(amqp);
      rounds.push({
        local_p50_ms: median(l),
        local_p99_ms: quantile(l, 0.99),
        amqp_p50_ms: median(a),
        amqp_p99_ms: quantile(a, 0.99),
        local_1000_concurrent_ms: await concurrent(local),
        amqp_1000_concurrent_ms: await concurrent(amqp),
      });
    }
    const result: Record<string, number> = {};
    for (const k of Object.keys(rounds[0]!)) result[k] = Number(median(rounds.map((x) => x[k]!)).toFixed(4));
    result.amqp_over_local_p50 = Number((result.amqp_p50_ms! / result.local_p50_ms!).toFixed(1));
    console.log(`getHostBytes, ${SEQUENTIAL} sequential calls x ${ROUNDS} rounds (medians of rounds); ${CONCURRENT} calls at once`);
    console.log(`  in-process (LocalComputeRpc)   p50 ${result.local_p50_ms} ms  p99 ${result.local_p99_ms} ms  1000 at once ${result.local_1000_concurrent_ms!.toFixed(1)} ms`);
    console.log(`  RabbitMQ (AmqpComputeRpc)      p50 ${result.amqp_p50_ms} ms  p99 ${result.amqp_p99_ms} ms  1000 at once ${result.amqp_1000_concurrent_ms!.toFixed(1)} ms`);
    console.log(`  ratio p50 ${result.amqp_over_local_p50}x`);
    console.log(JSON.stringify(result));
    await amqp.close();
    await conn.close();
    await localSide.store.close();
  } finally {
    agent.stdin.end();
    const exited = agent.exitCode === null ? once(agent, 'exit') : Promise.resolve();
    const kill = setTimeout(() => agent.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(kill);
    await rabbit.remove();
  }
}

if (process.argv[2] === '--agent') await agentMain(process.argv[3]!);
else await main();
