/**
 * Where every compute route is served, registered once: Nova's three URL forms.
 *
 * - `/v2.1/…`: no project in the URL, the project is the token's (Nova since 2.18 allows it, and
 *   clients that read the catalog's `/v2.1` endpoint send it so).
 * - `/v2.1/{project_id}/…`: the project in the URL, which must be the token's (server.ts checks
 *   it in its onRequest hook, as Nova does).
 * - `/v2/{tenant_id}/…`: today's URLs, kept exactly (the spec's os-online_extend_volume URLs and
 *   our volume service's calls use them).
 *
 * `computeRoute` registers one route under the three with the right params schema; its handler
 * gets the URL's scope (the project if the URL had one, and the version prefix for links).
 */
import { Type, type Static, type TObject, type TProperties, type TSchema } from '@sinclair/typebox';
import type { FastifyReply, FastifyRequest, FastifySchema } from 'fastify';
import type { App } from '../../server.js';
import { ProjectId } from '../../schemas/common.js';

/** One of the three URL forms a compute route is served under. */
export interface ComputePrefix {
  /** The path prefix, with the project parameter if any (`/v2.1/:project_id`). */
  prefix: string;
  /** The name of the project parameter, or undefined when the project comes from the token. */
  projectParam: 'project_id' | 'tenant_id' | undefined;
  /** The version path links are built on (`/v2.1` or `/v2`), as Nova's `application_url`. */
  versionPath: '/v2.1' | '/v2';
}

/** The three URL forms, in registration order. */
export const COMPUTE_PREFIXES: readonly ComputePrefix[] = [
  { prefix: '/v2.1', projectParam: undefined, versionPath: '/v2.1' },
  { prefix: '/v2.1/:project_id', projectParam: 'project_id', versionPath: '/v2.1' },
  { prefix: '/v2/:tenant_id', projectParam: 'tenant_id', versionPath: '/v2' },
];

/** What a handler learns of the URL it was called on. */
export interface ComputeScope {
  /** The project in the URL (already checked against the token's), or undefined on `/v2.1/…`. */
  urlProject: string | undefined;
  /** `/v2.1` or `/v2`: the version path of the URL, for `self` links. */
  versionPath: '/v2.1' | '/v2';
  /** `http://host:port` from the request's Host (the address it reached without one): links are absolute, as Nova's. */
  base: string;
}

/** A compute request as a handler sees it: `params` (the route's own, without the project), `body` and `query` typed by the schemas given. */
export type ComputeRequest<P, B, Q> = FastifyRequest & { params: P; body: B; query: Q };

type StaticOr<T, D> = T extends TSchema ? Static<T> : D;

/** One compute route, as `computeRoute` takes it. */
export interface ComputeRouteDef<P extends TProperties, B extends TSchema | undefined, Q extends TSchema | undefined> {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** The path below the project, e.g. `/servers/:server_id/os-volume_attachments`. */
  path: string;
  /** The route's own path parameters (the project parameter is added per prefix). */
  params: P;
  body?: B;
  querystring?: Q;
  /** The rest of the schema: tags, summary, response, hide, … */
  schema?: Omit<FastifySchema, 'params' | 'body' | 'querystring'> & Record<string, unknown>;
  handler: (req: ComputeRequest<Static<TObject<P>>, StaticOr<B, undefined>, StaticOr<Q, Record<string, never>>>, reply: FastifyReply, scope: ComputeScope) => Promise<unknown>;
}

/**
 * `http://host:port`, from the request's Host as Nova builds links (no configured public URL).
 * An HTTP/1.0 request without Host gets the address it reached.
 */
export function baseUrl(req: FastifyRequest): string {
  const host = req.headers.host ?? `${req.socket.localAddress}:${req.socket.localPort}`;
  return `http://${host}`;
}

/**
 * Registers `def` under `/v2.1`, `/v2.1/:project_id` and `/v2/:tenant_id` (COMPUTE_PREFIXES),
 * each with its params schema (`project_id`/`tenant_id` a ProjectId, plus `def.params`).
 * The handler receives the route's own params and the URL's ComputeScope.
 */
export function computeRoute<P extends TProperties, B extends TSchema | undefined = undefined, Q extends TSchema | undefined = undefined>(
  app: App,
  def: ComputeRouteDef<P, B, Q>,
): void {
  for (const p of COMPUTE_PREFIXES) {
    const params = Type.Object({ ...(p.projectParam ? { [p.projectParam]: ProjectId } : {}), ...def.params });
    const schema: FastifySchema = {
      ...def.schema,
      params,
      ...(def.body ? { body: def.body } : {}),
      ...(def.querystring ? { querystring: def.querystring } : {}),
    };
    const projectParam = p.projectParam;
    app.route({
      method: def.method,
      url: `${p.prefix}${def.path}`,
      schema,
      handler: (req: FastifyRequest, reply: FastifyReply) => {
        const all = req.params as Record<string, string>;
        const scope: ComputeScope = { urlProject: projectParam ? all[projectParam] : undefined, versionPath: p.versionPath, base: baseUrl(req) };
        return def.handler(req as never, reply, scope);
      },
    });
  }
}
