/**
 * Benchmark targets, run in their own process so the load generator does not share their event
 * loop: the whole compute stack (auth, policy, SQLite, audit, lock, fake driver, metrics) and a bare
 * Fastify route answering the same shape. Prints one JSON line with the ports and a token.
 * Our stack is the build in dist/ (what `online-extend serve` runs; bench/built.ts).
 */
import Fastify from 'fastify';
import pino from 'pino';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import { built } from './built.js';

// The build users run (dist/), typed by its sources.
const { buildComputeApp } = await built<typeof import('../src/app.js')>('app.js');
const { SqliteStore } = await built<typeof import('../src/db/sqlite.js')>('db/sqlite.js');
const { FakeDriver } = await built<typeof import('../src/virt/fake/driver.js')>('virt/fake/driver.js');
const { issueToken } = await built<typeof import('../src/auth/tokens.js')>('auth/tokens.js');
const { Metrics } = await built<typeof import('../src/util/metrics.js')>('util/metrics.js');
const { ProjectId } = await built<typeof import('../src/api/schemas/common.js')>('api/schemas/common.js');
const { VolumeBlockdev, VolumeIdParams } = await built<typeof import('../src/api/schemas/compute.js')>('api/schemas/compute.js');

const TENANT = 'bench';
const SERVER = '14540a2f-204b-4a30-a61b-e069bf243c87';
const VOLUME = '076cc7cd-1239-4e9f-a1d3-06cb50b107a4';
/** One volume per load connection for assist_extend, so each connection's sizes only grow. */
const GROW_VOLUMES = Array.from({ length: 64 }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`);

const dir = mkdtempSync(join(tmpdir(), 'oe-bench-'));
const store = new SqliteStore(join(dir, 'bench.sqlite'));
const disk = (volumeId: string) => ({ volumeId, device: 'vdb', kind: 'file' as const, backingBytes: 2 ** 30, hostBytes: 2 ** 30, guestBytes: 2 ** 30 });
// One server per volume, with one disk each, as in a real cloud.
const driver = new FakeDriver({
  servers: [
    { id: SERVER, name: 'bench', projectId: TENANT, state: 'active', disks: [disk(VOLUME)] },
    ...GROW_VOLUMES.map((v) => ({ id: v, name: `grow-${v}`, projectId: TENANT, state: 'active' as const, disks: [disk(v)] })),
  ],
});
// As serve runs by default: the process's metrics (request counts, RPC latency) and Server-Timing
// with its per-layer parts (serverTimingDetail; BENCH_TIMING_DETAIL=0 measures without them).
const timingDetail = process.env.BENCH_TIMING_DETAIL !== '0';
const { app } = await buildComputeApp({ store, driver, logger: pino({ level: 'silent' }), defaultProject: TENANT, metrics: new Metrics(), timingDetail });
const { token } = await issueToken(store, { userId: 'bench', projectId: TENANT, roles: ['admin'], ttlMs: 3_600_000 });
const full = await app.listen({ host: '127.0.0.1', port: 0 });
// The same stack writing each answer the moment it is made (Node's own way): what batching the
// writes of a turn (src/api/transport/batchedWrites.ts) saves, in the same run.
const { app: unbatchedApp } = await buildComputeApp({ store, driver, logger: pino({ level: 'silent' }), defaultProject: TENANT, metrics: new Metrics(), timingDetail, http: { batchWrites: false } });
const unbatched = await unbatchedApp.listen({ host: '127.0.0.1', port: 0 });

const bare = Fastify();
bare.get('/v2/:tenant_id/servers/:server_id/os-online_extend_volume/:volume_id', async (req) => {
  const { volume_id } = req.params as { volume_id: string };
  return { volume_blockdev: { id: volume_id, bytes: 1073741824 } };
});
const bareUrl = await bare.listen({ host: '127.0.0.1', port: 0 });

// The floor of any schema-first OpenStack API on Fastify, for reference: the same URL, params and
// response schemas as get_blockdev (validation and serialization), a token looked up in a Map in
// one onRequest hook, and the headers every Nova answer carries (request id, microversion echo,
// Vary). No policy, store, driver, metrics or Server-Timing.
const floor = Fastify();
const tokens = new Map([[token, { projectId: TENANT }]]);
floor.addHook('onRequest', (req, reply, done) => {
  const caller = tokens.get(String(req.headers['x-auth-token']));
  if (caller === undefined) return void reply.code(401).send({ unauthorized: { code: 401 } });
  reply.header('x-openstack-request-id', `req-${randomUUID()}`);
  reply.header('openstack-api-version', 'compute 2.1').header('x-openstack-nova-api-version', '2.1').header('vary', 'OpenStack-API-Version, X-OpenStack-Nova-API-Version');
  done();
});
floor.get('/v2/:tenant_id/servers/:server_id/os-online_extend_volume/:volume_id', { schema: { params: Type.Object({ tenant_id: ProjectId, ...VolumeIdParams }), response: { 200: VolumeBlockdev } } }, async (req) => {
  const { volume_id } = req.params as { volume_id: string };
  return { volume_blockdev: { id: volume_id, bytes: 1073741824 } };
});
const floorUrl = await floor.listen({ host: '127.0.0.1', port: 0 });

process.stdout.write(`${JSON.stringify({ full, unbatched, bare: bareUrl, floor: floorUrl, token, tenant: TENANT, server: SERVER, volume: VOLUME, growVolumes: GROW_VOLUMES, dir })}\n`);
// The database goes with the process (it is made per run).
process.on('SIGTERM', () =>
  void Promise.all([app.close(), unbatchedApp.close(), bare.close(), floor.close()])
    .then(() => store.close())
    .finally(() => {
      rmSync(dir, { recursive: true, force: true });
      process.exit(0);
    }),
);
