/**
 * Nova's servers (reads), os-volume_attachments and os-instance-actions, under the three URL
 * forms of `computeRoute`, in Nova's shapes at each microversion up to 2.51 (views.ts), and our
 * own os-instance-action-details extension (what Nova's action view has no room for).
 *
 * Projects as Nova: on `/v2.1/…` the project is the token's. By-id reads (a server, its
 * attachments, its instance actions) look the server up by id in any project for admins (Nova's
 * `context_is_admin`) and in the caller's project otherwise (404 for another project's), then
 * check the policy on the server's owner. Lists are of the caller's project; `all_tenants` lists
 * every project's for admins and is a 403 for others (`…:get_all_tenants`). Attach, detach and
 * the lists are paged as Nova pages them (`limit`, `marker`, an absolute `rel: next` link).
 */
import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import type { App, ServerDeps } from '../../server.js';
import { allowed, authorizeOn, caller, inRequest } from '../../server.js';
import { errorResponses } from '../../schemas/common.js';
import { pageOf, pageResult, storePage } from '../../paging.js';
import {
  ActionIdParams,
  ActionListQuery,
  AttachBody,
  InstanceAction,
  InstanceActionDetail,
  Link,
  ServerDetail,
  ServerIdParam,
  ServerListQuery,
  ServerSummary,
  VolumeAttachment,
  VolumeIdParams,
} from '../../schemas/compute.js';
import type { ComputeAPI } from '../../../compute/api.js';
import type { FlavorRecord, ServerRecord } from '../../../db/store.js';
import type { VolumesForCompute } from '../../../rpc/volumeClient.js';
import { errors } from '../../../errors.js';
import { computeRoute, type ComputeScope } from './route.js';
import { nameFilter } from './nameFilter.js';
import { actionDetailView, actionView, actionWithEvents, attachmentView, serverDetail, serverSummary, V2_16, V2_47, V2_51 } from './views.js';

/** What the servers routes need beyond ServerDeps. */
export interface ServersRouteDeps extends ServerDeps {
  compute: ComputeAPI;
  /** The volume service, which attach and detach go through; absent (`serve --no-volume-api`): they answer 501 after the usual checks. */
  volumes?: VolumesForCompute;
  /** The flavor a server was built with, for the 2.47 flavor dict; absent or unknown: `{}` (Nova's answer for a deleted flavor). */
  lookupFlavor?: (id: string) => Promise<FlavorRecord | undefined>;
  /** Nova's host_status of a server's host (2.16, admins); absent: `UP` (serve: this process is the host). */
  hostStatusOf?: (host: string) => Promise<string>;
}

/** The caller's token (authorize has already accepted it), forwarded to the volume service. */
function userToken(req: { headers: Record<string, string | string[] | undefined> }): string {
  const t = req.headers['x-auth-token'];
  return Array.isArray(t) ? (t[0] ?? '') : (t ?? '');
}

/** The last value of a repeated query parameter (webob's MultiDict, which Nova reads). */
function last(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.at(-1) : v;
}

const TRUE = new Set(['1', 't', 'true', 'on', 'y', 'yes']);
const FALSE = new Set(['0', 'f', 'false', 'off', 'n', 'no']);

/** Nova's `is_all_tenants`: absent → false, empty → true, else a strict boolean; InvalidInput (400) otherwise. */
export function isAllTenants(value: string | string[] | undefined): boolean {
  if (value === undefined) return false;
  const v = (last(value) ?? '').toLowerCase();
  if (v === '') return true;
  if (TRUE.has(v)) return true;
  if (FALSE.has(v)) return false;
  throw errors.invalidInput(`Invalid value '${last(value)}' for all_tenants: use true or false.`);
}

/**
 * The servers, os-volume_attachments, os-instance-actions and os-instance-action-details routes
 * (see the module comment).
 */
export function registerServers(app: App, deps: ServersRouteDeps): void {
  const { compute } = deps;
  const tags = ['servers'];

  /** The project a project-less URL acts in: the URL's, else the token's. */
  const projectOf = async (req: FastifyRequest, scope: ComputeScope) => scope.urlProject ?? (await caller(deps, req)).projectId;

  /** Nova's `compute_api.get` then `context.can(action, {project_id: owner})` (see the module comment). */
  const readServer = async (req: FastifyRequest, scope: ComputeScope, serverId: string, action: string): Promise<ServerRecord> => {
    const project = await projectOf(req, scope);
    const anyProject = await allowed(deps, req, 'context_is_admin', {});
    const server = await inRequest(req, () => compute.findServer(serverId, project, anyProject));
    await authorizeOn(deps, req, action, { project_id: server.projectId });
    return server;
  };

  /** The view context of `server` for this caller and version (admin-only keys, the 2.47 flavor). */
  const viewContext = async (req: FastifyRequest, scope: ComputeScope, server: ServerRecord, flavors: Map<string, Promise<FlavorRecord | undefined>>) => {
    const target = { project_id: server.projectId };
    let flavor: FlavorRecord | undefined;
    if (req.apiVersion.atLeast(V2_47) && server.flavorRef && deps.lookupFlavor) {
      const flavorRef = server.flavorRef;
      let f = flavors.get(flavorRef);
      if (!f) flavors.set(flavorRef, (f = inRequest(req, () => deps.lookupFlavor!(flavorRef))));
      flavor = await f;
    }
    const hostStatus = await allowed(deps, req, 'os_compute_api:servers:show:host_status', target);
    return {
      version: req.apiVersion,
      scope,
      extendedAttributes: await allowed(deps, req, 'os_compute_api:os-extended-server-attributes', target),
      hostStatus,
      hostState: hostStatus && req.apiVersion.atLeast(V2_16) && deps.hostStatusOf ? await inRequest(req, () => deps.hostStatusOf!(server.host)) : undefined,
      flavor,
    };
  };

  const list = async (req: FastifyRequest & { query: ServerListQuery }, scope: ComputeScope, detail: boolean) => {
    const auth = await caller(deps, req);
    const project = scope.urlProject ?? auth.projectId;
    const kind = detail ? 'detail' : 'index';
    await authorizeOn(deps, req, `os_compute_api:servers:${kind}`, { project_id: project });
    const allTenants = isAllTenants(req.query.all_tenants);
    if (allTenants) await authorizeOn(deps, req, `os_compute_api:servers:${kind}:get_all_tenants`, { project_id: project });
    const name = last(req.query.name);
    const match = name === undefined || name === '' ? undefined : nameFilter(name);
    const page = pageOf(req.query);
    const filter = { projectId: allTenants ? (last(req.query.project_id) ?? last(req.query.tenant_id)) : project, matches: match && ((s: ServerRecord) => match(s.name)) };
    const rows = await inRequest(req, () => compute.listServers(filter, storePage(page)));
    return pageResult(rows, page, (s) => s.id, req.url, { origin: scope.base, keepQuery: true });
  };

  const listSummary = 'A page of the project’s servers (every project’s with all_tenants, admins) by name, then id; `marker` is a server id';
  computeRoute(app, {
    method: 'GET',
    path: '/servers',
    params: {},
    querystring: ServerListQuery,
    schema: {
      tags,
      summary: listSummary,
      response: { 200: Type.Object({ servers: Type.Array(ServerSummary), servers_links: Type.Optional(Type.Array(Link)) }), ...errorResponses(400, 401, 403) },
    },
    handler: async (req, _reply, scope) => {
      const { items, next } = await list(req, scope, false);
      return { servers: items.map((s) => serverSummary(s, scope)), ...(next ? { servers_links: next } : {}) };
    },
  });

  computeRoute(app, {
    method: 'GET',
    path: '/servers/detail',
    params: {},
    querystring: ServerListQuery,
    schema: {
      tags,
      summary: listSummary,
      response: { 200: Type.Object({ servers: Type.Array(ServerDetail), servers_links: Type.Optional(Type.Array(Link)) }), ...errorResponses(400, 401, 403) },
    },
    handler: async (req, _reply, scope) => {
      const { items, next } = await list(req, scope, true);
      const flavors = new Map<string, Promise<FlavorRecord | undefined>>();
      const servers = await Promise.all(items.map(async (s) => serverDetail(s, await viewContext(req, scope, s, flavors))));
      return { servers, ...(next ? { servers_links: next } : {}) };
    },
  });

  computeRoute(app, {
    method: 'GET',
    path: '/servers/:server_id',
    params: ServerIdParam,
    schema: { tags, response: { 200: Type.Object({ server: ServerDetail }), ...errorResponses(401, 403, 404) } },
    handler: async (req, _reply, scope) => {
      const server = await readServer(req, scope, req.params.server_id, 'os_compute_api:servers:show');
      return { server: serverDetail(server, await viewContext(req, scope, server, new Map())) };
    },
  });

  const attachTags = ['os-volume_attachments'];
  computeRoute(app, {
    method: 'GET',
    path: '/servers/:server_id/os-volume_attachments',
    params: ServerIdParam,
    schema: { tags: attachTags, response: { 200: Type.Object({ volumeAttachments: Type.Array(VolumeAttachment) }), ...errorResponses(401, 403, 404) } },
    handler: async (req, _reply, scope) => {
      const server = await readServer(req, scope, req.params.server_id, 'os_compute_api:os-volumes-attachments:index');
      return { volumeAttachments: server.attachments.map(attachmentView) };
    },
  });

  computeRoute(app, {
    method: 'GET',
    path: '/servers/:server_id/os-volume_attachments/:volume_id',
    params: VolumeIdParams,
    schema: { tags: attachTags, response: { 200: Type.Object({ volumeAttachment: VolumeAttachment }), ...errorResponses(401, 403, 404) } },
    handler: async (req, _reply, scope) => {
      const server = await readServer(req, scope, req.params.server_id, 'os_compute_api:os-volumes-attachments:show');
      return { volumeAttachment: attachmentView(compute.attachment(server, req.params.volume_id)) };
    },
  });

  const volumes = deps.volumes;
  const volumeService = (action: 'attach' | 'detach'): VolumesForCompute => {
    if (!volumes) throw errors.volumeServiceNotConfigured(action);
    return volumes;
  };
  // As Nova calls Cinder: the volume service is called with the user's own token, so its policy
  // (volume:attach, volume:detach) and project checks apply to the user too. Changes stay within
  // the project of the URL (the token's on /v2.1/…): no cross-project attach.
  computeRoute(app, {
    method: 'POST',
    path: '/servers/:server_id/os-volume_attachments',
    params: ServerIdParam,
    body: AttachBody,
    schema: { tags: attachTags, response: { 200: Type.Object({ volumeAttachment: VolumeAttachment }), ...errorResponses(400, 401, 403, 404, 409, 500, 501) } },
    handler: async (req, _reply, scope) => {
      const project = await projectOf(req, scope);
      const ctx = await authorizeOn(deps, req, 'os_compute_api:os-volumes-attachments:create', { project_id: project });
      const server = await inRequest(req, () => compute.getServer(project, req.params.server_id));
      const device = req.body.volumeAttachment.device?.replace('/dev/', '') ?? undefined;
      const volumeId = req.body.volumeAttachment.volumeId;
      const service = volumeService('attach');
      // withTask calls the volume service after its own await: re-entered there too.
      const attach = () => inRequest(req, () => service.attach(userToken(req), project, server.id, volumeId, device));
      const att = await inRequest(req, () => compute.withTask(ctx, server, 'attach', attach));
      return { volumeAttachment: attachmentView(att.value) };
    },
  });

  computeRoute(app, {
    method: 'DELETE',
    path: '/servers/:server_id/os-volume_attachments/:volume_id',
    params: VolumeIdParams,
    schema: { tags: attachTags, response: { 202: { type: 'null' }, ...errorResponses(401, 403, 404, 409, 500, 501) } },
    handler: async (req, reply, scope) => {
      const project = await projectOf(req, scope);
      const ctx = await authorizeOn(deps, req, 'os_compute_api:os-volumes-attachments:delete', { project_id: project });
      const server = await inRequest(req, () => compute.getServer(project, req.params.server_id));
      const service = volumeService('detach');
      // withTask calls the volume service after its own await: re-entered there too.
      const detach = () => inRequest(req, () => service.detach(userToken(req), project, server.id, req.params.volume_id));
      await inRequest(req, () => compute.withTask(ctx, server, 'detach', detach));
      return reply.status(202).send();
    },
  });

  const actionTags = ['os-instance-actions'];
  computeRoute(app, {
    method: 'GET',
    path: '/servers/:server_id/os-instance-actions',
    params: ServerIdParam,
    querystring: ActionListQuery,
    schema: {
      tags: actionTags,
      summary: 'A page of the server’s instance actions (calls that changed something), newest first; `marker` is a request id',
      response: { 200: Type.Object({ instanceActions: Type.Array(InstanceAction), links: Type.Optional(Type.Array(Link)) }), ...errorResponses(400, 401, 403, 404) },
    },
    handler: async (req, _reply, scope) => {
      const server = await readServer(req, scope, req.params.server_id, 'os_compute_api:os-instance-actions:list');
      const page = pageOf(req.query);
      const actions = await inRequest(req, () => compute.actionsOf(server, storePage(page)));
      const { items, next } = pageResult(actions, page, (a) => a.requestId, req.url, { origin: scope.base, keepQuery: true });
      return { instanceActions: items.map(actionView), ...(next ? { links: next } : {}) };
    },
  });

  computeRoute(app, {
    method: 'GET',
    path: '/servers/:server_id/os-instance-actions/:request_id',
    params: ActionIdParams,
    schema: { tags: actionTags, response: { 200: Type.Object({ instanceAction: InstanceAction }), ...errorResponses(401, 403, 404) } },
    handler: async (req, _reply, scope) => {
      const server = await readServer(req, scope, req.params.server_id, 'os_compute_api:os-instance-actions:show');
      const action = await inRequest(req, () => compute.actionOf(server, req.params.request_id));
      // Nova: events and tracebacks for callers passing `…:events` (admins); events for everyone from 2.51.
      const admin = await allowed(deps, req, 'os_compute_api:os-instance-actions:events', { project_id: server.projectId });
      return { instanceAction: actionWithEvents(action, { events: admin || req.apiVersion.atLeast(V2_51), traceback: admin }) };
    },
  });

  const detailTags = ['os-instance-action-details'];
  computeRoute(app, {
    method: 'GET',
    path: '/servers/:server_id/os-instance-action-details',
    params: ServerIdParam,
    querystring: ActionListQuery,
    schema: {
      tags: detailTags,
      summary:
        'Our extension: a page of the server’s instance actions with what Nova’s view leaves out (event, finish time, result, error message, details), newest first; `marker` is a request id',
      response: { 200: Type.Object({ instanceActionDetails: Type.Array(InstanceActionDetail), links: Type.Optional(Type.Array(Link)) }), ...errorResponses(400, 401, 403, 404) },
    },
    handler: async (req, _reply, scope) => {
      const server = await readServer(req, scope, req.params.server_id, 'os_compute_api:os-instance-action-details:list');
      const page = pageOf(req.query);
      const actions = await inRequest(req, () => compute.actionsOf(server, storePage(page)));
      const { items, next } = pageResult(actions, page, (a) => a.requestId, req.url, { origin: scope.base, keepQuery: true });
      return { instanceActionDetails: items.map(actionDetailView), ...(next ? { links: next } : {}) };
    },
  });

  computeRoute(app, {
    method: 'GET',
    path: '/servers/:server_id/os-instance-action-details/:request_id',
    params: ActionIdParams,
    schema: {
      tags: detailTags,
      summary: 'Our extension: one instance action with its event, finish time, result, error message and details',
      response: { 200: Type.Object({ instanceActionDetail: InstanceActionDetail }), ...errorResponses(401, 403, 404) },
    },
    handler: async (req, _reply, scope) => {
      const server = await readServer(req, scope, req.params.server_id, 'os_compute_api:os-instance-action-details:show');
      return { instanceActionDetail: actionDetailView(await inRequest(req, () => compute.actionOf(server, req.params.request_id))) };
    },
  });
}
