/**
 * The Fastify instance every API of ours is built on: Nova's request ids and error bodies on
 * every answer (the router's and Node's own included), strict JSON validation (no coercion, no
 * silently dropped fields), token authentication with the URL's project checked against the
 * token's, HTTP timeouts, a connection cap and bounds on what one connection may make the
 * process hold, a bounded graceful drain, and an OpenAPI document generated from the route schemas.
 */
import { createServer as createHttpServer } from 'node:http';
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import { newRequestId } from './requestId.js';
import { formatSchemaErrors } from './schemaErrors.js';
import { PROJECT_ID_PATTERN, PROJECT_ID_RULE } from './schemas/common.js';
import {
  answeredByTransport,
  attachTransportHandlers,
  clientErrorHandler,
  type TransportAnswerCounter,
  ConnectionGuard,
  MAX_HEADER_BYTES,
  DEFAULT_HTTP_LIMITS,
  deadlineCheckIntervalMs,
  MAX_URL_LENGTH,
  type ConnectionCounts,
  type HttpLimits,
} from './transport.js';
import { errors, faultBody, isServiceError, unexpectedError, type ServiceError } from '../errors.js';
import type { AuthContext, Authenticator } from '../auth/tokens.js';
import type { PolicyEnforcer, PolicyTarget } from '../auth/policy.js';
import type { RequestContext } from '../context.js';
import { maxConnectionsPerApi } from '../util/fdLimit.js';
import { echoVersion, negotiateVersion, versionsFor, type ApiService, type ApiVersion } from './microversion.js';
import { RequestTimings, withTimings } from '../util/timing.js';
import { RequestCounter, type Metrics } from '../util/metrics.js';

export { DEFAULT_HTTP_LIMITS, type HttpLimits } from './transport.js';

declare module 'fastify' {
  interface FastifyRequest {
    auth?: AuthContext;
    /** Whether this API lets `service` tokens act in any project (ServerDeps.serviceActsInAnyProject). */
    serviceActsInAnyProject?: boolean;
    /** Where this request's time went (the Server-Timing header). */
    timings: RequestTimings;
    /** `timings` when the layers below add their parts to it (ServerDeps.timingDetail), else undefined: what RequestContext.timings carries. */
    layerTimings: RequestTimings | undefined;
  }
  interface FastifyContextConfig {
    /**
     * The route is not microversioned (the version documents, as Nova's `support_api_request_version
     * = False` and Cinder's versions app): no negotiation, no refusal and no echo.
     */
    unversioned?: boolean;
  }
}

export const BODY_LIMIT = 64 * 1024;

/** What `createServer` needs: the logger, the token authenticator and policy enforcer every route checks with, and the OpenAPI title. */
export interface ServerDeps {
  logger: Logger;
  /** Checks X-Auth-Token: the store's tokens (TokenAuthenticator), noauth's, or a real Keystone's (KeystoneAuthenticator). */
  auth: Authenticator;
  policy: PolicyEnforcer;
  title: string;
  /** Timeouts, connection cap, per-connection bounds and drain grace; missing ones take the defaults. */
  limits?: Partial<HttpLimits>;
  /**
   * Let tokens with the `service` role use URLs of any project (see `checkProject`). Only the
   * compute API needs it (the volume service calls it for the server's project); off elsewhere.
   */
  serviceActsInAnyProject?: boolean;
  /** The `api` label of this API's request metrics (default: `service`; the image API, which negotiates as compute, says `image`). */
  metricsApi?: string;
  /** The process's metrics: requests are counted by route pattern and status (absent: not counted). */
  metrics?: Metrics;
  /** Serve `GET /metrics` (no token) on this app; needs `metrics`. */
  serveMetrics?: boolean;
  /**
   * Server-Timing with the per-layer parts (store, lock, driver, rpc, libvirt; Config
   * serverTimingDetail): the request's RequestContext carries its timings to the services, which
   * pass them down (util/timing.ts). Off: `auth` and `total` only.
   */
  timingDetail?: boolean;
}

/** What `createServer` needs beyond the route dependencies: which OpenStack service the API speaks for (its microversions). */
export interface CreateServerOptions extends ServerDeps {
  /** `compute` (Nova's microversions and headers) or `volume` (Cinder's): see microversion.ts. */
  service: ApiService;
}

function withDefaults(l: Partial<HttpLimits> = {}): HttpLimits {
  const d = DEFAULT_HTTP_LIMITS;
  return {
    headersTimeoutMs: l.headersTimeoutMs ?? d.headersTimeoutMs,
    requestTimeoutMs: l.requestTimeoutMs ?? d.requestTimeoutMs,
    keepAliveTimeoutMs: l.keepAliveTimeoutMs ?? d.keepAliveTimeoutMs,
    // 0 is "automatic", as in Config.
    maxConnections: l.maxConnections || maxConnectionsPerApi(0, 1),
    shutdownGraceMs: l.shutdownGraceMs ?? d.shutdownGraceMs,
    sendTimeoutMs: l.sendTimeoutMs ?? d.sendTimeoutMs,
    maxPipelined: l.maxPipelined ?? d.maxPipelined,
    maxUnsentBytes: l.maxUnsentBytes ?? d.maxUnsentBytes,
    batchWrites: l.batchWrites,
  };
}

const guards = new WeakMap<object, ConnectionGuard>();

/**
 * Drains `app`'s HTTP server: stops accepting, closes connections that are not serving a
 * complete request, lets the others finish until `deadline` (epoch ms), then cuts the rest.
 * `app.close()` does the same with the server's own grace; call this first to share one
 * deadline between several servers.
 */
export function drainServer(app: App, deadline: number): Promise<void> {
  return guards.get(app)?.drain(deadline) ?? Promise.resolve();
}

/** What `app`'s connections are doing now, the response bytes they leave unsent, and what was cut or refused. */
export interface ConnectionStats extends ConnectionCounts {
  open: number;
  /** Making the answer to a complete request. */
  serving: number;
  /** Every answer made, some bytes not yet taken by the kernel. */
  writing: number;
  unsentBytes: number;
}

/** What `app`'s connections are doing now and the totals cut or refused so far; all zeros for an app not made by `createServer`. */
export function connectionStats(app: App): ConnectionStats {
  const g = guards.get(app);
  const none = { evicted: 0, dropped: 0, refusedPipelining: 0, cutStalled: 0, cutUnsent: 0 };
  return g ? { open: g.open, serving: g.serving, writing: g.writing, unsentBytes: g.unsentBytes, ...g.counts } : { open: 0, serving: 0, writing: 0, unsentBytes: 0, ...none };
}

/** The Fastify instance our APIs are built on: Node's HTTP server, pino logger, TypeBox type provider. */
export type App = FastifyInstance<
  import('node:http').Server,
  import('node:http').IncomingMessage,
  import('node:http').ServerResponse,
  Logger,
  TypeBoxTypeProvider
>;

/** Answers with `err`'s HTTP status and Nova's fault body (`faultBody`: `{"<fault>": {code, message, error_code, final, reason?}}`). */
export function renderError(reply: FastifyReply, err: ServiceError): FastifyReply {
  return reply.status(err.status).send(faultBody(err));
}

/** What an empty body that a route needs is refused with (BadRequest). */
const EMPTY_BODY = 'The request body is empty; a JSON object is required.';

/**
 * Parses a JSON request body. Throws BadRequest: empty, malformed (with the parser's reason), or
 * holding a `__proto__` key or a `constructor.prototype` (prototype pollution, as Fastify's
 * secure-json-parse refuses them).
 */
export function parseJsonBody(text: string): unknown {
  if (text.trim() === '') throw errors.badRequest(EMPTY_BODY);
  let forbidden: string | undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text, (key, value: unknown) => {
      if (key === '__proto__' || (key === 'constructor' && value !== null && typeof value === 'object' && Object.hasOwn(value, 'prototype'))) forbidden ??= key;
      return value;
    });
  } catch (err) {
    throw errors.badRequest(`Malformed request body: ${(err as Error).message}.`);
  }
  if (forbidden !== undefined) throw errors.badRequest(`Malformed request body: the key '${forbidden}'${forbidden === 'constructor' ? " with a 'prototype'" : ''} is not allowed.`);
  return parsed;
}

/** Maps Fastify's own errors (parsing, content type, body size, validation) into the catalogue. */
function toServiceError(err: FastifyError): ServiceError {
  if (isServiceError(err)) return err;
  if (err.validation) return errors.invalidInput(err.message);
  switch (err.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return errors.badRequest('Unsupported Content-Type: send the request body as application/json.');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return errors.badRequest(EMPTY_BODY);
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return errors.payloadTooLarge(BODY_LIMIT);
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return errors.badRequest('Content-Length does not match the request body.');
  }
  if (err instanceof SyntaxError || err.statusCode === 400) return errors.badRequest(`Malformed request body: ${err.message}`);
  if (err.statusCode === 404) return errors.notFound();
  return unexpectedError(err);
}

/**
 * The catalogue error for one of the Fastify router's own errors (a bad percent-escape, an
 * over-long parameter: `maxUrlLength`, the 414's limit); undefined for anything else (a bug).
 */
export function routerError(err: FastifyError, maxUrlLength = MAX_URL_LENGTH): ServiceError | undefined {
  if (err.code === 'FST_ERR_BAD_URL') return errors.badRequest('Malformed request URL: invalid percent-encoding.');
  if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') return errors.uriTooLong(maxUrlLength);
  return undefined;
}

/** The Fastify router's own errors (a bad percent-escape, an over-long parameter), in our format. */
function frameworkError(err: FastifyError, req: FastifyRequest, reply: FastifyReply): FastifyReply {
  reply.header('x-openstack-request-id', req.id);
  const known = routerError(err);
  if (known) return renderError(reply, known);
  req.log.error({ err, requestId: req.id }, 'router failed');
  return renderError(reply, errors.internal());
}

/**
 * Builds the Fastify app with our transport limits, JSON parsing, request-id and project checks,
 * `deps.service`'s microversion negotiation and echo (`req.apiVersion`), error handler and
 * `/openapi.json`; routes are registered by the caller. Rejects only on a programming error (plain Error).
 */
export async function createServer(deps: CreateServerOptions): Promise<App> {
  const limits = withDefaults(deps.limits);
  const versions = versionsFor(deps.service);
  const metrics = deps.metrics;
  const counter = metrics && new RequestCounter(metrics, deps.metricsApi ?? deps.service);
  const countTransportAnswer: TransportAnswerCounter | undefined = counter && ((method, status) => counter.count(method, status));
  /**
   * Counts one answer in the request metrics, by route pattern (never the URL: an unmatched
   * request is one series however many URLs miss) and status; timed when its request reached the hooks.
   */
  const countAnswer = (req: FastifyRequest, reply: FastifyReply, now: number): void => {
    // A fault took its place on the wire (a malformed body): that fault is counted instead.
    if (answeredByTransport(reply.raw)) return;
    counter?.count(req.method, reply.statusCode, req.routeOptions.url, req.timings && (now - req.timings.start) / 1000);
  };
  let guard: ConnectionGuard | undefined;
  const app = Fastify({
    loggerInstance: deps.logger,
    // Requests are audited as instance actions; per-request logs would only slow the hot path.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'requestId' }),
    bodyLimit: BODY_LIMIT,
    // No parameter can be longer than the URL, so the URL limit (414, checked on every request)
    // applies first; ids up to it reach the schema and get its clear 400.
    routerOptions: { maxParamLength: MAX_URL_LENGTH },
    genReqId: () => newRequestId(),
    // No child logger per request: our log lines carry the request id as a field where it matters.
    childLoggerFactory: (logger) => logger,
    // `verbose` gives errors their schema and data, so a union reports the branch the client chose.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false, verbose: true } },
    schemaErrorFormatter: formatSchemaErrors as never,
    // The router's errors skip the onSend hooks: the version is echoed here.
    frameworkErrors: ((err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
      echoVersion(req, reply, versions);
      const answered = frameworkError(err, req, reply);
      // These answers skip the hooks too: counted here (no timings: no duration observed).
      countAnswer(req, reply, performance.now());
      return answered;
    }) as never,
    // Answers Node's HTTP layer gives before any route (parser errors, 431, timeouts, CONNECT):
    // counted too, unmatched, with no duration (no request was read).
    clientErrorHandler: clientErrorHandler(deps.logger, countTransportAnswer),
    // Our own server, so that every request reaches the routes through the ConnectionGuard,
    // which bounds how many of one connection's requests are answered at once.
    serverFactory: (route) => {
      const server = createHttpServer({
        headersTimeout: limits.headersTimeoutMs,
        requestTimeout: limits.requestTimeoutMs,
        // Node checks the header and request deadlines on this period (30 s by default).
        connectionsCheckingInterval: deadlineCheckIntervalMs(limits.headersTimeoutMs),
        maxHeaderSize: MAX_HEADER_BYTES,
        // Node would answer a request without Host with a bare 400; the onRequest hook does it in our format.
        requireHostHeader: false,
      });
      server.keepAliveTimeout = limits.keepAliveTimeoutMs;
      guard = new ConnectionGuard(server, limits, deps.logger, route, countTransportAnswer);
      return server;
    },
    // The drain (preClose) closes connections; Fastify closing idle ones after it changes nothing.
    forceCloseConnections: false,
    // The onRequest hook answers 503 in our format while draining.
    return503OnClosing: false,
  }).withTypeProvider<TypeBoxTypeProvider>() as unknown as App;

  if (!guard) throw new Error('Fastify did not call serverFactory');
  const connections = guard;
  guards.set(app, connections);
  attachTransportHandlers(app.server, countTransportAnswer);
  app.addHook('preClose', async () => connections.drain(Date.now() + limits.shutdownGraceMs));

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: deps.title, version: '0.1.0' },
      components: { securitySchemes: { token: { type: 'apiKey', in: 'header', name: 'X-Auth-Token' } } },
      security: [{ token: [] }],
    },
  });

  // Only JSON bodies: Fastify's text/plain parser would hand a string to the validator.
  app.removeContentTypeParser('text/plain');
  // JSON bodies with messages that say what is wrong (Fastify's own says only "not valid JSON"),
  // and keys that would reach an object's prototype refused by name.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    // OpenStack clients send `Content-Type: application/json` with no body on DELETE (tempest's
    // rest_client does on its DELETEs): no body, not a malformed one. A route that needs a body
    // refuses its absence in the preValidation hook below.
    if (body === '') return done(null, undefined);
    try {
      done(null, parseJsonBody(body as string));
    } catch (err) {
      done(err as Error, undefined);
    }
  });

  // Server-Timing: `auth` and `total` always. With timingDetail the request's RequestContext
  // carries its RequestTimings (contextOn), which the services make current for the layers they
  // call: store, lock, driver, RPC and libvirt add to it (util/timing.ts).
  const detail = deps.timingDetail === true;
  app.decorateRequest('timings', null as unknown as RequestTimings);
  app.decorateRequest('layerTimings', undefined);
  if (detail) {
    // Each handler's synchronous part runs with its request's timings current: what a handler
    // calls before its first await is timed without a RequestContext (the server lookup of most
    // routes); after an await, the services re-enter from RequestContext.timings.
    app.addHook('onRoute', (route) => {
      const handler = route.handler;
      route.handler = function (this: unknown, req, reply) {
        return withTimings(req.layerTimings, () => handler.call(this as never, req, reply));
      };
    });
  }
  app.decorateRequest('apiVersion', null as unknown as ApiVersion);
  app.decorateRequest('apiVersionError', null as unknown as Error | null);
  // One onRequest hook for everything every request needs (each hook Fastify runs costs a turn
  // through its hook runner; three hooks here were measurable on get_blockdev).
  app.addHook('onRequest', (req, reply, done) => {
    req.timings = new RequestTimings();
    if (detail) {
      req.layerTimings = req.timings;
      withTimings(req.timings, () => onRequest(req, reply, done));
    } else onRequest(req, reply, done);
  });
  // One onSend hook for the Server-Timing header and the request metrics (a second hook, such as
  // onResponse, costs a turn through Fastify's hook runner on every answer): the duration counted
  // is until the answer is handed to the socket.
  app.addHook('onSend', (req, reply, payload, done) => {
    const timings = req.timings;
    // Router errors (frameworkErrors) answer before onRequest: no timings to report.
    const now = performance.now();
    if (timings) reply.header('server-timing', timings.header(now));
    countAnswer(req, reply, now);
    done(null, payload);
  });
  if (metrics && deps.serveMetrics) {
    // Off the auth path (no token), as Prometheus scrapes: what it shows is counts, never names or ids.
    app.get('/metrics', { schema: { hide: true }, config: { unversioned: true } }, async (_req, reply) => {
      const { contentType, body } = await metrics.scrape();
      return reply.type(contentType).send(body);
    });
  }

  const onRequest = (req: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void): void => {
    reply.header('x-openstack-request-id', req.id);
    // The microversion is negotiated first, so every answer from here on (a 401 included) echoes
    // it; a refusal is answered after the token and project checks (see below).
    if (req.routeOptions.config.unversioned !== true) {
      try {
        req.apiVersion = negotiateVersion(req.headers, versions);
        echoVersion(req, reply, versions);
      } catch (err) {
        req.apiVersionError = err as Error;
      }
    }
    if (connections.draining) {
      reply.header('connection', 'close');
      return done(errors.serviceUnavailable('The service is shutting down; try again shortly.'));
    }
    if (req.url.length > MAX_URL_LENGTH) return done(errors.uriTooLong(MAX_URL_LENGTH));
    if (req.raw.httpVersion === '1.1' && req.headers.host === undefined) return done(errors.badRequest('An HTTP/1.1 request needs a Host header.'));
    req.serviceActsInAnyProject = deps.serviceActsInAnyProject === true;
    const params = req.params as Record<string, string | undefined> | undefined;
    const project = params?.tenant_id ?? params?.project_id;
    // Microversions: a version the API cannot serve is refused after the token and project checks
    // (as in Nova, where keystonemiddleware answers 401 before the API reads the version). The
    // echo was set with the other headers above: no onSend hook on the hot path.
    if (project === undefined) return done(req.apiVersionError ?? undefined);
    // The alphabet first: a malformed URL is refused without a token lookup.
    if (!PROJECT_ID.test(project)) return done(errors.invalidInput(`Malformed request URL: a project id is ${PROJECT_ID_RULE}.`));
    // A cached token (the hot path): decided here, with no closure made for it.
    const known = knownCaller(deps, req);
    if (known) return authenticated(req, project, known, done);
    askAuthenticator(deps, req).then((auth) => authenticated(req, project, auth, done), done);
  };

  /** The onRequest hook's end once the caller is known: the URL's project checked against the token's, then a deferred version refusal. */
  const authenticated = (req: FastifyRequest, project: string, auth: AuthContext, done: (err?: Error) => void): void => {
    if (project !== auth.projectId) {
      try {
        checkProject(project, auth, req.serviceActsInAnyProject === true);
      } catch (err) {
        return done(err as Error);
      }
    }
    done(req.apiVersionError ?? undefined);
  };

  // A route with a body schema needs a body: an empty one (which the JSON parser lets through
  // for body-less methods) gets the same clear 400 as before, not the schema's "must be object".
  // Added to those routes only (onRoute): a GET runs no hook for it.
  const requireBody = (req: FastifyRequest, _reply: FastifyReply, done: (err?: Error) => void): void => {
    if (req.body === undefined) return done(errors.badRequest(EMPTY_BODY));
    done();
  };
  app.addHook('onRoute', (route) => {
    if (route.schema?.body === undefined) return;
    const own = route.preValidation;
    route.preValidation = own === undefined ? [requireBody] : [requireBody, ...(Array.isArray(own) ? own : [own])];
  });

  app.setErrorHandler((err: FastifyError, req, reply) => {
    const svc = toServiceError(err);
    // A 503 that passes with time (a host's agent, the broker, the database, Keystone away) is an
    // expected answer while a dependency is away: a warning without a stack, not an error each time.
    if (svc.status === 503 && !svc.final) req.log.warn({ code: svc.code, reason: svc.reason, detail: svc.detail, requestId: req.id }, 'request failed: a service it needs is unavailable');
    else if (svc.status >= 500) req.log.error({ err, code: svc.code, final: svc.final, detail: svc.detail, requestId: req.id }, 'request failed');
    return renderError(reply, svc);
  });

  app.setNotFoundHandler((req, reply) => renderError(reply, errors.notFound(`No route for ${req.method} ${req.url.split('?')[0]}.`)));

  // Serialized once (the routes are fixed once the app is ready): an unauthenticated client
  // asking for it again and again costs no serialization, and every answer shares one buffer.
  let openapi: Buffer | undefined;
  app.get('/openapi.json', { schema: { hide: true } }, async (_req, reply) => {
    openapi ??= Buffer.from(JSON.stringify(app.swagger()));
    return reply.type('application/json; charset=utf-8').send(openapi);
  });

  return app;
}

const PROJECT_ID = new RegExp(PROJECT_ID_PATTERN);

/** The role of our own services' tokens (see `checkProject`). */
export const SERVICE_ROLE = 'service';

/**
 * The caller of `req` (X-Auth-Token), looked up once per request; the lookup's time is the
 * request's `auth` Server-Timing part. Callers read `req.auth` first: once it is set, asking
 * again costs no promise.
 */
async function authenticate(deps: Pick<ServerDeps, 'auth'>, req: FastifyRequest): Promise<AuthContext> {
  return knownCaller(deps, req) ?? askAuthenticator(deps, req);
}

/** The caller of `req` as the authenticator says after its lookup (the store, Keystone): `authenticate` once `knownCaller` had no answer. */
async function askAuthenticator(deps: Pick<ServerDeps, 'auth'>, req: FastifyRequest): Promise<AuthContext> {
  const header = req.headers['x-auth-token'];
  const start = performance.now();
  try {
    req.auth = await deps.auth.authenticate(Array.isArray(header) ? header[0] : header);
  } finally {
    // Router errors (frameworkErrors) answer before onRequest: no timings there.
    req.timings?.add('auth', performance.now() - start);
  }
  return req.auth;
}

/**
 * The caller of `req` when it is known without I/O (set already, or a token the authenticator
 * has cached as valid: Authenticator.known); undefined when `authenticate` must ask. The hot
 * path: a known token costs no promise.
 */
function knownCaller(deps: Pick<ServerDeps, 'auth'>, req: FastifyRequest): AuthContext | undefined {
  if (req.auth) return req.auth;
  if (deps.auth.known === undefined) return undefined;
  const header = req.headers['x-auth-token'];
  const start = performance.now();
  const known = deps.auth.known(Array.isArray(header) ? header[0] : header);
  if (known) {
    req.auth = known;
    req.timings?.add('auth', performance.now() - start);
  }
  return known;
}

/**
 * The project in the URL (`/v2/{tenant_id}/…`, `/v3/{project_id}/…`) must be the token's, as
 * Nova and Cinder check it ("Malformed request URL: URL's project_id … doesn't match Context's
 * project_id …", 400) — for admins too: an admin acts on another project's resources through
 * its own project's URL (Nova's all_tenants), never through the other project's.
 *
 * The one exception, on the compute API only (`serviceActsInAnyProject`), is a token with the
 * `service` role: our volume service calls the compute API with its own token (project
 * `service`) on the URL of the server's project, as an OpenStack service does with a
 * keystonemiddleware service token. Policy still applies to it.
 */
export function checkProject(urlProject: string, auth: AuthContext, serviceActsInAnyProject: boolean): void {
  if (!PROJECT_ID.test(urlProject)) throw errors.invalidInput(`Malformed request URL: a project id is ${PROJECT_ID_RULE}.`);
  const service = serviceActsInAnyProject && auth.roles.some((r) => r.toLowerCase() === SERVICE_ROLE);
  if (urlProject !== auth.projectId && !service) throw errors.projectMismatch(urlProject, auth.projectId);
}

/**
 * Authenticates the request (X-Auth-Token, once per request) and checks `action` against the
 * policy. A `project_id` in `target` is checked against the token's as `checkProject` does.
 * Throws Unauthorized (401), ProjectMismatch or InvalidInput (400), Forbidden (403).
 */
export async function authorize(deps: Pick<ServerDeps, 'auth' | 'policy'>, req: FastifyRequest, action: string, target: PolicyTarget): Promise<RequestContext> {
  const auth = req.auth ?? (await authenticate(deps, req));
  if (target.project_id !== undefined && target.project_id !== auth.projectId) checkProject(target.project_id, auth, req.serviceActsInAnyProject === true);
  if (!deps.policy.allows(action, auth, target)) throw errors.forbidden(action);
  return contextOf(req, auth);
}

/** The RequestContext of `req`'s caller `auth`: always the same fields (timings undefined when not recorded), one object shape for every request. */
function contextOf(req: FastifyRequest, auth: AuthContext): RequestContext {
  return { requestId: req.id, userId: auth.userId, projectId: auth.projectId, roles: auth.roles, timings: req.layerTimings };
}

/**
 * Authenticates the request and checks `action` against the policy on `target` as it is (Nova's
 * `context.can(action, target)`): the target's `project_id` is the owner of what is acted on,
 * which may be another project than the token's (an admin reading another project's server by
 * id). The URL's project, if any, was checked against the token's by the onRequest hook.
 * Throws Unauthorized (401), Forbidden (403).
 */
export async function authorizeOn(deps: Pick<ServerDeps, 'auth' | 'policy'>, req: FastifyRequest, action: string, target: PolicyTarget): Promise<RequestContext> {
  return contextOn(deps, req, req.auth ?? (await authenticate(deps, req)), action, target);
}

/**
 * `authorizeOn` for a caller already authenticated (`auth`, from `req.auth` or `caller`), with no
 * promise: the policy check is synchronous. Throws Forbidden (403).
 */
export function contextOn(deps: Pick<ServerDeps, 'policy'>, req: FastifyRequest, auth: AuthContext, action: string, target: PolicyTarget): RequestContext {
  if (!deps.policy.allows(action, auth, target)) throw errors.forbidden(action);
  return contextOf(req, auth);
}

/**
 * `call()` as part of `req` for Server-Timing (util/timing.ts): the store, RPC, lock, driver and
 * libvirt layers it reaches add their time to the request's parts. A handler's synchronous part
 * runs so already (the onRoute hook); its calls after an await (e.g. after `await authorize(…)`)
 * go through here, or through a service given the RequestContext. Returns what `call` returns.
 */
export function inRequest<T>(req: FastifyRequest, call: () => T): T {
  return withTimings(req.layerTimings, call);
}

/** Whether the (authenticated) caller passes `action` on `target` (Nova's `context.can(…, fatal=False)`); never throws past authentication (401). */
export async function allowed(deps: Pick<ServerDeps, 'auth' | 'policy'>, req: FastifyRequest, action: string, target: PolicyTarget): Promise<boolean> {
  const auth = req.auth ?? (await authenticate(deps, req));
  return deps.policy.allows(action, auth, target);
}

/** The caller of `req` (X-Auth-Token, authenticated once per request). Throws Unauthorized (401). */
export function caller(deps: Pick<ServerDeps, 'auth'>, req: FastifyRequest): Promise<AuthContext> {
  return authenticate(deps, req);
}
