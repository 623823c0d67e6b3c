/**
 * The client side of benchmark (a), in its own process, timing each call itself — as
 * py_libvirt.py times (b) and (c) inside Python — so neither side pays for the benchmark's own
 * event loop (guest console, pipes). Reads JSON lines on stdin, answers one JSON line per call:
 *   {"url", "token", "path"}   then   {"bytes": N, "client": "wire"|"node"}  →  {"ok": true, "ms": …, "status": …, "bytes": …, "timing": {…}}
 *   {"get": PATH, "client": …}  →  {"ok": true, "ms": …, "status": …, "timing": {…}}   (a GET on the same connection)
 * `timing` is the answer's Server-Timing header as numbers (ms by part, and `total`: the server's
 * own time from its onRequest hook to its onSend hook), so the bench can tell the time inside the
 * server's request handling from the time outside it (socket, parsing, event loop, sending).
 *
 * Two clients, each on its own keep-alive connection:
 * - `wire` (the default): the request's bytes written to a TCP socket and the answer read back
 *   until its Content-Length is complete: the API's round trip as the wire sees it, the way (c) is
 *   timed around python3-libvirt's C client. Nothing of an HTTP library's own work is in it.
 * - `node`: Node's http client (node:http, keep-alive Agent). After the bench's idle pause its own
 *   work costs ~0.4 ms a call here (a bare Node server answers in 0.59 ms on the wire, 1.02 ms
 *   through node:http: measured 2026-11-30), which is the client library's, not the API's.
 */
import { Agent, request } from 'node:http';
import { createConnection, type Socket } from 'node:net';
import { createInterface } from 'node:readline';

let target: { url: URL; token: string; path: string } | undefined;
const agent = new Agent({ keepAlive: true, maxSockets: 1 });

/** `auth;dur=0.031, rpc;dur=9.1, total;dur=10.2` → `{auth: 0.031, rpc: 9.1, total: 10.2}`. */
function serverTiming(h: string | string[] | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const item of (Array.isArray(h) ? h.join(', ') : (h ?? '')).split(',')) {
    const m = /^\s*([\w-]+);dur=([\d.]+)/.exec(item);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

type Answer = { status: number; body: string; ms: number; timing: Record<string, number> };
type Client = 'wire' | 'node';

function post(bytes: number, client: Client): Promise<Answer> {
  const payload = JSON.stringify({ onlineExtendVolume: { bytes } });
  return client === 'wire' ? wireCall('POST', target!.path, payload) : call('POST', target!.path, payload);
}

/** The `wire` client's one connection (opened on first use, kept alive as the server allows). */
interface WireConnection {
  socket: Socket;
  /** Bytes received and not yet part of an answer. */
  buffered: Buffer;
  onData: (() => void) | undefined;
}
let wire: WireConnection | undefined;

async function wireSocket(): Promise<WireConnection> {
  if (wire && !wire.socket.destroyed) return wire;
  const t = target!;
  const socket = createConnection({ host: t.url.hostname, port: Number(t.url.port) });
  socket.setNoDelay(true);
  await new Promise<void>((res, rej) => {
    socket.once('connect', res);
    socket.once('error', rej);
  });
  const conn: WireConnection = { socket, buffered: Buffer.alloc(0), onData: undefined };
  socket.on('data', (d: Buffer) => {
    conn.buffered = conn.buffered.length ? Buffer.concat([conn.buffered, d]) : d;
    conn.onData?.();
  });
  socket.on('error', () => undefined);
  wire = conn;
  return conn;
}

/** One HTTP/1.1 answer at the start of `buf` (status, headers by lower-case name, body), or undefined until all of it is there. */
function parseAnswer(buf: Buffer): { status: number; headers: Map<string, string>; body: string; length: number } | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  const length = end + 4 + Number(headers.get('content-length') ?? 0);
  if (buf.length < length) return undefined;
  return { status: Number(lines[0]!.split(' ')[1]), headers, body: buf.subarray(end + 4, length).toString('utf8'), length };
}

async function wireCall(method: string, path: string, payload?: string): Promise<Answer> {
  const conn = await wireSocket();
  const t = target!;
  const head =
    `${method} ${path} HTTP/1.1\r\nHost: ${t.url.host}\r\nX-Auth-Token: ${t.token}\r\n` +
    (payload === undefined ? '' : `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(payload)}\r\n`) +
    '\r\n';
  const bytes = Buffer.from(payload === undefined ? head : head + payload);
  return new Promise((resolve, reject) => {
    const closed = (): void => reject(new Error('the server closed the connection'));
    conn.socket.once('close', closed);
    const t0 = performance.now();
    conn.onData = () => {
      const a = parseAnswer(conn.buffered);
      if (!a) return;
      const ms = performance.now() - t0;
      conn.buffered = conn.buffered.subarray(a.length);
      conn.onData = undefined;
      conn.socket.off('close', closed);
      resolve({ status: a.status, body: a.body, ms, timing: serverTiming(a.headers.get('server-timing')) });
    };
    conn.socket.write(bytes);
  });
}

function call(method: string, path: string, payload?: string): Promise<{ status: number; body: string; ms: number; timing: Record<string, number> }> {
  const t = target!;
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = request(
      {
        agent,
        host: t.url.hostname,
        port: t.url.port,
        method,
        path,
        headers: { 'x-auth-token': t.token, ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }) },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ms: performance.now() - t0, timing: serverTiming(res.headers['server-timing']) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  const msg = JSON.parse(line) as { url?: string; token?: string; path?: string; bytes?: number; get?: string; client?: Client; quit?: boolean };
  const client: Client = msg.client ?? 'wire';
  if (msg.quit) break;
  try {
    if (msg.url) {
      target = { url: new URL(msg.url), token: msg.token!, path: msg.path! };
      process.stdout.write(`${JSON.stringify({ ok: true })}\n`);
      continue;
    }
    if (msg.get) {
      // A read through the same client and connection: the HTTP hop alone, timed the same way.
      const r = client === 'wire' ? await wireCall('GET', msg.get) : await call('GET', msg.get);
      process.stdout.write(`${JSON.stringify({ ok: r.status === 200, ms: r.ms, status: r.status, timing: r.timing })}\n`);
      continue;
    }
    const r = await post(msg.bytes!, client);
    const got = r.body ? (JSON.parse(r.body) as { volume_blockdev?: { bytes?: number } }).volume_blockdev?.bytes : undefined;
    process.stdout.write(`${JSON.stringify({ ok: r.status === 200, ms: r.ms, status: r.status, bytes: got, timing: r.timing, error: r.status === 200 ? undefined : r.body })}\n`);
  } catch (err) {
    process.stdout.write(`${JSON.stringify({ ok: false, error: (err as Error).message })}\n`);
  }
}
agent.destroy();
wire?.socket.destroy();
