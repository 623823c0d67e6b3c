/**
 * The spec's os-online_extend_volume extension: rescan, get_blockdev, assist_extend. Served under
 * the three URL forms of `computeRoute` (the spec's `/v2/{tenant_id}/…` URLs unchanged); the
 * server must be in the URL's project (the token's on `/v2.1/…`), whose id the policy checks.
 */
import type { FastifyRequest } from 'fastify';
import type { App, ServerDeps } from '../../server.js';
import { caller, contextOn, inRequest } from '../../server.js';
import { errorResponses } from '../../schemas/common.js';
import { AssistExtendBody, RescanBody, ServerIdParam, VolumeBlockdev, VolumeIdParams } from '../../schemas/compute.js';
import type { ComputeAPI } from '../../../compute/api.js';
import { computeRoute, type ComputeScope } from './route.js';

const PATH = '/servers/:server_id/os-online_extend_volume';
const TAGS = ['os-online_extend_volume'];

/** Registers the three os-online_extend_volume routes (rescan, get_blockdev, assist_extend). */
export function registerOnlineExtendVolume(app: App, deps: ServerDeps & { compute: ComputeAPI }): void {
  const { compute } = deps;

  /** The caller's context for `action` in the URL's project, and the server, which must be in it. */
  const target = async (req: FastifyRequest, scope: ComputeScope, action: string, serverId: string) => {
    // The caller is known already on the hot path (the onRequest hook authenticated it): no promise for it.
    const auth = req.auth ?? (await caller(deps, req));
    const project = scope.urlProject ?? auth.projectId;
    const ctx = contextOn(deps, req, auth, action, { project_id: project });
    // After `caller`'s await when the caller was not known yet: the lookup re-enters the request.
    return { ctx, server: await inRequest(req, () => compute.getServer(project, serverId)) };
  };

  computeRoute(app, {
    method: 'PUT',
    path: PATH,
    params: ServerIdParam,
    body: RescanBody,
    schema: {
      tags: TAGS,
      summary: 'rescan: make the compute host see the volume’s new size (runs in the background)',
      response: { 202: { type: 'null' }, ...errorResponses(400, 401, 403, 404, 409, 501) },
    },
    handler: async (req, reply, scope) => {
      const { ctx, server } = await target(req, scope, 'os_compute_api:os-online-extend-volume:rescan', req.params.server_id);
      await compute.rescan(ctx, server, req.body.onlineExtendVolume.volume_id);
      return reply.status(202).send();
    },
  });

  computeRoute(app, {
    method: 'GET',
    path: `${PATH}/:volume_id`,
    params: VolumeIdParams,
    schema: {
      tags: TAGS,
      summary: 'get_blockdev: the size in bytes the compute host sees for the volume, measured now',
      response: { 200: VolumeBlockdev, ...errorResponses(401, 403, 404, 500, 501) },
    },
    handler: async (req, _reply, scope) => {
      const { volume_id } = req.params;
      const { ctx, server } = await target(req, scope, 'os_compute_api:os-online-extend-volume:get_blockdev', req.params.server_id);
      const bytes = await compute.getBlockdev(ctx, server, volume_id);
      return { volume_blockdev: { id: volume_id, bytes } };
    },
  });

  computeRoute(app, {
    method: 'POST',
    path: `${PATH}/:volume_id`,
    params: VolumeIdParams,
    body: AssistExtendBody,
    schema: {
      tags: TAGS,
      summary: 'assist_extend: grow the guest’s view of the volume; answers once the guest sees it, with the measured size',
      response: { 200: VolumeBlockdev, ...errorResponses(400, 401, 403, 404, 409, 500, 501) },
    },
    handler: async (req, _reply, scope) => {
      const { volume_id } = req.params;
      const { ctx, server } = await target(req, scope, 'os_compute_api:os-online-extend-volume:assist_extend', req.params.server_id);
      const bytes = await compute.assistExtend(ctx, server, volume_id, req.body.onlineExtendVolume.bytes);
      return { volume_blockdev: { id: volume_id, bytes } };
    },
  });
}
