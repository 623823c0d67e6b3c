/**
 * Compute's internal routes for the volume service (the RPC boundary's compute side, called by
 * rpc/computeClient.ts): check whether a server can take a volume, plug a volume in as its
 * connection_info says, unplug it, and list what the hypervisor has plugged in now (for the
 * volume reconciler). The service role only (`os_compute_api:os-volume-connections`): a
 * connection names a host path, so only the volume service may hand one to a guest. Hidden
 * from the public OpenAPI document: they are how our two services talk, not Nova's API; users
 * attach through os-volume_attachments. `POST …/{volume_id}/grow_fs` grows the filesystem on an
 * attached volume inside the guest (the extend workflow's grow_fs step).
 */
import type { App, ServerDeps } from '../../server.js';
import { authorize, inRequest } from '../../server.js';
import { errorResponses } from '../../schemas/common.js';
import { ServerParams, VolumeParams } from '../../schemas/compute.js';
import type { ComputeAPI } from '../../../compute/api.js';
import { CheckConnectBody, ConnectBody, ConnectionAnswer, ConnectionsAnswer, GuestFilesystemAnswer } from '../../../rpc/shapes.js';

const BASE = '/v2/:tenant_id/servers/:server_id/os-volume_connections';
const RULE = 'os_compute_api:os-volume-connections';
const COMMON = { tags: ['os-volume_connections'], hide: true };

/** Registers the internal os-volume_connections routes (see the module comment). */
export function registerVolumeConnections(app: App, deps: ServerDeps & { compute: ComputeAPI }): void {
  const { compute } = deps;

  app.post(
    `${BASE}/check`,
    {
      schema: {
        ...COMMON,
        summary: 'Whether the server can take the volume now; refusals as for attach, nothing changes',
        params: ServerParams,
        body: CheckConnectBody,
        response: { 204: { type: 'null' }, ...errorResponses(400, 401, 403, 404, 409, 501) },
      },
    },
    async (req, reply) => {
      const { tenant_id, server_id } = req.params;
      await authorize(deps, req, RULE, { project_id: tenant_id });
      const server = await inRequest(req, () => compute.getServer(tenant_id, server_id));
      await inRequest(req, () => compute.checkAttach(server, { volumeId: req.body.volumeId, ...(req.body.device ? { device: req.body.device } : {}) }));
      return reply.status(204).send();
    },
  );

  app.post(
    BASE,
    {
      schema: {
        ...COMMON,
        summary: 'Plug the volume into the server as its connection_info says; answers the device the guest got',
        params: ServerParams,
        body: ConnectBody,
        response: { 200: ConnectionAnswer, ...errorResponses(400, 401, 403, 404, 409, 500, 501, 503) },
      },
    },
    async (req) => {
      const { tenant_id, server_id } = req.params;
      const ctx = await authorize(deps, req, RULE, { project_id: tenant_id });
      const server = await inRequest(req, () => compute.getServer(tenant_id, server_id));
      const att = await compute.attachVolume(ctx, server, req.body.connection);
      return { connection: { serverId: att.serverId, volumeId: att.volumeId, device: att.device } };
    },
  );

  app.delete(
    `${BASE}/:volume_id`,
    {
      schema: {
        ...COMMON,
        summary: 'Unplug the volume from the server',
        params: VolumeParams,
        response: { 204: { type: 'null' }, ...errorResponses(401, 403, 404, 409, 500, 503) },
      },
    },
    async (req, reply) => {
      const { tenant_id, server_id, volume_id } = req.params;
      const ctx = await authorize(deps, req, RULE, { project_id: tenant_id });
      const server = await inRequest(req, () => compute.getServer(tenant_id, server_id));
      await compute.detachVolume(ctx, server, volume_id);
      return reply.status(204).send();
    },
  );

  app.post(
    `${BASE}/:volume_id/grow_fs`,
    {
      schema: {
        ...COMMON,
        summary: 'Grow the last partition and the filesystem on the volume’s disk inside the guest; answers what the guest reported (not grown is an answer, with a reason)',
        params: VolumeParams,
        response: { 200: GuestFilesystemAnswer, ...errorResponses(401, 403, 404, 409, 500, 501, 503) },
      },
    },
    async (req) => {
      const { tenant_id, server_id, volume_id } = req.params;
      const ctx = await authorize(deps, req, RULE, { project_id: tenant_id });
      const server = await inRequest(req, () => compute.getServer(tenant_id, server_id));
      // The response schema keeps the answer's public fields only: no `detail` reaches the wire.
      return { growth: await compute.growGuestFilesystem(ctx, server, volume_id) };
    },
  );

  app.get(
    BASE,
    {
      schema: {
        ...COMMON,
        summary: 'The volumes plugged into the server as the hypervisor has them now (read fresh, not from the inventory)',
        params: ServerParams,
        response: { 200: ConnectionsAnswer, ...errorResponses(401, 403, 404, 503) },
      },
    },
    async (req) => {
      const { tenant_id, server_id } = req.params;
      await authorize(deps, req, RULE, { project_id: tenant_id });
      const server = await inRequest(req, () => compute.freshServer(tenant_id, server_id));
      return { connections: server.attachments.map((a) => ({ serverId: a.serverId, volumeId: a.volumeId, device: a.device })) };
    },
  );
}
