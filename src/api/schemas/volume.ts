import { Type, type Static } from '@sinclair/typebox';
import { GiB } from '../../util/units.js';
import { Bytes, MAX_VOLUME_BYTES, PathId, ProjectId } from './common.js';

const MAX_GIB = Math.floor(MAX_VOLUME_BYTES / GiB);

export const ProjectParams = Type.Object({ project_id: ProjectId });
export const VolumeIdParams = Type.Object({ project_id: ProjectId, volume_id: PathId });

export const CreateVolumeBody = Type.Object(
  {
    volume: Type.Object(
      {
        name: Type.Optional(Type.String({ maxLength: 255 })),
        size: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_GIB, description: 'Size in GiB (Cinder)' })),
        size_bytes: Type.Optional(Bytes),
        volume_type: Type.Optional(Type.String({ description: 'Backend: file, block or iscsi' })),
        format: Type.Optional(Type.Union([Type.Literal('raw'), Type.Literal('qcow2')], { description: 'For the file backend' })),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);
/** Body of Cinder's `POST volumes`: the size in GiB (`size`) or exactly in bytes (`size_bytes`), backend (`volume_type`) and, for the file backend, `format`. */
export type CreateVolumeBody = Static<typeof CreateVolumeBody>;

/** One action per request, Cinder style: `os-extend` (GiB) or our exact-bytes `os-extend-bytes`. */
export const VolumeActionBody = Type.Union([
  Type.Object(
    { 'os-extend': Type.Object({ new_size: Type.Integer({ minimum: 1, maximum: MAX_GIB }) }, { additionalProperties: false }) },
    { additionalProperties: false },
  ),
  Type.Object(
    { 'os-extend-bytes': Type.Object({ new_bytes: Bytes }, { additionalProperties: false }) },
    { additionalProperties: false },
  ),
]);
/** Body of `POST volumes/{id}/action`: `{"os-extend": {"new_size": GiB}}` or `{"os-extend-bytes": {"new_bytes": bytes}}`. */
export type VolumeActionBody = Static<typeof VolumeActionBody>;

export const ExtendView = Type.Union([
  Type.Null(),
  Type.Object({
    request_id: Type.String(),
    step: Type.String(),
    target_bytes: Type.Integer(),
    host_bytes: Type.Union([Type.Integer(), Type.Null()]),
    started_at: Type.String(),
    deadline: Type.String(),
    attempts: Type.Integer(),
    error: Type.Union([Type.String(), Type.Null()]),
    error_code: Type.Union([Type.String(), Type.Null()], { description: 'Catalogue code of the error that ended the extend' }),
    mode: Type.Union([Type.Literal('online'), Type.Literal('offline'), Type.Literal('detached'), Type.Null()], {
      description: 'online: the guest is resized live; offline: its server is shut off and sees the size when it next starts; detached: storage only',
    }),
    last_error: Type.Union([Type.Object({ step: Type.String(), code: Type.String(), message: Type.String(), at: Type.String() }), Type.Null()], {
      description: 'The last uncertain error while the step is retried',
    }),
  }),
]);

export const VolumeView = Type.Object({
  id: Type.String(),
  name: Type.String(),
  size: Type.Integer({ description: 'GiB, rounded down' }),
  size_bytes: Type.Integer(),
  status: Type.String(),
  volume_type: Type.String(),
  format: Type.Union([Type.String(), Type.Null()]),
  'os-vol-tenant-attr:tenant_id': Type.String(),
  attachments: Type.Array(Type.Object({ server_id: Type.String(), device: Type.String(), attachment_id: Type.String() })),
  extend: ExtendView,
  created_at: Type.String(),
  updated_at: Type.String(),
});

export const VolumeActionView = Type.Object({
  request_id: Type.String(),
  action: Type.String(),
  user_id: Type.String(),
  project_id: Type.String(),
  start_time: Type.String(),
  finish_time: Type.Union([Type.String(), Type.Null()]),
  result: Type.Union([Type.String(), Type.Null()]),
  message: Type.Union([Type.String(), Type.Null()]),
  compute_request_ids: Type.Array(Type.String()),
  details: Type.Record(Type.String(), Type.Unknown()),
});
