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

/** Every complete HTTP/1.1 response in `buf`, in order (framed by Content-Length; none means no body). */
export function parseResponses(buf: Buffer): Array<Omit<RawResponse, 'closed' | 'elapsedMs'>> {
  const out: Array<Omit<RawResponse, 'closed' | 'elapsedMs'>> = [];
  let rest = buf;
  for (;;) {
    const parsed = parse(rest);
    if (!parsed || parsed.incomplete) return out;
    const end = rest.indexOf('\r\n\r\n') + 4;
    const length = Number(parsed.headers['content-length'] ?? 0);
    out.push({ status: parsed.status, headers: parsed.headers, body: rest.subarray(end, end + length).toString('utf8') });
    rest = rest.subarray(end + length);
  }
}

/**
 * Sends `requests` on one connection in a single write (HTTP/1.1 pipelining) and reads the
 * answers until `expect` of them have arrived or the server closes the connection.
 */
export function pipelined(port: number, requests: string[], opts: { expect?: number; timeoutMs?: number; halfClose?: boolean } = {}): Promise<{ responses: Array<Omit<RawResponse, 'closed' | 'elapsedMs'>>; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`pipelined: ${parseResponses(buf).length} answers and no close within ${opts.timeoutMs ?? 10_000} ms`));
    }, opts.timeoutMs ?? 10_000);
    const done = (closed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ responses: parseResponses(buf), closed });
    };
    // halfClose: a FIN right after the requests (`printf … | nc -N`), reading on until the server closes.
    socket.on('connect', () => (opts.halfClose ? socket.end(requests.join('')) : socket.write(requests.join(''))));
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (opts.expect !== undefined && parseResponses(buf).length >= opts.expect) done(false);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => done(true));
  });
}

/**
 * Opens `n` connections that each write `payload` once and then never read (a client that
 * pipelines requests and leaves the answers on the wire). `release()` makes them read again:
 * a connection the server has closed then ends; `closed()` counts those.
 */
export async function openNonReaders(port: number, n: number, payload: string, batch = 50): Promise<{ sockets: Socket[]; closed: () => number; release: () => void; destroy: () => void }> {
  const sockets: Socket[] = [];
  let closed = 0;
  for (let i = 0; i < n; i += batch) {
    const group = Array.from({ length: Math.min(batch, n - i) }, () => {
      const s = connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      s.on('close', () => closed++);
      s.on('data', () => undefined);
      s.pause();
      return new Promise<Socket>((res) =>
        s
          .once('connect', () => {
            s.write(payload);
            res(s);
          })
          .once('close', () => res(s)),
      );
    });
    sockets.push(...(await Promise.all(group)));
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    sockets,
    closed: () => closed,
    release: () => sockets.forEach((s) => s.resume()),
    destroy: () => sockets.forEach((s) => s.destroy()),
  };
}
