import { Type, type Static } from '@sinclair/typebox';
import { Bytes, PathId, ProjectId, Uuid } from './common.js';

export const TenantParams = Type.Object({ tenant_id: ProjectId });
export const ServerParams = Type.Object({ tenant_id: ProjectId, server_id: PathId });
export const VolumeParams = Type.Object({ tenant_id: ProjectId, server_id: PathId, volume_id: PathId });
export const ActionParams = Type.Object({ tenant_id: ProjectId, server_id: PathId, request_id: PathId });

export const RescanBody = Type.Object(
  { onlineExtendVolume: Type.Object({ volume_id: Uuid }, { additionalProperties: false }) },
  { additionalProperties: false },
);
/** Body of `os-online_extend_volume` rescan: `{"onlineExtendVolume": {"volume_id": <uuid>}}`. */
export type RescanBody = Static<typeof RescanBody>;

export const AssistExtendBody = Type.Object(
  { onlineExtendVolume: Type.Object({ bytes: Bytes }, { additionalProperties: false }) },
  { additionalProperties: false },
);
/** Body of `os-online_extend_volume` assist_extend: `{"onlineExtendVolume": {"bytes": N}}`, the new size in bytes (a multiple of 512). */
export type AssistExtendBody = Static<typeof AssistExtendBody>;

export const VolumeBlockdev = Type.Object({
  volume_blockdev: Type.Object({
    id: Type.String(),
    bytes: Type.Integer({ description: 'Measured size in bytes' }),
  }),
});

export const Link = Type.Object({ rel: Type.String(), href: Type.String() });

export const ServerSummary = Type.Object({
  id: Type.String(),
  name: Type.String(),
  links: Type.Array(Link),
});

export const ServerDetail = Type.Object({
  id: Type.String(),
  name: Type.String(),
  status: Type.String(),
  tenant_id: Type.String(),
  'OS-EXT-SRV-ATTR:host': Type.String(),
  'OS-EXT-STS:vm_state': Type.String(),
  'OS-EXT-STS:task_state': Type.Union([Type.String(), Type.Null()]),
  updated: Type.String(),
  'os-extended-volumes:volumes_attached': Type.Array(Type.Object({ id: Type.String() })),
  links: Type.Array(Link),
});

export const VolumeAttachment = Type.Object({
  id: Type.String(),
  serverId: Type.String(),
  volumeId: Type.String(),
  device: Type.String(),
});

export const AttachBody = Type.Object(
  {
    volumeAttachment: Type.Object(
      {
        volumeId: Uuid,
        device: Type.Optional(Type.Union([Type.String({ pattern: '^(/dev/)?vd[b-z]$' }), Type.Null()])),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);
/** Body of Nova's `POST os-volume_attachments`: the volume's UUID and an optional device name (`vdb`…`vdz`, with or without `/dev/`). */
export type AttachBody = Static<typeof AttachBody>;

export const InstanceActionEvent = Type.Object({
  event: Type.String(),
  start_time: Type.String(),
  finish_time: Type.Union([Type.String(), Type.Null()]),
  result: Type.Union([Type.String(), Type.Null()]),
  traceback: Type.Union([Type.String(), Type.Null()]),
  details: Type.Union([Type.String(), Type.Null()]),
});

export const InstanceAction = Type.Object({
  action: Type.String(),
  instance_uuid: Type.String(),
  request_id: Type.String(),
  user_id: Type.String(),
  project_id: Type.String(),
  start_time: Type.String(),
  finish_time: Type.Union([Type.String(), Type.Null()]),
  message: Type.Union([Type.String(), Type.Null()]),
  result: Type.Union([Type.String(), Type.Null()]),
  details: Type.Record(Type.String(), Type.Unknown()),
  events: Type.Optional(Type.Array(InstanceActionEvent)),
});
