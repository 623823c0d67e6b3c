/**
 * The real `online-extend serve` process under connection abuse and on SIGTERM: idle floods are
 * closed at the header timeout (the process's descriptors come back), the connection cap keeps
 * both APIs reachable at a low open-files limit, clients that pipeline thousands of requests and
 * never read cannot grow the process's memory or lock out either API, and SIGTERM finishes what
 * is being served and exits within the grace period even with half-sent requests open.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { BIN, ensureBuilt } from '../support/build.js';
import { openIdle, openNonReaders, pipelined, rawRequest, until } from '../support/rawHttp.js';

const PROJECT = 'p-serve';
const SERVER = '6e8f1d5b-2222-4b33-8c44-1d5e6f7a8b9c';
const VOLUME = '7f9a2e6c-3333-4c44-9d55-2e6f7a8b9c0d';
const GiB = 2 ** 30;

let dir: string;
let token: string;
const children = new Set<ChildProcess>();

interface Serve {
  child: ChildProcess;
  compute: URL;
  volume: URL;
}

async function serve(flags: string[], opts: { fdLimit?: number } = {}): Promise<Serve> {
  const args = [BIN, 'serve', '--fake-inventory', join(dir, 'inv.json'), '--data-dir', join(dir, 'data'), '--port', '0', '--volume-port', '0', '--identity-port', '0', '--image-port', '0', '--sync-interval', '0', ...flags];
  // `ulimit -n` in a shell that then becomes node: the limit the red-team run had.
  const child = opts.fdLimit
    ? spawn('/bin/sh', ['-c', `ulimit -n ${opts.fdLimit} && exec "$0" "$@"`, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ONLINE_EXTEND_LOG_LEVEL: 'warn' } })
    : spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ONLINE_EXTEND_LOG_LEVEL: 'warn' } });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const urls: string[] = [];
  await new Promise<void>((res, rej) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const m = /API listening on (http:\/\/\S+)/.exec(line);
      if (m) urls.push(m[1]!);
      if (urls.length === 2) res();
    });
    child.once('exit', (code) => rej(new Error(`serve exited with ${code}: ${stderr}`)));
  });
  return { child, compute: new URL(urls[0]!), volume: new URL(urls[1]!) };
}

/** Open file descriptors of a process (sockets included), read from /proc. */
const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

/** Resident memory of a process in MiB (VmRSS, read from /proc). */
function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) / 1024;
}

async function stop(s: Serve): Promise<void> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return;
  const exited = new Promise((r) => s.child.once('exit', r));
  s.child.kill('SIGKILL');
  await exited;
}

beforeAll(() => {
  ensureBuilt();
  dir = mkdtempSync(join(tmpdir(), 'oe-serve-'));
  writeFileSync(
    join(dir, 'inv.json'),
    JSON.stringify({ servers: [{ id: SERVER, name: 'vm', project_id: PROJECT, state: 'active', disks: [{ volume_id: VOLUME, device: 'vdb', bytes: GiB }] }] }),
  );
  token = execFileSync(process.execPath, [BIN, 'token', 'create', '--project', PROJECT, '--user', 'abuse', '--roles', 'admin', '--data-dir', join(dir, 'data')], { encoding: 'utf8' }).trim();
}, 120_000);

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

const blockdevPath = `/v2/${PROJECT}/servers/${SERVER}/os-online_extend_volume/${VOLUME}`;
const getBlockdev = `GET ${blockdevPath} HTTP/1.1\r\nHost: api\r\nX-Auth-Token: TOKEN\r\n\r\n`;

describe('online-extend serve, a real process, under connection abuse', () => {
  it('closes a flood of 2,000 idle connections at the header timeout, serving requests meanwhile, and gives its descriptors back', async () => {
    const s = await serve(['--http-headers-timeout', '2000', '--http-request-timeout', '4000']);
    try {
      const pid = s.child.pid!;
      const baseline = fds(pid);
      const t0 = Date.now();
      const flood = await openIdle(Number(s.compute.port), 2000);
      await until(() => fds(pid) >= baseline + 2000, 5000, 'the server holds the flood');
      const held = fds(pid);
      const ok = await fetch(new URL(blockdevPath, s.compute), { headers: { 'x-auth-token': token } });
      expect(ok.status).toBe(200);
      const vol = await fetch(new URL(`/v3/${PROJECT}/volumes`, s.volume), { headers: { 'x-auth-token': token } });
      expect(vol.status).toBe(200);
      await until(() => flood.closed() === 2000, 15_000, 'every idle connection closed');
      const closedMs = Date.now() - t0;
      await until(() => fds(pid) <= baseline + 2, 5000, 'descriptors back to the baseline');
      console.info(`serve idle flood: fds ${baseline} before, ${held} during, ${fds(pid)} after; 2000 connections closed ${closedMs} ms after the first connect (header timeout 2000 ms)`);
      expect(closedMs).toBeGreaterThanOrEqual(2000);
    } finally {
      await stop(s);
    }
  });

  it('keeps both APIs reachable with 1,100 idle connections to each at an open-files limit of 1,024', async () => {
    const s = await serve(['--http-headers-timeout', '30000', '--http-request-timeout', '30000'], { fdLimit: 1024 });
    try {
      const pid = s.child.pid!;
      const compute = await openIdle(Number(s.compute.port), 1100);
      const volume = await openIdle(Number(s.volume.port), 1100);
      await until(() => compute.closed() + volume.closed() >= 2200 - 2 * 448, 5000, 'connections over the cap closed');
      const held = fds(pid);
      expect(held).toBeLessThan(1024);
      const ok = await fetch(new URL(blockdevPath, s.compute), { headers: { 'x-auth-token': token } });
      expect(ok.status).toBe(200);
      const vol = await fetch(new URL(`/v3/${PROJECT}/volumes`, s.volume), { headers: { 'x-auth-token': token } });
      expect(vol.status).toBe(200);
      console.info(`serve at ulimit -n 1024: 2200 idle connects, process holds ${held} fds, ${compute.closed() + volume.closed()} closed at the cap; both APIs answered 200`);
    } finally {
      await stop(s);
    }
  });
});

/** The red team's client: the OpenAPI document asked for 5,000 times in one write, never read. */
const OPENAPI_X5000 = 'GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(5000);

/**
 * Asks both APIs with a token, each on a new connection, every ~100 ms until `stop()`; each must
 * answer within 5 s (the red team's timeout). Returns the statuses (0: no answer in time).
 */
function probeBothApis(s: Serve): { stop: () => Promise<{ compute: number[]; volume: number[]; computeAt: number[] }> } {
  const statuses = { compute: [] as number[], volume: [] as number[], computeAt: [] as number[] };
  let running = true;
  const ask = async (port: string, path: string) => {
    try {
      return (await rawRequest(Number(port), `GET ${path} HTTP/1.1\r\nHost: api\r\nX-Auth-Token: ${token}\r\nConnection: close\r\n\r\n`, { timeoutMs: 5000 })).status;
    } catch {
      return 0;
    }
  };
  const loop = (async () => {
    while (running) {
      const [c, v] = await Promise.all([ask(s.compute.port, blockdevPath), ask(s.volume.port, `/v3/${PROJECT}/volumes`)]);
      statuses.compute.push(c);
      statuses.computeAt.push(Date.now());
      statuses.volume.push(v);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return statuses;
    },
  };
}

describe('online-extend serve under clients that pipeline requests and never read', () => {
  const cases = [
    { name: 'defaults, 10 clients', flags: [] as string[], clients: 10, capFds: undefined as number | undefined },
    { name: 'cap 50, 150 clients', flags: ['--http-max-connections', '50'], clients: 150, capFds: 50 },
  ];
  for (const { name, flags, clients, capFds } of cases) {
    it(`with ${name} sending 5,000 requests each, keeps its memory bounded and both APIs answering, and cuts the clients`, async () => {
      const s = await serve(flags);
      try {
        const pid = s.child.pid!;
        // Warm up (the OpenAPI document is serialized on first use) and take the baseline.
        for (let i = 0; i < 3; i++) {
          expect((await fetch(new URL('/openapi.json', s.compute))).status).toBe(200);
          expect((await fetch(new URL(blockdevPath, s.compute), { headers: { 'x-auth-token': token } })).status).toBe(200);
        }
        const baselineFds = fds(pid);
        const baselineRss = rssMiB(pid);
        let peakRss = baselineRss;
        let peakFds = baselineFds;
        const sampler = setInterval(() => {
          peakRss = Math.max(peakRss, rssMiB(pid));
          peakFds = Math.max(peakFds, fds(pid));
        }, 50);
        const probes = probeBothApis(s);
        const attack = await openNonReaders(Number(s.compute.port), clients, OPENAPI_X5000, 10);
        try {
          // The server closes every attacking connection while its client still holds it.
          await until(() => fds(pid) <= baselineFds + 4, 20_000, 'the attacking connections closed by the server');
          const closedMs = Date.now();
          await new Promise((r) => setTimeout(r, 1500));
          const statuses = await probes.stop();
          clearInterval(sampler);
          const duringRss = rssMiB(pid);
          // The clients never close on their own before release: any close they saw came from the
          // server. A connection cut while requests are still unread on it (at a cap of 50 with 150
          // clients: about the 100 over the cap) is reset by the kernel, which a paused client sees
          // at once; the others see the server's FIN only when they read. Reported, not asserted.
          const seenBeforeRelease = attack.closed();
          attack.release();
          await until(() => attack.closed() === clients, 10_000, 'the clients see their connections closed');
          await new Promise((r) => setTimeout(r, 1000));
          const afterRss = rssMiB(pid);
          console.info(
            `serve, ${clients} clients × 5000 pipelined, never read (${flags.join(' ') || 'defaults'}): RSS ${baselineRss.toFixed(0)} MiB before, peak ${peakRss.toFixed(0)}, ` +
              `${duringRss.toFixed(0)} at the end of the attack, ${afterRss.toFixed(0)} after the clients went; fds ${baselineFds} before, peak ${peakFds}; ` +
              `${seenBeforeRelease} of the clients saw the cut before release; probes ${statuses.compute.length} per API, compute answered ${statuses.compute.filter((x) => x === 200).length}, volume ${statuses.volume.every((x) => x === 200)}; attackers cut ${Date.now() - closedMs} ms before release`,
          );
          expect(statuses.compute.length).toBeGreaterThanOrEqual(3);
          // At a cap with every slot held by an attacker whose answers are still being written
          // (16 × /openapi.json, 320 KiB since F's routes), a new connection is dropped by design
          // until the 4 MiB bound cuts one; once the attackers are cut, every probe is answered.
          const afterCut = statuses.compute.filter((_, i) => statuses.computeAt[i]! > closedMs);
          expect(afterCut.length).toBeGreaterThanOrEqual(3);
          expect(afterCut.every((x) => x === 200)).toBe(true);
          if (capFds === undefined) expect(statuses.compute.every((x) => x === 200)).toBe(true);
          expect(statuses.volume.every((x) => x === 200)).toBe(true);
          // Before the fix the same attack grew the process by 1.1 GiB per 1,000 requests per client.
          expect(peakRss - baselineRss).toBeLessThan(64);
          expect(afterRss - baselineRss).toBeLessThan(32);
          if (capFds !== undefined) expect(peakFds).toBeLessThanOrEqual(baselineFds + capFds + 4);
        } finally {
          clearInterval(sampler);
          attack.destroy();
        }
      } finally {
        await stop(s);
      }
    });
  }

  it('still answers a client that pipelines a few requests, all of them, on one connection', async () => {
    const s = await serve([]);
    try {
      const requests = [getBlockdev, `GET /openapi.json HTTP/1.1\r\nHost: api\r\n\r\n`, getBlockdev].map((r) => r.replace('TOKEN', token));
      const { responses, closed } = await pipelined(Number(s.compute.port), requests, { expect: 3 });
      expect(responses.map((r) => r.status)).toEqual([200, 200, 200]);
      expect(JSON.parse(responses[0]!.body)).toEqual({ volume_blockdev: { id: VOLUME, bytes: GiB } });
      expect(JSON.parse(responses[1]!.body)).toMatchObject({ openapi: '3.0.3' });
      expect(closed).toBe(false);
    } finally {
      await stop(s);
    }
  });
});

describe('online-extend serve on SIGTERM', () => {
  it('finishes the request being served and exits within the grace period, half-sent requests notwithstanding', async () => {
    const graceMs = 6000;
    // Every fake-driver call takes 1.5 s: get_blockdev is a request still being served when SIGTERM comes.
    const s = await serve(['--fake-latency', '1500', '--shutdown-grace', String(graceMs), '--http-headers-timeout', '60000', '--http-request-timeout', '120000']);
    const closedAt = new Map<string, number>();
    const open = (name: string, port: string, data?: string): Socket => {
      const sock = connect(Number(port), '127.0.0.1');
      sock.on('data', () => undefined).on('error', () => undefined).on('close', () => closedAt.set(name, Date.now()));
      if (data) sock.write(data);
      return sock;
    };
    open('half-sent headers (compute)', s.compute.port, `GET ${blockdevPath} HTTP/1.1\r\nHost: api\r\n`);
    open('half-sent body (volume)', s.volume.port, `POST /v3/${PROJECT}/volumes HTTP/1.1\r\nHost: api\r\nX-Auth-Token: ${token}\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{"vol`);
    open('silent (volume)', s.volume.port);
    const idle = await openIdle(Number(s.compute.port), 100);
    const inFlight = rawRequest(Number(s.compute.port), getBlockdev.replace('TOKEN', token), { timeoutMs: 30_000 });
    await new Promise((r) => setTimeout(r, 300));

    const exited = new Promise<{ code: number | null; at: number }>((r) => s.child.once('exit', (code) => r({ code, at: Date.now() })));
    const t0 = Date.now();
    s.child.kill('SIGTERM');
    const res = await inFlight;
    const answeredMs = Date.now() - t0;
    const { code, at } = await exited;
    const exitMs = at - t0;
    console.info(`serve SIGTERM: in-flight answered ${res.status} after ${answeredMs} ms, process exited ${exitMs} ms after SIGTERM (grace ${graceMs} ms); half-sent and idle closed within ${Math.max(...[...closedAt.values()].map((a) => a - t0))} ms`);

    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ volume_blockdev: { id: VOLUME, bytes: GiB } });
    expect(res.headers.connection).toBe('close');
    expect(code).toBe(0);
    expect(exitMs).toBeLessThan(graceMs);
    expect(exitMs).toBeGreaterThanOrEqual(answeredMs - 50);
    expect(closedAt.size).toBe(3);
    for (const [, when] of closedAt) expect(when - t0).toBeLessThan(answeredMs);
    expect(idle.closed()).toBe(100);
  });

  it('cuts a request still being served at the end of the grace period and exits', async () => {
    const graceMs = 1000;
    const s = await serve(['--fake-latency', '4000', '--shutdown-grace', String(graceMs)]);
    const inFlight = rawRequest(Number(s.compute.port), getBlockdev.replace('TOKEN', token), { timeoutMs: 30_000 });
    await new Promise((r) => setTimeout(r, 300));
    const exited = new Promise<{ code: number | null; at: number }>((r) => s.child.once('exit', (code) => r({ code, at: Date.now() })));
    const t0 = Date.now();
    s.child.kill('SIGTERM');
    const { code, at } = await exited;
    console.info(`serve SIGTERM with a request longer than the grace: exited ${at - t0} ms after SIGTERM (grace ${graceMs} ms)`);
    expect(code).toBe(0);
    expect(at - t0).toBeGreaterThanOrEqual(graceMs - 50);
    expect(at - t0).toBeLessThan(graceMs + 3000);
    expect(await inFlight).toMatchObject({ status: 0, closed: true });
  });
});
