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

/**
 * Every complete HTTP/1.1 response in `buf`, in order (framed by Content-Length; none means no
 * body), and the bytes after the last. The responses numbered in `heads` (from 0) answer HEAD
 * requests: their Content-Length announces a body they do not carry.
 */
function frameResponses(buf: Buffer, heads: readonly number[] = []): { responses: Array<Omit<RawResponse, 'closed' | 'elapsedMs'>>; rest: Buffer } {
  const responses: Array<Omit<RawResponse, 'closed' | 'elapsedMs'>> = [];
  let rest = buf;
  for (;;) {
    const head = heads.includes(responses.length);
    const parsed = parse(rest);
    if (!parsed || (parsed.incomplete && !head)) return { responses, rest };
    const end = rest.indexOf('\r\n\r\n') + 4;
    const length = head ? 0 : Number(parsed.headers['content-length'] ?? 0);
    responses.push({ status: parsed.status, headers: parsed.headers, body: rest.subarray(end, end + length).toString('utf8') });
    rest = rest.subarray(end + length);
  }
}

/** Every complete HTTP/1.1 response in `buf`, in order (framed by Content-Length; none means no body). */
export function parseResponses(buf: Buffer): Array<Omit<RawResponse, 'closed' | 'elapsedMs'>> {
  return frameResponses(buf).responses;
}

/** What `pipelined` sends besides its requests, and how it reads the answers. */
export interface PipelineOptions {
  /** Stop reading once this many answers arrived (the connection left open); else read until the server closes. */
  expect?: number;
  timeoutMs?: number;
  /** A FIN right after the last bytes sent (`printf … | nc -N`), reading on until the server closes. */
  halfClose?: boolean;
  /** The answers (numbered from 0) to HEAD requests: a Content-Length, no body. */
  heads?: number[];
  /** Bytes sent in a later packet, once `afterAnswers` answers have arrived. */
  later?: { afterAnswers: number; data: string };
}

/**
 * Sends `requests` on one connection in a single write (HTTP/1.1 pipelining) and reads the
 * answers until `expect` of them have arrived or the server closes the connection; `trailing`
 * is what came after the last complete answer (latin1).
 */
export function pipelined(port: number, requests: string[], opts: PipelineOptions = {}): Promise<{ responses: Array<Omit<RawResponse, 'closed' | 'elapsedMs'>>; closed: boolean; trailing: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let later = opts.later;
    const answers = () => frameResponses(buf, opts.heads);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`pipelined: ${answers().responses.length} answers and no close within ${opts.timeoutMs ?? 10_000} ms`));
    }, opts.timeoutMs ?? 10_000);
    const done = (closed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      const { responses, rest } = answers();
      resolve({ responses, closed, trailing: rest.toString('latin1') });
    };
    const send = (data: string, last: boolean) => (last && opts.halfClose ? socket.end(data) : socket.write(data));
    socket.on('connect', () => send(requests.join(''), !later));
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const got = answers().responses.length;
      if (later && got >= later.afterAnswers) {
        send(later.data, true);
        later = undefined;
      }
      if (opts.expect !== undefined && got >= opts.expect) done(false);
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
