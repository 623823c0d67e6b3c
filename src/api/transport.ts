/**
 * What happens below Fastify's routes: answers Node's HTTP parser or Fastify's router would
 * otherwise give in their own format, the connection cap, and the bounded graceful drain.
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
}

/** Node's default header limit, stated: the request line counts too. */
export const MAX_HEADER_BYTES = 16 * 1024;
/** Our URLs are under 200 characters; anything far longer is refused before routing work. */
export const MAX_URL_LENGTH = 2048;

/** How long a refused connection may take to read our answer before it is cut. */
const LINGER_MS = 1000;

type ParserError = Error & { code?: string; reason?: string; rawPacket?: unknown };
type HttpSocket = Socket & { _httpMessage?: ServerResponse | null };

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
 * When a request that arrived in full is being served on the socket, the failure is in bytes
 * that came after it (a pipelined or trailing request): that request gets its own answer and the
 * connection closes after it. Answering the failure instead would stand in for the request being
 * acted on, and its client would take for refused what was done.
 */
export function answerAndClose(socket: Socket, err: ServiceError, requestId: string, opts: { head?: boolean } = {}): void {
  if (socket.destroyed) return;
  const inFlight = (socket as HttpSocket)._httpMessage;
  if (inFlight && !inFlight.writableFinished && inFlight.req?.complete) {
    if (!closingAfter.has(inFlight)) {
      closingAfter.add(inFlight);
      inFlight.shouldKeepAlive = false;
      inFlight.once('finish', () => socket.destroySoon());
    }
    return;
  }
  // A response already started on this socket cannot be followed by another one.
  if (socket.writable && !inFlight?.headersSent) socket.write(rawFault(err, requestId, opts));
  socket.destroySoon();
  setTimeout(() => socket.destroy(), LINGER_MS).unref();
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
  /** Requests dispatched on this connection whose response has not finished. */
  requests: Set<IncomingMessage>;
}

/**
 * Tracks the connections of one server: enforces the cap, and drains them on shutdown.
 *
 * A connection is *serving* while a request whose body has fully arrived is being answered;
 * every other connection (silent, mid-headers, mid-body, idle keep-alive) can be closed without
 * losing work, because nothing has been acted on.
 */
export class ConnectionGuard {
  /** Insertion order is the order of last activity: the first entry is the least recently active. */
  private readonly conns = new Map<Socket, Conn>();
  private drainPromise: Promise<void> | undefined;
  private readonly emptied = new Set<() => void>();
  /** Connections closed to make room for new ones, and new ones dropped at the cap. */
  evicted = 0;
  dropped = 0;
  draining = false;

  constructor(
    private readonly server: Server,
    private readonly maxConnections: number,
    private readonly log: Logger,
  ) {
    server.on('connection', (socket: Socket) => this.onConnection(socket));
    server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res));
  }

  /** Open connections. */
  get open(): number {
    return this.conns.size;
  }

  /** Connections serving a complete request. */
  get serving(): number {
    let n = 0;
    for (const c of this.conns.values()) if (isServing(c)) n++;
    return n;
  }

  private onConnection(socket: Socket): void {
    if (this.draining) {
      socket.destroy();
      return;
    }
    if (this.conns.size >= this.maxConnections) {
      const victim = this.leastRecentIdle();
      if (victim) {
        this.evicted++;
        this.forget(victim);
        victim.destroy();
      } else {
        this.dropped++;
        if (this.dropped === 1 || this.dropped % 1000 === 0) this.log.warn({ maxConnections: this.maxConnections, dropped: this.dropped }, 'connection cap reached, every connection busy: dropping new connections');
        socket.destroy();
        return;
      }
    }
    this.conns.set(socket, { requests: new Set() });
    socket.once('close', () => this.forget(socket));
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket;
    const conn = this.conns.get(socket);
    if (!conn) return;
    conn.requests.add(req);
    // Most recently active goes last.
    this.conns.delete(socket);
    this.conns.set(socket, conn);
    res.once('close', () => {
      conn.requests.delete(req);
      if (this.draining && conn.requests.size === 0) socket.destroySoon();
    });
  }

  private forget(socket: Socket): void {
    if (!this.conns.delete(socket)) return;
    if (this.conns.size === 0) for (const f of this.emptied) f();
  }

  private leastRecentIdle(): Socket | undefined {
    for (const [socket, conn] of this.conns) if (!isServing(conn)) return socket;
    return undefined;
  }

  /**
   * Stops accepting, closes every connection that is not serving a complete request, lets the
   * others finish until `deadline` (epoch ms), then cuts what is left. Resolves once every
   * connection is closed. Calling it again joins the first drain.
   */
  drain(deadline: number): Promise<void> {
    this.drainPromise ??= this.runDrain(deadline);
    return this.drainPromise;
  }

  private async runDrain(deadline: number): Promise<void> {
    this.draining = true;
    if (this.server.listening) this.server.close();
    const before = { open: this.conns.size, serving: this.serving };
    for (const [socket, conn] of this.conns) {
      if (!isServing(conn)) {
        this.forget(socket);
        socket.destroy();
        continue;
      }
      // Say so in the answers still to come, so clients do not send another request here.
      const res = (socket as HttpSocket)._httpMessage;
      if (res && !res.headersSent) res.setHeader('connection', 'close');
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
    this.log.info({ ...before, cut }, 'HTTP connections drained');
  }
}

function isServing(conn: Conn): boolean {
  for (const req of conn.requests) if (req.complete) return true;
  return false;
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
