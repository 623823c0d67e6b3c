/**
 * The client side of benchmark (a), in its own process, timing each call itself — as
 * py_libvirt.py times (b) and (c) inside Python — so neither side pays for the benchmark's own
 * event loop (guest console, pipes). Reads JSON lines on stdin, answers one JSON line per call:
 *   {"url", "token", "path"}   then   {"bytes": N}  →  {"ok": true, "ms": …, "status": …, "bytes": …, "timing": {…}}
 *   {"get": PATH}  →  {"ok": true, "ms": …, "status": …, "timing": {…}}   (a GET on the same connection)
 * `timing` is the answer's Server-Timing header as numbers (ms by part, and `total`: the server's
 * own time from its onRequest hook to its onSend hook), so the bench can tell the time inside the
 * server's request handling from the time outside it (socket, parsing, event loop, sending).
 */
import { Agent, request } from 'node:http';
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

function post(bytes: number): Promise<{ status: number; body: string; ms: number; timing: Record<string, number> }> {
  return call('POST', target!.path, JSON.stringify({ onlineExtendVolume: { bytes } }));
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
  const msg = JSON.parse(line) as { url?: string; token?: string; path?: string; bytes?: number; get?: string; quit?: boolean };
  if (msg.quit) break;
  try {
    if (msg.url) {
      target = { url: new URL(msg.url), token: msg.token!, path: msg.path! };
      process.stdout.write(`${JSON.stringify({ ok: true })}\n`);
      continue;
    }
    if (msg.get) {
      // A read through the same client and connection: the HTTP hop alone, timed the same way.
      const r = await call('GET', msg.get);
      process.stdout.write(`${JSON.stringify({ ok: r.status === 200, ms: r.ms, status: r.status, timing: r.timing })}\n`);
      continue;
    }
    const r = await post(msg.bytes!);
    const got = r.body ? (JSON.parse(r.body) as { volume_blockdev?: { bytes?: number } }).volume_blockdev?.bytes : undefined;
    process.stdout.write(`${JSON.stringify({ ok: r.status === 200, ms: r.ms, status: r.status, bytes: got, timing: r.timing, error: r.status === 200 ? undefined : r.body })}\n`);
  } catch (err) {
    process.stdout.write(`${JSON.stringify({ ok: false, error: (err as Error).message })}\n`);
  }
}
agent.destroy();
