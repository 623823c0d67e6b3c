/**
 * Which request each store, RPC and compute call of the services is part of (Server-Timing's
 * per-layer parts, util/timing.ts): a request's timings are current only while its code runs
 * synchronously, so a service re-enters them for every call it makes after an await of its own,
 * and leaves them out of the work it starts in the background (a build, a delete's termination,
 * an external event's extend), which runs after the answer.
 *
 * Real parts: SQLite, the fake hypervisor behind a ComputeManager, the compute and volume APIs
 * over real HTTP on 127.0.0.1 (the volume service's calls to compute). Each layer a service is
 * given is the real one seen through a witness that records, per call, whether the request's
 * timings were current: `request`, or `none` (no request's). A re-entry forgotten shows as `none`.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildComputeApp, buildVolumeApp, type ComputeApp, type VolumeApp } from '../../src/app.js';
import { issueToken, SERVICE_PROJECT, SERVICE_ROLES } from '../../src/auth/tokens.js';
import { PolicyEnforcer } from '../../src/auth/policy.js';
import { ComputeAPI } from '../../src/compute/api.js';
import { LocalComputeRpc } from '../../src/compute/rpc.js';
import { ServerLifecycle } from '../../src/compute/servers.js';
import type { RequestContext } from '../../src/context.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { HttpComputeClient } from '../../src/rpc/computeClient.js';
import { HttpVolumeClient } from '../../src/rpc/volumeClient.js';
import { currentTimings, RequestTimings, withTimings } from '../../src/util/timing.js';
import { FakeDriver, type FakeServer } from '../../src/virt/fake/driver.js';
import { FileBackend } from '../../src/volume/backends/file.js';
import type { VolumeBackend } from '../../src/volume/backends/backend.js';
import { InFlight } from '../../src/volume/reconciler.js';
import { registerCatalog, TEST_FLAVOR, TEST_IMAGE } from '../support/computeApp.js';

const MiB = 2 ** 20;
const PROJECT = 'p-timed';
const SERVER = '3f1e2d4c-5555-4a66-9b77-8c9d0e1f2a3b';
/** A second server, for an external event naming two. */
const SERVER_2 = '4a2f3e5d-6666-4b77-8c88-9d0e1f2a3b4c';
/** A project with more servers than one batch of ComputeAPI.listServers (100). */
const MANY = 'p-many';
const IMAGE = TEST_IMAGE.id;
const FLAVOR = TEST_FLAVOR.id;

type Attribution = 'request' | 'none';

/** Every call a witness saw: its layer, method, and the timings current at the call. */
const seen: { layer: string; method: string; timings: RequestTimings | undefined }[] = [];

/** `target` as is, each method call recorded in `seen` under `layer` with the timings then current. */
function witness<T extends object>(target: T, layer: string): T {
  return new Proxy(target, {
    get(obj, name, receiver) {
      const value: unknown = Reflect.get(obj, name, receiver);
      if (typeof value !== 'function' || typeof name !== 'string' || name === 'constructor') return value;
      const fn = value as (...args: unknown[]) => unknown;
      return (...args: unknown[]) => {
        seen.push({ layer, method: name, timings: currentTimings() });
        return fn.apply(obj, args);
      };
    },
  });
}

/** The calls seen on `layer` since `from`, per method: which request each was part of (`t`'s or none), each attribution once. */
function attribution(layer: string, t: RequestTimings, from: number): Record<string, Attribution[]> {
  const out: Record<string, Set<Attribution>> = {};
  for (const c of seen.slice(from)) {
    if (c.layer !== layer) continue;
    if (c.timings !== undefined && c.timings !== t) throw new Error(`${layer}.${c.method} ran as part of another request`);
    (out[c.method] ??= new Set()).add(c.timings === t ? 'request' : 'none');
  }
  return Object.fromEntries(Object.entries(out).map(([m, set]) => [m, [...set].sort()]));
}

interface Fixture {
  dir: string;
  store: SqliteStore;
  driver: FakeDriver;
  computeApp: ComputeApp;
  volumeApp: VolumeApp;
  /** The user's token (admin of PROJECT): the volume service's calls a server's delete makes. */
  token: string;
  /** A ComputeAPI on the witnessed store and RPC (a new one: no host capabilities known yet). */
  computeApi(): ComputeAPI;
  servers: ServerLifecycle;
}

let f: Fixture;

const server = (id: string, projectId = PROJECT): FakeServer => ({ id, name: `vm-${id.slice(0, 8)}`, projectId, state: 'active', vcpus: 1, memoryMb: 256, disks: [] });

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'oe-timed-services-'));
  const logger = pino({ level: 'silent' });
  const store = new SqliteStore(join(dir, 'online-extend.sqlite'));
  await registerCatalog(store);
  const many = Array.from({ length: 101 }, () => server(randomUUID(), MANY));
  const driver = new FakeDriver({ servers: [server(SERVER), server(SERVER_2), ...many] });
  const policy = new PolicyEnforcer();
  const computeApp = await buildComputeApp({ store, driver, logger, policy, computeHost: 'compute-1', defaultProject: PROJECT });
  const computeUrl = await computeApp.app.listen({ host: '127.0.0.1', port: 0 });
  const { token } = await issueToken(store, { userId: 'tester', projectId: PROJECT, roles: ['admin'], ttlMs: 3_600_000 });
  // The volume service calls compute with a service token, as `serve` does.
  const service = await issueToken(store, { userId: 'volume-service', projectId: SERVICE_PROJECT, roles: [...SERVICE_ROLES], ttlMs: 3_600_000 });
  const backends = new Map<string, VolumeBackend>([['file', new FileBackend({ dir: join(dir, 'volumes') })]]);
  const volumeApp = await buildVolumeApp({
    store: witness(store, 'volume.store'),
    logger,
    policy,
    backends,
    defaultBackend: 'file',
    compute: witness(new HttpComputeClient({ url: computeUrl, token: service.token }), 'volume.compute'),
    inFlight: new InFlight(),
  });
  const volumeUrl = await volumeApp.app.listen({ host: '127.0.0.1', port: 0 });
  const rpc = new LocalComputeRpc(computeApp.manager);
  f = {
    dir,
    store,
    driver,
    computeApp,
    volumeApp,
    token,
    computeApi: () => new ComputeAPI({ store: witness(store, 'compute.store'), rpc: witness(rpc, 'compute.rpc'), logger }),
    servers: new ServerLifecycle({
      store: witness(store, 'servers.store'),
      rpc: witness(rpc, 'servers.rpc'),
      host: computeApp.manager.host,
      logger,
      volumes: witness(new HttpVolumeClient({ url: volumeUrl }), 'servers.volumes'),
    }),
  };
});

afterAll(async () => {
  if (!f) return;
  await f.servers.idle();
  await f.volumeApp.workflow.close();
  await f.volumeApp.app.close();
  await f.computeApp.app.close();
  await f.computeApp.manager.close();
  await f.store.close();
  rmSync(f.dir, { recursive: true, force: true });
});

/** A request's context with its own timings, as the API's `authorize` makes it (serverTimingDetail on). */
function request(): { ctx: RequestContext; t: RequestTimings } {
  const t = new RequestTimings();
  return { t, ctx: { requestId: `req-${randomUUID()}`, userId: 'tester', projectId: PROJECT, roles: ['admin'], timings: t } };
}

/** No request's context (the set-up of a case). */
const setupCtx = (): RequestContext => ({ requestId: `req-${randomUUID()}`, userId: 'tester', projectId: PROJECT, roles: ['admin'] });

async function newVolume(): Promise<string> {
  return (await f.volumeApp.volumes.create(setupCtx(), PROJECT, { name: 'timed', sizeBytes: 64 * MiB, backend: '' })).id;
}

async function attachedVolume(serverId = SERVER): Promise<string> {
  const id = await newVolume();
  await f.volumeApp.attachments.attach(setupCtx(), PROJECT, serverId, id);
  return id;
}

/**
 * One service call and what it must show: `run` is called as a route calls it (synchronously
 * inside its request's timings, `ctx` carrying them); `settle` waits for its background work;
 * `expected`: per layer, per method, which request the calls were part of.
 */
interface Case {
  name: string;
  run: (ctx: RequestContext) => Promise<unknown>;
  /** Set-up outside any request; answers what `run` acts on. */
  setup?: () => Promise<void>;
  settle?: () => Promise<void>;
  expected: Record<string, Record<string, Attribution[]>>;
  /** `run` rejects (with this code). */
  rejects?: string;
}

let subject = '';
let subjectServer = SERVER;
/** A new server the host knows and the store does not yet: its lookup goes to the host. */
const serverOnlyOnTheHost = async (): Promise<void> => {
  subjectServer = randomUUID();
  f.driver.addServer(server(subjectServer));
};

const cases: Case[] = [
  {
    name: 'VolumeService.create keeps the record after the size check, the status after the backend and the final read in the request',
    run: (ctx) => f.volumeApp.volumes.create(ctx, PROJECT, { name: 'timed', sizeBytes: 64 * MiB, backend: '' }),
    expected: { 'volume.store': { createVolume: ['request'], startVolumeAction: ['request'], updateVolume: ['request'], finishVolumeAction: ['request'], getVolume: ['request'] } },
  },
  {
    name: 'VolumeService.update keeps the write and the read after the first read in the request',
    setup: async () => void (subject = await newVolume()),
    run: () => f.volumeApp.volumes.update(PROJECT, subject, { description: 'timed' }),
    expected: { 'volume.store': { getVolume: ['request'], updateVolume: ['request'] } },
  },
  {
    name: 'VolumeService.setMetadata keeps the compare-and-swap after the read in the request',
    setup: async () => void (subject = await newVolume()),
    run: () => f.volumeApp.volumes.setMetadata(PROJECT, subject, { purpose: 'timed' }),
    expected: { 'volume.store': { getVolume: ['request'], updateVolume: ['request'] } },
  },
  {
    name: 'VolumeService.delete keeps the decision, the audit and the record removed after the storage in the request',
    setup: async () => void (subject = await newVolume()),
    run: (ctx) => f.volumeApp.volumes.delete(ctx, PROJECT, subject),
    expected: { 'volume.store': { getVolume: ['request'], updateVolume: ['request'], startVolumeAction: ['request'], deleteVolume: ['request'], finishVolumeAction: ['request'] } },
  },
  {
    name: "VolumeAttachService.attach keeps compute's check and plug, the reservation and the attachment's record in the request",
    setup: async () => void (subject = await newVolume()),
    run: (ctx) => f.volumeApp.attachments.attach(ctx, PROJECT, SERVER, subject),
    expected: { 'volume.store': { getVolume: ['request'], updateVolume: ['request'] }, 'volume.compute': { checkConnect: ['request'], connect: ['request'] } },
  },
  {
    name: "VolumeAttachService.detach keeps the decision, compute's unplug and the record in the request",
    setup: async () => void (subject = await attachedVolume()),
    run: (ctx) => f.volumeApp.attachments.detach(ctx, PROJECT, SERVER, subject),
    expected: { 'volume.store': { getVolume: ['request'], updateVolume: ['request'] }, 'volume.compute': { disconnect: ['request'] } },
  },
  {
    name: 'ServerLifecycle.create keeps the checks and records after the image read in the request, and the build out of it',
    run: (ctx) => f.servers.create(ctx, { name: 'vm-timed', imageRef: IMAGE, flavorRef: FLAVOR, metadata: {} }),
    settle: () => f.servers.idle(),
    expected: {
      'servers.store': { getImage: ['request'], getFlavor: ['request'], createServer: ['request'], startAction: ['request'], getServer: ['request'], setServerState: ['none'], finishAction: ['none'] },
      'servers.rpc': { capabilities: ['request'], spawn: ['none'], syncServer: ['none'] },
    },
  },
  {
    name: "ServerLifecycle.delete keeps every attached volume's read, the task and the action in the request, and the termination out of it",
    setup: async () => {
      const made = await f.servers.create(setupCtx(), { name: 'vm-doomed', imageRef: IMAGE, flavorRef: FLAVOR, metadata: {} });
      await f.servers.idle();
      subjectServer = made.server.id;
      // Two volumes: the second read comes after the first one's await.
      await attachedVolume(subjectServer);
      await attachedVolume(subjectServer);
    },
    run: async (ctx) => {
      const known = (await f.store.getServer(subjectServer))!;
      expect(known.attachments).toHaveLength(2);
      return withTimings(ctx.timings, () => f.servers.delete(ctx, known, f.token));
    },
    settle: () => f.servers.idle(),
    expected: {
      'servers.volumes': { volume: ['request'], detach: ['none'] },
      'servers.store': { setTaskState: ['request'], startAction: ['request'], finishAction: ['none'], deleteServer: ['none'] },
      'servers.rpc': { syncServer: ['none'], destroy: ['none'] },
    },
  },
  {
    name: "ServerExternalEvents.accept keeps the host's lookup of a server the store lacks and each server's action in the request, and the extends out of it",
    setup: serverOnlyOnTheHost,
    run: (ctx) =>
      f.computeApi().externalInstanceEvents(ctx, [
        { name: 'volume-extended', server_uuid: SERVER, tag: randomUUID() },
        { name: 'volume-extended', server_uuid: SERVER_2, tag: randomUUID() },
        { name: 'network-changed', server_uuid: subjectServer },
      ]),
    settle: async () => {
      // The extends run in the background of the ComputeAPI the case made: wait until both actions are finished.
      for (let i = 0; i < 500; i++) {
        const open = await f.store.listUnfinishedActions('extend_volume');
        if (open.length === 0) return;
        await new Promise((r) => setTimeout(r, 10));
      }
      throw new Error('the extend_volume actions never finished');
    },
    expected: {
      'compute.store': { getServer: ['request'], startAction: ['request'], finishAction: ['none'] },
      'compute.rpc': { syncServer: ['request'], extendToHostSize: ['none'] },
    },
  },
  {
    name: "ComputeAPI.withTask keeps the caller's work and the task's clearing after the task's write in the request",
    run: async (ctx) => {
      const compute = f.computeApi();
      const known = (await f.store.getServer(SERVER))!;
      const inside = witness(f.store, 'task.work');
      return withTimings(ctx.timings, () => compute.withTask(ctx, known, 'attach', () => inside.getServer(SERVER)));
    },
    expected: { 'compute.store': { setTaskState: ['request'] }, 'task.work': { getServer: ['request'] } },
  },
  {
    name: 'ComputeAPI.withTask on a busy server keeps the read that names the task under way in the request',
    setup: async () => {
      await f.store.setTaskState(SERVER_2, 'detaching_volume', null);
    },
    run: async (ctx) => {
      const compute = f.computeApi();
      // As the caller read it before the other task began: idle.
      const stale = { ...(await f.store.getServer(SERVER_2))!, taskState: null };
      return withTimings(ctx.timings, () => compute.withTask(ctx, stale, 'attach', () => Promise.resolve()));
    },
    settle: async () => void (await f.store.setTaskState(SERVER_2, null, 'detaching_volume')),
    rejects: 'InstanceBusy',
    expected: { 'compute.store': { setTaskState: ['request'], getServer: ['request'] } },
  },
  {
    name: "ComputeAPI.checkAttach keeps the host's capabilities after the state check in the request",
    run: async (ctx) => {
      const compute = f.computeApi();
      const known = (await f.store.getServer(SERVER))!;
      // No context: the route makes its request's timings current around the call.
      return withTimings(ctx.timings, () => compute.checkAttach(known, { volumeId: randomUUID() }));
    },
    expected: { 'compute.rpc': { capabilities: ['request'] } },
  },
  {
    name: "ComputeAPI.freshServer keeps the host's lookup after the store's read in the request",
    run: () => f.computeApi().freshServer(PROJECT, SERVER),
    expected: { 'compute.store': { getServer: ['request'] }, 'compute.rpc': { syncServer: ['request'] } },
  },
  {
    name: 'ComputeAPI.getServer keeps the lookup on the host after a miss in the store in the request',
    setup: serverOnlyOnTheHost,
    run: () => f.computeApi().getServer(PROJECT, subjectServer),
    expected: { 'compute.store': { getServer: ['request'] }, 'compute.rpc': { syncServer: ['request'] } },
  },
  {
    name: 'ComputeAPI.findServer keeps the lookup on the host after a miss in the store in the request',
    setup: serverOnlyOnTheHost,
    run: () => f.computeApi().findServer(subjectServer, PROJECT, false),
    expected: { 'compute.store': { getServer: ['request'] }, 'compute.rpc': { syncServer: ['request'] } },
  },
  {
    name: 'ComputeAPI.listServers keeps every batch after the first in the request',
    run: async () => {
      const rows = await f.computeApi().listServers({ projectId: MANY, matches: () => false }, { limit: 1 });
      expect(rows).toEqual([]);
    },
    expected: { 'compute.store': { listServers: ['request'] } },
  },
];

describe("Server-Timing: the services' calls after their own awaits", () => {
  it.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    await c.setup?.();
    const { ctx, t } = request();
    const from = seen.length;
    // As a route calls a service: synchronously inside the request's timings.
    const ran = withTimings(t, () => c.run(ctx));
    if (c.rejects) await expect(ran).rejects.toMatchObject({ code: c.rejects });
    else await ran;
    await c.settle?.();
    for (const [layer, methods] of Object.entries(c.expected)) expect(attribution(layer, t, from), layer).toMatchObject(methods);
  });
});
