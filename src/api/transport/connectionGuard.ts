/**
 * The connections of one HTTP server: the connection cap, pipelining and back-pressure (what one
 * connection may make the process hold), and the bounded graceful drain on shutdown.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { errors, faultBody, type ServiceError } from '../../errors.js';
import { newRequestId } from '../requestId.js';
import { batchWritesPerTurn } from './batchedWrites.js';
import { connOf, hasOutput, isServing, sentBytes, unsentBytes, type Conn, type HttpSocket } from './connections.js';
import type { HttpLimits } from './limits.js';

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

type GuardLimits = Pick<HttpLimits, 'maxConnections' | 'maxPipelined' | 'sendTimeoutMs' | 'maxUnsentBytes' | 'batchWrites'>;

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
    /** Told of each answer the guard gives itself (a pipelining refusal), for the request metrics. */
    private readonly onAnswer?: (method: string, status: number) => void,
    /** The API's error body for the guard's own answers: Nova's fault by default (the identity API gives Keystone's). */
    private readonly errorBody: (err: ServiceError) => unknown = faultBody,
  ) {
    // A client that sends its requests and then half-closes (`printf … | nc -N`, a FIN after the
    // last request) still gets every answer: Node's default would end the socket when the FIN is
    // read, losing the answers to requests still queued behind the one being written (with the
    // writes of a turn batched, all but the first or two). With this, Node marks the last answer
    // as the connection's last and closes after it.
    (server as Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
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
    if (this.limits.batchWrites !== false) batchWritesPerTurn(socket);
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
    // was read after the connection's last answer (the one that says `Connection: close`), so it
    // never gets one.
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

  /** A 503 in the API's error format as the connection's last answer, after those in flight. */
  private refusePipelining(conn: Conn, req: IncomingMessage, res: ServerResponse): void {
    conn.refusing = true;
    const n = ++this.counts.refusedPipelining;
    if (n === 1 || n % 1000 === 0) this.log.info({ maxPipelined: this.limits.maxPipelined, connections: n }, 'connection pipelined past the limit: refused, closing after its answers');
    const err = errors.serviceUnavailable(
      `More than ${this.limits.maxPipelined} requests were sent on this connection before their answers were read; ` +
        'this one was not acted on and the connection closes. Send it again on a new connection.',
    );
    const body = JSON.stringify(this.errorBody(err));
    this.track(conn, req, res);
    this.onAnswer?.(req.method ?? 'GET', err.status);
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
      // Say so in the last answer still to come, so clients do not send another request here.
      // Only the last: an answer saying `Connection: close` makes Node close the socket once it
      // is sent, and the answers to requests pipelined behind it would be lost. A refusing
      // connection's last answer already says so (a refusal's 503, or the fault for what its
      // client sent after these requests, which answerAndClose writes after them).
      if (conn.refusing) continue;
      let last: ServerResponse | undefined;
      for (const res of conn.inFlight.values()) last = res;
      if (last && !last.headersSent) last.setHeader('connection', 'close');
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
