/**
 * The HTTP servers hold under slow, idle and non-reading connections and drain in bounded time:
 * header, request and keep-alive timeouts, the connection cap, what one connection may make the
 * server hold (pipelined requests answered at once, answers its client leaves unread), and the
 * graceful drain, each over real sockets against a listening server. Times are asserted only as the deadlines they are
 * (not cut before the timeout, cut well within it), never as performance.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { connect, type AddressInfo, type Socket } from 'node:net';
import pino from 'pino';
import { buildComputeApp } from '../../src/app.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { FakeDriver } from '../../src/virt/fake/driver.js';
import { issueToken } from '../../src/auth/tokens.js';
import { connectionStats, drainServer, type App, type HttpLimits } from '../../src/api/server.js';
import { sampleServers, TENANT, url } from '../support/computeApp.js';
import { openIdle, openNonReaders, pipelined, rawRequest, until } from '../support/rawHttp.js';

const REQUEST_ID = /^req-[0-9a-f-]{36}$/;
/** Slack for timers and a loaded 2-core machine on top of Node's deadline check period. */
const SLACK_MS = 3000;

interface Running {
  app: App;
  port: number;
  token: string;
  /** Requests that reached Fastify (the routes' hooks), since start. */
  routed(): number;
  close(): Promise<void>;
}

const running: Running[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) await r.close();
});

async function start(limits: Partial<HttpLimits>, latencyMs = 0): Promise<Running> {
  const store = new SqliteStore(':memory:');
  const built = await buildComputeApp({ store, driver: new FakeDriver({ servers: sampleServers(), latencyMs }), logger: pino({ level: 'silent' }), http: limits });
  const token = (await issueToken(store, { userId: 'u', projectId: TENANT, roles: ['admin'], ttlMs: 3_600_000 })).token;
  let routed = 0;
  built.app.addHook('onRequest', (_req, _reply, done) => {
    routed++;
    done();
  });
  await built.app.listen({ host: '127.0.0.1', port: 0 });
  const r: Running = {
    app: built.app,
    port: (built.app.server.address() as AddressInfo).port,
    token,
    routed: () => routed,
    close: async () => {
      await built.app.close();
      await store.close();
    },
  };
  running.push(r);
  return r;
}

const getBlockdev = (r: Running) => `GET ${url.volume()} HTTP/1.1\r\nHost: api\r\nX-Auth-Token: ${r.token}\r\n\r\n`;

function fault(body: string): { code: number; error_code: string } {
  return Object.values(JSON.parse(body) as Record<string, { code: number; error_code: string }>)[0]!;
}

describe('timeouts', () => {
  it('closes 2,000 idle connections at the header timeout and serves a normal request during the flood', async () => {
    const headersTimeoutMs = 1500;
    const r = await start({ headersTimeoutMs, requestTimeoutMs: 3000, keepAliveTimeoutMs: 500, maxConnections: 5000 });
    const t0 = Date.now();
    const flood = await openIdle(r.port, 2000);
    await until(() => connectionStats(r.app).open >= 2000, 5000, 'server sees the flood');
    const heldDuring = connectionStats(r.app).open;

    const ok = await fetch(`http://127.0.0.1:${r.port}${url.volume()}`, { headers: { 'x-auth-token': r.token } });
    expect(ok.status).toBe(200);
    expect(Date.now() - t0).toBeLessThan(headersTimeoutMs);
    expect(flood.closed()).toBe(0);

    await until(() => flood.closed() === 2000, headersTimeoutMs + 10_000, 'every idle connection closed');
    const tookMs = Date.now() - t0;
    await until(() => connectionStats(r.app).open === 0, 5000, 'server holds nothing');
    console.info(`idle flood: held ${heldDuring} during, ${connectionStats(r.app).open} after; all closed ${tookMs} ms after the first connect (header timeout ${headersTimeoutMs} ms)`);
    expect(tookMs).toBeGreaterThanOrEqual(headersTimeoutMs);
  });

  it('cuts a slowloris (headers trickled) at the header timeout with a 408 in our format', async () => {
    const r = await start({ headersTimeoutMs: 1000, requestTimeoutMs: 5000 });
    const trickle = Array.from({ length: 40 }, (_, i) => ({ afterMs: 150, data: `X-Slow-${i}: a\r\n` }));
    const res = await rawRequest(r.port, [`GET ${url.volume()} HTTP/1.1\r\n`, ...trickle], { timeoutMs: 15_000, waitForClose: true });
    expect(res.status).toBe(408);
    expect(fault(res.body)).toMatchObject({ code: 408, error_code: 'RequestTimeout' });
    expect(res.headers['x-openstack-request-id']).toMatch(REQUEST_ID);
    expect(res.closed).toBe(true);
    expect(res.elapsedMs).toBeGreaterThanOrEqual(1000);
    expect(res.elapsedMs).toBeLessThan(1000 + SLACK_MS);
  });

  it('cuts a body trickled past the request timeout with a 408 in our format', async () => {
    const r = await start({ headersTimeoutMs: 1000, requestTimeoutMs: 2000 });
    const head = `POST ${url.volume()} HTTP/1.1\r\nHost: api\r\nX-Auth-Token: ${r.token}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n`;
    const trickle = Array.from({ length: 60 }, () => ({ afterMs: 150, data: ' ' }));
    const res = await rawRequest(r.port, [head, ...trickle], { timeoutMs: 15_000, waitForClose: true });
    expect(res.status).toBe(408);
    expect(fault(res.body)).toMatchObject({ error_code: 'RequestTimeout' });
    expect(res.headers['x-openstack-request-id']).toMatch(REQUEST_ID);
    expect(res.elapsedMs).toBeGreaterThanOrEqual(2000);
    expect(res.elapsedMs).toBeLessThan(2000 + SLACK_MS);
  });

  it('closes a keep-alive connection left idle after a response at the keep-alive timeout', async () => {
    const r = await start({ headersTimeoutMs: 5000, requestTimeoutMs: 10_000, keepAliveTimeoutMs: 600 });
    const res = await rawRequest(r.port, getBlockdev(r), { waitForClose: true, timeoutMs: 10_000 });
    expect(res.status).toBe(200);
    expect(res.elapsedMs).toBeGreaterThanOrEqual(600);
    expect(res.elapsedMs).toBeLessThan(600 + SLACK_MS);
  });
});

describe('connection cap', () => {
  it('closes the least recently active idle connection for a new one, never holding more than the cap', async () => {
    const r = await start({ maxConnections: 50 });
    const flood = await openIdle(r.port, 200, 25);
    await until(() => flood.closed() === 150, 5000, '150 oldest connections closed');
    expect(connectionStats(r.app)).toMatchObject({ open: 50, evicted: 150, dropped: 0 });
    expect(flood.sockets.slice(0, 150).every((s) => s.destroyed || s.readableEnded)).toBe(true);
    const ok = await fetch(`http://127.0.0.1:${r.port}${url.volume()}`, { headers: { 'x-auth-token': r.token } });
    expect(ok.status).toBe(200);
    expect(connectionStats(r.app).open).toBeLessThanOrEqual(50);
  });

  it('drops a new connection when every connection is serving a request, and those requests complete', async () => {
    const r = await start({ maxConnections: 3 }, 600);
    const slow = [0, 1, 2].map(() => rawRequest(r.port, getBlockdev(r), { timeoutMs: 15_000 }));
    await until(() => connectionStats(r.app).serving === 3, 5000, 'three requests being served');
    const refused = await rawRequest(r.port, getBlockdev(r), { timeoutMs: 5000 });
    expect(refused).toMatchObject({ status: 0, closed: true });
    expect(connectionStats(r.app).dropped).toBeGreaterThanOrEqual(1);
    for (const res of await Promise.all(slow)) expect(res.status).toBe(200);
  });
});

/** An unauthenticated request with one of the largest answers (the OpenAPI document, ~60 KB). */
const OPENAPI = 'GET /openapi.json HTTP/1.1\r\nHost: api\r\n\r\n';
const MiB = 1024 * 1024;

describe('what one connection may make the server hold', () => {
  const depth = [
    { sent: 1, name: 'answers a single request and keeps the connection open' },
    { sent: 3, name: 'answers all of a few pipelined requests in order and keeps the connection open' },
    { sent: 4, name: 'answers as many pipelined requests as the limit and keeps the connection open' },
    { sent: 5, name: 'answers the limit of pipelined requests, refuses the next with a 503 and closes' },
    { sent: 1000, name: 'answers the limit of 1,000 pipelined requests, refuses one, closes, and never routes the rest' },
  ];
  for (const { sent, name } of depth) {
    it(`${name} (limit 4)`, async () => {
      const limit = 4;
      const r = await start({ maxPipelined: limit });
      const answered = Math.min(sent, limit);
      const refused = sent > limit;
      const { responses, closed } = await pipelined(r.port, Array.from({ length: sent }, () => getBlockdev(r)), refused ? {} : { expect: sent });

      expect(responses.map((x) => x.status)).toEqual([...Array<number>(answered).fill(200), ...(refused ? [503] : [])]);
      for (const x of responses) expect(x.headers['x-openstack-request-id']).toMatch(REQUEST_ID);
      expect(new Set(responses.map((x) => x.headers['x-openstack-request-id'])).size).toBe(responses.length);
      expect(closed).toBe(refused);
      expect(r.routed()).toBe(answered);
      if (refused) {
        const last = responses.at(-1)!;
        expect(fault(last.body)).toMatchObject({ code: 503, error_code: 'ServiceUnavailable' });
        expect(JSON.parse(last.body)).toMatchObject({ serviceUnavailable: { final: false } });
        expect(last.headers.connection).toBe('close');
        expect(connectionStats(r.app).refusedPipelining).toBe(1);
      } else {
        expect(responses.at(-1)!.headers.connection).toBe('keep-alive');
        expect(connectionStats(r.app).refusedPipelining).toBe(0);
      }
    });
  }

  // A client that sends its requests and then half-closes (a FIN after the last, as
  // `printf … | nc -N` does) gets every answer, then the server closes: with the writes of a turn
  // batched, Node's default ended the socket at the FIN and lost all but the first answers.
  const halfClosers = [1, 5, 16].flatMap((sent) => [true, false].flatMap((batchWrites) => [0, 300].map((latencyMs) => ({ sent, batchWrites, latencyMs }))));
  it.each(halfClosers)('answers all $sent requests of a client that half-closes after them, then closes (batched writes $batchWrites, driver latency $latencyMs ms)', async ({ sent, batchWrites, latencyMs }) => {
    const r = await start({ batchWrites }, latencyMs);
    const { responses, closed } = await pipelined(r.port, Array.from({ length: sent }, () => getBlockdev(r)), { halfClose: true });
    expect(responses.map((x) => x.status)).toEqual(Array<number>(sent).fill(200));
    expect(new Set(responses.map((x) => x.headers['x-openstack-request-id'])).size).toBe(sent);
    expect(closed).toBe(true);
    expect(r.routed()).toBe(sent);
  });

  it('answers the limit of requests of a client that pipelines past it and half-closes, refuses the next with a 503 and closes', async () => {
    const r = await start({ maxPipelined: 4 });
    const { responses, closed } = await pipelined(r.port, Array.from({ length: 6 }, () => getBlockdev(r)), { halfClose: true });
    expect(responses.map((x) => x.status)).toEqual([200, 200, 200, 200, 503]);
    expect(closed).toBe(true);
  });

  // Every kind of malformed bytes, batched writes or not, a later packet, a half-close: pipelined-fault.test.ts.
  it('answers every complete request pipelined before malformed bytes, then the malformed one with a 400, then closes, acting on nothing after them', async () => {
    const r = await start({}, 300);
    const { responses, closed } = await pipelined(r.port, [getBlockdev(r), getBlockdev(r), getBlockdev(r), 'NOT HTTP AT ALL\r\n\r\n', getBlockdev(r)]);
    expect(responses.map((x) => [x.status, x.headers.connection])).toEqual([...Array.from({ length: 3 }, () => [200, 'keep-alive']), [400, 'close']]);
    expect(fault(responses.at(-1)!.body)).toMatchObject({ code: 400, error_code: 'BadRequest' });
    expect(closed).toBe(true);
    expect(r.routed()).toBe(3);
  });

  it('closes 20 clients that pipeline 5,000 requests each and never read, holds nothing of them, and answers others meanwhile', async () => {
    const sendTimeoutMs = 2000;
    const r = await start({ sendTimeoutMs });
    const attack = await openNonReaders(r.port, 20, OPENAPI.repeat(5000));
    try {
      const ok = await fetch(`http://127.0.0.1:${r.port}${url.volume()}`, { headers: { 'x-auth-token': r.token } });
      expect(ok.status).toBe(200);
      // Each is answered up to the limit, refused, and closed once its answers are flushed or at the send timeout.
      await until(() => connectionStats(r.app).open === 0, sendTimeoutMs + SLACK_MS + 2000, 'every attacking connection closed by the server');
      const stats = connectionStats(r.app);
      expect(stats).toMatchObject({ refusedPipelining: 20, unsentBytes: 0 });
      expect(r.routed()).toBeLessThanOrEqual(20 * 16 + 1);
      expect(attack.closed()).toBe(0);
      attack.release();
      await until(() => attack.closed() === 20, 5000, 'the clients see their connections closed');
      console.info(`pipelining non-readers: 20 × 5000 requests sent, ${r.routed()} routed, ${stats.cutStalled} cut at the send timeout, the rest closed after their answers`);
    } finally {
      attack.destroy();
    }
  });

  it('cuts a connection whose client takes none of its answers for the send timeout', async () => {
    const sendTimeoutMs = 1000;
    // Deep pipelining allowed, no byte bound: only the send timeout can end this connection.
    const r = await start({ sendTimeoutMs, maxPipelined: 1000, maxUnsentBytes: 1024 * MiB });
    const t0 = Date.now();
    // 300 × ~60 KB: far more than the kernel's socket buffers take.
    const attack = await openNonReaders(r.port, 1, OPENAPI.repeat(300));
    try {
      await until(() => connectionStats(r.app).writing === 1 && connectionStats(r.app).unsentBytes > 0, 5000, 'answers waiting for the client');
      const held = connectionStats(r.app).unsentBytes;
      await until(() => connectionStats(r.app).open === 0, sendTimeoutMs + SLACK_MS, 'the stalled connection cut');
      const cutMs = Date.now() - t0;
      expect(connectionStats(r.app)).toMatchObject({ cutStalled: 1, cutUnsent: 0, unsentBytes: 0 });
      expect(cutMs).toBeGreaterThanOrEqual(sendTimeoutMs);
      attack.release();
      await until(() => attack.closed() === 1, 5000, 'the client sees its connection closed');
      console.info(`stalled reader: ${(held / MiB).toFixed(1)} MiB unsent, cut ${cutMs} ms after connecting (send timeout ${sendTimeoutMs} ms)`);
    } finally {
      attack.destroy();
    }
  });

  it('cuts a connection that leaves more than the unsent-bytes bound waiting, before the send timeout', async () => {
    const r = await start({ sendTimeoutMs: 60_000, maxPipelined: 1000, maxUnsentBytes: 2 * MiB });
    const attack = await openNonReaders(r.port, 1, OPENAPI.repeat(300));
    try {
      await until(() => connectionStats(r.app).cutUnsent === 1, 5000, 'the connection cut at the byte bound');
      expect(connectionStats(r.app)).toMatchObject({ open: 0, cutStalled: 0, unsentBytes: 0 });
      attack.release();
      await until(() => attack.closed() === 1, 5000, 'the client sees its connection closed');
    } finally {
      attack.destroy();
    }
  });

  it('closes a connection that only waits for its client to read, never one making an answer, to make room at the cap', async () => {
    const r = await start({ maxConnections: 3, sendTimeoutMs: 60_000, maxPipelined: 1000, maxUnsentBytes: 1024 * MiB }, 1500);
    const serving = rawRequest(r.port, getBlockdev(r), { timeoutMs: 15_000 });
    await until(() => connectionStats(r.app).serving === 1, 5000, 'one request being served');
    const writers = await openNonReaders(r.port, 2, OPENAPI.repeat(300), 1);
    try {
      await until(() => connectionStats(r.app).writing === 2, 5000, 'two connections waiting for their clients');
      const fresh = await rawRequest(r.port, getBlockdev(r), { timeoutMs: 15_000 });
      expect(fresh.status).toBe(200);
      expect((await serving).status).toBe(200);
      expect(connectionStats(r.app)).toMatchObject({ evicted: 1, dropped: 0 });
      writers.release();
      await until(() => writers.closed() >= 1, 5000, 'the evicted writer sees its connection closed');
      // The least recently active writer went first.
      expect(writers.sockets[0]!.destroyed).toBe(true);
    } finally {
      writers.destroy();
    }
  });

  it('keeps answering at a cap of 10 connections while 30 clients leave their answers unread, closing those to make room', async () => {
    // Deep pipelining allowed and no timeout or byte bound in reach: every attacker stays open,
    // its answers made and waiting, so the cap alone must keep room for others.
    const r = await start({ maxConnections: 10, sendTimeoutMs: 60_000, maxPipelined: 1000, maxUnsentBytes: 1024 * MiB });
    let most = 0;
    const sampler = setInterval(() => (most = Math.max(most, connectionStats(r.app).open)), 5);
    const attack = await openNonReaders(r.port, 30, OPENAPI.repeat(300), 5);
    try {
      await until(() => connectionStats(r.app).writing === 10, 5000, 'every slot held by a connection waiting for its client');
      for (let i = 0; i < 10; i++) {
        const res = await rawRequest(r.port, getBlockdev(r), { timeoutMs: 5000 });
        expect(res.status).toBe(200);
      }
      const stats = connectionStats(r.app);
      expect(stats.dropped).toBe(0);
      expect(stats.evicted).toBeGreaterThanOrEqual(30 - 10 + 10);
      expect(most).toBeLessThanOrEqual(10);
      console.info(`cap 10, 30 non-readers holding answers: at most ${most} open, ${stats.evicted} evicted, ${stats.dropped} dropped; 10 requests answered 200`);
    } finally {
      clearInterval(sampler);
      attack.destroy();
    }
  });
});

describe('graceful drain', () => {
  it('closes idle and half-sent connections at once, lets the request being served finish, then resolves', async () => {
    const r = await start({ headersTimeoutMs: 10_000, requestTimeoutMs: 20_000, keepAliveTimeoutMs: 10_000 }, 1000);
    const closedAt = new Map<string, number>();
    const watch = (name: string, s: Socket) => s.on('close', () => closedAt.set(name, Date.now())).on('error', () => undefined).on('data', () => undefined);
    watch('silent', connect(r.port, '127.0.0.1'));
    watch('half-sent headers', connect(r.port, '127.0.0.1')).write('GET / HTTP/1.1\r\nHost: a\r\n');
    watch('half-sent body', connect(r.port, '127.0.0.1')).write(
      `POST ${url.volume()} HTTP/1.1\r\nHost: api\r\nX-Auth-Token: ${r.token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"onl`,
    );
    const inFlight = rawRequest(r.port, getBlockdev(r), { timeoutMs: 15_000 });
    await until(() => connectionStats(r.app).serving === 1 && connectionStats(r.app).open >= 4, 5000, 'one request being served');

    const t0 = Date.now();
    const graceMs = 8000;
    await drainServer(r.app, t0 + graceMs);
    const drainedMs = Date.now() - t0;
    const res = await inFlight;

    expect(res.status).toBe(200);
    expect(res.headers.connection).toBe('close');
    expect([...closedAt.keys()].sort()).toEqual(['half-sent body', 'half-sent headers', 'silent']);
    for (const at of closedAt.values()) expect(at - t0).toBeLessThan(500);
    expect(drainedMs).toBeLessThan(graceMs);
    expect(connectionStats(r.app).open).toBe(0);
    await expect(fetch(`http://127.0.0.1:${r.port}/`)).rejects.toThrow();
    console.info(`drain: idle and half-sent closed within ${Math.max(...[...closedAt.values()].map((a) => a - t0))} ms, in-flight finished, drained in ${drainedMs} ms (grace ${graceMs} ms)`);
  });

  it.each([true, false])('delivers the answers to every request pipelined on a connection before the drain, then closes it (batched writes %s)', async (batchWrites) => {
    const r = await start({ batchWrites }, 300);
    const answers = pipelined(r.port, Array.from({ length: 4 }, () => getBlockdev(r)), { timeoutMs: 15_000 });
    await until(() => r.routed() === 4, 5000, 'four pipelined requests routed');
    await drainServer(r.app, Date.now() + 8000);
    const { responses, closed } = await answers;
    expect(responses.map((x) => x.status)).toEqual([200, 200, 200, 200]);
    // Only the last says so: an earlier `Connection: close` would close before the answers behind it.
    expect(responses.map((x) => x.headers.connection)).toEqual(['keep-alive', 'keep-alive', 'keep-alive', 'close']);
    expect(closed).toBe(true);
    expect(connectionStats(r.app).open).toBe(0);
  });

  it('cuts a request still being served at the deadline', async () => {
    const r = await start({}, 2000);
    const inFlight = rawRequest(r.port, getBlockdev(r), { timeoutMs: 15_000 });
    await until(() => connectionStats(r.app).serving === 1, 5000, 'one request being served');
    const t0 = Date.now();
    await drainServer(r.app, t0 + 500);
    const drainedMs = Date.now() - t0;
    expect(drainedMs).toBeGreaterThanOrEqual(450);
    expect(drainedMs).toBeLessThan(500 + SLACK_MS);
    expect(await inFlight).toMatchObject({ status: 0, closed: true });
  });

  it('answers 503 in our format to a request that arrives during the drain', async () => {
    const r = await start({});
    await drainServer(r.app, Date.now() + 1000);
    const res = await r.app.inject({ method: 'GET', url: url.volume(), headers: { 'x-auth-token': r.token } });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toMatchObject({ serviceUnavailable: { code: 503, error_code: 'ServiceUnavailable', final: false } });
    expect(res.headers['x-openstack-request-id']).toMatch(REQUEST_ID);
    expect(res.headers.connection).toBe('close');
  });
});
