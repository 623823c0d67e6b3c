/**
 * The HTTP servers hold under slow and idle connections and drain in bounded time: header,
 * request and keep-alive timeouts, the connection cap, and the graceful drain, each over real
 * sockets against a listening server. Times are asserted only as the deadlines they are
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
import { openIdle, rawRequest, until } from '../support/rawHttp.js';

const REQUEST_ID = /^req-[0-9a-f-]{36}$/;
/** Slack for timers and a loaded 2-core machine on top of Node's deadline check period. */
const SLACK_MS = 3000;

interface Running {
  app: App;
  port: number;
  token: string;
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
  await built.app.listen({ host: '127.0.0.1', port: 0 });
  const r: Running = {
    app: built.app,
    port: (built.app.server.address() as AddressInfo).port,
    token,
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
