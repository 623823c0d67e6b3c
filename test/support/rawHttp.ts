/**
 * HTTP/1.1 over a bare TCP socket (node:net), for requests no HTTP client would send: malformed
 * request lines, oversized headers, trickled headers, half-sent bodies.
 */
import { connect, type Socket } from 'node:net';

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** The server closed the connection (after the response, or without one). */
  closed: boolean;
  /** Milliseconds from the first byte written to the end (response complete or socket closed). */
  elapsedMs: number;
}

/** A chunk to write, optionally after a pause: `{ afterMs: 200, data: 'X-A: b\r\n' }`. */
export type Chunk = string | Buffer | { afterMs: number; data: string | Buffer };

/**
 * Writes `chunks` to a new connection and resolves with the first response once it is complete
 * (by Content-Length) or the socket closes; `status` is 0 when the server closed without answering.
 */
export function rawRequest(port: number, chunks: Chunk | Chunk[], opts: { timeoutMs?: number; waitForClose?: boolean } = {}): Promise<RawResponse> {
  const list = Array.isArray(chunks) ? chunks : [chunks];
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const started = Date.now();
    let buf = Buffer.alloc(0);
    let done = false;
    let stopWriting = false;
    const finish = (closed: boolean) => {
      if (done) return;
      const parsed = parse(buf);
      if (!closed && (!parsed || parsed.incomplete || opts.waitForClose)) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ ...(parsed ?? { status: 0, headers: {}, body: buf.toString('utf8') }), closed, elapsedMs: Date.now() - started });
    };
    const timer = setTimeout(() => {
      socket.destroy();
      if (!done) reject(new Error(`no answer within ${opts.timeoutMs ?? 10_000} ms; got ${JSON.stringify(buf.toString('latin1').slice(0, 200))}`));
    }, opts.timeoutMs ?? 10_000);
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      finish(false);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      stopWriting = true;
      finish(true);
    });
    void (async () => {
      for (const c of list) {
        if (typeof c === 'object' && !Buffer.isBuffer(c)) {
          await new Promise((r) => setTimeout(r, c.afterMs));
          if (stopWriting || socket.destroyed) return;
          socket.write(c.data);
        } else {
          if (stopWriting || socket.destroyed) return;
          socket.write(c);
        }
      }
    })();
  });
}

function parse(buf: Buffer): (Omit<RawResponse, 'closed' | 'elapsedMs'> & { incomplete: boolean }) | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  const body = buf.subarray(end + 4);
  const length = headers['content-length'] === undefined ? undefined : Number(headers['content-length']);
  return { status, headers, body: body.toString('utf8'), incomplete: length !== undefined && body.length < length };
}

/**
 * Opens `n` connections that send nothing (each reads, so it sees the server close it). Opened in
 * batches below the listen backlog (511), with a pause for the server to accept them, so the
 * kernel does not drop SYNs: the client would retry a second later and blur what is measured.
 */
export async function openIdle(port: number, n: number, batch = 200): Promise<{ sockets: Socket[]; closed: () => number }> {
  const sockets: Socket[] = [];
  let closed = 0;
  for (let i = 0; i < n; i += batch) {
    const group = Array.from({ length: Math.min(batch, n - i) }, () => {
      const s = connect(port, '127.0.0.1');
      s.on('data', () => undefined);
      s.on('error', () => undefined);
      s.on('close', () => closed++);
      return new Promise<Socket>((res) => s.once('connect', () => res(s)).once('close', () => res(s)));
    });
    sockets.push(...(await Promise.all(group)));
    await new Promise((r) => setTimeout(r, 20));
  }
  return { sockets, closed: () => closed };
}

/** Waits until `cond()` holds, polling; throws after `ms`. */
export async function until(cond: () => boolean | Promise<boolean>, ms = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what} not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
