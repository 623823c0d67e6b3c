/**
 * The volume service's attachment routes (the RPC boundary's volume side, called by compute
 * through rpc/volumeClient.ts with the user's token, as Nova calls Cinder's attachments API):
 * attach a volume to a server and detach it. Policy `volume:attach` / `volume:detach` on the
 * user's token. Hidden from the public OpenAPI document: users attach through compute's
 * os-volume_attachments, which calls these.
 */
import type { App, ServerDeps } from '../../server.js';
import { authorize, inRequest } from '../../server.js';
import { errorResponses } from '../../schemas/common.js';
import { ProjectParams, VolumeIdParams } from '../../schemas/volume.js';
import type { VolumeAttachService } from '../../../volume/attach.js';
import { AttachmentAnswer, AttachmentCreateBody, AttachmentDeleteQuery } from '../../../rpc/shapes.js';

const COMMON = { tags: ['attachments'], hide: true };

/** Registers the attachment routes (see the module comment). */
export function registerAttachments(app: App, deps: ServerDeps & { attachments: VolumeAttachService }): void {
  const { attachments } = deps;

  app.post(
    '/v3/:project_id/attachments',
    {
      schema: {
        ...COMMON,
        summary: 'Attach the volume to the server: reserve it, have compute plug it in, record the attachment',
        params: ProjectParams,
        body: AttachmentCreateBody,
        response: { 200: AttachmentAnswer, ...errorResponses(400, 401, 403, 404, 409, 500, 501, 503) },
      },
    },
    async (req) => {
      const { project_id } = req.params;
      const ctx = await authorize(deps, req, 'volume:attach', { project_id });
      const a = req.body.attachment;
      const att = await inRequest(req, () => attachments.attach(ctx, project_id, a.instance_uuid, a.volume_uuid, a.mountpoint));
      return { attachment: att };
    },
  );

  app.delete(
    '/v3/:project_id/attachments/:volume_id',
    {
      schema: {
        ...COMMON,
        summary: 'Detach the volume from the server (`instance_uuid`): have compute unplug it, then record it available',
        params: VolumeIdParams,
        querystring: AttachmentDeleteQuery,
        response: { 204: { type: 'null' }, ...errorResponses(400, 401, 403, 404, 409, 500, 503) },
      },
    },
    async (req, reply) => {
      const { project_id, volume_id } = req.params;
      const ctx = await authorize(deps, req, 'volume:detach', { project_id });
      await inRequest(req, () => attachments.detach(ctx, project_id, req.query.instance_uuid, volume_id));
      return reply.status(204).send();
    },
  );
}
