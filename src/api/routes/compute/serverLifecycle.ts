/**
 * Nova's POST /servers and DELETE /servers/{id} (compute/servers.ts does the work), under every
 * compute prefix: `/v2.1/…` (the project from the token), `/v2.1/{project_id}/…` and
 * `/v2/{tenant_id}/…`.
 *
 * The request: `{"server": {name, imageRef, flavorRef, metadata?, …}}`. imageRef and flavorRef
 * are ids or their links (Nova takes the last path segment of an href). Nova's other create keys
 * are accepted and ignored, with the values clients send: `networks` ("auto", "none" or a list:
 * servers get no network here), `security_groups`, `key_name`, `availability_zone`, `user_data`,
 * `config_drive`, `accessIPv4/6`, `adminPass`, `OS-DCF:diskConfig`, `description`, `tags`,
 * `return_reservation_id`, `min_count`/`max_count` (1 only), and the scheduler hints beside
 * `server`; any other key is refused (400), as is a boot from volume (`block_device_mapping*`).
 */
import { Type, type Static, type TProperties } from '@sinclair/typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { App, ServerDeps } from '../../server.js';
import { authorize, inRequest } from '../../server.js';
import { errorResponses, PathId, ProjectId } from '../../schemas/common.js';
import { Link } from '../../schemas/compute.js';
import type { ComputeAPI } from '../../../compute/api.js';
import type { ServerLifecycle } from '../../../compute/servers.js';
import { errors } from '../../../errors.js';

/** The three compute prefixes (see the module comment); `:tenant_id` / `:project_id` are checked against the token by server.ts. */
export const COMPUTE_PREFIXES = ['/v2.1', '/v2.1/:project_id', '/v2/:tenant_id'] as const;

/** The URL parameters a compute prefix has (its project, if any), as schema properties. */
export function prefixParams(prefix: (typeof COMPUTE_PREFIXES)[number]): TProperties {
  if (prefix.includes(':project_id')) return { project_id: ProjectId };
  if (prefix.includes(':tenant_id')) return { tenant_id: ProjectId };
  return {};
}

const Ref = Type.Union([Type.String({ minLength: 1, maxLength: 1024 }), Type.Integer({ minimum: 0 })]);
const Anything = Type.Unknown();

/** Nova's server create body at 2.1 (see the module comment for the keys taken and ignored). */
export const CreateServerBody = Type.Object(
  {
    server: Type.Object(
      {
        name: Type.String({ minLength: 1, maxLength: 255, pattern: '\\S' }),
        imageRef: Ref,
        flavorRef: Ref,
        metadata: Type.Optional(Type.Record(Type.String({ minLength: 1, maxLength: 255 }), Type.String({ maxLength: 255 }), { maxProperties: 128 })),
        networks: Type.Optional(Type.Union([Type.Literal('auto'), Type.Literal('none'), Type.Array(Type.Object({}, { additionalProperties: true }))])),
        security_groups: Type.Optional(Type.Array(Type.Object({ name: Type.String() }, { additionalProperties: true }))),
        key_name: Type.Optional(Type.Union([Type.String(), Type.Null()])),
        availability_zone: Type.Optional(Type.String()),
        user_data: Type.Optional(Type.Union([Type.String(), Type.Null()])),
        config_drive: Type.Optional(Anything),
        accessIPv4: Type.Optional(Type.String()),
        accessIPv6: Type.Optional(Type.String()),
        adminPass: Type.Optional(Type.String()),
        'OS-DCF:diskConfig': Type.Optional(Type.Union([Type.Literal('AUTO'), Type.Literal('MANUAL')])),
        description: Type.Optional(Type.Union([Type.String({ maxLength: 255 }), Type.Null()])),
        tags: Type.Optional(Type.Array(Type.String())),
        return_reservation_id: Type.Optional(Type.Boolean()),
        min_count: Type.Optional(Type.Union([Type.Literal(1), Type.Literal('1')])),
        max_count: Type.Optional(Type.Union([Type.Literal(1), Type.Literal('1')])),
      },
      { additionalProperties: false },
    ),
    'os:scheduler_hints': Type.Optional(Type.Object({}, { additionalProperties: true })),
    'OS-SCH-HNT:scheduler_hints': Type.Optional(Type.Object({}, { additionalProperties: true })),
  },
  { additionalProperties: false },
);
/** The create body as the handler sees it (see CreateServerBody). */
export type CreateServerBody = Static<typeof CreateServerBody>;

/** Nova's create answer at 2.1 (tempest's `create_server_with_admin_pass`). */
const CreatedServerView = Type.Object({
  server: Type.Object({
    id: Type.String(),
    links: Type.Array(Link),
    'OS-DCF:diskConfig': Type.String(),
    security_groups: Type.Array(Type.Object({ name: Type.String() })),
    adminPass: Type.String(),
  }),
});

/** The id in a reference: itself, or the last path segment of its link (as Nova reads an href). */
export function refId(ref: string | number): string {
  const s = String(ref).trim();
  if (!/^https?:\/\//i.test(s)) return s;
  const path = new URL(s).pathname.replace(/\/+$/, '');
  return decodeURIComponent(path.slice(path.lastIndexOf('/') + 1));
}

/** The caller's token (authorize has already accepted it), forwarded to the volume service on delete. */
function userToken(req: FastifyRequest): string {
  const t = req.headers['x-auth-token'];
  return Array.isArray(t) ? (t[0] ?? '') : (t ?? '');
}

/** The project of the request: the URL's, else (`/v2.1/…`) the token's. */
async function tenantOf(deps: Pick<ServerDeps, 'auth'>, req: FastifyRequest): Promise<string> {
  const p = req.params as { tenant_id?: string; project_id?: string };
  const fromUrl = p.tenant_id ?? p.project_id;
  if (fromUrl !== undefined) return fromUrl;
  const header = req.headers['x-auth-token'];
  req.auth ??= await deps.auth.authenticate(Array.isArray(header) ? header[0] : header);
  return req.auth.projectId;
}

/** Nova's links of a server: `self` under the request's version prefix, `bookmark` without it; the project only if the URL had one. */
export function serverLinks(req: FastifyRequest, serverId: string): Array<{ rel: string; href: string }> {
  const host = req.headers.host ?? `${req.socket.localAddress}:${req.socket.localPort}`;
  const p = req.params as { tenant_id?: string; project_id?: string };
  const project = p.tenant_id ?? p.project_id;
  const version = req.url.startsWith('/v2/') ? 'v2' : 'v2.1';
  const tail = `${project === undefined ? '' : `${encodeURIComponent(project)}/`}servers/${encodeURIComponent(serverId)}`;
  return [
    { rel: 'self', href: `http://${host}/${version}/${tail}` },
    { rel: 'bookmark', href: `http://${host}/${tail}` },
  ];
}

/** Registers POST /servers and DELETE /servers/{server_id} under every compute prefix. */
export function registerServerLifecycle(app: App, deps: ServerDeps & { compute: ComputeAPI; servers: ServerLifecycle }): void {
  const { compute, servers } = deps;
  const tags = ['servers'];
  for (const prefix of COMPUTE_PREFIXES) {
    const params = prefixParams(prefix);

    app.post(
      `${prefix}/servers`,
      {
        schema: {
          tags,
          summary: 'Create a server from an image and a flavor (202; it builds in the background: BUILD, then ACTIVE or ERROR)',
          params: Type.Object(params),
          body: CreateServerBody,
          response: { 202: CreatedServerView, ...errorResponses(400, 401, 403, 501) },
        },
      },
      async (req: FastifyRequest<{ Body: CreateServerBody }>, reply: FastifyReply) => {
        const tenant = await tenantOf(deps, req);
        const ctx = await authorize(deps, req, 'os_compute_api:servers:create', { project_id: tenant });
        const s = req.body.server;
        const created = await inRequest(req, () => servers.create(ctx, { name: s.name, imageRef: refId(s.imageRef), flavorRef: refId(s.flavorRef), metadata: s.metadata ?? {} }));
        const links = serverLinks(req, created.server.id);
        // Nova's create adds the server's self link as Location (servers.py _add_location).
        reply.header('location', links[0]!.href);
        return reply.status(202).send({
          server: {
            id: created.server.id,
            links,
            'OS-DCF:diskConfig': 'MANUAL',
            security_groups: [{ name: 'default' }],
            adminPass: created.adminPass,
          },
        });
      },
    );

    app.delete(
      `${prefix}/servers/:server_id`,
      {
        schema: {
          tags,
          summary: 'Delete a server (204; its volumes are detached first, then it goes: GET answers 404). 409 while a volume of it is attaching, detaching or extending',
          params: Type.Object({ ...params, server_id: PathId }),
          response: { 204: { type: 'null' }, ...errorResponses(401, 403, 404, 409, 503) },
        },
      },
      async (req: FastifyRequest<{ Params: { server_id: string } }>, reply: FastifyReply) => {
        const tenant = await tenantOf(deps, req);
        // The URL's project first (server.ts checks it against the token), then the owner's rule.
        const server = await inRequest(req, () => compute.getServer(tenant, req.params.server_id));
        const ctx = await authorize(deps, req, 'os_compute_api:servers:delete', { project_id: server.projectId, ...(server.userId ? { user_id: server.userId } : {}) });
        if (ctx.projectId !== server.projectId && !ctx.roles.some((r) => r.toLowerCase() === 'admin')) throw errors.instanceNotFound(server.id);
        await inRequest(req, () => servers.delete(ctx, server, userToken(req)));
        return reply.status(204).send();
      },
    );
  }
}
