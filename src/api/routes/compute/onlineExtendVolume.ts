/** The spec's os-online_extend_volume extension: rescan, get_blockdev, assist_extend. */
import type { App, ServerDeps } from '../../server.js';
import { authorize } from '../../server.js';
import { errorResponses } from '../../schemas/common.js';
import { AssistExtendBody, RescanBody, ServerParams, VolumeBlockdev, VolumeParams } from '../../schemas/compute.js';
import type { ComputeAPI } from '../../../compute/api.js';

const BASE = '/v2/:tenant_id/servers/:server_id/os-online_extend_volume';
const TAGS = ['os-online_extend_volume'];

/** Registers the three os-online_extend_volume routes (rescan, get_blockdev, assist_extend). */
export function registerOnlineExtendVolume(app: App, deps: ServerDeps & { compute: ComputeAPI }): void {
  const { compute } = deps;

  app.put(
    BASE,
    {
      schema: {
        tags: TAGS,
        summary: 'rescan: make the compute host see the volume’s new size (runs in the background)',
        params: ServerParams,
        body: RescanBody,
        response: { 202: { type: 'null' }, ...errorResponses(400, 401, 403, 404, 409, 501) },
      },
    },
    async (req, reply) => {
      const { tenant_id, server_id } = req.params;
      const ctx = await authorize(deps, req, 'os_compute_api:os-online-extend-volume:rescan', { project_id: tenant_id });
      const server = await compute.getServer(tenant_id, server_id);
      await compute.rescan(ctx, server, req.body.onlineExtendVolume.volume_id);
      return reply.status(202).send();
    },
  );

  app.get(
    `${BASE}/:volume_id`,
    {
      schema: {
        tags: TAGS,
        summary: 'get_blockdev: the size in bytes the compute host sees for the volume, measured now',
        params: VolumeParams,
        response: { 200: VolumeBlockdev, ...errorResponses(401, 403, 404, 500, 501) },
      },
    },
    async (req) => {
      const { tenant_id, server_id, volume_id } = req.params;
      const ctx = await authorize(deps, req, 'os_compute_api:os-online-extend-volume:get_blockdev', { project_id: tenant_id });
      const server = await compute.getServer(tenant_id, server_id);
      const bytes = await compute.getBlockdev(ctx, server, volume_id);
      return { volume_blockdev: { id: volume_id, bytes } };
    },
  );

  app.post(
    `${BASE}/:volume_id`,
    {
      schema: {
        tags: TAGS,
        summary: 'assist_extend: grow the guest’s view of the volume; answers once the guest sees it, with the measured size',
        params: VolumeParams,
        body: AssistExtendBody,
        response: { 200: VolumeBlockdev, ...errorResponses(400, 401, 403, 404, 409, 500, 501) },
      },
    },
    async (req) => {
      const { tenant_id, server_id, volume_id } = req.params;
      const ctx = await authorize(deps, req, 'os_compute_api:os-online-extend-volume:assist_extend', { project_id: tenant_id });
      const server = await compute.getServer(tenant_id, server_id);
      const bytes = await compute.assistExtend(ctx, server, volume_id, req.body.onlineExtendVolume.bytes);
      return { volume_blockdev: { id: volume_id, bytes } };
    },
  );
}
