/**
 * Issue A benchmark: GET get_blockdev and POST assist_extend through the whole stack (fake
 * driver) against a bare Fastify route, in one run. Medians of several rounds; prints ratios.
 * A third server, the schema-first floor (the route's own schemas, a token Map, Nova's headers),
 * shows what Fastify with validation costs by itself: the rest of the gap is our layers'.
 *   npm run bench -- api        (or: node --import tsx bench/api.ts)
 */
import autocannon from 'autocannon';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { assertBuilt } from './built.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const CONNECTIONS = 10;
/** Issue 12's target: GET get_blockdev at least this fraction of the bare route's rate (metrics and Server-Timing on). */
export const API_TARGET = 0.6;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function load(opts: autocannon.Options): Promise<{ rps: number; p50: number; non2xx: number }> {
  const r = await autocannon({ connections: CONNECTIONS, duration: SECONDS, ...opts });
  if (r.non2xx + r.errors > 0) console.error(`non-2xx: ${JSON.stringify(r.statusCodeStats)} errors ${r.errors} timeouts ${r.timeouts}`);
  return { rps: r.requests.average, p50: r.latency.p50, non2xx: r.non2xx + r.errors };
}

export async function runApiBench(): Promise<Record<string, number>> {
  assertBuilt();
  // The servers on one core, the load generator (this process) on the other: the two never
  // compete for a core, and the scheduler does not move them around between rounds.
  const pin = existsSync('/usr/bin/taskset') && cpus().length >= 2;
  if (pin) execFileSync('taskset', ['-pc', '1', String(process.pid)], { stdio: 'ignore' });
  const node = [process.execPath, '--import', 'tsx', fileURLToPath(new URL('./targets.ts', import.meta.url))];
  const child = pin
    ? spawn('taskset', ['-c', '0', ...node], { stdio: ['ignore', 'pipe', 'inherit'] })
    : spawn(node[0]!, node.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`targets exited ${code}`)));
  });
  const t = JSON.parse(line) as { full: string; unbatched: string; bare: string; floor: string; token: string; tenant: string; server: string; volume: string; growVolumes: string[] };
  const path = `/v2/${t.tenant}/servers/${t.server}/os-online_extend_volume/${t.volume}`;
  const headers = { 'x-auth-token': t.token, 'content-type': 'application/json' };
  let nextVolume = 0;
  const sizes = new Map<string, number>();
  const rounds: Record<string, { rps: number[]; p50: number[] }> = { bare: { rps: [], p50: [] }, floor: { rps: [], p50: [] }, get: { rps: [], p50: [] }, unbatched: { rps: [], p50: [] }, post: { rps: [], p50: [] } };
  try {
    for (let i = 0; i < ROUNDS; i++) {
      const bare = await load({ url: `${t.bare}${path}` });
      const floor = await load({ url: `${t.floor}${path}`, headers });
      const get = await load({ url: `${t.full}${path}`, headers });
      const unbatched = await load({ url: `${t.unbatched}${path}`, headers });
      const post = await load({
        url: t.full,
        method: 'POST',
        headers,
        // Each connection grows its own volume by one sector a request: every request is a real
        // resize, never a no-op, and never a shrink because of reordering between connections.
        requests: [
          {
            setupRequest: (req, ctx) => {
              const context = ctx as { volume?: string };
              context.volume ??= t.growVolumes[nextVolume++ % t.growVolumes.length]!;
              const bytes = (sizes.get(context.volume) ?? 2 ** 30) + 512;
              sizes.set(context.volume, bytes);
              return { ...req, path: `/v2/${t.tenant}/servers/${context.volume}/os-online_extend_volume/${context.volume}`, body: JSON.stringify({ onlineExtendVolume: { bytes } }) };
            },
          },
        ],
      });
      for (const [k, v] of Object.entries({ bare, floor, get, unbatched, post })) {
        if (v.non2xx > 0) throw new Error(`${k}: ${v.non2xx} failed requests`);
        rounds[k]!.rps.push(v.rps);
        rounds[k]!.p50.push(v.p50);
      }
    }
  } finally {
    child.kill('SIGTERM');
  }
  const out = {
    bare_rps: median(rounds.bare!.rps),
    floor_rps: median(rounds.floor!.rps),
    get_blockdev_rps: median(rounds.get!.rps),
    get_blockdev_unbatched_rps: median(rounds.unbatched!.rps),
    assist_extend_rps: median(rounds.post!.rps),
    bare_p50_ms: median(rounds.bare!.p50),
    get_blockdev_p50_ms: median(rounds.get!.p50),
    assist_extend_p50_ms: median(rounds.post!.p50),
  };
  return {
    ...out,
    get_blockdev_vs_bare: out.get_blockdev_rps / out.bare_rps,
    floor_vs_bare: out.floor_rps / out.bare_rps,
    get_blockdev_unbatched_vs_bare: out.get_blockdev_unbatched_rps / out.bare_rps,
    assist_extend_vs_bare: out.assist_extend_rps / out.bare_rps,
  };
}

/** Prints the API benchmark's figures (bench/api.ts alone and `npm run bench -- api`). */
export function printApiBench(r: Record<string, number>): void {
  console.log(`API benchmark (fake driver, ${CONNECTIONS} connections, ${ROUNDS} rounds x ${SECONDS}s, medians)`);
  console.log(`  bare Fastify route      ${r.bare_rps!.toFixed(0)} req/s  p50 ${r.bare_p50_ms} ms`);
  console.log(`  schema-first floor      ${r.floor_rps!.toFixed(0)} req/s  ratio ${r.floor_vs_bare!.toFixed(2)}x (same schemas, a token Map, Nova's headers; nothing else)`);
  console.log(`  GET get_blockdev        ${r.get_blockdev_rps!.toFixed(0)} req/s  p50 ${r.get_blockdev_p50_ms} ms  ratio ${r.get_blockdev_vs_bare!.toFixed(2)}x (target >= ${API_TARGET}x)`);
  console.log(`  GET, one write per answer ${r.get_blockdev_unbatched_rps!.toFixed(0)} req/s  ratio ${r.get_blockdev_unbatched_vs_bare!.toFixed(2)}x (the same stack without batching a turn's writes)`);
  console.log(`  POST assist_extend      ${r.assist_extend_rps!.toFixed(0)} req/s  p50 ${r.assist_extend_p50_ms} ms  ratio ${r.assist_extend_vs_bare!.toFixed(2)}x`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await runApiBench();
  printApiBench(r);
  process.exit(r.get_blockdev_vs_bare! >= API_TARGET ? 0 : 1);
}
