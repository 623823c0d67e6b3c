/** Cinder-shaped volume API (v3): volumes and their extend actions. */
import { Type } from '@sinclair/typebox';
import type { App, ServerDeps } from '../../server.js';
import { authorize } from '../../server.js';
import { errorResponses } from '../../schemas/common.js';
import { CreateVolumeBody, ProjectParams, VolumeActionBody, VolumeActionView, VolumeIdParams, VolumeView } from '../../schemas/volume.js';
import type { VolumeService } from '../../../volume/service.js';
import type { VolumeActionRecord, VolumeRecord } from '../../../db/store.js';
import { errors } from '../../../errors.js';
import { Link } from '../../schemas/compute.js';
import { ListQuery } from '../../schemas/paging.js';
import { pageOf, pageResult, storePage } from '../../paging.js';

import { bytesToGiB, gibToBytes } from '../../../util/units.js';
const tags = ['volumes'];

/** A volume as the volume API shows it (Cinder's fields, plus `size_bytes` and `extend`; `size` in GiB, rounded down). */
export function volumeView(v: VolumeRecord) {
  return {
    id: v.id,
    name: v.name,
    size: bytesToGiB(v.sizeBytes),
    size_bytes: v.sizeBytes,
    status: v.status,
    volume_type: v.backend,
    format: v.format,
    'os-vol-tenant-attr:tenant_id': v.projectId,
    // Reserved for a server but not plugged in yet (attaching) is not an attachment to show.
    attachments: v.serverId && v.device ? [{ server_id: v.serverId, device: `/dev/${v.device}`, attachment_id: v.id }] : [],
    extend: v.extend
      ? {
          request_id: v.extend.requestId,
          step: v.extend.step,
          target_bytes: v.extend.targetBytes,
          host_bytes: v.extend.hostBytes,
          started_at: v.extend.startedAt,
          deadline: v.extend.deadline,
          attempts: v.extend.attempts,
          error: v.extend.error,
          error_code: v.extend.errorCode ?? null,
          mode: v.extend.mode ?? null,
          last_error: v.extend.lastError ?? null,
        }
      : null,
    created_at: v.createdAt,
    updated_at: v.updatedAt,
  };
}

function actionView(a: VolumeActionRecord) {
  return {
    request_id: a.requestId,
    action: a.action,
    user_id: a.userId,
    project_id: a.projectId,
    start_time: a.startTime,
    finish_time: a.finishTime,
    result: a.result,
    message: a.message,
    compute_request_ids: a.computeRequestIds,
    details: a.details,
  };
}

/**
 * The list endpoints page as Cinder's (`limit`/`marker`, paged in SQL by the store). A page of the project's volumes comes with `volumes_links`, a page of a volume's actions with
 * `links` (shaped as Nova's instance actions), while more items follow.
 */
export function registerVolumes(
  app: App,
  deps: ServerDeps & { volumes: VolumeService },
): void {
  const { volumes } = deps;

  app.post(
    '/v3/:project_id/volumes',
    { schema: { tags, params: ProjectParams, body: CreateVolumeBody, response: { 202: Type.Object({ volume: VolumeView }), ...errorResponses(400, 401, 403, 500) } } },
    async (req, reply) => {
      const { project_id } = req.params;
      const ctx = await authorize(deps, req, 'volume:create', { project_id });
      const b = req.body.volume;
      if ((b.size === undefined) === (b.size_bytes === undefined)) throw errors.invalidInput('Give exactly one of volume.size (GiB) and volume.size_bytes.');
      const v = await volumes.create(ctx, project_id, {
        name: b.name ?? '',
        sizeBytes: b.size_bytes ?? gibToBytes(b.size!),
        backend: b.volume_type ?? '',
        ...(b.format ? { format: b.format } : {}),
      });
      return reply.status(202).send({ volume: volumeView(v) });
    },
  );

  for (const path of ['/v3/:project_id/volumes', '/v3/:project_id/volumes/detail']) {
    app.get(
      path,
      {
        schema: {
          tags,
          summary: 'A page of the project’s volumes, oldest first (created_at, then id); `marker` is a volume id',
          params: ProjectParams,
          querystring: ListQuery,
          response: { 200: Type.Object({ volumes: Type.Array(VolumeView), volumes_links: Type.Optional(Type.Array(Link)) }), ...errorResponses(400, 401, 403) },
        },
      },
      async (req) => {
        const { project_id } = req.params;
        await authorize(deps, req, 'volume:get_all', { project_id });
        const page = pageOf(req.query);
        const { items, next } = pageResult(await volumes.list(project_id, storePage(page)), page, (v) => v.id, req.url);
        return { volumes: items.map(volumeView), ...(next ? { volumes_links: next } : {}) };
      },
    );
  }

  app.get(
    '/v3/:project_id/volumes/:volume_id',
    { schema: { tags, params: VolumeIdParams, response: { 200: Type.Object({ volume: VolumeView }), ...errorResponses(401, 403, 404) } } },
    async (req) => {
      const { project_id, volume_id } = req.params;
      await authorize(deps, req, 'volume:get', { project_id });
      return { volume: volumeView(await volumes.get(project_id, volume_id)) };
    },
  );

  app.get(
    '/v3/:project_id/volumes/:volume_id/os-volume-actions',
    {
      schema: {
        tags,
        summary: 'A page of the volume’s actions, newest first; `marker` is a request id',
        params: VolumeIdParams,
        querystring: ListQuery,
        response: {
          200: Type.Object({ volumeActions: Type.Array(VolumeActionView), links: Type.Optional(Type.Array(Link)) }),
          ...errorResponses(400, 401, 403, 404),
        },
      },
    },
    async (req) => {
      const { project_id, volume_id } = req.params;
      await authorize(deps, req, 'volume:get', { project_id });
      await volumes.get(project_id, volume_id);
      const page = pageOf(req.query);
      const { items, next } = pageResult(await volumes.listActions(volume_id, storePage(page)), page, (a) => a.requestId, req.url);
      return { volumeActions: items.map(actionView), ...(next ? { links: next } : {}) };
    },
  );

  app.delete(
    '/v3/:project_id/volumes/:volume_id',
    { schema: { tags, params: VolumeIdParams, response: { 202: { type: 'null' }, ...errorResponses(401, 403, 404, 409, 500) } } },
    async (req, reply) => {
      const { project_id, volume_id } = req.params;
      const ctx = await authorize(deps, req, 'volume:delete', { project_id });
      await volumes.delete(ctx, project_id, volume_id);
      return reply.status(202).send();
    },
  );

  app.post(
    '/v3/:project_id/volumes/:volume_id/action',
    {
      schema: {
        tags,
        summary: 'os-extend (GiB) or os-extend-bytes (exact bytes): in-use volumes are extended online, in the background',
        params: VolumeIdParams,
        body: VolumeActionBody,
        response: { 202: { type: 'null' }, ...errorResponses(400, 401, 403, 404, 409, 500, 501, 503) },
      },
    },
    async (req, reply) => {
      const { project_id, volume_id } = req.params;
      const body = req.body;
      const newBytes = 'os-extend' in body ? gibToBytes(body['os-extend'].new_size) : body['os-extend-bytes'].new_bytes;
      const ctx = await authorize(deps, req, 'volume:extend', { project_id });
      // The lifecycle table names the rules the volume needs (extend_attached_volume whenever
      // it has an attachment); the service checks them on the record its decision is about.
      await volumes.extend(ctx, project_id, volume_id, newBytes, (rule) => deps.policy.allows(rule, req.auth!, { project_id }));
      return reply.status(202).send();
    },
  );
}
