/**
 * Several workflow workers over one database (issue G): two ExtendWorkflow instances, each on its
 * own connection to one real SQLite file, drive the in-use extend of a block-like volume (the
 * file backend's storage handed to compute as a block device, so every step acts: storage grows,
 * the host is rescanned and polled, the guest is grown) on the fake hypervisor over real HTTP.
 * Each extend must be driven by exactly one worker at a time: every external call once, unless
 * a step was cut by a lost lease (then that step, idempotent, runs again under the new holder).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { buildComputeApp, buildVolumeApp } from '../../src/app.js';
import { issueToken, SERVICE_PROJECT, SERVICE_ROLES } from '../../src/auth/tokens.js';
import { PolicyEnforcer } from '../../src/auth/policy.js';
import type { ExtendState } from '../../src/db/store.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { ApiClient, VOLUME_LATEST } from '../../src/rpc/httpClient.js';
import { ServiceCatalog } from '../../src/rpc/catalog.js';
import { HttpComputeClient } from '../../src/rpc/computeClient.js';
import { HttpVolumeClient } from '../../src/rpc/volumeClient.js';
import { FakeDriver } from '../../src/virt/fake/driver.js';
import type { VolumeBackend } from '../../src/volume/backends/backend.js';
import { BlockOverFile } from '../support/blockOverFile.js';
import type { WorkerArgs } from '../support/extendWorker.js';
import { ExtendWorkflow, type ExtendResult } from '../../src/volume/extend/workflow.js';
import type { WorkflowOptions } from '../../src/volume/extend/options.js';

const MiB = 2 ** 20;
const PROJECT = 'p-lease';
const SERVER = '3c9d1e2f-5555-4e66-8f77-8a9b0c1d2e3f';

/** The real SQLite store, recording every claim it answers (who, when, granted) and every volume update it made. */
class RecordingStore extends SqliteStore {
  readonly claims: Array<{ volumeId: string; owner: string; at: number; granted: boolean }> = [];
  readonly updates: Array<{ volumeId: string; at: number }> = [];
  override async updateVolume(...args: Parameters<SqliteStore['updateVolume']>): Promise<boolean> {
    const ok = await super.updateVolume(...args);
    if (ok) this.updates.push({ volumeId: args[0], at: Date.now() });
    return ok;
  }
  override async claimExtend(volumeId: string, owner: string, ttlMs: number, now?: Date): Promise<boolean> {
    const granted = await super.claimExtend(volumeId, owner, ttlMs, now);
    this.claims.push({ volumeId, owner, at: Date.now(), granted });
    return granted;
  }
  granted(owner: string): number[] {
    return this.claims.filter((c) => c.owner === owner && c.granted).map((c) => c.at);
  }
  /** When the lease on the extend of `volumeId` ends now (ms since the epoch), if there is one. */
  leaseExpiry(volumeId: string): number | undefined {
    const row = this.db.prepare('SELECT expires_at FROM extend_leases WHERE volume_id = ?').get(volumeId) as { expires_at: string } | undefined;
    return row ? Date.parse(row.expires_at) : undefined;
  }
}

interface Rig {
  driver: FakeDriver;
  backend: BlockOverFile;
  /** Two connections to the one database file: worker A's and worker B's. */
  stores: { A: RecordingStore; B: RecordingStore };
  /** Worker `name` ('A' or 'B') on its own connection, timings from `options`. */
  worker(name: 'A' | 'B', options?: Partial<WorkflowOptions>): ExtendWorkflow;
  /**
   * A worker in a process of its own (test/support/extendWorker.ts) named `owner`; resolves once
   * it has resumed the extends it may drive. `extends` counts the storage extends it made.
   */
  spawnWorker(owner: string, opts: { leaseMs: number; stepDelayMs: number }): Promise<{ child: ChildProcess; extends: () => number }>;
  /** The volume API (its workflow is a third worker, started only by the extends it accepts). */
  volumeApi: ApiClient;
  /** A 64 MiB volume attached to the server, put into `extending` toward `targetBytes` as the volume API does. */
  extendingVolume(targetBytes: number): Promise<string>;
  close(): Promise<void>;
}

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

const WORKER = resolve(import.meta.dirname, '../support/extendWorker.ts');
const FAST: Partial<WorkflowOptions> = { timeoutMs: 30_000, pollBaseMs: 5, backoffBaseMs: 10, backoffMaxMs: 50, watchdogMs: 50 };

async function startRig(): Promise<Rig> {
  const dir = mkdtempSync(join(tmpdir(), 'oe-leases-'));
  const logger = pino({ level: 'silent' });
  const file = join(dir, 'online-extend.sqlite');
  const stores = { A: new RecordingStore(file), B: new RecordingStore(file) };
  const backend = new BlockOverFile(join(dir, 'volumes'));
  const backends = new Map<string, VolumeBackend>([['block', backend]]);
  const driver = new FakeDriver({ servers: [{ id: SERVER, name: 'vm-lease', projectId: PROJECT, state: 'active', disks: [] }] });
  const policy = new PolicyEnforcer();
  const catalog = new ServiceCatalog();
  const computeApp = await buildComputeApp({ store: stores.A, driver, logger, policy, volumes: new HttpVolumeClient({ url: catalog.endpoint('volume') }) });
  const computeUrl = await computeApp.app.listen({ host: '127.0.0.1', port: 0 });
  catalog.register('compute', computeUrl);
  const { token } = await issueToken(stores.A, { userId: 'tester', projectId: PROJECT, roles: ['admin'], ttlMs: 3_600_000 });
  const service = await issueToken(stores.A, { userId: 'volume-service', projectId: SERVICE_PROJECT, roles: [...SERVICE_ROLES], ttlMs: 3_600_000 });
  const compute = new HttpComputeClient({ url: computeUrl, token: service.token });
  // The volume API creates and attaches; its own workflow is never started here (no extend goes through it).
  const volumeApp = await buildVolumeApp({ store: stores.A, logger, policy, backends, defaultBackend: 'block', compute });
  const volumeUrl = await volumeApp.app.listen({ host: '127.0.0.1', port: 0 });
  catalog.register('volume', volumeUrl);
  const computeApi = new ApiClient({ url: computeUrl, token });
  const volumeApi = new ApiClient({ url: volumeUrl, token, headers: VOLUME_LATEST });
  const workers: ExtendWorkflow[] = [];
  const children = new Set<ChildProcess>();
  return {
    driver,
    backend,
    stores,
    volumeApi,
    async spawnWorker(owner, opts) {
      const args: WorkerArgs = { db: file, volumesDir: join(dir, 'volumes'), computeUrl, token: service.token, owner, ...opts };
      const child = spawn(process.execPath, ['--import', 'tsx', WORKER, JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'inherit'] });
      children.add(child);
      child.once('exit', () => children.delete(child));
      let extends_ = 0;
      await new Promise<void>((res, rej) => {
        createInterface({ input: child.stdout! }).on('line', (line) => {
          if (line === 'ready') res();
          if (line.startsWith('extend ')) extends_++;
        });
        child.once('exit', (code, signal) => rej(new Error(`worker exited with ${code ?? signal}`)));
      });
      return { child, extends: () => extends_ };
    },
    worker(name, options = {}) {
      const w = new ExtendWorkflow({ store: stores[name], backends, compute, logger, owner: `worker-${name}`, options: { ...FAST, ...options } });
      workers.push(w);
      return w;
    },
    async extendingVolume(targetBytes) {
      const created = await volumeApi.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: 'data', size_bytes: 64 * MiB } });
      const id = created.body.volume.id;
      await computeApi.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
      const now = Date.now();
      const extend: ExtendState = {
        requestId: `req-lease-${id}`,
        targetBytes,
        step: 'storage',
        startedAt: new Date(now).toISOString(),
        deadline: new Date(now + 30_000).toISOString(),
        attempts: 0,
        hostBytes: 64 * MiB,
        error: null,
        mode: 'online',
        lastError: null,
      };
      expect(await stores.A.updateVolume(id, { status: ['in-use'] }, { status: 'extending', extend })).toBe(true);
      await stores.A.startVolumeAction({ requestId: extend.requestId, volumeId: id, action: 'extend', userId: 'tester', projectId: PROJECT, startTime: extend.startedAt, message: null, computeRequestIds: [], details: {} });
      return id;
    },
    async close() {
      for (const c of children) {
        c.kill('SIGKILL');
        await new Promise((r) => c.once('exit', r));
      }
      // Abandon, not close: a worker a test killed must not release anything now either.
      await Promise.all([...workers.map((w) => w.abandon()), volumeApp.workflow.close()]);
      await volumeApp.app.close();
      await computeApp.app.close();
      await computeApp.manager.close();
      await stores.A.close();
      await stores.B.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Every external call of the extend, to compare with "each step once". */
function calls(r: Rig): { storage: number; rescan: number; assist: number; resizes: number } {
  return { storage: r.backend.extends, rescan: r.driver.calls.rescan, assist: r.driver.calls.extendAttached, resizes: r.driver.resizes };
}
const ONCE = { storage: 1, rescan: 1, assist: 1, resizes: 1 };

async function until(what: string, ok: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function settled(r: Rig, id: string): Promise<{ status: string; sizeBytes: number; extend: unknown }> {
  await until(`volume ${id} is no longer extending`, async () => (await r.stores.B.getVolume(id))?.status !== 'extending');
  const v = (await r.stores.B.getVolume(id))!;
  return { status: v.status, sizeBytes: v.sizeBytes, extend: v.extend };
}

function guestBytes(r: Rig, id: string): number | undefined {
  return r.driver.snapshot(SERVER).disks.find((d) => d.volumeId === id)?.guestBytes;
}

describe('two workflow workers on one database drive each extend with exactly one of them', () => {
  const starts = [
    { when: 'both are started on it at once', stagger: false },
    { when: 'the second is started while the first runs it', stagger: true },
  ];
  it.each(starts)('runs every step once when $when; the other answers elsewhere and does nothing', async ({ stagger }) => {
    rig = await startRig();
    const A = rig.worker('A', { stepDelayMs: 30 });
    const B = rig.worker('B', { stepDelayMs: 30 });
    const id = await rig.extendingVolume(128 * MiB);
    let results: ExtendResult[];
    if (stagger) {
      const a = A.start(id);
      await until('A has stored a step after storage', async () => (await rig!.stores.A.getVolume(id))?.extend?.step !== 'storage');
      results = [await B.start(id), await a];
    } else {
      results = await Promise.all([A.start(id), B.start(id)]);
    }
    expect(results.filter((r) => r.elsewhere)).toHaveLength(1);
    const driven = results.find((r) => !r.elsewhere)!;
    expect(driven.error).toBeUndefined();
    expect(driven.volume).toMatchObject({ status: 'in-use', sizeBytes: 128 * MiB, extend: null });
    expect(calls(rig)).toEqual(ONCE);
    expect(guestBytes(rig, id)).toBe(128 * MiB);
    // Only the driver ever held the lease, and it gave it back at the end.
    const owners = new Set([...rig.stores.A.claims, ...rig.stores.B.claims].filter((c) => c.granted).map((c) => c.owner));
    expect(owners.size).toBe(1);
    expect(rig.stores.A.leaseExpiry(id)).toBeUndefined();
  });

  it('keeps an extend whose steps each last longer than the lease (renewed every third of it)', async () => {
    rig = await startRig();
    const A = rig.worker('A', { stepDelayMs: 700, leaseMs: 600 });
    const B = rig.worker('B', { leaseMs: 600 });
    const id = await rig.extendingVolume(96 * MiB);
    B.startWatchdog();
    expect(await A.start(id)).toMatchObject({ volume: { status: 'in-use', sizeBytes: 96 * MiB } });
    expect(rig.stores.B.granted('worker-B')).toEqual([]);
    expect(calls(rig)).toEqual(ONCE);
  });
});

describe('a worker that stops mid-extend hands it to another', () => {
  const cases = [
    {
      how: 'is killed (its lease is left to expire)',
      leaseMs: 900,
      stop: (w: ExtendWorkflow) => w.abandon(),
      // B may claim only once the lease A last renewed has expired.
      takeover: (claimedAt: number, expiry: number) => expect(claimedAt).toBeGreaterThanOrEqual(expiry),
    },
    {
      how: 'is closed gracefully (it releases its lease)',
      leaseMs: 60_000,
      stop: (w: ExtendWorkflow) => w.close(),
      // At once: long before the lease A held would have expired.
      takeover: (claimedAt: number, expiry: number) => expect(claimedAt).toBeLessThan(expiry),
    },
  ];
  it.each(cases)('when it $how, the other finishes it: in-use at the new size, every step once', async ({ leaseMs, stop, takeover }) => {
    rig = await startRig();
    const A = rig.worker('A', { stepDelayMs: 150, leaseMs });
    const B = rig.worker('B', { leaseMs });
    const id = await rig.extendingVolume(128 * MiB);
    const a = A.start(id);
    await until('A stored the rescan', async () => (await rig!.stores.A.getVolume(id))?.extend?.step === 'wait_host');
    const expiry = rig.stores.A.leaseExpiry(id)!;
    expect(expiry).toBeGreaterThan(Date.now());
    await stop(A);
    expect(await a).toEqual({ volume: undefined });
    const stoppedAt = (await rig.stores.A.getVolume(id))!;
    expect(stoppedAt.status).toBe('extending');
    B.startWatchdog();
    expect(await settled(rig, id)).toEqual({ status: 'in-use', sizeBytes: 128 * MiB, extend: null });
    const bClaims = rig.stores.B.granted('worker-B');
    expect(bClaims.length).toBeGreaterThan(0);
    takeover(bClaims[0]!, expiry);
    expect(calls(rig)).toEqual(ONCE);
    expect(guestBytes(rig, id)).toBe(128 * MiB);
    const action = (await rig.stores.B.listVolumeActions(id)).find((x) => x.action === 'extend');
    expect(action).toMatchObject({ result: 'Success' });
  });

  it('when its process is killed with SIGKILL mid-extend, the other takes it over after the lease and finishes it: every step once', async () => {
    rig = await startRig();
    const leaseMs = 1500;
    const id = await rig.extendingVolume(128 * MiB);
    const A = await rig.spawnWorker('worker-A', { leaseMs, stepDelayMs: 300 });
    await until('A stored the rescan', async () => (await rig!.stores.B.getVolume(id))?.extend?.step === 'wait_host', 20_000);
    A.child.kill('SIGKILL');
    await new Promise((r) => A.child.once('exit', r));
    const expiry = rig.stores.B.leaseExpiry(id)!;
    expect(expiry).toBeGreaterThan(Date.now());
    const B = rig.worker('B', { leaseMs });
    B.startWatchdog();
    expect(await settled(rig, id)).toEqual({ status: 'in-use', sizeBytes: 128 * MiB, extend: null });
    expect(rig.stores.B.granted('worker-B')[0]).toBeGreaterThanOrEqual(expiry);
    expect({ ...calls(rig), storage: A.extends() + rig.backend.extends }).toEqual(ONCE);
    expect(guestBytes(rig, id)).toBe(128 * MiB);
  }, 60_000);

  it('stops acting when its lease is taken while a step runs, and the new holder finishes it', async () => {
    rig = await startRig();
    const leaseMs = 600;
    const A = rig.worker('A', { leaseMs });
    const B = rig.worker('B', { leaseMs });
    const id = await rig.extendingVolume(128 * MiB);
    const held = rig.backend.hold();
    const a = A.start(id);
    await held.entered;
    // B claims with its clock moved past A's lease: A's lease has expired for it.
    const expiry = rig.stores.A.leaseExpiry(id)!;
    expect(await rig.stores.B.claimExtend(id, B.owner, leaseMs, new Date(expiry + 1))).toBe(true);
    await until('A has found its lease lost', () => !A.driving(id));
    const lostAt = Date.now();
    const b = B.start(id);
    // A's storage call returns only now: it must store nothing and call nothing more.
    held.release();
    const [ra, rb] = await Promise.all([a, b]);
    expect(ra.elsewhere).toBe(true);
    expect(rb).toMatchObject({ volume: { status: 'in-use', sizeBytes: 128 * MiB, extend: null } });
    expect(rb.elsewhere).toBeUndefined();
    // The storage step ran under both (it is idempotent); every later step once, under B only.
    expect(calls(rig)).toEqual({ ...ONCE, storage: 2 });
    expect(guestBytes(rig, id)).toBe(128 * MiB);
    expect(rig.stores.A.granted('worker-A')).toHaveLength(1);
    // A stored nothing once it knew its lease lost (its storage call's result included).
    expect(rig.stores.A.updates.filter((u) => u.volumeId === id && u.at >= lostAt)).toEqual([]);
  });
});

describe('an extend accepted by a worker that cannot claim it', () => {
  it('answers 202 all the same, and another worker finishes it once the stale lease is given back', async () => {
    rig = await startRig();
    const B = rig.worker('B', { leaseMs: 900 });
    const id = await rig.extendingVolume(96 * MiB);
    // B holds a lease on the volume with no run (as if its release had failed), then the extend ends.
    expect(await rig.stores.B.claimExtend(id, B.owner, 60_000)).toBe(true);
    expect(await rig.stores.A.updateVolume(id, { status: ['extending'] }, { status: 'in-use', extend: null })).toBe(true);
    const res = await rig.volumeApi.request<{ volume: { status: string } }>('POST', `/v3/${PROJECT}/volumes/${id}/action`, { 'os-extend-bytes': { new_bytes: 128 * MiB } });
    expect(res.status).toBe(202);
    expect(calls(rig)).toEqual({ storage: 0, rescan: 0, assist: 0, resizes: 0 });
    expect((await rig.stores.A.getVolume(id))?.status).toBe('extending');
    // B's renewal gives back the lease it holds without a run; then its watchdog takes the extend up.
    B.startWatchdog();
    expect(await settled(rig, id)).toEqual({ status: 'in-use', sizeBytes: 128 * MiB, extend: null });
    expect(calls(rig)).toEqual(ONCE);
    // The volume API's worker asked for the lease and was refused; it never drove the extend.
    const apiClaims = rig.stores.A.claims.filter((c) => c.volumeId === id && c.owner !== B.owner);
    expect(apiClaims.length).toBeGreaterThan(0);
    expect(apiClaims.every((c) => !c.granted)).toBe(true);
  });
});
