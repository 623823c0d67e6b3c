/**
 * The embedded Keystone v3 over HTTP, its own Fastify app on its own port (Keystone's 5000 by
 * default), answering as Keystone 22 does:
 *
 *   GET  /                 300, `{"versions": {"values": [<v3>]}}` and `Location`
 *   GET  /v3, /v3/         200, `{"version": <v3>}` (id v3.14, status stable)
 *   POST /v3/auth/tokens   201, `X-Subject-Token`, `{"token": …}` (`?nocatalog` omits the catalog)
 *   GET  /v3/auth/tokens   200 with the body of `X-Subject-Token`; HEAD: 200, no body
 *   DELETE /v3/auth/tokens 204: `X-Subject-Token` revoked
 *
 * GET, HEAD and DELETE need the caller's own token (`X-Auth-Token`; 401 with
 * `WWW-Authenticate: Keystone uri="…"` without a valid one) and Keystone 22's policy
 * (identity:validate_token, identity:revoke_token): the `service` or `admin` role, or the subject
 * token's own user (403 otherwise). An unknown, revoked or expired subject is 404.
 *
 * Errors are Keystone's, `{"error": {"code", "message", "title"}}`, not Nova's fault bodies: this
 * app is Keystone. Every error is a catalogue error (errors.ts), rendered here.
 */
import { RequestCounter, type Metrics } from '../util/metrics.js';
import { createServer as createHttpServer, STATUS_CODES } from 'node:http';
import Fastify, { LogController, type FastifyError, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { errors, isServiceError, unexpectedError, type ServiceError } from '../errors.js';
import type { IdentityService } from './keystone.js';
import { isProjectId } from '../auth/ids.js';
import { RequestTimings } from '../util/timing.js';
import { answeredByTransport, attachTransportHandlers, clientErrorHandler, ConnectionGuard, deadlineCheckIntervalMs, DEFAULT_HTTP_LIMITS, MAX_HEADER_BYTES, type HttpLimits } from '../api/transport.js';
import { newRequestId } from '../api/requestId.js';
import { routerError } from '../api/server.js';

/**
 * HTTP bounds of the identity port (the same numbers as the other APIs'; src/app.ts passes them),
 * times in ms, sizes in bytes; each absent one is DEFAULT_HTTP_LIMITS'. `maxConnections` 0 or
 * absent: no cap. A connection that pipelines past `maxPipelined` gets a 503 and is closed after
 * the answers before it, as on the other APIs (ConnectionGuard).
 */
export type IdentityHttpLimits = Pick<HttpLimits, 'headersTimeoutMs' | 'requestTimeoutMs' | 'keepAliveTimeoutMs' | 'maxConnections' | 'sendTimeoutMs' | 'maxPipelined' | 'maxUnsentBytes' | 'batchWrites'>;

/** What the identity app is built from. */
export interface IdentityAppDeps {
  identity: IdentityService;
  logger: Logger;
  /** The base URL it listens on (known after listen: read at each request), for its links and `WWW-Authenticate`. */
  baseUrl: () => string;
  limits?: Partial<IdentityHttpLimits>;
  /** The process's metrics: answers counted and timed as the other APIs' (`api="identity"`); absent: not counted. */
  metrics?: Metrics;
}

/**
 * Keystone's titles by status (keystone/exception.py: Python's reason phrases, which differ from
 * Node's for 413). Any other status is titled with its HTTP reason phrase (Node's STATUS_CODES,
 * the one on the status line): the transport's 414 and 431 among them.
 */
const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  409: 'Conflict',
  413: 'Request Entity Too Large',
  415: 'Unsupported Media Type',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** Keystone's error body for `err`: `{"error": {"code", "message", "title"}}`. */
export function keystoneErrorBody(err: ServiceError): { error: { code: number; message: string; title: string } } {
  return { error: { code: err.status, message: err.message, title: TITLES[err.status] ?? STATUS_CODES[err.status] ?? 'Error' } };
}

/** Keystone 22's version document of v3 (keystone/api/discovery.py), its self link under `base`. */
export function v3Version(base: string): Record<string, unknown> {
  return {
    id: 'v3.14',
    status: 'stable',
    updated: '2020-04-07T00:00:00Z',
    links: [{ rel: 'self', href: `${base}/v3/` }],
    'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.identity-v3+json' }],
  };
}

const BODY_LIMIT = 64 * 1024;

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function toServiceError(err: FastifyError): ServiceError {
  if (isServiceError(err)) return err;
  switch (err.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return errors.badRequest('Unsupported Content-Type: send the request body as application/json.');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return errors.badRequest('The request body is empty; a JSON object is required.');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return errors.payloadTooLarge(BODY_LIMIT);
  }
  if (err instanceof SyntaxError || err.statusCode === 400) return errors.badRequest(`Malformed request body: ${err.message}`);
  return unexpectedError(err);
}

/** Builds the identity app (routes in the module comment); call `listen` on it. */
export async function buildIdentityApp(deps: IdentityAppDeps) {
  const { identity } = deps;
  const limits = deps.limits ?? {};
  const log = deps.logger.child({ component: 'identity' });
  const counter = deps.metrics && new RequestCounter(deps.metrics, 'identity');
  // Answers given before any route (Node's HTTP layer, the router) are in Keystone's error format
  // too, and counted as the other APIs count theirs: unmatched, not timed.
  const countTransport = counter && ((method: string, status: number) => counter.count(method, status));
  const app = Fastify({
    loggerInstance: log,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT,
    // Keystone's `req-<uuid>` form, with the other APIs' time-ordered UUIDv7 (requestId.ts), so
    // one operation's ids sort by time across the APIs.
    genReqId: () => newRequestId(),
    clientErrorHandler: clientErrorHandler(log, countTransport, keystoneErrorBody),
    frameworkErrors: ((err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
      const known = routerError(err);
      if (!known) req.log.error({ err, requestId: req.id }, 'router failed');
      const e = known ?? errors.internal();
      countTransport?.(req.method, e.status);
      return reply.status(e.status).header('x-openstack-request-id', req.id).type('application/json').send(keystoneErrorBody(e));
    }) as never,
    // Every request reaches the routes through a ConnectionGuard, as on the other APIs: it
    // bounds how many of one connection's requests are answered at once (a client pipelining
    // thousands would otherwise have every answer built in memory), the connection cap, and
    // what a client that does not read may leave unsent. Its 503 is in Keystone's format.
    serverFactory: (route) => {
      const d = DEFAULT_HTTP_LIMITS;
      const headersTimeout = limits.headersTimeoutMs ?? d.headersTimeoutMs;
      const server = createHttpServer({
        headersTimeout,
        requestTimeout: limits.requestTimeoutMs ?? d.requestTimeoutMs,
        connectionsCheckingInterval: deadlineCheckIntervalMs(headersTimeout),
        maxHeaderSize: MAX_HEADER_BYTES,
        // Node would answer a request without Host with a bare 400 (no body, no request id, not
        // counted); the onRequest hook answers it in Keystone's format.
        requireHostHeader: false,
      });
      server.keepAliveTimeout = limits.keepAliveTimeoutMs ?? d.keepAliveTimeoutMs;
      const guardLimits = {
        maxConnections: limits.maxConnections || Number.POSITIVE_INFINITY,
        maxPipelined: limits.maxPipelined ?? d.maxPipelined,
        sendTimeoutMs: limits.sendTimeoutMs ?? d.sendTimeoutMs,
        maxUnsentBytes: limits.maxUnsentBytes ?? d.maxUnsentBytes,
        batchWrites: limits.batchWrites,
      };
      new ConnectionGuard(server, guardLimits, log, route, countTransport, keystoneErrorBody);
      return server;
    },
  });

  attachTransportHandlers(app.server, countTransport, keystoneErrorBody);

  const render = (reply: FastifyReply, err: ServiceError) => {
    if (err.status === 401) reply.header('www-authenticate', `Keystone uri="${deps.baseUrl()}"`);
    return reply.status(err.status).type('application/json').send(keystoneErrorBody(err));
  };
  // Server-Timing's total on every answer, as the compute and volume APIs give it (their
  // per-layer parts do not apply: Keystone's routes have no store/driver layers of ours).
  const started = new WeakMap<FastifyRequest, RequestTimings>();
  app.addHook('onRequest', (req, _reply, done) => {
    started.set(req, new RequestTimings());
    if (req.raw.httpVersion === '1.1' && req.headers.host === undefined) return done(errors.badRequest('An HTTP/1.1 request needs a Host header.'));
    done();
  });
  app.addHook('onSend', async (req, reply) => {
    reply.header('x-openstack-request-id', req.id);
    reply.header('vary', 'X-Auth-Token');
    const t = started.get(req);
    const now = performance.now();
    if (t) reply.header('server-timing', t.header(now));
    // By route pattern, never the URL (a token never reaches a label: tokens travel in headers).
    // Not an answer a fault took the place of (a malformed body): the fault is counted instead.
    if (!answeredByTransport(reply.raw)) counter?.count(req.method, reply.statusCode, req.routeOptions.url, t && (now - t.start) / 1000);
  });
  app.setErrorHandler((err: FastifyError, req, reply) => {
    const e = toServiceError(err);
    // A 503 is load shedding (too many password checks waiting): expected under a flood, so a
    // warning without a stack, not an error per refused request.
    if (e.status === 503) req.log.warn({ code: e.code, requestId: req.id }, 'identity request shed');
    else if (e.status >= 500) req.log.error({ err, detail: e.detail, requestId: req.id }, 'identity request failed');
    return render(reply, e);
  });
  app.setNotFoundHandler((req, reply) => render(reply, errors.notFound('The resource could not be found.')));

  app.get('/', async (_req, reply) => {
    const base = deps.baseUrl();
    return reply.status(300).header('location', `${base}/v3/`).send({ versions: { values: [v3Version(base)] } });
  });
  for (const path of ['/v3', '/v3/']) app.get(path, async () => ({ version: v3Version(deps.baseUrl()) }));

  const withCatalog = (req: FastifyRequest) => !Object.hasOwn((req.query ?? {}) as object, 'nocatalog');

  app.post('/v3/auth/tokens', async (req, reply) => {
    const { token, body } = await identity.authenticate(req.body, { catalog: withCatalog(req), client: req.ip });
    return reply.status(201).header('x-subject-token', token).send(body);
  });

  /** The caller (X-Auth-Token) may act on the subject token: Keystone 22's identity:validate_token / revoke_token. */
  const authorizeSubject = async (req: FastifyRequest, action: string): Promise<string> => {
    const caller = await identity.lookup(header(req, 'x-auth-token'));
    if (!caller) throw errors.unauthorized();
    const subject = header(req, 'x-subject-token');
    const target = await identity.lookup(subject);
    if (!target) throw errors.notFound('Could not find token.');
    const privileged = caller.roles.some((r) => r === 'service' || r === 'admin');
    if (!privileged && caller.userId !== target.userId) throw errors.forbidden(action);
    return subject!;
  };

  app.get('/v3/auth/tokens', async (req, reply) => {
    const subject = await authorizeSubject(req, 'identity:validate_token');
    const body = await identity.validate(subject, { catalog: withCatalog(req) });
    return reply.header('x-subject-token', subject).send(body);
  });

  app.delete('/v3/auth/tokens', async (req, reply) => {
    const subject = await authorizeSubject(req, 'identity:revoke_token');
    await identity.revoke(subject);
    return reply.status(204).send();
  });

  /**
   * Keystone's project reads, enough for clients that resolve a project name (`openstack volume
   * list --project NAME`): `GET /v3/projects[?name=|?id=]` for admins and services
   * (identity:list_projects), `GET /v3/projects/{id}` for them or a token of that project
   * (identity:get_project). A project is known when a user has a role in it; its name is its id.
   */
  const projectView = (id: string) => ({
    id,
    name: id,
    domain_id: 'default',
    description: '',
    enabled: true,
    is_domain: false,
    parent_id: 'default',
    tags: [],
    options: {},
    links: { self: `${deps.baseUrl()}/v3/projects/${encodeURIComponent(id)}` },
  });
  const caller = async (req: FastifyRequest) => {
    const c = await identity.lookup(header(req, 'x-auth-token'));
    if (!c) throw errors.unauthorized();
    return { ...c, privileged: c.roles.some((r) => r === 'service' || r === 'admin') };
  };
  app.get('/v3/projects', async (req) => {
    const c = await caller(req);
    if (!c.privileged) throw errors.forbidden('identity:list_projects');
    const q = (req.query ?? {}) as Record<string, unknown>;
    const wanted = [q.name, q.id].filter((v): v is string => typeof v === 'string');
    const ids = (await identity.projectIds()).filter((id) => wanted.every((w) => w === id));
    return { projects: ids.map(projectView), links: { self: `${deps.baseUrl()}/v3/projects`, previous: null, next: null } };
  });
  app.get('/v3/projects/:project_id', async (req) => {
    const c = await caller(req);
    const { project_id: id } = req.params as { project_id: string };
    if (!c.privileged && c.projectId !== id) throw errors.forbidden('identity:get_project');
    if (!(await identity.projectIds()).includes(id)) throw errors.notFound(`Could not find project: ${isProjectId(id) ? id : '(invalid id)'}.`);
    return { project: projectView(id) };
  });

  // An empty body with the JSON content type (clients send it on GET and DELETE) is no body;
  // POST then refuses it as it refuses any body that is not an auth request.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, text, done) => {
    try {
      done(null, text === '' ? undefined : (JSON.parse(String(text)) as unknown));
    } catch (err) {
      done(errors.badRequest(`Malformed request body: ${(err as Error).message}.`), undefined);
    }
  });
  return app;
}
