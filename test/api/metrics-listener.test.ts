/**
 * The separate metrics listener (`--metrics-port`) is bounded as the APIs are: at most
 * METRICS_MAX_CONNECTIONS connections at once, and a connection that never finishes its request's
 * headers is closed after the header deadline, so a client cannot hold the file descriptors the
 * APIs need. Real listener, real sockets.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { connect, type Socket } from 'node:net';
import pino from 'pino';
import { listenMetrics, METRICS_MAX_CONNECTIONS, type MetricsListener } from '../../src/api/metrics.js';
import { Metrics } from '../../src/util/metrics.js';

let listener: MetricsListener | undefined;
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await listener?.close();
  listener = undefined;
});

/** A connection that sends half a request and waits; resolves once connected, `closed` when the server closes it. */
function halfOpen(port: number): Promise<{ closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => {
      s.write('GET /metrics HTTP/1.1\r\nHost: x\r\n');
      // Read what comes (the 408), so the server's close is seen.
      s.resume();
      resolve({ closed: new Promise<void>((r) => s.once('close', () => r())) });
    });
    s.on('error', () => undefined);
    s.once('error', reject);
    sockets.push(s);
  });
}

describe('the metrics listener', () => {
  it(`holds at most ${METRICS_MAX_CONNECTIONS} connections, closes half-sent requests after the header deadline, then scrapes again`, async () => {
    listener = await listenMetrics(new Metrics(), '127.0.0.1', 0, pino({ level: 'silent' }));
    const port = Number(new URL(listener.url).port);
    const conns = await Promise.all(Array.from({ length: METRICS_MAX_CONNECTIONS + 8 }, () => halfOpen(port)));
    // Those past the cap are closed at once by the server.
    const settled = await Promise.all(conns.map((c) => Promise.race([c.closed.then(() => 'closed'), new Promise((r) => setTimeout(() => r('open'), 500))])));
    expect(settled.filter((x) => x === 'open').length).toBeLessThanOrEqual(METRICS_MAX_CONNECTIONS);
    expect(settled.filter((x) => x === 'closed').length).toBeGreaterThanOrEqual(8);
    // The half-sent ones go within the header deadline (5 s, checked each second).
    await Promise.all(conns.map((c) => c.closed));
    const res = await fetch(`${listener.url}/metrics`);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('# TYPE online_extend_http_requests_total counter');
  }, 20_000);

  it('cuts a connection that pipelines scrapes (one request at a time), holding no answer for it', async () => {
    listener = await listenMetrics(new Metrics(), '127.0.0.1', 0, pino({ level: 'silent' }));
    const port = Number(new URL(listener.url).port);
    const closed = await new Promise<{ bytes: number; ms: number }>((resolve) => {
      const started = Date.now();
      let bytes = 0;
      const s = connect(port, '127.0.0.1', () => s.write('GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(200)));
      s.on('data', (b: Buffer) => (bytes += b.length));
      s.on('error', () => undefined);
      s.once('close', () => resolve({ bytes, ms: Date.now() - started }));
      sockets.push(s);
    });
    expect(closed.ms).toBeLessThan(5_000);
    // At most the first scrape's answer went out (a few KiB), never 200 of them.
    expect(closed.bytes).toBeLessThan(64 * 1024);
    // The listener still scrapes.
    expect((await fetch(`${listener.url}/metrics`)).status).toBe(200);
  });

  it('answers anything but GET /metrics with a 404 that says what it serves', async () => {
    listener = await listenMetrics(new Metrics(), '127.0.0.1', 0, pino({ level: 'silent' }));
    const res = await fetch(`${listener.url}/nope`);
    expect(res.status).toBe(404);
    expect(await res.text()).toBe('not found: this listener serves GET /metrics only\n');
  });
});
