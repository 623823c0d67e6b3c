/**
 * The Fastify instance every API of ours is built on: Nova's request ids and error bodies,
 * strict JSON validation (no coercion, no silently dropped fields), token authentication and
 * an OpenAPI document generated from the route schemas.
 */
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import { newRequestId } from './requestId.js';
import { errors, faultBody, isServiceError, unexpectedError, type ServiceError } from '../errors.js';
import type { AuthContext, TokenAuthenticator } from '../auth/tokens.js';
import type { PolicyEnforcer, PolicyTarget } from '../auth/policy.js';
import type { RequestContext } from '../context.js';

declare module 'fastify' {
  interface FastifyRequest {
    auth?: AuthContext;
  }
}

export const BODY_LIMIT = 64 * 1024;

export interface ServerDeps {
  logger: Logger;
  auth: TokenAuthenticator;
  policy: PolicyEnforcer;
  title: string;
}

export type App = FastifyInstance<
  import('node:http').Server,
  import('node:http').IncomingMessage,
  import('node:http').ServerResponse,
  Logger,
  TypeBoxTypeProvider
>;

interface AjvError {
  keyword: string;
  instancePath: string;
  message?: string;
  params: Record<string, unknown>;
}

/** Validation messages that name the field and say what is wrong with it. */
function formatSchemaErrors(errs: AjvError[], dataVar: string): Error {
  const e = errs[0]!;
  const field = `${dataVar}${e.instancePath}`.replace(/\//g, '.');
  let what = e.message ?? 'is invalid';
  if (e.keyword === 'additionalProperties') {
    what = `Additional properties are not allowed ('${String(e.params.additionalProperty)}' was unexpected)`;
  } else if (e.keyword === 'required') {
    what = `'${String(e.params.missingProperty)}' is a required property`;
  } else if (e.keyword === 'multipleOf') {
    what = `must be a multiple of ${String(e.params.multipleOf)}`;
  }
  return new Error(`Invalid input for field/attribute ${field}: ${what}`);
}

export function renderError(reply: FastifyReply, err: ServiceError): FastifyReply {
  return reply.status(err.status).send(faultBody(err));
}

/** Maps Fastify's own errors (parsing, content type, body size, validation) into the catalogue. */
function toServiceError(err: FastifyError): ServiceError {
  if (isServiceError(err)) return err;
  if (err.validation) return errors.invalidInput(err.message);
  switch (err.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return errors.badRequest('Unsupported Content-Type: send the request body as application/json.');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return errors.badRequest('The request body is empty; a JSON object is required.');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return errors.payloadTooLarge(BODY_LIMIT);
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return errors.badRequest('Content-Length does not match the request body.');
  }
  if (err instanceof SyntaxError || err.statusCode === 400) return errors.badRequest(`Malformed request body: ${err.message}`);
  return unexpectedError(err);
}

export async function createServer(deps: ServerDeps): Promise<App> {
  const app = Fastify({
    loggerInstance: deps.logger,
    // Requests are audited as instance actions; per-request logs would only slow the hot path.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'requestId' }),
    bodyLimit: BODY_LIMIT,
    // Long ids reach the schema and get its clear 400 rather than a bare 414.
    routerOptions: { maxParamLength: 1024 },
    genReqId: () => newRequestId(),
    // No child logger per request: our log lines carry the request id as a field where it matters.
    childLoggerFactory: (logger) => logger,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false } },
    schemaErrorFormatter: formatSchemaErrors as never,
    return503OnClosing: true,
  }).withTypeProvider<TypeBoxTypeProvider>() as unknown as App;

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

  app.addHook('onRequest', (req, reply, done) => {
    reply.header('x-openstack-request-id', req.id);
    done();
  });

  app.setErrorHandler((err: FastifyError, req, reply) => {
    const svc = toServiceError(err);
    if (svc.status >= 500) req.log.error({ err, code: svc.code, final: svc.final, detail: svc.detail, requestId: req.id }, 'request failed');
    return renderError(reply, svc);
  });

  app.setNotFoundHandler((req, reply) => renderError(reply, errors.notFound(`No route for ${req.method} ${req.url.split('?')[0]}.`)));

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  return app;
}

/** Authenticates the request (X-Auth-Token) and checks `action` against the policy. */
export async function authorize(deps: Pick<ServerDeps, 'auth' | 'policy'>, req: FastifyRequest, action: string, target: PolicyTarget): Promise<RequestContext> {
  const header = req.headers['x-auth-token'];
  const auth = req.auth ?? (await deps.auth.authenticate(Array.isArray(header) ? header[0] : header));
  req.auth = auth;
  if (!deps.policy.allows(action, auth, target)) throw errors.forbidden(action);
  return { requestId: req.id, userId: auth.userId, projectId: auth.projectId, roles: auth.roles };
}
