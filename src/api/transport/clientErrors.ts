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

type ParserError = Error & { code?: string; reason?: string; rawPacket?: unknown };

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
 * Writes `err` and closes the socket once it is flushed (or after LINGER_MS at the latest).
 *
 * When requests that arrived in full are being answered on the socket, the failure is in bytes
 * that came after them (a pipelined or trailing request): those requests get their own answers
 * and the connection closes after the last of them. Answering the failure instead would stand in
 * for a request being acted on, and its client would take for refused what was done.
 */
export function answerAndClose(socket: Socket, err: ServiceError, requestId: string, opts: FaultOptions = {}): boolean {
  if (socket.destroyed) return false;
  const conn = connOf.get(socket);
  // Already closing after its last answer (a refusal, or an earlier failure): nothing to add.
  if (conn?.refusing) return false;
  const pending = conn ? [...conn.inFlight.values()] : [(socket as HttpSocket)._httpMessage].filter((r): r is ServerResponse => !!r);
  const last = pending.filter((r) => !r.writableFinished && r.req?.complete).at(-1);
  if (last) {
    // Nothing after the failure can be a request: stop handing any to the routes.
    if (conn) conn.refusing = true;
    closeAfter(socket, last);
    return false;
  }
  const inFlight = (socket as HttpSocket)._httpMessage;
  // A response already started on this socket cannot be followed by another one.
  const answered = socket.writable && !inFlight?.headersSent;
  if (answered) socket.write(rawFault(err, requestId, opts));
  socket.destroySoon();
  setTimeout(() => socket.destroy(), LINGER_MS).unref();
  return answered;
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

/**
 * Wires the answers Node gives by itself into our format: parser errors and request timeouts
 * (clientError), CONNECT (Node would drop the socket), and unknown `Expect` values (Node would
 * answer a bare 417; RFC 9110 lets a server ignore them, so the request is served normally).
 */
export function attachTransportHandlers(server: Server, onAnswer?: TransportAnswerCounter, body?: FaultOptions['body']): void {
  server.on('connect', (req: IncomingMessage, socket: Socket) => {
    const path = /^[\x21-\x7e]{1,256}$/.test(req.url ?? '') ? req.url! : '/';
    const svc = errors.methodNotAllowed('CONNECT', path);
    if (answerAndClose(socket, svc, newRequestId(), body ? { body } : {})) onAnswer?.('CONNECT', svc.status);
  });
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    server.emit('request', req, res);
  });
}

/**
 * Told of each answer given here, before any route (the request metrics count it): `method` is
 * the request's when Node parsed that far (CONNECT), else TRANSPORT_METHOD; `status` the answer's.
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
    const started = (socket as HttpSocket)._httpMessage?.getHeader('x-openstack-request-id');
    const requestId = typeof started === 'string' ? started : newRequestId();
    const level = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'debug' : 'info';
    log[level]({ code: svc.code, parserCode: err.code, requestId }, 'HTTP client error answered');
    // Counted once, when written: not when the client already closed its side (nobody reads it),
    // nor when it stands in for a route's answer to a request being read (the route counts that).
    const routed = !!(socket as HttpSocket)._httpMessage;
    const written = answerAndClose(socket, svc, requestId, { head: isHead(err, socket), ...(body ? { body } : {}) });
    if (written && !routed && err.code !== 'HPE_INVALID_EOF_STATE') onAnswer?.(TRANSPORT_METHOD, svc.status);
  };
}
