/**
 * What happens below Fastify's routes: answers Node's HTTP parser or Fastify's router would
 * otherwise give in their own format, the connection cap, what one connection may make the
 * process hold (requests answered at once, response bytes its client has not taken), and the
 * bounded graceful drain.
 *
 * Every answer given here is a Nova fault body from the error catalogue with an
 * `x-openstack-request-id`, written straight to the socket when no request object exists yet
 * (a malformed request line, headers too large, a header timeout).
 */
import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { errors, faultBody, type ServiceError } from '../errors.js';
import { newRequestId } from './requestId.js';

/** Limits of one HTTP server (all times in milliseconds). */
export interface HttpLimits {
  /**
   * The request line and headers must have arrived this long after the request began, and a new
   * connection may stay silent no longer than this: slowloris and idle connects end here (408).
   */
  headersTimeoutMs: number;
  /** The whole request, body included, must have arrived this long after it began (408). */
  requestTimeoutMs: number;
  /** A keep-alive connection idle this long after a response is closed. */
  keepAliveTimeoutMs: number;
  /**
   * Open connections at most. A connection over the cap closes the least recently active one that
   * has no complete request being served; if every connection is serving one, the new one is dropped.
   */
  maxConnections: number;
  /** On close: how long requests already being served may take before their connections are cut. */
  shutdownGraceMs: number;
  /**
   * A client must take the answers written to it: a connection whose response bytes have waited
   * in this process this long with no write completing is cut, and what it held is freed.
   */
  sendTimeoutMs: number;
  /**
   * Requests of one connection being answered at once (HTTP/1.1 pipelining depth). The next one
   * is refused with a 503 and the connection closes after the answers before it.
   */
  maxPipelined: number;
  /** Response bytes one connection may leave waiting in this process; a connection over it is cut. */
  maxUnsentBytes: number;
}

/** Requests answered at once per connection: browsers and HTTP libraries pipeline none or a few. */
export const MAX_PIPELINED = 16;
/** Unsent response bytes per connection: several of our largest answers (a 1,000-item page). */
export const MAX_UNSENT_BYTES = 4 * 1024 * 1024;

/** Node's default header limit, stated: the request line counts too. */
export const MAX_HEADER_BYTES = 16 * 1024;
/** Our URLs are under 200 characters; anything far longer is refused before routing work. */
export const MAX_URL_LENGTH = 2048;

/** How long a refused connection may take to read our answer before it is cut. */
const LINGER_MS = 1000;

type ParserError = Error & { code?: string; reason?: string; rawPacket?: unknown };
/**
 * Node's HTTP internals this module relies on (Node 20–24): the response being written on a
 * socket, and the socket's parser, whose `onIncoming` returns llhttp's on_headers_complete code.
 */
type HttpSocket = Socket & {
  _httpMessage?: ServerResponse | null;
  parser?: { onIncoming?: ((req: IncomingMessage, keepAlive: boolean) => number) | null } | null;
};

/**
 * An HTTP/1.1 response with a fault body, for a socket that has no ServerResponse to use. The
 * answer to a HEAD request has the headers only (RFC 9110 §9.3.2): a body there would be read
 * by the client as the start of the next response.
 */
export function rawFault(err: ServiceError, requestId: string, opts: { head?: boolean } = {}): string {
  const body = JSON.stringify(faultBody(err));
  return (
    `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? 'Error'}\r\n` +
    'content-type: application/json; charset=utf-8\r\n' +
    `content-length: ${Buffer.byteLength(body)}\r\n` +
    `x-openstack-request-id: ${requestId}\r\n` +
    'connection: close\r\n\r\n' +
    (opts.head ? '' : body)
  );
}

/**
 * Writes `err` and closes the socket once it is flushed (or after LINGER_MS at the latest).
 *
 * When requests that arrived in full are being answered on the socket, the failure is in bytes
 * that came after them (a pipelined or trailing request): those requests get their own answers
 * and the connection closes after the last of them. Answering the failure instead would stand in
 * for a request being acted on, and its client would take for refused what was done.
 */
export function answerAndClose(socket: Socket, err: ServiceError, requestId: string, opts: { head?: boolean } = {}): void {
  if (socket.destroyed) return;
  const conn = connOf.get(socket);
  // Already closing after its last answer (a refusal, or an earlier failure): nothing to add.
  if (conn?.refusing) return;
  const pending = conn ? [...conn.inFlight.values()] : [(socket as HttpSocket)._httpMessage].filter((r): r is ServerResponse => !!r);
  const last = pending.filter((r) => !r.writableFinished && r.req?.complete).at(-1);
  if (last) {
    // Nothing after the failure can be a request: stop handing any to the routes.
    if (conn) conn.refusing = true;
    closeAfter(socket, last);
    return;
  }
  const inFlight = (socket as HttpSocket)._httpMessage;
  // A response already started on this socket cannot be followed by another one.
  if (socket.writable && !inFlight?.headersSent) socket.write(rawFault(err, requestId, opts));
  socket.destroySoon();
  setTimeout(() => socket.destroy(), LINGER_MS).unref();
}

/** Closes `socket` once `res` (the last answer it will carry) is flushed, saying so in it if still possible. */
function closeAfter(socket: Socket, res: ServerResponse): void {
  if (closingAfter.has(res)) return;
  closingAfter.add(res);
  if (!res.headersSent) res.shouldKeepAlive = false;
  res.once('finish', () => socket.destroySoon());
}

/** Responses after which their connection closes (the parser failed on what followed them). */
const closingAfter = new WeakSet<ServerResponse>();

/** Whether the request a parser error is about is a HEAD (its answer then has no body). */
function isHead(err: ParserError, socket: Socket): boolean {
  const inFlight = (socket as HttpSocket)._httpMessage;
  if (inFlight?.req) return inFlight.req.method === 'HEAD';
  return Buffer.isBuffer(err.rawPacket) && err.rawPacket.subarray(0, 5).toString('latin1') === 'HEAD ';
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$/;
const REQUEST_LINE = /^(\S{1,64}) (\/[\x21-\x7e]{0,1024}) HTTP\/1\.[01]$/;

/** The catalogue error for a failure of Node's HTTP parser or its request timers. */
export function clientErrorToServiceError(err: ParserError): ServiceError {
  switch (err.code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return errors.requestTimeout();
    case 'HPE_HEADER_OVERFLOW':
      return errors.headersTooLarge(MAX_HEADER_BYTES);
    case 'HPE_INVALID_METHOD': {
      // A well-formed request line with a method nobody here knows: say so, as 405.
      const line = Buffer.isBuffer(err.rawPacket) ? (err.rawPacket.toString('latin1').split('\r\n', 1)[0] ?? '') : '';
      const m = REQUEST_LINE.exec(line);
      if (m && TOKEN.test(m[1]!)) return errors.methodNotAllowed(m[1]!, m[2]!.split('?')[0]!);
      return errors.badRequest('Malformed HTTP request: the request line is not HTTP/1.1.');
    }
    case 'HPE_PAUSED_H2_UPGRADE':
      return errors.badRequest('Malformed HTTP request: HTTP/2 is not served here; use HTTP/1.1.');
  }
  // llhttp's reasons are fixed phrases ("Invalid character in chunk size"); never client bytes.
  const reason = typeof err.reason === 'string' && /^[\x20-\x7e]{1,120}$/.test(err.reason) ? err.reason : err.code ?? 'unreadable';
  return errors.badRequest(`Malformed HTTP request: ${reason}.`);
}

interface Conn {
  socket: Socket;
  /** Requests handed to the routes (and a refusal) whose response has not closed, in arrival order. */
  inFlight: Map<IncomingMessage, ServerResponse>;
  /** Set once no further request of this connection is to be answered: it closes after those in flight. */
  refusing: boolean;
  /** Since when response bytes have waited in this process with no write completing (epoch ms). */
  stalledSince: number | undefined;
  /** Bytes of this socket whose writes had completed when `stalledSince` was set. */
  sentMark: number;
}

/** Sockets of every guard, for answerAndClose (which gets only the socket). */
const connOf = new WeakMap<Socket, Conn>();

/** A route handler: Fastify's, once it is given the request. */
export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** What a ConnectionGuard counts (since it started). */
export interface ConnectionCounts {
  /** Connections closed to make room for new ones at the cap. */
  evicted: number;
  /** New connections dropped at the cap, every open one being busy. */
  dropped: number;
  /** Connections that pipelined past `maxPipelined` (answered 503, then closed). */
  refusedPipelining: number;
  /** Connections cut because their client took nothing for `sendTimeoutMs`. */
  cutStalled: number;
  /** Connections cut because they left more than `maxUnsentBytes` unsent. */
  cutUnsent: number;
}

type GuardLimits = Pick<HttpLimits, 'maxConnections' | 'maxPipelined' | 'sendTimeoutMs' | 'maxUnsentBytes'>;

/**
 * Tracks the connections of one server, and bounds what each may make the process hold: hands
 * their requests to the routes (`route`), at most `maxPipelined` at once per connection; cuts
 * connections whose client does not take its answers; enforces the connection cap; and drains
 * them on shutdown.
 *
 * A connection is *serving* while the answer to a request whose body has fully arrived is still
 * being made; such a connection is never closed to make room. It is *writing* while every answer
 * is made but some bytes have not reached the kernel: it holds nothing that is not done, so it
 * can be closed after the idle ones. Every other connection (silent, mid-headers, mid-body, idle
 * keep-alive) can be closed without losing work, because nothing has been acted on.
 *
 * Why the pipelining limit sits in the parser: Node parses everything one read brings (up to
 * 64 KiB, ~1,600 small requests) and hands each request to the routes at once, building every
 * answer in memory before its client has read the first; Node's own back-pressure only stops
 * reading after that. So the request over the limit also stops the parser for the rest of that
 * read (llhttp's "no body, stop here", code 2, which Node uses for upgrades): what follows it is
 * never parsed, and the connection closes after its answer.
 */
export class ConnectionGuard {
  /** Insertion order is the order of last activity: the first entry is the least recently active. */
  private readonly conns = new Map<Socket, Conn>();
  private drainPromise: Promise<void> | undefined;
  private readonly emptied = new Set<() => void>();
  private readonly sweeper: NodeJS.Timeout;
  readonly counts: ConnectionCounts = { evicted: 0, dropped: 0, refusedPipelining: 0, cutStalled: 0, cutUnsent: 0 };
  draining = false;

  constructor(
    private readonly server: Server,
    private readonly limits: GuardLimits,
    private readonly log: Logger,
    private readonly route: RequestHandler,
  ) {
    server.on('connection', (socket: Socket) => this.onConnection(socket));
    server.on('request', (req: IncomingMessage, res: ServerResponse) => this.dispatch(req, res));
    // A quarter of the send timeout: a stalled connection is cut at most 25% late.
    const every = Math.max(50, Math.min(1000, Math.floor(limits.sendTimeoutMs / 4)));
    this.sweeper = setInterval(() => this.sweep(), every).unref();
    server.once('close', () => clearInterval(this.sweeper));
  }

  /** Open connections. */
  get open(): number {
    return this.conns.size;
  }

  /** Connections making the answer to a complete request. */
  get serving(): number {
    let n = 0;
    for (const c of this.conns.values()) if (isServing(c)) n++;
    return n;
  }

  /** Connections whose answers are all made but not all taken by the kernel. */
  get writing(): number {
    let n = 0;
    for (const c of this.conns.values()) if (!isServing(c) && hasOutput(c)) n++;
    return n;
  }

  /** Response bytes waiting in this process, over every connection. */
  get unsentBytes(): number {
    let n = 0;
    for (const c of this.conns.values()) n += unsentBytes(c);
    return n;
  }

  private onConnection(socket: Socket): void {
    if (this.draining) {
      socket.destroy();
      return;
    }
    if (this.conns.size >= this.limits.maxConnections) {
      const victim = this.victim();
      if (victim) {
        this.counts.evicted++;
        this.forget(victim);
        victim.destroy();
      } else {
        this.counts.dropped++;
        const dropped = this.counts.dropped;
        if (dropped === 1 || dropped % 1000 === 0) this.log.warn({ maxConnections: this.limits.maxConnections, dropped }, 'connection cap reached, every connection busy: dropping new connections');
        socket.destroy();
        return;
      }
    }
    const conn: Conn = { socket, inFlight: new Map(), refusing: false, stalledSince: undefined, sentMark: 0 };
    this.conns.set(socket, conn);
    connOf.set(socket, conn);
    socket.once('close', () => this.forget(socket));
    // Node's own connection listener ran first and gave the socket its parser.
    const parser = (socket as HttpSocket).parser;
    const onIncoming = parser?.onIncoming;
    if (parser && onIncoming) {
      parser.onIncoming = (req, keepAlive) => {
        const code = onIncoming(req, keepAlive);
        return conn.refusing ? 2 : code;
      };
    }
  }

  /** Hands `req` to the routes, unless its connection already has `maxPipelined` requests being answered. */
  private dispatch(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket;
    const conn = this.conns.get(socket);
    if (!conn) {
      this.route(req, res);
      return;
    }
    // After a refusal or a parse failure the connection only finishes what it has: this request
    // was read after an answer that says `Connection: close`, so it never gets one.
    if (conn.refusing) return;
    if (conn.inFlight.size >= this.limits.maxPipelined) {
      this.refusePipelining(conn, req, res);
      return;
    }
    this.track(conn, req, res);
    // Most recently active goes last.
    this.conns.delete(socket);
    this.conns.set(socket, conn);
    this.route(req, res);
  }

  private track(conn: Conn, req: IncomingMessage, res: ServerResponse): void {
    conn.inFlight.set(req, res);
    res.once('close', () => {
      conn.inFlight.delete(req);
      if (this.draining && conn.inFlight.size === 0) conn.socket.destroySoon();
    });
  }

  /** A 503 in our format as the connection's last answer, after those in flight. */
  private refusePipelining(conn: Conn, req: IncomingMessage, res: ServerResponse): void {
    conn.refusing = true;
    const n = ++this.counts.refusedPipelining;
    if (n === 1 || n % 1000 === 0) this.log.info({ maxPipelined: this.limits.maxPipelined, connections: n }, 'connection pipelined past the limit: refused, closing after its answers');
    const err = errors.serviceUnavailable(
      `More than ${this.limits.maxPipelined} requests were sent on this connection before their answers were read; ` +
        'this one was not acted on and the connection closes. Send it again on a new connection.',
    );
    const body = JSON.stringify(faultBody(err));
    this.track(conn, req, res);
    res.shouldKeepAlive = false;
    res.writeHead(err.status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'x-openstack-request-id': newRequestId(),
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  /**
   * Cuts the connections whose client does not take its answers: over `maxUnsentBytes` waiting
   * in this process, or bytes waiting and no write completed for `sendTimeoutMs`.
   */
  private sweep(): void {
    const now = Date.now();
    for (const conn of [...this.conns.values()]) {
      const unsent = unsentBytes(conn);
      if (unsent > this.limits.maxUnsentBytes) {
        this.cut(conn, 'cutUnsent', { unsent });
        continue;
      }
      // Only bytes already on the socket wait for the client; answers queued behind one still
      // being made wait for us.
      if (conn.socket.writableLength === 0) {
        conn.stalledSince = undefined;
        continue;
      }
      const sent = sentBytes(conn.socket);
      if (conn.stalledSince === undefined || sent !== conn.sentMark) {
        conn.stalledSince = now;
        conn.sentMark = sent;
      } else if (now - conn.stalledSince >= this.limits.sendTimeoutMs) {
        this.cut(conn, 'cutStalled', { unsent, stalledMs: now - conn.stalledSince });
      }
    }
  }

  private cut(conn: Conn, why: 'cutStalled' | 'cutUnsent', fields: Record<string, number>): void {
    const n = ++this.counts[why];
    if (n === 1 || n % 1000 === 0) {
      this.log.info({ ...fields, sendTimeoutMs: this.limits.sendTimeoutMs, maxUnsentBytes: this.limits.maxUnsentBytes, connections: n }, 'client does not read its answers: connection cut');
    }
    this.forget(conn.socket);
    conn.socket.destroy();
  }

  private forget(socket: Socket): void {
    if (!this.conns.delete(socket)) return;
    if (this.conns.size === 0) for (const f of this.emptied) f();
  }

  /** The least recently active idle connection, else the least recently active writing one. */
  private victim(): Socket | undefined {
    let writing: Socket | undefined;
    for (const [socket, conn] of this.conns) {
      if (isServing(conn)) continue;
      if (!hasOutput(conn)) return socket;
      writing ??= socket;
    }
    return writing;
  }

  /**
   * Stops accepting, closes every connection that is not serving a complete request or writing
   * its answers, lets the others finish until `deadline` (epoch ms), then cuts what is left.
   * Resolves once every connection is closed. Calling it again joins the first drain.
   */
  drain(deadline: number): Promise<void> {
    this.drainPromise ??= this.runDrain(deadline);
    return this.drainPromise;
  }

  private async runDrain(deadline: number): Promise<void> {
    this.draining = true;
    if (this.server.listening) this.server.close();
    const before = { open: this.conns.size, serving: this.serving, writing: this.writing };
    for (const [socket, conn] of this.conns) {
      if (!isServing(conn) && !hasOutput(conn)) {
        this.forget(socket);
        socket.destroy();
        continue;
      }
      // Say so in the answers still to come, so clients do not send another request here.
      for (const res of conn.inFlight.values()) if (!res.headersSent) res.setHeader('connection', 'close');
    }
    if (this.conns.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.max(0, deadline - Date.now()));
        this.emptied.add(done);
        function done() {
          clearTimeout(timer);
          resolve();
        }
      });
    }
    const cut = this.conns.size;
    for (const socket of [...this.conns.keys()]) {
      this.forget(socket);
      socket.destroy();
    }
    clearInterval(this.sweeper);
    this.log.info({ ...before, cut }, 'HTTP connections drained');
  }
}

/** A request whose body has fully arrived is being answered (its answer is not yet made). */
function isServing(conn: Conn): boolean {
  for (const [req, res] of conn.inFlight) if (req.complete && !res.writableEnded) return true;
  return false;
}

/** Some answer made on this connection has not yet reached the kernel. */
function hasOutput(conn: Conn): boolean {
  for (const res of conn.inFlight.values()) if (res.writableEnded && !res.writableFinished) return true;
  return unsentBytes(conn) > 0;
}

/**
 * Response bytes of `conn` waiting in this process: queued on the socket, plus those of answers
 * made but waiting behind an earlier one (Node gives a pipelined answer the socket in turn).
 */
function unsentBytes(conn: Conn): number {
  let n = conn.socket.writableLength;
  for (const res of conn.inFlight.values()) if (res.socket !== conn.socket) n += res.writableLength;
  return n;
}

/** Bytes of `socket` whose writes have completed (taken by the kernel). */
function sentBytes(socket: Socket): number {
  return (socket.bytesWritten ?? 0) - socket.writableLength;
}

/**
 * Wires the answers Node gives by itself into our format: parser errors and request timeouts
 * (clientError), CONNECT (Node would drop the socket), and unknown `Expect` values (Node would
 * answer a bare 417; RFC 9110 lets a server ignore them, so the request is served normally).
 */
export function attachTransportHandlers(server: Server): void {
  server.on('connect', (req: IncomingMessage, socket: Socket) => {
    const path = /^[\x21-\x7e]{1,256}$/.test(req.url ?? '') ? req.url! : '/';
    answerAndClose(socket, errors.methodNotAllowed('CONNECT', path), newRequestId());
  });
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    server.emit('request', req, res);
  });
}

/** Fastify's `clientErrorHandler`: a parser error or request timeout, answered in our format. */
export function clientErrorHandler(log: Logger) {
  return (err: ParserError, socket: Socket): void => {
    if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || socket.destroyed) {
      socket.destroy();
      return;
    }
    const svc = clientErrorToServiceError(err);
    const started = (socket as HttpSocket)._httpMessage?.getHeader('x-openstack-request-id');
    const requestId = typeof started === 'string' ? started : newRequestId();
    const level = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'debug' : 'info';
    log[level]({ code: svc.code, parserCode: err.code, requestId }, 'HTTP client error answered');
    answerAndClose(socket, svc, requestId, { head: isHead(err, socket) });
  };
}
