/**
 * GET /metrics on its own listener (Config.metricsPort set): a bare node:http server, so the
 * scraper's address can differ from the API's (a management network) and the scrape never
 * queues behind API connections. Answers GET /metrics only; anything else is 404, no token.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Metrics } from '../util/metrics.js';
import { deadlineCheckIntervalMs } from './transport.js';

/** Connections the metrics listener holds at once (more are closed at accept): Prometheus uses one per scrape. */
export const METRICS_MAX_CONNECTIONS = 16;
/** A scrape request's headers must arrive within this (ms); its whole request within the next. */
const METRICS_HEADERS_TIMEOUT_MS = 5_000;
const METRICS_REQUEST_TIMEOUT_MS = 10_000;
const METRICS_IDLE_TIMEOUT_MS = 10_000;

/** A running metrics listener: its URL (`http://host:port`) and `close`. */
export interface MetricsListener {
  url: string;
  close(): Promise<void>;
}

/** Serves `metrics` on `host:port` (0 = any free one). Rejects when the address cannot be bound. */
export async function listenMetrics(metrics: Metrics, host: string, port: number, logger: Logger): Promise<MetricsListener> {
  // Bounded as the APIs are (a scraper needs one or two connections): a client that opens
  // connections and sends half a request cannot hold file descriptors the APIs need.
  // One request at a time per connection: Node parses pipelined requests before any answer ends,
  // so a client sending thousands and reading none would have a scrape made (and held) for each.
  // Prometheus never pipelines: such a connection is cut.
  const answering = new WeakSet<Socket>();
  const server: Server = createServer({ headersTimeout: METRICS_HEADERS_TIMEOUT_MS, requestTimeout: METRICS_REQUEST_TIMEOUT_MS, connectionsCheckingInterval: deadlineCheckIntervalMs(METRICS_HEADERS_TIMEOUT_MS), maxHeaderSize: 8192 }, (req, res) => {
    const socket = req.socket;
    if (answering.has(socket)) {
      socket.destroy();
      return;
    }
    answering.add(socket);
    res.once('close', () => answering.delete(socket));
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(path === '/metrics' ? 405 : 404, { 'content-type': 'text/plain; charset=utf-8' }).end(path === '/metrics' ? 'GET only\n' : 'not found: this listener serves GET /metrics only\n');
      return;
    }
    metrics.scrape().then(
      ({ contentType, body }) => {
        res.writeHead(200, { 'content-type': contentType });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (err: unknown) => {
        logger.error({ err }, 'metrics scrape failed');
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end('scrape failed\n');
      },
    );
  });
  server.keepAliveTimeout = 5_000;
  server.maxConnections = METRICS_MAX_CONNECTIONS;
  // A connection with no traffic either way for this long is cut (Node destroys it: no 'timeout'
  // listener), so a client that never reads its answer does not hold it in this process.
  server.setTimeout(METRICS_IDLE_TIMEOUT_MS);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const a = server.address() as AddressInfo;
  const url = `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  return {
    url,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
