/**
 * Nova-shaped servers, volume attachments and instance actions. Lists are paged as Nova pages
 * them: `limit` (default and maximum MAX_LIMIT) and `marker`, with a `rel: next` link
 * (`servers_links`, or `links` for instance actions) while more items follow.
 */
import { Type } from '@sinclair/typebox';
import type { App, ServerDeps } from '../../server.js';
import { authorize } from '../../server.js';
import { errorResponses } from '../../schemas/common.js';
import { ListQuery } from '../../schemas/paging.js';
import { pageOf, pageResult, storePage } from '../../paging.js';
import {
  ActionParams,
  AttachBody,
  InstanceAction,
  Link,
  ServerDetail,
  ServerParams,
  ServerSummary,
  TenantParams,
  VolumeAttachment,
  VolumeParams,
} from '../../schemas/compute.js';
import type { ComputeAPI } from '../../../compute/api.js';
import type { InstanceActionRecord, ServerRecord } from '../../../db/store.js';
import type { VolumesForCompute } from '../../../rpc/volumeClient.js';
import type { Connection } from '../../../rpc/shapes.js';
import { errors } from '../../../errors.js';

/** Nova's status names for our vm states. */
const NOVA_STATUS: Record<string, string> = {
  active: 'ACTIVE',
  paused: 'PAUSED',
  shutoff: 'SHUTOFF',
  suspended: 'SUSPENDED',
  crashed: 'ERROR',
  building: 'BUILD',
  migrating: 'MIGRATING',
  error: 'ERROR',
  unknown: 'UNKNOWN',
};

function links(tenantId: string, id: string) {
  return [{ rel: 'self', href: `/v2/${tenantId}/servers/${id}` }];
}

function serverView(s: ServerRecord) {
  return {
    id: s.id,
    name: s.name,
    status: NOVA_STATUS[s.state] ?? 'UNKNOWN',
    tenant_id: s.projectId,
    'OS-EXT-SRV-ATTR:host': s.host,
    'OS-EXT-STS:vm_state': s.state,
    'OS-EXT-STS:task_state': s.taskState,
    updated: s.updatedAt,
    'os-extended-volumes:volumes_attached': s.attachments.map((a) => ({ id: a.volumeId })),
    links: links(s.projectId, s.id),
  };
}

function attachmentView(a: Connection) {
  return { id: a.volumeId, serverId: a.serverId, volumeId: a.volumeId, device: `/dev/${a.device}` };
}

/** The caller's token (authorize has already accepted it), forwarded to the volume service. */
function userToken(req: { headers: Record<string, string | string[] | undefined> }): string {
  const t = req.headers['x-auth-token'];
  return Array.isArray(t) ? (t[0] ?? '') : (t ?? '');
}

function actionView(a: InstanceActionRecord, withEvents: boolean) {
  return {
    action: a.action,
    instance_uuid: a.serverId,
    request_id: a.requestId,
    user_id: a.userId,
    project_id: a.projectId,
    start_time: a.startTime,
    finish_time: a.finishTime,
    message: a.message,
    result: a.result,
    details: a.details,
    ...(withEvents
      ? {
          events: [
            {
              event: a.event,
              start_time: a.startTime,
              finish_time: a.finishTime,
              result: a.result,
              traceback: a.result === 'Error' ? a.message : null,
              details: a.result === 'Error' ? a.message : null,
            },
          ],
        }
      : {}),
  };
}

/**
 * The servers, os-volume_attachments and os-instance-actions routes. `volumes`: the volume
 * service, which attach and detach go through; without it (`serve --no-volume-api`) they answer
 * 501 VolumeServiceNotConfigured after the usual checks, and the attachment list is still served.
 */
export function registerServers(app: App, deps: ServerDeps & { compute: ComputeAPI; volumes?: VolumesForCompute }): void {
  const { compute } = deps;
  const tags = ['servers'];

  const listSummary = 'A page of the tenant’s servers by name, then id; `marker` is a server id';
  app.get(
    '/v2/:tenant_id/servers',
    {
      schema: {
        tags,
        summary: listSummary,
        params: TenantParams,
        querystring: ListQuery,
        response: { 200: Type.Object({ servers: Type.Array(ServerSummary), servers_links: Type.Optional(Type.Array(Link)) }), ...errorResponses(400, 401, 403) },
      },
    },
    async (req) => {
      const { tenant_id } = req.params;
      await authorize(deps, req, 'os_compute_api:servers:index', { project_id: tenant_id });
      const page = pageOf(req.query);
      const { items, next } = pageResult(await compute.listServers(tenant_id, storePage(page)), page, (s) => s.id, req.url);
      return { servers: items.map((s) => ({ id: s.id, name: s.name, links: links(tenant_id, s.id) })), ...(next ? { servers_links: next } : {}) };
    },
  );

  app.get(
    '/v2/:tenant_id/servers/detail',
    {
      schema: {
        tags,
        summary: listSummary,
        params: TenantParams,
        querystring: ListQuery,
        response: { 200: Type.Object({ servers: Type.Array(ServerDetail), servers_links: Type.Optional(Type.Array(Link)) }), ...errorResponses(400, 401, 403) },
      },
    },
    async (req) => {
      const { tenant_id } = req.params;
      await authorize(deps, req, 'os_compute_api:servers:index', { project_id: tenant_id });
      const page = pageOf(req.query);
      const { items, next } = pageResult(await compute.listServers(tenant_id, storePage(page)), page, (s) => s.id, req.url);
      return { servers: items.map(serverView), ...(next ? { servers_links: next } : {}) };
    },
  );

  app.get(
    '/v2/:tenant_id/servers/:server_id',
    { schema: { tags, params: ServerParams, response: { 200: Type.Object({ server: ServerDetail }), ...errorResponses(401, 403, 404) } } },
    async (req) => {
      const { tenant_id, server_id } = req.params;
      await authorize(deps, req, 'os_compute_api:servers:show', { project_id: tenant_id });
      return { server: serverView(await compute.getServer(tenant_id, server_id)) };
    },
  );

  app.get(
    '/v2/:tenant_id/servers/:server_id/os-volume_attachments',
    {
      schema: {
        tags: ['os-volume_attachments'],
        params: ServerParams,
        response: { 200: Type.Object({ volumeAttachments: Type.Array(VolumeAttachment) }), ...errorResponses(401, 403, 404) },
      },
    },
    async (req) => {
      const { tenant_id, server_id } = req.params;
      await authorize(deps, req, 'os_compute_api:os-volumes-attachments:index', { project_id: tenant_id });
      const server = await compute.getServer(tenant_id, server_id);
      return { volumeAttachments: server.attachments.map(attachmentView) };
    },
  );

  const volumes = deps.volumes;
  const volumeService = (action: 'attach' | 'detach'): VolumesForCompute => {
    if (!volumes) throw errors.volumeServiceNotConfigured(action);
    return volumes;
  };
  {
    // As Nova calls Cinder: the volume service is called with the user's own token, so its
    // policy (volume:attach, volume:detach) and project checks apply to the user too.
    app.post(
      '/v2/:tenant_id/servers/:server_id/os-volume_attachments',
      {
        schema: {
          tags: ['os-volume_attachments'],
          params: ServerParams,
          body: AttachBody,
          response: { 200: Type.Object({ volumeAttachment: VolumeAttachment }), ...errorResponses(400, 401, 403, 404, 409, 500, 501) },
        },
      },
      async (req) => {
        const { tenant_id, server_id } = req.params;
        const ctx = await authorize(deps, req, 'os_compute_api:os-volumes-attachments:create', { project_id: tenant_id });
        const server = await compute.getServer(tenant_id, server_id);
        const device = req.body.volumeAttachment.device?.replace('/dev/', '') ?? undefined;
        const volumeId = req.body.volumeAttachment.volumeId;
        const service = volumeService('attach');
        const att = await compute.withTask(ctx, server, 'attach', () => service.attach(userToken(req), tenant_id, server.id, volumeId, device));
        return { volumeAttachment: attachmentView(att.value) };
      },
    );

    app.delete(
      '/v2/:tenant_id/servers/:server_id/os-volume_attachments/:volume_id',
      {
        schema: {
          tags: ['os-volume_attachments'],
          params: VolumeParams,
          response: { 202: { type: 'null' }, ...errorResponses(401, 403, 404, 409, 500, 501) },
        },
      },
      async (req, reply) => {
        const { tenant_id, server_id, volume_id } = req.params;
        const ctx = await authorize(deps, req, 'os_compute_api:os-volumes-attachments:delete', { project_id: tenant_id });
        const server = await compute.getServer(tenant_id, server_id);
        const service = volumeService('detach');
        await compute.withTask(ctx, server, 'detach', () => service.detach(userToken(req), tenant_id, server.id, volume_id));
        return reply.status(202).send();
      },
    );
  }

  app.get(
    '/v2/:tenant_id/servers/:server_id/os-instance-actions',
    {
      schema: {
        tags: ['os-instance-actions'],
        summary: 'A page of the server’s instance actions (calls that changed something), newest first; `marker` is a request id',
        params: ServerParams,
        querystring: ListQuery,
        response: {
          200: Type.Object({ instanceActions: Type.Array(InstanceAction), links: Type.Optional(Type.Array(Link)) }),
          ...errorResponses(400, 401, 403, 404),
        },
      },
    },
    async (req) => {
      const { tenant_id, server_id } = req.params;
      await authorize(deps, req, 'os_compute_api:os-instance-actions:list', { project_id: tenant_id });
      const page = pageOf(req.query);
      const { items, next } = pageResult(await compute.listActions(tenant_id, server_id, storePage(page)), page, (a) => a.requestId, req.url);
      return { instanceActions: items.map((a) => actionView(a, false)), ...(next ? { links: next } : {}) };
    },
  );

  app.get(
    '/v2/:tenant_id/servers/:server_id/os-instance-actions/:request_id',
    {
      schema: {
        tags: ['os-instance-actions'],
        params: ActionParams,
        response: { 200: Type.Object({ instanceAction: InstanceAction }), ...errorResponses(401, 403, 404) },
      },
    },
    async (req) => {
      const { tenant_id, server_id, request_id } = req.params;
      await authorize(deps, req, 'os_compute_api:os-instance-actions:show', { project_id: tenant_id });
      return { instanceAction: actionView(await compute.getAction(tenant_id, server_id, request_id), true) };
    },
  );
}
