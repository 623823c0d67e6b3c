/**
 * Answers Node's HTTP parser or Fastify's router would otherwise give in their own format:
 * parser errors, request timeouts, CONNECT and unknown `Expect` values. Each is a Nova fault body
 * from the error catalogue with an `x-openstack-request-id`, written straight to the socket when
 * no request object exists yet (a malformed request line, headers too large, a header timeout).
 */
import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { errors, faultBody, type ServiceError } from '../../errors.js';
import { newRequestId } from '../requestId.js';
import { connOf, type HttpSocket } from './connections.js';
import { MAX_HEADER_BYTES } from './limits.js';

/** How long a refused connection may take to read our answer before it is cut. */
const LINGER_MS = 1000;

/** Node's parser errors: llhttp's `code` and `reason`, the packet being parsed and the failure's offset in it. */
type ParserError = Error & { code?: string; reason?: string; rawPacket?: unknown; bytesParsed?: unknown };

/**
 * How a raw answer is written: `head` (no body, for a HEAD request), `body` (the API's error
 * body for an error: Nova's fault by default; the identity API gives Keystone's).
 */
export interface FaultOptions {
  head?: boolean;
  body?: (err: ServiceError) => unknown;
}

/**
 * An HTTP/1.1 response with a fault body, for a socket that has no ServerResponse to use. The
 * answer to a HEAD request has the headers only (RFC 9110 §9.3.2): a body there would be read
 * by the client as the start of the next response.
 */
export function rawFault(err: ServiceError, requestId: string, opts: FaultOptions = {}): string {
  const body = JSON.stringify((opts.body ?? faultBody)(err));
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
 * Routes' answers whose place a fault took (answerAndClose: a failure in the body of a request
 * whose route had not begun its answer). What such a route answers later is never sent.
 */
const replaced = new WeakSet<ServerResponse>();

/**
 * Whether a fault written here took the place of `res`, a route's answer: it is never sent, so
 * the request metrics count the fault (clientErrorHandler's `onAnswer`) and not it.
 */
export function answeredByTransport(res: ServerResponse): boolean {
  return replaced.has(res);
}

/**
 * Answers `err` as the connection's last answer, then closes it (its client gets LINGER_MS to
 * read it). `written` is told when the answer is handed to the socket: never when the client is
 * gone first, when the answer before says the connection ends, or when the route of the request
 * the failure is in began an answer of its own.
 *
 * The failure is in the bytes after every request that arrived in full (a client may pipeline
 * valid requests, then bytes the parser refuses). As RFC 9112 §9.3 has answers go out in the
 * order of their requests, each of those requests gets its own answer first, unchanged (its
 * `Connection: keep-alive` speaks for it alone), then this one, the only one saying `connection:
 * close`: an answer after one that says close would be a protocol error, and this one in place of
 * an answer still being made would have its client take for refused what was done. Nothing read
 * after the failure is routed (`refusing`). When the answer before ends the connection (its
 * request said `Connection: close`, or was HTTP/1.0), nothing follows it: what came after it is
 * no request.
 *
 * A failure in the body of a request whose head was read (a bad chunk, a body timeout) is that
 * request's: this answers it, unless its route has begun an answer, which then is the last.
 */
export function answerAndClose(socket: Socket, err: ServiceError, requestId: string, opts: FaultOptions = {}, written?: () => void): void {
  if (socket.destroyed) return;
  const conn = connOf.get(socket);
  // Already closing after its last answer (a refusal, or an earlier failure): nothing to add.
  if (conn?.refusing) return;
  // Nothing after the failure can be a request: stop handing any to the routes.
  if (conn) conn.refusing = true;
  const { reading, before } = answersAround(socket);
  if (reading?.headersSent) {
    if (reading.writableFinished) socket.destroySoon();
    else reading.once('finish', () => socket.destroySoon());
    return;
  }
  if (reading) replaced.add(reading);
  const fault = rawFault(err, requestId, opts);
  if (!before) {
    writeLast(socket, fault, written);
    return;
  }
  // Before Node's own listener, which may end the socket after this answer (a client's FIN marks
  // the last answer queued as the connection's last).
  before.prependOnceListener('finish', () => writeLast(socket, fault, written));
}

/** Whether `res` ends its connection: its request asked so (`Connection: close`, HTTP/1.0) or it says so itself. */
function endsConnection(res: ServerResponse): boolean {
  return !res.shouldKeepAlive || /(?:^|\W)close(?:$|\W)/i.test(String(res.getHeader('connection') ?? ''));
}

/** Writes `fault` and closes the socket once it is flushed, or after LINGER_MS at the latest. */
function writeLast(socket: Socket, fault: string, written?: () => void): void {
  const current = (socket as HttpSocket)._httpMessage;
  // Another response may follow one started on this socket only once it is sent in full and if
  // it leaves the connection open (its headers are final by then).
  const follows = !current?.headersSent || (current.writableFinished && !endsConnection(current));
  if (!socket.destroyed && socket.writable && follows) {
    socket.write(fault);
    written?.();
  }
  socket.destroySoon();
  setTimeout(() => socket.destroy(), LINGER_MS).unref();
}

/**
 * The answers of `socket` around a failure in what its client sent: `reading`, the answer to the
 * request the failure is in, if Node had read that request's head (the last in flight, whose
 * body has not fully arrived); `before`, the last answer to a complete request still to be sent.
 */
function answersAround(socket: Socket): { reading?: ServerResponse; before?: ServerResponse } {
  const conn = connOf.get(socket);
  const current = (socket as HttpSocket)._httpMessage;
  const pending = conn ? [...conn.inFlight.values()] : current ? [current] : [];
  const last = pending.at(-1);
  const reading = last && !last.req.complete ? last : undefined;
  const before = pending.filter((r) => r.req.complete && !r.writableFinished).at(-1);
  return { ...(reading ? { reading } : {}), ...(before ? { before } : {}) };
}

/**
 * What the client sent from the start of the request a parser error is in (latin1): the packet
 * from the blank line that ends the head before the failure, else from the packet's start.
 * Behind pipelined requests the packet begins with theirs, not with the failed one. Misses the
 * failed request's start when its head began in an earlier packet, or right after another
 * request's body in this one.
 */
function failedRequestText(err: ParserError): string {
  if (!Buffer.isBuffer(err.rawPacket)) return '';
  const at = Math.min(typeof err.bytesParsed === 'number' ? err.bytesParsed : 0, err.rawPacket.length);
  // A blank line that ends at or before the failure's byte.
  const blank = at >= 4 ? err.rawPacket.lastIndexOf('\r\n\r\n', at - 4) : -1;
  return err.rawPacket
    .subarray(blank < 0 ? 0 : blank + 4)
    .toString('latin1')
    .replace(/^(\r\n)+/, '');
}

/** Whether the request a parser error is about is a HEAD (its answer then has no body). */
function isHead(err: ParserError, reading: ServerResponse | undefined): boolean {
  if (reading) return reading.req.method === 'HEAD';
  return failedRequestText(err).startsWith('HEAD ');
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
      const line = failedRequestText(err).split('\r\n', 1)[0] ?? '';
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

/**
 * Wires the answers Node gives by itself into our format: parser errors and request timeouts
 * (clientError), CONNECT (Node would drop the socket), and unknown `Expect` values (Node would
 * answer a bare 417; RFC 9110 lets a server ignore them, so the request is served normally).
 */
export function attachTransportHandlers(server: Server, onAnswer?: TransportAnswerCounter, body?: FaultOptions['body']): void {
  server.on('connect', (req: IncomingMessage, socket: Socket) => {
    const path = /^[\x21-\x7e]{1,256}$/.test(req.url ?? '') ? req.url! : '/';
    const svc = errors.methodNotAllowed('CONNECT', path);
    answerAndClose(socket, svc, newRequestId(), body ? { body } : {}, () => onAnswer?.('CONNECT', svc.status));
  });
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    server.emit('request', req, res);
  });
}

/**
 * Told of each answer given here, before any route or in place of a route's (the request metrics
 * count it): `method` is the request's when Node parsed that far (CONNECT, a request whose body
 * is malformed), else TRANSPORT_METHOD; `status` the answer's.
 */
export type TransportAnswerCounter = (method: string, status: number) => void;

/** The method label of an answer to a request Node could not parse (its method may be what was wrong). */
export const TRANSPORT_METHOD = 'unparsed';

/** Fastify's `clientErrorHandler`: a parser error or request timeout, answered in our format (and counted by `onAnswer`). */
export function clientErrorHandler(log: Logger, onAnswer?: TransportAnswerCounter, body?: FaultOptions['body']) {
  return (err: ParserError, socket: Socket): void => {
    if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || socket.destroyed) {
      socket.destroy();
      return;
    }
    const svc = clientErrorToServiceError(err);
    // The failure is in this request's body when Node had read its head (it is routed); else in
    // bytes after every request read in full (those of other requests are never this one's).
    const { reading } = answersAround(socket);
    const started = reading?.getHeader('x-openstack-request-id');
    const requestId = typeof started === 'string' ? started : newRequestId();
    const level = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'debug' : 'info';
    log[level]({ code: svc.code, parserCode: err.code, requestId }, 'HTTP client error answered');
    // Counted once, when written: not when the client already closed its side (nobody reads it).
    // In place of a route's answer to a request being read, the fault is what its client gets:
    // counted under that request's method, and the route's answer is not (answeredByTransport; a
    // GET's route answered 200 there, though its client got this 400).
    const counted = err.code !== 'HPE_INVALID_EOF_STATE';
    const method = reading?.req.method ?? TRANSPORT_METHOD;
    answerAndClose(socket, svc, requestId, { head: isHead(err, reading), ...(body ? { body } : {}) }, () => {
      if (counted) onAnswer?.(method, svc.status);
    });
  };
}
