/**
 * Compute RPC over a real RabbitMQ 3.10 (test/support/rabbitmq.ts): the ComputeRpc contract of
 * AmqpComputeRpc against LocalComputeRpc (two identical fake-driver hosts, one reached in-process,
 * one through the broker), failing fast (no agent, deadline, broker away), recovery after the
 * broker comes back without restarting either side, 1,000 concurrent calls, and the compute
 * agent (`startComputeAgent`) writing its heartbeat.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import pino from 'pino';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { ComputeManager } from '../../src/compute/manager.js';
import { LocalComputeRpc, type ComputeRpc } from '../../src/compute/rpc.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { errors, isServiceError } from '../../src/errors.js';
import { FakeDriver, type FakeServer } from '../../src/virt/fake/driver.js';
import { AmqpConnection, parseTransportUrl } from '../../src/rpc/amqp/connection.js';
import { AmqpComputeRpc } from '../../src/rpc/amqp/client.js';
import { ComputeRpcServer, HostTakenError } from '../../src/rpc/amqp/server.js';
import { DIRECT_REPLY_TO, hostQueue, RPC_EXCHANGE } from '../../src/rpc/amqp/protocol.js';
import { startComputeAgent, type RunningComputeAgent } from '../../src/agent.js';
import { loadConfig } from '../../src/config.js';
import { describeReal } from '../support/real.js';
import { rabbitmqMissing, startRabbitMQ, type RabbitHarness } from '../support/rabbitmq.js';
import { BLOCK_VOL, FILE_VOL, GiB, OFF_SERVER, OFF_VOL, RO_VOL, SERVER, UNKNOWN, sampleServers } from '../support/computeApp.js';

const log = pino({ level: 'silent' });
const HOST = 'compute-1';
const MiB = 1024 ** 2;

interface Side {
  store: SqliteStore;
  driver: FakeDriver;
  manager: ComputeManager;
}

async function side(host: string, servers: FakeServer[] = sampleServers()): Promise<Side> {
  const store = new SqliteStore(':memory:');
  const driver = new FakeDriver({ servers });
  const manager = new ComputeManager({ host, driver, store, defaultProjectId: 'admin', logger: log });
  await manager.syncInventory();
  return { store, driver, manager };
}

/** What a call did, comparable across transports: the value (times left out) or the error's public fields. */
async function outcome(p: Promise<unknown>): Promise<unknown> {
  try {
    return { ok: stripTimes(await p) };
  } catch (err) {
    if (!isServiceError(err)) throw err;
    return { code: err.code, status: err.status, final: err.final, message: err.message, reason: err.reason };
  }
}

function stripTimes(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripTimes);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).filter(([k]) => !k.endsWith('At')).map(([k, x]) => [k, stripTimes(x)]));
  return v;
}

async function rejection(p: Promise<unknown>): Promise<{ code: string; final: boolean; reason: string | undefined; detail: string | undefined }> {
  try {
    await p;
  } catch (err) {
    if (isServiceError(err)) return { code: err.code, final: err.final, reason: err.reason, detail: err.detail };
    throw err;
  }
  throw new Error('expected the call to fail');
}

const d = describeReal(rabbitmqMissing());

d('compute RPC over RabbitMQ', () => {
  let rabbit: RabbitHarness;
  let dir: string;
  let local: Side;
  let remote: Side;
  let localRpc: LocalComputeRpc;
  let serverConn: AmqpConnection;
  let clientConn: AmqpConnection;
  let server: ComputeRpcServer;
  let rpc: AmqpComputeRpc;
  const closers: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    rabbit = await startRabbitMQ();
    dir = mkdtempSync(join(tmpdir(), 'oe-amqp-test-'));
    writeFileSync(join(dir, 'disk.raw'), Buffer.alloc(MiB));
    local = await side(HOST);
    remote = await side(HOST);
    localRpc = new LocalComputeRpc(local.manager);
    serverConn = await AmqpConnection.open(rabbit.url, { logger: log, name: 'test agent' });
    clientConn = await AmqpConnection.open(rabbit.url, { logger: log, name: 'test api' });
    server = new ComputeRpcServer({ connection: serverConn, manager: remote.manager, logger: log });
    await server.start();
    rpc = new AmqpComputeRpc({ connection: clientConn, timeoutMs: 10_000, logger: log });
    await rpc.ready(10_000);
  });

  afterAll(async () => {
    for (const c of closers.reverse()) await c().catch(() => undefined);
    await rpc?.close();
    await server?.close(0);
    await clientConn?.close();
    await serverConn?.close();
    await rabbit?.remove();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('parses an oslo transport URL and never shows its password', () => {
    const t = parseTransportUrl('rabbit://nova:s%40cret@broker.example:5673/cloud%2Fone');
    expect(t).toMatchObject({ hostname: 'broker.example', port: 5673, username: 'nova', password: 's@cret', vhost: 'cloud/one' });
    expect(t.redacted).not.toContain('cret');
    expect(parseTransportUrl('rabbit://guest:guest@h/').vhost).toBe('/');
    expect(parseTransportUrl('rabbit://h').port).toBe(5672);
    expect(() => parseTransportUrl('amqp://h/')).toThrow(/rabbit:\/\//);
    expect(() => parseTransportUrl('rabbit://a:pw1@h1:5672,b:pw2@h2:5672/')).toThrow(/several brokers/);
    expect(() => parseTransportUrl('rabbit://u:topsecret@h/?ssl=1')).toThrow(/not supported/);
    try {
      parseTransportUrl('rabbit://u:topsecret@h/?ssl=1');
    } catch (err) {
      expect((err as Error).message).not.toContain('topsecret');
    }
  });

  // Each case runs on both sides in turn, in order: later cases see what earlier ones changed.
  const cases: Array<{ name: string; call: (rpc: ComputeRpc, s: Side) => Promise<unknown>; expect?: { code: string; final: boolean } }> = [
    { name: 'capabilities', call: (r) => r.capabilities(HOST) },
    { name: 'syncInventory of the host', call: (r) => r.syncInventory(HOST) },
    { name: 'syncServer of a known server', call: (r) => r.syncServer(HOST, SERVER) },
    { name: 'syncServer of an unknown server', call: (r) => r.syncServer(HOST, UNKNOWN) },
    { name: 'rescan', call: (r) => r.rescan(HOST, SERVER, BLOCK_VOL) },
    { name: 'getHostBytes after the rescan', call: (r) => r.getHostBytes(HOST, SERVER, BLOCK_VOL) },
    { name: 'getHostBytes of an unknown server (final)', call: (r) => r.getHostBytes(HOST, UNKNOWN, BLOCK_VOL), expect: { code: 'InstanceNotFound', final: true } },
    {
      name: 'getHostBytes when the hypervisor is unreachable (uncertain)',
      call: (r, s) => (s.driver.injectFault('getHostBytes', errors.hypervisorUnreachable('qemu:///system', 'libvirtd is not answering')), r.getHostBytes(HOST, SERVER, BLOCK_VOL)),
      expect: { code: 'HypervisorUnreachable', final: false },
    },
    {
      name: 'a driver failure classified uncertain against its code default',
      call: (r, s) => (s.driver.injectFault('rescan', errors.driverFailed('the disk is being copied', { final: false })), r.rescan(HOST, SERVER, FILE_VOL)),
      expect: { code: 'DriverFailed', final: false },
    },
    { name: 'growGuestFilesystem of a disk with nothing on it', call: (r) => r.growGuestFilesystem(HOST, SERVER, BLOCK_VOL) },
    {
      name: 'growGuestFilesystem of a mounted ext4 that fills its disk already',
      call: (r, s) => (s.driver.setGuestFilesystem(SERVER, BLOCK_VOL, { type: 'ext4', mountpoint: '/data' }), r.growGuestFilesystem(HOST, SERVER, BLOCK_VOL)),
    },
    { name: 'extendAttached grows the guest', call: (r) => r.extendAttached(HOST, SERVER, BLOCK_VOL, 2 * GiB) },
    { name: 'growGuestFilesystem after the extend grows the ext4 to the disk', call: (r) => r.growGuestFilesystem(HOST, SERVER, BLOCK_VOL) },
    {
      name: 'growGuestFilesystem without a guest agent (an answer, not an error)',
      call: async (r, s) => {
        s.driver.setGuestAgent(SERVER, false);
        try {
          return await r.growGuestFilesystem(HOST, SERVER, BLOCK_VOL);
        } finally {
          s.driver.setGuestAgent(SERVER, true);
        }
      },
    },
    { name: 'growGuestFilesystem of a volume not attached (final)', call: (r) => r.growGuestFilesystem(HOST, SERVER, OFF_VOL), expect: { code: 'VolumeNotAttached', final: true } },
    {
      name: 'growGuestFilesystem when the hypervisor is unreachable (uncertain)',
      call: (r, s) => (s.driver.injectFault('growGuestFilesystem', errors.hypervisorUnreachable('qemu:///system', 'libvirtd is not answering')), r.growGuestFilesystem(HOST, SERVER, BLOCK_VOL)),
      expect: { code: 'HypervisorUnreachable', final: false },
    },
    { name: 'extendAttached refuses to shrink (final)', call: (r) => r.extendAttached(HOST, SERVER, BLOCK_VOL, GiB), expect: { code: 'VolumeShrinkRefused', final: true } },
    { name: 'extendAttached of a read-only disk', call: (r) => r.extendAttached(HOST, SERVER, RO_VOL, 2 * GiB), expect: { code: 'DiskReadOnly', final: true } },
    { name: 'extendToHostSize of a shut-off server', call: (r) => r.extendToHostSize(HOST, OFF_SERVER, OFF_VOL) },
    { name: 'extendToHostSize with nothing to grow', call: (r) => r.extendToHostSize(HOST, SERVER, BLOCK_VOL) },
    { name: 'extendToHostSize of a volume not attached', call: (r) => r.extendToHostSize(HOST, SERVER, OFF_VOL) },
    { name: 'attachVolume of a file disk', call: (r) => r.attachVolume(HOST, SERVER, { volumeId: 'vol-new', kind: 'file', format: 'raw', source: join(dir, 'disk.raw') }) },
    {
      name: 'attachVolume to a device name in use',
      call: (r) => r.attachVolume(HOST, SERVER, { volumeId: 'vol-other', kind: 'file', source: join(dir, 'disk.raw'), device: 'vdb' }),
      expect: { code: 'DevicePathInUse', final: true },
    },
    {
      name: 'attachVolume of a missing file (the path stays out of the answer)',
      call: (r) => r.attachVolume(HOST, SERVER, { volumeId: 'vol-missing', kind: 'file', source: join(dir, 'nope.raw') }),
      expect: { code: 'DriverFailed', final: true },
    },
    { name: 'detachVolume', call: (r) => r.detachVolume(HOST, SERVER, 'vol-new') },
    {
      name: 'spawn',
      call: (r) => r.spawn(HOST, { id: 'srv-new', name: 'built', projectId: 'p', userId: 'u', image: { kind: 'kernel', kernelPath: '/k', ramdiskPath: '/r', cmdline: '' }, vcpus: 1, ramMb: 128, rootDiskGb: 0 }),
    },
    { name: 'destroy', call: (r) => r.destroy(HOST, 'srv-new') },
    { name: 'destroy again (idempotent)', call: (r) => r.destroy(HOST, 'srv-new') },
  ];

  for (const c of cases) {
    it(`${c.name}: answers over AMQP what it answers in-process`, async () => {
      const want = await outcome(c.call(localRpc, local));
      const got = await outcome(c.call(rpc, remote));
      expect(got).toEqual(want);
      if (c.expect) expect(want).toMatchObject(c.expect);
      else expect(want).toHaveProperty('ok');
    });
  }

  it('never sends an error’s operator-only detail across the wire', async () => {
    const missing = { volumeId: 'vol-missing-2', kind: 'file' as const, source: join(dir, 'gone.raw') };
    const here = await rejection(localRpc.attachVolume(HOST, SERVER, missing));
    const there = await rejection(rpc.attachVolume(HOST, SERVER, missing));
    expect(here.detail).toContain(dir);
    expect(there.detail).toBeUndefined();
    expect(JSON.stringify(there)).not.toContain(dir);
  });

  it('refuses an unknown method with a final error naming it', async () => {
    const ch = await clientConn.channel();
    try {
      const answer = new Promise<Record<string, unknown>>((resolve) => {
        void ch.consume(DIRECT_REPLY_TO, (m) => m && resolve(JSON.parse(m.content.toString()) as Record<string, unknown>), { noAck: true });
      });
      await new Promise((r) => setTimeout(r, 50));
      ch.publish(RPC_EXCHANGE, hostQueue(HOST), Buffer.from(JSON.stringify({ method: 'format_disk', args: {} })), { replyTo: DIRECT_REPLY_TO, correlationId: 'x' });
      const reply = await answer;
      expect(reply).toMatchObject({ ok: false, error: { code: 'InternalError', final: true } });
      expect((reply.error as { message: string }).message).toContain('format_disk');
    } finally {
      await ch.close().catch(() => undefined);
    }
  });

  it('drops a call whose deadline has passed and never runs it', async () => {
    const before = { expired: server.counts.expired, resizes: remote.driver.calls.extendAttached };
    const ch = await clientConn.channel();
    try {
      ch.publish(RPC_EXCHANGE, hostQueue(HOST), Buffer.from(JSON.stringify({ method: 'extendAttached', args: { serverId: SERVER, volumeId: FILE_VOL, bytes: 3 * GiB } })), {
        headers: { 'x-deadline': Date.now() - 1_000 },
      });
    } finally {
      await ch.close();
    }
    // Calls on one queue are taken in order: once this one is answered, the late one was seen.
    await rpc.capabilities(HOST);
    expect(server.counts.expired).toBe(before.expired + 1);
    expect(remote.driver.calls.extendAttached).toBe(before.resizes);
  });

  it('fails at once with ComputeHostUnavailable for a host no agent listens for', async () => {
    // The client's deadline is far beyond the test's timeout: only the broker's return can end this call in time.
    const slow = new AmqpComputeRpc({ connection: clientConn, timeoutMs: 120_000, logger: log });
    closers.push(() => slow.close());
    await slow.ready(5_000);
    const e = await rejection(slow.getHostBytes('compute-nowhere', SERVER, BLOCK_VOL));
    expect(e).toMatchObject({ code: 'ComputeHostUnavailable', final: false, reason: 'no compute agent is listening' });
  }, 10_000);

  it('fails a call under way soon (not at its deadline) when its agent goes away during it', async () => {
    // An agent that takes the call and never answers, then dies: its connection and exclusive queue go with it.
    const conn = await AmqpConnection.open(rabbit.url, { logger: log });
    const hanging = { ...remote.manager, host: 'compute-dying', getHostBytes: () => new Promise<number>(() => undefined) } as unknown as ConstructorParameters<typeof ComputeRpcServer>[0]['manager'];
    const dying = new ComputeRpcServer({ connection: conn, manager: hanging, logger: log });
    await dying.start();
    const slow = new AmqpComputeRpc({ connection: clientConn, timeoutMs: 120_000, logger: log });
    closers.push(() => slow.close());
    await slow.ready(5_000);
    const call = rejection(slow.getHostBytes('compute-dying', SERVER, BLOCK_VOL));
    await new Promise((r) => setTimeout(r, 300));
    expect(slow.inFlight).toBe(1);
    await conn.close();
    // The deadline is 120 s and the test's own timeout 15 s: only the probe of the host's queue can end it.
    expect(await call).toMatchObject({ code: 'ComputeHostUnavailable', final: false, reason: 'its compute agent went away during the call' });
    expect(slow.inFlight).toBe(0);
  }, 15_000);

  it('fails with ComputeHostUnavailable (uncertain) when the agent does not answer by the deadline', async () => {
    const quick = new AmqpComputeRpc({ connection: clientConn, timeoutMs: 300, logger: log });
    closers.push(() => quick.close());
    await quick.ready(5_000);
    remote.driver.latencyMs = 1_500;
    try {
      const e = await rejection(quick.getHostBytes(HOST, SERVER, BLOCK_VOL));
      expect(e).toMatchObject({ code: 'ComputeHostUnavailable', final: false, reason: 'no answer within 300 ms' });
    } finally {
      remote.driver.latencyMs = 0;
    }
    await new Promise((r) => setTimeout(r, 1_600));
  });

  it('answers 1,000 concurrent calls, each with its own result', async () => {
    const servers: FakeServer[] = Array.from({ length: 100 }, (_, i) => ({
      id: `srv-${i}`,
      name: `s${i}`,
      state: 'active',
      disks: [{ volumeId: `vol-${i}`, device: 'vdb', kind: 'block', backingBytes: (i + 1) * MiB, hostBytes: (i + 1) * MiB, guestBytes: (i + 1) * MiB }],
    }));
    const many = await side('compute-many', servers);
    const conn = await AmqpConnection.open(rabbit.url, { logger: log });
    const srv = new ComputeRpcServer({ connection: conn, manager: many.manager, logger: log });
    closers.push(async () => {
      await srv.close(0);
      await conn.close();
      await many.store.close();
    });
    await srv.start();
    const picks = Array.from({ length: 1_000 }, () => Math.floor(Math.random() * 100));
    const answers = await Promise.all(picks.map((i) => rpc.getHostBytes('compute-many', `srv-${i}`, `vol-${i}`)));
    expect(answers).toEqual(picks.map((i) => (i + 1) * MiB));
    expect(srv.counts.answered).toBe(1_000);
    expect(rpc.inFlight).toBe(0);
  });

  it('runs no more calls at once than its prefetch allows', async () => {
    const servers: FakeServer[] = Array.from({ length: 6 }, (_, i) => ({
      id: `pf-${i}`,
      name: `pf${i}`,
      state: 'active',
      disks: [{ volumeId: `pf-vol-${i}`, device: 'vdb', kind: 'file', backingBytes: 2 * MiB, hostBytes: 2 * MiB, guestBytes: MiB }],
    }));
    const bounded = await side('compute-bounded', servers);
    bounded.driver.latencyMs = 200;
    const conn = await AmqpConnection.open(rabbit.url, { logger: log });
    const srv = new ComputeRpcServer({ connection: conn, manager: bounded.manager, logger: log, prefetch: 2 });
    closers.push(async () => {
      await srv.close(0);
      await conn.close();
      await bounded.store.close();
    });
    await srv.start();
    const grown = await Promise.all(servers.map((s) => rpc.extendAttached('compute-bounded', s.id, s.disks[0]!.volumeId, 2 * MiB)));
    expect(grown).toEqual(servers.map(() => 2 * MiB));
    expect(bounded.driver.calls.extendAttached).toBe(6);
    expect(bounded.driver.maxConcurrentOverall).toBe(2);
  });

  it('connects with the URL’s credentials and never logs its password', async () => {
    const lines: string[] = [];
    const capture = pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) });
    const t = parseTransportUrl(rabbit.url);
    const wrong = rabbit.url.replace(`:${t.password}@`, ':not-the-password-42@');
    const bad = await AmqpConnection.open(wrong, { logger: capture, reconnectMaxMs: 200 });
    try {
      await expect(bad.waitConnected(1_500)).rejects.toMatchObject({ code: 'MessagingUnavailable', final: false });
      await expect(bad.channel()).rejects.toMatchObject({ code: 'MessagingUnavailable' });
    } finally {
      await bad.close();
    }
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.join('\n')).toContain(':***@');
    expect(lines.join('\n')).not.toContain('not-the-password-42');
    expect(clientConn.connected).toBe(true);
  });

  it('answers syncServer without a host at once and has every agent record the server', async () => {
    remote.driver.addServer({ id: 'srv-late', name: 'late', projectId: 'p', state: 'active', disks: [] });
    expect(await remote.store.getServer('srv-late')).toBeUndefined();
    await expect(rpc.syncServer(undefined, 'srv-late')).resolves.toBeUndefined();
    const until = Date.now() + 5_000;
    while (!(await remote.store.getServer('srv-late')) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    expect((await remote.store.getServer('srv-late'))?.host).toBe(HOST);
  });

  it('refuses a second agent for a host that already has one', async () => {
    // Another agent process: its own connection.
    const conn = await AmqpConnection.open(rabbit.url, { logger: log });
    try {
      const other = new ComputeRpcServer({ connection: conn, manager: remote.manager, logger: log });
      await expect(other.start()).rejects.toBeInstanceOf(HostTakenError);
      // The first agent still answers.
      expect(await rpc.getHostBytes(HOST, SERVER, BLOCK_VOL)).toBe(await local.driver.getHostBytes(SERVER, BLOCK_VOL));
    } finally {
      await conn.close();
    }
  });

  it('fails fast with MessagingUnavailable while the broker blocks publishers on a resource alarm', async () => {
    const blocking = new AmqpComputeRpc({ connection: clientConn, timeoutMs: 2_000, logger: log });
    closers.push(() => blocking.close());
    await blocking.ready(5_000);
    // A memory watermark of 0 sets the memory alarm off at once: RabbitMQ blocks every publishing connection.
    rabbit.ctl('set_vm_memory_high_watermark', '0');
    try {
      const until = Date.now() + 10_000;
      // The broker tells a connection it is blocked when it next publishes: that call waits for its deadline.
      while (clientConn.blocked === undefined && Date.now() < until) {
        const e = await rejection(blocking.capabilities(HOST)).catch(() => undefined);
        if (e) expect(e.final).toBe(false);
        if (clientConn.blocked === undefined) await new Promise((r) => setTimeout(r, 100));
      }
      expect(clientConn.blocked).toBeDefined();
      expect(await rejection(rpc.getHostBytes(HOST, SERVER, BLOCK_VOL))).toMatchObject({ code: 'MessagingUnavailable', final: false });
    } finally {
      rabbit.ctl('set_vm_memory_high_watermark', '0.4');
    }
    const until = Date.now() + 10_000;
    while (clientConn.blocked !== undefined && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    expect(await rpc.getHostBytes(HOST, SERVER, BLOCK_VOL)).toBe(await local.driver.getHostBytes(SERVER, BLOCK_VOL));
  }, 40_000);

  it('fails fast with MessagingUnavailable while RabbitMQ is stopped, and works again once it is back without restarting either side', async () => {
    // A call under way when the broker goes: uncertain, at once.
    remote.driver.latencyMs = 3_000;
    const underway = rejection(rpc.getHostBytes(HOST, SERVER, BLOCK_VOL));
    await new Promise((r) => setTimeout(r, 200));
    await rabbit.stop();
    const stoppedAt = Date.now();
    remote.driver.latencyMs = 0;
    expect(await underway).toMatchObject({ code: 'MessagingUnavailable', final: false });
    // While it is away: every call fails at once.
    for (let i = 0; i < 3; i++) expect(await rejection(rpc.capabilities(HOST))).toMatchObject({ code: 'MessagingUnavailable', final: false });
    // Away for 10 s, as the fault: longer than the reconnect backoff's longest pause.
    await new Promise((r) => setTimeout(r, Math.max(0, stoppedAt + 10_000 - Date.now())));
    expect(await rejection(rpc.getHostBytes(HOST, SERVER, BLOCK_VOL))).toMatchObject({ code: 'MessagingUnavailable', final: false });
    await rabbit.start();
    // Client and server reconnect by themselves; until the agent's queue is back a call is returned at once.
    const seen = new Set<string>();
    const until = Date.now() + 30_000;
    let bytes: number | undefined;
    while (bytes === undefined && Date.now() < until) {
      try {
        bytes = await rpc.getHostBytes(HOST, SERVER, BLOCK_VOL);
      } catch (err) {
        if (!isServiceError(err)) throw err;
        seen.add(`${err.code}/${err.final}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    expect(bytes).toBe(await local.driver.getHostBytes(SERVER, BLOCK_VOL));
    for (const s of seen) expect(['MessagingUnavailable/false', 'ComputeHostUnavailable/false']).toContain(s);
    expect(serverConn.connected && clientConn.connected).toBe(true);
  }, 60_000);

  it('runs a compute agent that serves its host and writes heartbeats that move', async () => {
    const inventory = join(dir, 'inventory.json');
    writeFileSync(inventory, JSON.stringify({ servers: [{ id: 'agent-srv', name: 'a', project_id: 'p', state: 'active', disks: [{ volume_id: 'agent-vol', device: 'vdb', bytes: 3 * GiB }] }] }));
    const dbPath = join(dir, `agent-${randomUUID()}.sqlite`);
    const config = loadConfig({}, {
      driver: 'fake',
      fakeInventory: inventory,
      dataDir: dir,
      computeHost: 'agent-1',
      databaseUrl: `sqlite://${dbPath}`,
      transportUrl: rabbit.url,
      serviceHeartbeatMs: 100,
      syncIntervalMs: 0,
    });
    let agent: RunningComputeAgent | undefined = await startComputeAgent(config, { logger: log });
    const reader = new SqliteStore(dbPath);
    try {
      expect(await rpc.getHostBytes('agent-1', 'agent-srv', 'agent-vol')).toBe(3 * GiB);
      // Its inventory is in the shared database.
      expect((await reader.getServer('agent-srv'))?.host).toBe('agent-1');
      const [first] = await reader.listServices({ host: 'agent-1' });
      expect(first).toMatchObject({ host: 'agent-1', binary: 'nova-compute', topic: 'compute', disabled: false });
      await new Promise((r) => setTimeout(r, 350));
      const [later] = await reader.listServices({ host: 'agent-1' });
      expect(Date.parse(later!.updatedAt)).toBeGreaterThan(Date.parse(first!.updatedAt));
      expect(later!.id).toBe(first!.id);
      expect(agent.heartbeats.written).toBeGreaterThanOrEqual(2);
      // A second agent started by mistake for the same host, with another (empty) inventory: refused
      // before it writes anything, so the host's servers stay as the first agent recorded them.
      const empty = join(dir, 'inventory-empty.json');
      writeFileSync(empty, JSON.stringify({ servers: [] }));
      const before = await reader.listServers();
      await expect(startComputeAgent({ ...config, fakeInventory: empty, dataDir: join(dir, 'second') }, { logger: log })).rejects.toBeInstanceOf(HostTakenError);
      expect(await reader.listServers()).toEqual(before);
      expect(before.map((x) => x.id)).toContain('agent-srv');
      await agent.close();
      agent = undefined;
      // Gone: its queue went with it, so a call fails at once.
      expect(await rejection(rpc.getHostBytes('agent-1', 'agent-srv', 'agent-vol'))).toMatchObject({ code: 'ComputeHostUnavailable', reason: 'no compute agent is listening' });
    } finally {
      await agent?.close();
      await reader.close();
    }
  });
});
