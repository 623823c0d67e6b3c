/**
 * Issue G end to end: a deployment of several hypervisor hosts, every part a real process.
 *
 *   ctl (network namespace): PostgreSQL and RabbitMQ on ctl's address; two `online-extend api`
 *       processes on 127.0.0.1 (the test reaches them only through the topology's tunnel), one
 *       shared data dir (the volume files live in its file pool, which every host sees).
 *   h1, h2 (network namespaces): a private libvirtd with a real TCG guest each, and
 *       `online-extend compute-agent --host hN` reaching PostgreSQL and RabbitMQ over TCP.
 *
 * Each host's volume is created through the volume API (its file lands in the shared pool),
 * attached to that host's guest through the compute API (the agent hot-plugs it over RPC), and
 * grown online through either api process; the guest itself reports each new size (its kernel's
 * /sys/block sizes on its console). Then the faults of the issue, each while an extend runs:
 * kill -9 of a host's agent, kill -9 of the api process driving the extend, RabbitMQ away for
 * 10 s, a PostgreSQL restart. After each: the volume is in-use at the new size, no extend stuck,
 * none run twice (one successful extend action per request, and the guest's size history grows
 * exactly once per extend).
 *
 * Never addresses a namespace's IP from the root namespace: the APIs through `topo.tunnel`,
 * PostgreSQL through its unix socket.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { issueToken } from '../../src/auth/tokens.js';
import { openStoreUrl, type OpenedStore } from '../../src/db/open.js';
import { ApiClient, ApiError } from '../../src/rpc/httpClient.js';
import { BIN, ensureBuilt } from '../support/build.js';
import { sizeHistory } from '../support/guestWatch.js';
import type { InstanceActionView, VolumeActionView, VolumeView } from '../support/labService.js';
import { startMultiHost, whyNoMultiHost, type HypervisorHost, type MultiHost } from '../support/multihost.js';
import type { NsProcess, Tunnel } from '../support/netns.js';
import { postgresMissing, startPostgres, type PostgresHarness } from '../support/postgres.js';
import { rabbitmqMissing, startRabbitMQ, type RabbitHarness } from '../support/rabbitmq.js';
import { describeReal } from '../support/real.js';

const GiB = 1024 ** 3;
const P = 'e2e0multihost00000000000000000000';
const HOSTS = ['h1', 'h2'] as const;
type HostRole = (typeof HOSTS)[number];
/** Cinder's microversion of in-use extends. */
const VOLUME_342 = { 'OpenStack-API-Version': 'volume 3.42' };
/** Compute RPC deadline of the api processes: the broker-away answers must come well before it. */
const RPC_TIMEOUT_MS = 20_000;
/** The extend lease: a dead api's extend is taken over after this. */
const EXTEND_LEASE_MS = 3_000;
/** Sleep before each extend step: holds an extend long enough to hit it with a fault. */
const STEP_DELAY_MS = 1_000;

const why = (await whyNoMultiHost()) ?? postgresMissing() ?? rabbitmqMissing();

interface ApiProc {
  index: number;
  proc: NsProcess | undefined;
  computePort: number;
  volumePort: number;
  identityPort: number;
  compute: ApiClient;
  volume: ApiClient;
  tunnels: Tunnel[];
}

describeReal(why)('multi-host deployment: two api processes, PostgreSQL, RabbitMQ, two hosts with an agent and a guest each', () => {
  let mh: MultiHost | undefined;
  let pg: PostgresHarness | undefined;
  let rmq: RabbitHarness | undefined;
  let db: OpenedStore | undefined;
  let dbUrl = '';
  let token = '';
  let configFile = '';
  const apis: ApiProc[] = [];
  const agents = new Map<HostRole, NsProcess>();
  /** The volume of each host, attached to its guest, and the guest's device for it. */
  const vols = new Map<HostRole, { id: string; dev: string; sizes: number[] }>();
  const t0 = Date.now();
  const timings: Record<string, number> = {};
  const log = (m: string): void => console.log(`[multihost-e2e +${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`);
  const M = (): MultiHost => {
    if (!mh) throw new Error('multi-host setup did not start');
    return mh;
  };
  const timed = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const t = Date.now();
    try {
      return await fn();
    } finally {
      timings[name] = Date.now() - t;
      log(`${name}: ${timings[name]} ms`);
    }
  };

  const startAgent = async (role: HostRole): Promise<NsProcess> => {
    const h = M().host(role);
    const dataDir = join(h.dir, 'agent');
    mkdirSync(dataDir, { recursive: true });
    const proc = await M().topo.spawnIn(role, process.execPath, [
      BIN,
      'compute-agent',
      '--host', role,
      '--driver', 'libvirt',
      '--libvirt-uri', h.libvirtUri,
      '--database-url', dbUrl,
      '--transport-url', rmq!.url,
      '--data-dir', dataDir,
      '--default-project', P,
      '--heartbeat-interval', '1000',
    ]);
    await proc.waitForOutput(new RegExp(`compute agent of host ${role} running`), 60_000);
    agents.set(role, proc);
    return proc;
  };

  const startApi = async (index: number): Promise<ApiProc> => {
    const base = 18_000 + index * 1_000;
    const existing = apis[index];
    const a: ApiProc = existing ?? {
      index,
      proc: undefined,
      computePort: base + 774,
      volumePort: base + 776,
      identityPort: base + 500,
      compute: undefined as unknown as ApiClient,
      volume: undefined as unknown as ApiClient,
      tunnels: [],
    };
    a.proc = await M().topo.spawnIn('ctl', process.execPath, [
      BIN,
      'api',
      '--host', '127.0.0.1',
      '--port', String(a.computePort),
      '--volume-port', String(a.volumePort),
      '--identity-port', String(a.identityPort),
      '--image-port', '0',
      '--data-dir', M().sharedDataDir,
      '--database-url', dbUrl,
      '--transport-url', rmq!.url,
      '--config', configFile,
      '--rpc-timeout', String(RPC_TIMEOUT_MS),
      '--service-down-time', '6000',
      '--extend-step-delay', String(STEP_DELAY_MS),
    ]);
    await a.proc.waitForOutput(/volume API listening on/, 60_000);
    if (!existing) {
      // The tunnels name fixed ports in ctl: a restarted api process is reached through the same ones.
      const tc = await M().topo.tunnel('127.0.0.1', a.computePort);
      const tv = await M().topo.tunnel('127.0.0.1', a.volumePort);
      a.tunnels = [tc, tv];
      a.compute = new ApiClient({ url: tc.url, token, timeoutMs: 60_000 });
      a.volume = new ApiClient({ url: tv.url, token, headers: VOLUME_342, timeoutMs: 60_000 });
      apis[index] = a;
    }
    return a;
  };

  const vpath = (id: string): string => `/v3/${P}/volumes/${id}`;
  const show = async (api: ApiProc, id: string): Promise<VolumeView> =>
    (await api.volume.request<{ volume: VolumeView }>('GET', `${vpath(id)}/os-online-extend`)).body.volume;
  /** Poll through whichever api answers until the volume is no longer `extending`; every view seen is kept. */
  const settle = async (id: string, timeoutMs: number, seen: VolumeView[] = []): Promise<VolumeView> => {
    const end = Date.now() + timeoutMs;
    for (let i = 0; ; i++) {
      const api = apis[i % apis.length]!;
      const v = await show(api, id).catch(() => undefined);
      if (v) {
        seen.push(v);
        if (v.status !== 'extending') return v;
      }
      if (Date.now() > end) throw new Error(`volume ${id} still extending after ${timeoutMs} ms: ${JSON.stringify(seen.at(-1)?.extend)}`);
      await sleep(200);
    }
  };
  const extend = async (api: ApiProc, id: string, newSizeGiB: number): Promise<string> => {
    const r = await api.volume.request('POST', `${vpath(id)}/action`, { 'os-extend': { new_size: newSizeGiB } });
    expect(r.status).toBe(202);
    return r.requestId!;
  };
  const volumeActions = async (api: ApiProc, id: string): Promise<VolumeActionView[]> =>
    (await api.volume.request<{ volumeActions: VolumeActionView[] }>('GET', `${vpath(id)}/os-volume-actions`)).body.volumeActions;
  const instanceActions = async (api: ApiProc, serverId: string): Promise<InstanceActionView[]> =>
    (await api.compute.request<{ instanceActionDetails: InstanceActionView[] }>('GET', `/v2/${P}/servers/${serverId}/os-instance-action-details`)).body.instanceActionDetails;
  const guestOf = (role: HostRole): NonNullable<HypervisorHost['guest']> => M().host(role).guest!;

  /**
   * The end state every extend must reach: in-use at the new size with no extend left, the
   * extend request's action a success recorded once, the guest showing the new size and its
   * size history one growth per extend so far.
   */
  const expectExtended = async (role: HostRole, requestId: string, newSizeGiB: number, done: VolumeView): Promise<void> => {
    const v = vols.get(role)!;
    expect(done, JSON.stringify(done.extend)).toMatchObject({ status: 'in-use', size_bytes: newSizeGiB * GiB, extend: null });
    v.sizes.push(newSizeGiB * GiB);
    expect(await guestOf(role).waitForSize(v.dev, newSizeGiB * GiB, 60_000)).toBe(newSizeGiB * GiB);
    expect(sizeHistory(await guestOf(role).readLog(), v.dev)).toEqual(v.sizes);
    const live = apis.find((a) => a.proc && a.proc.child.exitCode === null && a.proc.child.signalCode === null)!;
    // The volume is back at rest a moment before its action's finish is written (a separate
    // write): an action still without a result is read again, for up to 10 s.
    let actions = (await volumeActions(live, v.id)).filter((a) => a.request_id === requestId);
    for (let tries = 0; tries < 100 && actions.some((a) => a.result == null); tries++) {
      await new Promise((r) => setTimeout(r, 100));
      actions = (await volumeActions(live, v.id)).filter((a) => a.request_id === requestId);
    }
    expect(actions, JSON.stringify(actions)).toHaveLength(1);
    expect(actions[0]).toMatchObject({ action: 'extend', result: 'Success' });
    // Compute resized the guest's disk once per extend: one successful extend_volume per size reached.
    const resizes = (await instanceActions(live, guestOf(role).uuid)).filter((a) => a.action === 'extend_volume' && a.result === 'Success' && a.details?.volume_id === v.id);
    expect(resizes.map((a) => Number(a.details?.bytes)).sort((x, y) => x - y), JSON.stringify(resizes)).toEqual(v.sizes.slice(1));
  };

  beforeAll(async () => {
    ensureBuilt();
    mh = await timed('multihost start (topology, 2 libvirtd, 2 guests)', () => startMultiHost({ log }));
    log(`multihost timings ${JSON.stringify(mh.timings)}`);
    const { topo, ctl } = mh;
    const inCtl = (cmd: string, args: string[]): [string, string[]] => topo.wrap('ctl', cmd, args);
    [pg, rmq] = await timed('postgres + rabbitmq start in ctl', () =>
      Promise.all([startPostgres({ wrap: inCtl, listen: ctl.address }), startRabbitMQ({ wrap: inCtl, listen: ctl.address })]),
    );
    dbUrl = await pg.createDatabase('online_extend');
    // This process reaches PostgreSQL through its unix socket only.
    db = await openStoreUrl(pg.socketUrl('online_extend'));
    ({ token } = await issueToken(db.store, { userId: 'e2e', projectId: P, roles: ['admin'], ttlMs: 3_600_000 }));
    configFile = join(mh.dir, 'api-config.json');
    writeFileSync(configFile, JSON.stringify({ extendLeaseMs: EXTEND_LEASE_MS }));
    await timed('2 agents start', () => Promise.all(HOSTS.map((r) => startAgent(r))));
    await timed('2 apis start', () => Promise.all([startApi(0), startApi(1)]));
  }, 300_000);

  afterAll(async () => {
    const problems: string[] = [];
    const t = Date.now();
    await Promise.all([...agents.values()].map((a) => a.stop(10_000).catch((e: unknown) => problems.push(`agent ${a.pid}: ${(e as Error).message}`))));
    await Promise.all(apis.map((a) => a.proc?.stop(15_000).catch((e: unknown) => problems.push(`api ${a.index}: ${(e as Error).message}`))));
    // `apis` has a hole where a start failed (startApi(1) may succeed when startApi(0) did not).
    for (const a of apis) for (const tn of a?.tunnels ?? []) await tn.close().catch(() => undefined);
    await db?.close().catch((e: unknown) => problems.push(`store: ${(e as Error).message}`));
    await rmq?.remove().catch((e: unknown) => problems.push(`rabbitmq: ${(e as Error).message}`));
    await pg?.stop().catch((e: unknown) => problems.push(`postgres: ${(e as Error).message}`));
    if (mh) problems.push(...(await mh.close()));
    timings.cleanup = Date.now() - t;
    // What went wrong inside the processes (pino level 50 = error), for the reader of a failed run.
    for (const [name, p] of [...apis.map((a) => [`api${a.index + 1}`, a.proc] as const), ...[...agents].map(([r, a]) => [`agent ${r}`, a] as const)]) {
      const errors = (p?.output() ?? '').split('\n').filter((l) => l.includes('"level":50'));
      if (errors.length) log(`${name} logged ${errors.length} errors, last ones:\n${errors.slice(-5).join('\n')}`);
    }
    log(`timings ${JSON.stringify(timings)}`);
    expect(problems).toEqual([]);
  }, 120_000);

  it('lists both hosts up in os-services, through either api process', async () => {
    for (const api of apis) {
      const { body } = await api.compute.request<{ services: Array<{ host: string; binary: string; state: string; status: string }> }>('GET', '/v2.1/os-services');
      const computes = body.services.filter((s) => s.binary === 'nova-compute').map((s) => ({ host: s.host, state: s.state, status: s.status }));
      expect(computes.sort((x, y) => x.host.localeCompare(y.host))).toEqual(HOSTS.map((host) => ({ host, state: 'up', status: 'enabled' })));
    }
  });

  it("creates a volume per host in the shared pool, attaches it to that host's guest, and grows it online through either api; each guest reports its new size", async () => {
    const t = Date.now();
    await Promise.all(
      HOSTS.map(async (role, i) => {
        const api = apis[i]!;
        const guest = guestOf(role);
        const { id } = (await api.volume.request<{ volume: { id: string } }>('POST', `/v3/${P}/volumes`, { volume: { name: `mh-${role}`, size: 1, volume_type: 'file' } })).body.volume;
        // The other api process attaches it: every api sees the same servers and volumes.
        await apis[1 - i]!.compute.request('POST', `/v2/${P}/servers/${guest.uuid}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
        const attached = await show(api, id);
        expect(attached).toMatchObject({ status: 'in-use', size_bytes: GiB });
        expect(attached.attachments.map((a) => a.server_id)).toEqual([guest.uuid]);
        const dev = await guest.deviceForSerial(id, 60_000);
        expect(dev).toBeDefined();
        expect(await guest.waitForSize(dev!, GiB, 30_000)).toBe(GiB);
        vols.set(role, { id, dev: dev!, sizes: [GiB] });
      }),
    );
    timings['create + attach ×2'] = Date.now() - t;
    const t2 = Date.now();
    // h1's through api #1, h2's through api #2, at the same time.
    await Promise.all(
      HOSTS.map(async (role, i) => {
        const v = vols.get(role)!;
        const req = await extend(apis[i]!, v.id, 2);
        await expectExtended(role, req, 2, await settle(v.id, 90_000));
      }),
    );
    timings['extend ×2 (parallel)'] = Date.now() - t2;
    log(`create+attach ${timings['create + attach ×2']} ms, two extends ${timings['extend ×2 (parallel)']} ms`);
  }, 240_000);

  it("waits while a host's agent is killed -9 mid-extend (retryable errors recorded) and finishes once the agent is back", async () => {
    const role: HostRole = 'h1';
    const v = vols.get(role)!;
    expect(v, 'the volumes of the first test').toBeDefined();
    const t = Date.now();
    const req = await extend(apis[1]!, v.id, 3);
    // The extend is held before its first step (STEP_DELAY_MS): the agent dies before the rescan.
    process.kill(agents.get(role)!.pid, 'SIGKILL');
    await agents.get(role)!.exited;
    const seen: VolumeView[] = [];
    const end = Date.now() + 8_000;
    while (Date.now() < end) {
      seen.push(await show(apis[0]!, v.id));
      await sleep(250);
    }
    // Waiting, not failed: still extending, with the host's retryable error kept as the last cause.
    expect(seen.map((s) => s.status)).toEqual(seen.map(() => 'extending'));
    const last = seen.at(-1)!.extend!;
    expect(last.error).toBeNull();
    expect(last.last_error).toMatchObject({ step: 'rescan', code: 'ComputeHostUnavailable' });
    expect(last.attempts).toBeGreaterThan(1);
    const errs = seen.map((s) => s.extend?.last_error?.message).filter((e): e is string => !!e);
    const tr = Date.now();
    await startAgent(role);
    const done = await settle(v.id, 90_000);
    timings['agent kill: restart → done'] = Date.now() - tr;
    await expectExtended(role, req, 3, done);
    timings['agent kill: whole'] = Date.now() - t;
    log(`agent kill -9: errors seen while waiting: ${[...new Set(errs)].join(' | ')}`);
  }, 180_000);

  it('hands the extend of an api process killed -9 to the other api process after the lease', async () => {
    const role: HostRole = 'h2';
    const v = vols.get(role)!;
    expect(v, 'the volumes of the first test').toBeDefined();
    const t = Date.now();
    const req = await extend(apis[0]!, v.id, 3);
    // Let api #1 start driving it (one step delay), then kill it mid-run.
    await sleep(STEP_DELAY_MS * 1.5);
    const before = await show(apis[1]!, v.id);
    expect(before.status).toBe('extending');
    expect(before.extend?.request_id).toBe(req);
    process.kill(apis[0]!.proc!.pid, 'SIGKILL');
    await apis[0]!.proc!.exited;
    const tk = Date.now();
    // Only api #2 is left: it must take the extend over, api #1 stays dead until it is done.
    const done = await settle(v.id, 90_000);
    timings['api kill: kill → done'] = Date.now() - tk;
    expect(apis[0]!.proc!.child.signalCode).toBe('SIGKILL');
    await expectExtended(role, req, 3, done);
    expect(Date.now() - tk).toBeGreaterThanOrEqual(EXTEND_LEASE_MS - 500);
    await timed('api restart', () => startApi(0));
    timings['api kill: whole'] = Date.now() - t;
  }, 180_000);

  it('fails calls fast with a retryable 503 while RabbitMQ is away for 10 s, then recovers without a restart; an extend under way finishes', async () => {
    const role: HostRole = 'h1';
    const v = vols.get(role)!;
    expect(v, 'the volumes of the first test').toBeDefined();
    const server = guestOf(role).uuid;
    const blockdev = `/v2/${P}/servers/${server}/os-online_extend_volume/${v.id}`;
    expect((await apis[0]!.compute.request('GET', blockdev)).status).toBe(200);
    const req = await extend(apis[0]!, v.id, 4);
    const t = Date.now();
    await timed('rabbitmq stop', () => rmq!.stop());
    // While away: every call that needs a host fails at once, retryable.
    const answers: Array<{ ms: number; code: string; status: number; final: boolean }> = [];
    while (Date.now() - t < 10_000) {
      const tc = Date.now();
      const err = await apis[answers.length % 2]!.compute.request('GET', blockdev).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, 'get_blockdev succeeded with the broker away').toBeInstanceOf(ApiError);
      const e = err as ApiError;
      answers.push({ ms: Date.now() - tc, code: e.code, status: e.status, final: e.final });
      await sleep(500);
    }
    expect(answers.length).toBeGreaterThan(5);
    for (const a of answers) {
      expect(a).toMatchObject({ status: 503, final: false });
      expect(['MessagingUnavailable', 'ComputeHostUnavailable']).toContain(a.code);
      expect(a.ms).toBeLessThan(RPC_TIMEOUT_MS / 4);
    }
    expect(answers.some((a) => a.code === 'MessagingUnavailable'), JSON.stringify(answers)).toBe(true);
    // The volume waits meanwhile.
    expect((await show(apis[1]!, v.id)).status).toBe('extending');
    await timed('rabbitmq start', () => rmq!.start());
    const tb = Date.now();
    const done = await settle(v.id, 90_000);
    timings['rabbitmq back → extend done'] = Date.now() - tb;
    await expectExtended(role, req, 4, done);
    // Both api processes and the agent reconnected by themselves: the same processes answer.
    for (const api of apis) expect((await api.compute.request<{ volume_size?: number }>('GET', blockdev)).status).toBe(200);
    expect(agents.get(role)!.child.exitCode).toBeNull();
    log(`rabbitmq away: ${answers.length} answers, slowest ${Math.max(...answers.map((a) => a.ms))} ms, codes ${[...new Set(answers.map((a) => a.code))].join(',')}`);
  }, 180_000);

  it('loses no request after PostgreSQL restarts, and an extend across the restart finishes', async () => {
    const role: HostRole = 'h2';
    const v = vols.get(role)!;
    expect(v, 'the volumes of the first test').toBeDefined();
    const server = guestOf(role).uuid;
    const blockdev = `/v2/${P}/servers/${server}/os-online_extend_volume/${v.id}`;
    const req = await extend(apis[1]!, v.id, 4);
    const results: Array<{ phase: 'before' | 'during' | 'after'; what: string; status: number; code?: string }> = [];
    let phase: 'before' | 'during' | 'after' = 'before';
    let stop = false;
    const probe = (async () => {
      for (let i = 0; !stop; i++) {
        const api = apis[i % 2]!;
        const at = phase;
        const [what, call] = i % 4 < 2 ? ['GET volume', api.volume.request('GET', vpath(v.id))] : ['get_blockdev', api.compute.request('GET', blockdev)];
        try {
          const r = await call;
          results.push({ phase: at === phase ? at : 'during', what, status: r.status });
        } catch (err) {
          const e = err as ApiError;
          results.push({ phase: at === phase ? at : 'during', what, status: e.status, code: e.code });
        }
        await sleep(100);
      }
    })();
    await sleep(1_000);
    expect((await show(apis[0]!, v.id)).status, 'the extend spans the restart').toBe('extending');
    phase = 'during';
    await timed('postgres restart', () => pg!.restart());
    phase = 'after';
    const done = await settle(v.id, 90_000);
    await sleep(1_000);
    stop = true;
    await probe;
    const by = (p: string) => results.filter((r) => r.phase === p);
    log(`postgres restart: answers other than 200: ${JSON.stringify(results.filter((r) => r.status !== 200))}`);
    expect(by('before').length).toBeGreaterThan(0);
    expect(by('after').length).toBeGreaterThan(5);
    expect(by('before').filter((r) => r.status !== 200)).toEqual([]);
    for (const r of by('during')) {
      if (r.status !== 200) expect(r).toMatchObject({ status: 503, code: 'DatabaseUnavailable' });
    }
    // Once it is back, every request succeeds: none is lost to a dead pooled connection.
    expect(by('after').filter((r) => r.status !== 200)).toEqual([]);
    await expectExtended(role, req, 4, done);
    log(`postgres restart: ${by('before').length} requests before, ${by('during').length} during (${by('during').filter((r) => r.status !== 200).length} 503), ${by('after').length} after`);
  }, 180_000);
});
