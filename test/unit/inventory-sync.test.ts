/**
 * Issue D item 17: the inventory sync writes only what changed, never runs twice at once, never
 * misses a change made while one runs; a request naming a server the store does not know, a state
 * refusal, an attach or a detach look up that one server on the host (never a listing of the
 * whole host), bounded per id and per interval; and single-server syncs and full syncs never undo
 * a newer view of the host.
 */
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ComputeAPI } from '../../src/compute/api.js';
import { ComputeManager } from '../../src/compute/manager.js';
import { LocalComputeRpc } from '../../src/compute/rpc.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { errors } from '../../src/errors.js';
import type { InventorySyncResult } from '../../src/db/store.js';
import type { DriverServer } from '../../src/virt/driver.js';
import { FakeDriver, type FakeServer } from '../../src/virt/fake/driver.js';
import { BLOCK_VOL, GiB, OFF_SERVER, OFF_VOL, SERVER, TENANT, makeComputeApp, url, type TestComputeApp } from '../support/computeApp.js';

const server = (i: number): FakeServer => ({
  id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
  name: `vm-${i}`,
  projectId: TENANT,
  state: 'active',
  disks: [{ volumeId: `11111111-0000-4000-8000-${String(i).padStart(12, '0')}`, device: 'vdb', kind: 'file', backingBytes: GiB, hostBytes: GiB, guestBytes: GiB }],
});

/**
 * The fake hypervisor, whose listing and single-server lookup can be held at a gate after they
 * read the host: what a slow hypervisor answer looks like (the answer describes the host as it
 * was when the call started).
 */
class GatedDriver extends FakeDriver {
  listGate: Promise<void> | undefined;
  lookupGate: Promise<void> | undefined;
  override async listServers(): Promise<DriverServer[]> {
    const seen = await super.listServers();
    await this.listGate;
    return seen;
  }
  override async getServer(serverId: string): Promise<DriverServer | undefined> {
    const seen = await super.getServer(serverId);
    await this.lookupGate;
    return seen;
  }
}

/** A gate, and the function that opens it. */
function gate(): [Promise<void>, () => void] {
  let open!: () => void;
  const p = new Promise<void>((r) => (open = r));
  return [p, open];
}

/** Until every callback queued now (and the I/O they wait for) has run. */
const settle = () => new Promise((r) => setTimeout(r, 10));

/**
 * The real SQLite store, whose inventory writes keep the order they were called in (as the store
 * contract says) behind a queue of the test's own, which a sync can be held in (a long sync being
 * written, on demand).
 */
class HeldStore extends SqliteStore {
  hold: Promise<void> | undefined;
  private order: Promise<unknown> = Promise.resolve();
  private inOrder<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.order.then(fn);
    this.order = run.catch(() => undefined);
    return run;
  }
  override syncServers(...args: Parameters<SqliteStore['syncServers']>): Promise<InventorySyncResult> {
    const hold = this.hold;
    return this.inOrder(async () => {
      await hold;
      return super.syncServers(...args);
    });
  }
  override upsertServer(...args: Parameters<SqliteStore['upsertServer']>) {
    return this.inOrder(() => super.upsertServer(...args));
  }
  override removeServer(...args: Parameters<SqliteStore['removeServer']>) {
    return this.inOrder(() => super.removeServer(...args));
  }
}

/** The real SQLite store, whose syncServers waits at a gate the test opens. */
class GatedStore extends SqliteStore {
  gate: Promise<void> | undefined;
  override async syncServers(...args: Parameters<SqliteStore['syncServers']>): Promise<InventorySyncResult> {
    await this.gate;
    return super.syncServers(...args);
  }
}

describe('ComputeManager.syncInventory', () => {
  let store: GatedStore;
  let driver: FakeDriver;
  let manager: ComputeManager;
  beforeEach(() => {
    store = new GatedStore(':memory:');
    driver = new FakeDriver({ servers: [server(1), server(2), server(3)] });
    manager = new ComputeManager({ host: 'h1', driver, store, defaultProjectId: TENANT, logger: pino({ level: 'silent' }) });
  });
  afterEach(async () => store.close());

  it('writes only what changed: nothing for an unchanged host, one server for one state change', async () => {
    expect(await manager.syncInventoryCounted()).toEqual({ added: 3, updated: 0, removed: 0, unchanged: 0 });
    expect(await manager.syncInventoryCounted()).toEqual({ added: 0, updated: 0, removed: 0, unchanged: 3 });
    driver.setState(server(2).id, 'paused');
    expect(await manager.syncInventoryCounted()).toEqual({ added: 0, updated: 1, removed: 0, unchanged: 2 });
    expect((await store.getServer(server(2).id))?.state).toBe('paused');
  });

  it('stores the vCPUs and memory the driver reports, follows a resize on the host, and stores none where the driver measured none', async () => {
    const [a, b] = [server(1).id, server(2).id];
    driver.setSize(a, { vcpus: 4, memoryMb: 8192 });
    await manager.syncInventory();
    expect(await store.getServer(a)).toMatchObject({ vcpus: 4, memoryMb: 8192 });
    expect(await store.getServer(b)).not.toHaveProperty('vcpus');
    expect(await store.getServer(b)).not.toHaveProperty('memoryMb');
    driver.setSize(a, { vcpus: 2, memoryMb: undefined });
    driver.setSize(b, { vcpus: undefined, memoryMb: 1024 });
    expect(await manager.syncInventoryCounted()).toEqual({ added: 0, updated: 2, removed: 0, unchanged: 1 });
    expect(await store.getServer(a)).toMatchObject({ vcpus: 2 });
    expect(await store.getServer(a)).not.toHaveProperty('memoryMb');
    expect(await store.getServer(b)).toMatchObject({ memoryMb: 1024 });
    // One server looked up alone writes its size as a listing does.
    driver.setSize(b, { vcpus: 3, memoryMb: 1024 });
    expect(await manager.syncServer(b)).toMatchObject({ vcpus: 3, memoryMb: 1024 });
  });

  it('stores the size a server was spawned with, as the driver reports it back', async () => {
    await driver.spawn({ id: 'spawned-1', name: 'new', projectId: TENANT, userId: 'u', image: { kind: 'disk', diskPath: '/x.qcow2', diskFormat: 'qcow2' }, vcpus: 2, ramMb: 768, rootDiskGb: 0 });
    await manager.syncInventory();
    expect(await store.getServer('spawned-1')).toMatchObject({ vcpus: 2, memoryMb: 768 });
  });

  it('runs again after a sync under way when asked meanwhile, so a change made after its listing reaches the store', async () => {
    await manager.syncInventory();
    let open!: () => void;
    store.gate = new Promise((r) => (open = r));
    const first = manager.syncInventory();
    await new Promise((r) => setImmediate(r)); // the first sync has listed the host and waits at the store
    expect(driver.calls.listServers).toBe(2);
    driver.setState(server(3).id, 'shutoff');
    const second = manager.syncInventory();
    open();
    await Promise.all([first, second]);
    expect(driver.calls.listServers).toBe(3);
    expect((await store.getServer(server(3).id))?.state).toBe('shutoff');
  });

  it('lets every caller asking while a sync runs share one queued run', async () => {
    let open!: () => void;
    store.gate = new Promise((r) => (open = r));
    const running = manager.syncInventory();
    await new Promise((r) => setImmediate(r));
    const queued = Array.from({ length: 5 }, () => manager.syncInventory());
    open();
    await Promise.all([running, ...queued]);
    expect(driver.calls.listServers).toBe(2);
  });
});

describe('ComputeManager.syncServer', () => {
  let store: SqliteStore;
  let driver: GatedDriver;
  let manager: ComputeManager;
  beforeEach(async () => {
    store = new SqliteStore(':memory:');
    driver = new GatedDriver({ servers: [server(1), server(2), server(3)] });
    manager = new ComputeManager({ host: 'h1', driver, store, defaultProjectId: TENANT, logger: pino({ level: 'silent' }) });
    await manager.syncInventory();
  });
  afterEach(async () => store.close());

  it('adds a server created on the host by looking up that server alone, with no listing of the host', async () => {
    const listed = driver.calls.listServers;
    driver.addServer(server(7));
    const rec = await manager.syncServer(server(7).id);
    expect(rec).toMatchObject({ id: server(7).id, host: 'h1', projectId: TENANT, state: 'active' });
    expect(rec?.attachments.map((a) => a.volumeId)).toEqual([server(7).disks[0]!.volumeId]);
    expect(driver.calls.getServer).toBe(1);
    expect(driver.calls.listServers).toBe(listed);
  });

  it('refreshes only that server: its new state is recorded, the others are not rewritten', async () => {
    const before = await store.listServers();
    await new Promise((r) => setTimeout(r, 5)); // so a rewrite would show in updatedAt
    driver.setState(server(2).id, 'shutoff');
    driver.setState(server(3).id, 'paused');
    expect((await manager.syncServer(server(2).id))?.state).toBe('shutoff');
    const after = await store.listServers();
    expect(after.find((s) => s.id === server(1).id)).toEqual(before.find((s) => s.id === server(1).id));
    expect(after.find((s) => s.id === server(3).id)).toEqual(before.find((s) => s.id === server(3).id));
    // Unchanged: nothing written, its updatedAt stays.
    const again = await store.getServer(server(2).id);
    await manager.syncServer(server(2).id);
    expect(await store.getServer(server(2).id)).toEqual(again);
  });

  it('removes a server the host no longer has, and answers undefined', async () => {
    driver.removeServer(server(2).id);
    expect(await manager.syncServer(server(2).id)).toBeUndefined();
    expect(await store.getServer(server(2).id)).toBeUndefined();
    expect(await store.getServer(server(1).id)).toBeDefined();
  });

  it('lets every caller asking while a lookup runs share one queued lookup', async () => {
    const [held, open] = gate();
    driver.lookupGate = held;
    const running = manager.syncServer(server(1).id);
    await settle();
    const queued = Array.from({ length: 5 }, () => manager.syncServer(server(1).id));
    open();
    await Promise.all([running, ...queued]);
    expect(driver.calls.getServer).toBe(2);
  });

  it('keeps a server looked up while an older listing was under way (the listing does not remove it)', async () => {
    const [held, open] = gate();
    driver.listGate = held;
    const sync = manager.syncInventory(); // lists the host now, answers later
    await settle();
    driver.addServer(server(8));
    expect((await manager.syncServer(server(8).id))?.id).toBe(server(8).id);
    open();
    await sync;
    expect(await store.getServer(server(8).id)).toBeDefined();
    // ...until a listing newer than the lookup no longer has it.
    driver.removeServer(server(8).id);
    await manager.syncInventory();
    expect(await store.getServer(server(8).id)).toBeUndefined();
  });

  it('keeps a server found gone while an older listing was under way (the listing does not bring it back)', async () => {
    const [held, open] = gate();
    driver.listGate = held;
    const sync = manager.syncInventory();
    await settle();
    driver.removeServer(server(3).id);
    expect(await manager.syncServer(server(3).id)).toBeUndefined();
    open();
    await sync;
    expect(await store.getServer(server(3).id)).toBeUndefined();
  });

  it('drops a lookup that a newer listing overtook (the lookup would undo the listing)', async () => {
    const [held, open] = gate();
    driver.lookupGate = held;
    const lookup = manager.syncServer(server(1).id); // sees server 1 active, answers later
    await settle();
    driver.setState(server(1).id, 'shutoff');
    await manager.syncInventory(); // a listing started after the lookup: it saw shutoff
    expect((await store.getServer(server(1).id))?.state).toBe('shutoff');
    open();
    expect((await lookup)?.state).toBe('shutoff');
    expect((await store.getServer(server(1).id))?.state).toBe('shutoff');
  });

  it('answers a miss at once while a sync is being written, unless that sync brings the server: then after it', async () => {
    const held = new HeldStore(':memory:');
    try {
      const d = new FakeDriver({ servers: [server(1), server(8)] });
      const m = new ComputeManager({ host: 'h1', driver: d, store: held, defaultProjectId: TENANT, logger: pino({ level: 'silent' }) });
      const [hold, open] = gate();
      held.hold = hold;
      const sync = m.syncInventory(); // its listing has server 8; the store holds it, unwritten
      await settle();
      const race = (p: Promise<unknown>) => Promise.race([p.then(() => 'answered'), settle().then(() => 'waiting')]);
      expect(await race(m.syncServer(server(99).id))).toBe('answered');
      d.removeServer(server(8).id);
      const gone = m.syncServer(server(8).id);
      expect(await race(gone)).toBe('waiting');
      open();
      await sync;
      expect(await gone).toBeUndefined();
      expect(await held.getServer(server(8).id)).toBeUndefined();
      expect(await held.getServer(server(1).id)).toBeDefined();
    } finally {
      await held.close();
    }
  });

  describe('on a driver without getServer', () => {
    let listing: FakeDriver;
    let m: ComputeManager;
    beforeEach(async () => {
      listing = new FakeDriver({ servers: [server(1)] });
      // An instance property shadows the method: the driver contract's optional getServer, absent.
      Object.defineProperty(listing, 'getServer', { value: undefined });
      m = new ComputeManager({ host: 'h2', driver: listing, store, defaultProjectId: TENANT, logger: pino({ level: 'silent' }) });
      await m.syncInventory();
    });

    it('falls back to a full sync, for an unknown id at most once a second', async () => {
      const listed = listing.calls.listServers;
      listing.addServer(server(9));
      expect((await m.syncServer(server(9).id))?.id).toBe(server(9).id);
      expect(listing.calls.listServers).toBe(listed + 1);
      listing.addServer(server(10));
      expect(await m.syncServer(server(10).id)).toBeUndefined();
      expect(listing.calls.listServers).toBe(listed + 1);
    });

    it('always syncs for a server it knows (an attach must be seen)', async () => {
      const listed = listing.calls.listServers;
      listing.setState(server(1).id, 'paused');
      expect((await m.syncServer(server(1).id))?.state).toBe('paused');
      listing.setState(server(1).id, 'active');
      expect((await m.syncServer(server(1).id))?.state).toBe('active');
      expect(listing.calls.listServers).toBe(listed + 2);
    });
  });
});

describe('requests naming servers the store does not know', () => {
  let t: TestComputeApp;
  const auth = () => ({ 'x-auth-token': t.tokens.admin });
  beforeEach(async () => {
    t = await makeComputeApp();
  });
  afterEach(async () => t.close());

  it('find a server created on the host since the last sync, by looking that server up alone', async () => {
    const s = server(7);
    t.driver.addServer(s);
    const listed = t.driver.calls.listServers;
    const res = await t.app.inject({ method: 'GET', url: url.volume(s.disks[0]!.volumeId, s.id), headers: auth() });
    expect(res.statusCode).toBe(200);
    expect(res.json().volume_blockdev.bytes).toBe(GiB);
    expect(t.driver.calls.getServer).toBe(1);
    expect(t.driver.calls.listServers).toBe(listed);
  });

  it('look each unknown id up once, however many requests name it at once, and never list the host', async () => {
    const listed = t.driver.calls.listServers;
    const unknown = server(1000);
    const answers = await Promise.all(Array.from({ length: 50 }, () => t.app.inject({ method: 'GET', url: url.volume(unknown.disks[0]!.volumeId, unknown.id), headers: auth() })));
    expect(answers.map((a) => a.statusCode)).toEqual(answers.map(() => 404));
    expect(answers.every((a) => a.json().itemNotFound?.error_code === 'InstanceNotFound')).toBe(true);
    expect(t.driver.calls.getServer).toBe(1);
    expect(t.driver.calls.listServers).toBe(listed);
  });
});

describe('ComputeAPI.getServer bounds on lookups of unknown ids', () => {
  let store: SqliteStore;
  let driver: FakeDriver;
  let manager: ComputeManager;
  const api = (syncOnMissIntervalMs: number, lookupsOnMissPerInterval: number) =>
    new ComputeAPI({ store, rpc: new LocalComputeRpc(manager), logger: pino({ level: 'silent' }), syncOnMissIntervalMs, lookupsOnMissPerInterval });
  const status = (p: Promise<unknown>) =>
    p.then(
      () => 200,
      (err: { status?: number }) => err.status,
    );
  beforeEach(async () => {
    store = new SqliteStore(':memory:');
    driver = new FakeDriver({ servers: [server(1)] });
    manager = new ComputeManager({ host: 'h1', driver, store, defaultProjectId: TENANT, logger: pino({ level: 'silent' }) });
    await manager.syncInventory();
  });
  afterEach(async () => store.close());

  it('looks the same id up at most once per interval: created on the host meanwhile, it is 404 until the interval ends', async () => {
    const compute = api(60_000, 100);
    const late = server(9);
    expect(await status(compute.getServer(TENANT, late.id))).toBe(404);
    driver.addServer(late);
    expect(await status(compute.getServer(TENANT, late.id))).toBe(404);
    expect(driver.calls.getServer).toBe(1);
    // ...and the next periodic sync finds it.
    await manager.syncInventory();
    expect(await status(compute.getServer(TENANT, late.id))).toBe(200);
  });

  it('looks an id up again once its interval is over', async () => {
    const compute = api(30, 100);
    const late = server(9);
    expect(await status(compute.getServer(TENANT, late.id))).toBe(404);
    driver.addServer(late);
    await new Promise((r) => setTimeout(r, 40));
    expect(await status(compute.getServer(TENANT, late.id))).toBe(200);
    expect(driver.calls.getServer).toBe(2);
  });

  it('looks up at most the budget of different ids per interval: past it a miss is 404 at once, even for a server the host has', async () => {
    const compute = api(60_000, 5);
    const made = Array.from({ length: 20 }, (_, i) => server(2000 + i));
    expect(await Promise.all(made.map((s) => status(compute.getServer(TENANT, s.id))))).toEqual(made.map(() => 404));
    expect(driver.calls.getServer).toBe(5);
    const real = server(3000);
    driver.addServer(real);
    expect(await status(compute.getServer(TENANT, real.id))).toBe(404);
    expect(driver.calls.getServer).toBe(5);
    expect(driver.calls.listServers).toBe(1);
  });

  it('answers 404 for a server of another project that a lookup found, and records it', async () => {
    const compute = api(60_000, 100);
    const theirs = { ...server(11), projectId: 'someone-else' };
    driver.addServer(theirs);
    expect(await status(compute.getServer(TENANT, theirs.id))).toBe(404);
    expect((await store.getServer(theirs.id))?.projectId).toBe('someone-else');
  });

  it('answers 404 when the lookup fails (the hypervisor is unreachable), and the next sync finds the server', async () => {
    const compute = api(60_000, 100);
    driver.addServer(server(12));
    driver.injectFault('getServer', errors.hypervisorUnreachable('qemu:///system', 'connection refused'));
    expect(await status(compute.getServer(TENANT, server(12).id))).toBe(404);
    expect(driver.calls.getServer).toBe(1);
    await manager.syncInventory();
    expect(await status(compute.getServer(TENANT, server(12).id))).toBe(200);
  });
});

describe('state refusals and attachments refresh one server, not the host', () => {
  let t: TestComputeApp;
  const auth = () => ({ 'x-auth-token': t.tokens.admin });
  const assist = (volume: string, serverId: string) => t.app.inject({ method: 'POST', url: url.volume(volume, serverId), headers: auth(), payload: { onlineExtendVolume: { bytes: 2 * GiB } } });
  beforeEach(async () => {
    t = await makeComputeApp();
  });
  afterEach(async () => t.close());

  it('extends a volume of a server started since the last sync: the stale state is refreshed by one lookup', async () => {
    t.driver.setState(OFF_SERVER, 'active');
    const listed = t.driver.calls.listServers;
    const res = await assist(OFF_VOL, OFF_SERVER);
    expect(res.statusCode).toBe(200);
    expect(t.driver.calls.getServer).toBe(1);
    expect(t.driver.calls.listServers).toBe(listed);
    expect((await t.store.getServer(OFF_SERVER))?.state).toBe('active');
  });

  it('refuses a server still shut off after one lookup (409), and a server gone from the host with 404', async () => {
    const listed = t.driver.calls.listServers;
    const off = await assist(OFF_VOL, OFF_SERVER);
    expect(off.statusCode).toBe(409);
    expect(off.json().conflictingRequest.message).toMatch(/state shutoff/);
    expect(t.driver.calls.getServer).toBe(1);
    t.driver.removeServer(OFF_SERVER);
    const gone = await assist(OFF_VOL, OFF_SERVER);
    expect(gone.statusCode).toBe(404);
    expect(gone.json().itemNotFound?.error_code).toBe('InstanceNotFound');
    expect(t.driver.calls.listServers).toBe(listed);
  });

  it('records an attach and a detach by looking up the server alone', async () => {
    const listed = t.driver.calls.listServers;
    const volumeId = '0a0a0a0a-0000-4000-8000-000000000001';
    await t.manager.attachVolume(SERVER, { volumeId, kind: 'block', source: '/dev/oe-no-such-device' });
    expect((await t.store.getServer(SERVER))?.attachments.map((a) => a.volumeId)).toContain(volumeId);
    await t.manager.detachVolume(SERVER, volumeId);
    const after = await t.store.getServer(SERVER);
    expect(after?.attachments.map((a) => a.volumeId)).not.toContain(volumeId);
    expect(after?.attachments.map((a) => a.volumeId)).toContain(BLOCK_VOL);
    expect(t.driver.calls.listServers).toBe(listed);
  });
});
