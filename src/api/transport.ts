/**
 * What happens below Fastify's routes: answers Node's HTTP parser or Fastify's router would
 * otherwise give in their own format, the connection cap, what one connection may make the
 * process hold (requests answered at once, response bytes its client has not taken), and the
 * bounded graceful drain.
 *
 * Every answer given here is a Nova fault body from the error catalogue with an
 * `x-openstack-request-id`, written straight to the socket when no request object exists yet
 * (a malformed request line, headers too large, a header timeout).
 *
 * Its parts, one concern a file, under transport/: limits.ts (the limits and their defaults),
 * clientErrors.ts (parser errors, timeouts, CONNECT, Expect, answered in our format),
 * connectionGuard.ts (the connection cap, pipelining and back-pressure, the graceful drain) and
 * connections.ts (one connection's state).
 */
export * from './transport/limits.js';
export { ConnectionGuard, type ConnectionCounts, type RequestHandler } from './transport/connectionGuard.js';
export { answerAndClose, answeredByTransport, attachTransportHandlers, clientErrorHandler, clientErrorToServiceError, rawFault, TRANSPORT_METHOD, type TransportAnswerCounter } from './transport/clientErrors.js';
