import { Type, type Static } from '@sinclair/typebox';
import { Bytes, PathId, ProjectId, Uuid } from './common.js';
import { MAX_LIMIT } from './paging.js';

export const TenantParams = Type.Object({ tenant_id: ProjectId });
export const ServerParams = Type.Object({ tenant_id: ProjectId, server_id: PathId });
export const VolumeParams = Type.Object({ tenant_id: ProjectId, server_id: PathId, volume_id: PathId });
export const ActionParams = Type.Object({ tenant_id: ProjectId, server_id: PathId, request_id: PathId });

/** A compute route's own path parameters, below the project (see routes/compute/route.ts `computeRoute`). */
export const ServerIdParam = { server_id: PathId };
export const VolumeIdParams = { server_id: PathId, volume_id: PathId };
export const ActionIdParams = { server_id: PathId, request_id: PathId };

const Limit = Type.String({
  pattern: '^[0-9]{1,20}$',
  description: `Page size, a non-negative integer; default and maximum ${MAX_LIMIT} (a larger value is lowered to ${MAX_LIMIT})`,
});
const Marker = Type.String({ minLength: 1, maxLength: 255, description: 'The id of the last item of the previous page (the next-page link carries it); an id not in the listing is a 400' });
/** A query value Nova reads as text; a repeated parameter arrives as a list and the last one counts (webob's MultiDict). */
const LastOf = (s: ReturnType<typeof Type.String>) => Type.Union([s, Type.Array(s, { maxItems: 100 })]);

/**
 * `GET /servers` and `/servers/detail` query: `limit`/`marker` (400 when malformed), `name`
 * (see routes/compute/nameFilter.ts), `all_tenants` (admins: every project; others: 403, as
 * Nova's `…:get_all_tenants` policy), and with it `project_id`/`tenant_id`. Any other parameter
 * is ignored, as Nova ignores unknown ones below 2.75.
 */
export const ServerListQuery = Type.Object(
  {
    limit: Type.Optional(Limit),
    marker: Type.Optional(Marker),
    name: Type.Optional(LastOf(Type.String({ maxLength: 255, description: "A regular expression searched in the server's name (see nameFilter.ts for the subset)" }))),
    all_tenants: Type.Optional(LastOf(Type.String({ maxLength: 16, description: 'true/1/yes/on (or empty): every project (admins only); false/0/no/off: the own project' }))),
    project_id: Type.Optional(LastOf(Type.String({ maxLength: 64, description: 'With all_tenants: only this project' }))),
    tenant_id: Type.Optional(LastOf(Type.String({ maxLength: 64, description: 'With all_tenants: only this project (Nova’s older name)' }))),
  },
  { additionalProperties: true },
);
/** The `GET /servers` query as the handler sees it (text values; a repeated one as a list). */
export type ServerListQuery = Static<typeof ServerListQuery>;

/** `GET os-instance-actions` query: `limit`/`marker` (400 when malformed); anything else is ignored, as Nova below 2.58. */
export const ActionListQuery = Type.Object({ limit: Type.Optional(Limit), marker: Type.Optional(Marker) }, { additionalProperties: true });
/** The `GET os-instance-actions` query as the handler sees it. */
export type ActionListQuery = Static<typeof ActionListQuery>;

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

/**
 * Nova's server detail (GET one, `/servers/detail`). Which keys appear depends on the
 * microversion and the caller (routes/compute/views.ts); the keys Nova always sends are
 * required here, the others listed as optional. `image` is `{id, links}` or `""`; `flavor` is
 * `{id, links}` before 2.47, the flavor's own fields from 2.47, `{}` when its flavor is gone; a
 * server found on the host shows the host-defined flavor (views.ts `hostDefinedFlavorView`).
 */
export const ServerDetail = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    status: Type.String(),
    tenant_id: Type.String(),
    user_id: Type.String(),
    metadata: Type.Record(Type.String(), Type.String()),
    hostId: Type.String(),
    image: Type.Unknown(),
    flavor: Type.Object({}, { additionalProperties: true }),
    created: Type.String(),
    updated: Type.String(),
    addresses: Type.Object({}, { additionalProperties: true }),
    accessIPv4: Type.String(),
    accessIPv6: Type.String(),
    links: Type.Array(Link),
    'OS-DCF:diskConfig': Type.String(),
    progress: Type.Optional(Type.Integer()),
    /** Nova's fault of a server in ERROR (a failed build): code, message, when. */
    fault: Type.Optional(Type.Object({ code: Type.Integer(), created: Type.String(), message: Type.String() })),
    'OS-EXT-AZ:availability_zone': Type.String(),
    config_drive: Type.String(),
    key_name: Type.Union([Type.String(), Type.Null()]),
    'OS-SRV-USG:launched_at': Type.Union([Type.String(), Type.Null()]),
    'OS-SRV-USG:terminated_at': Type.Union([Type.String(), Type.Null()]),
    'OS-EXT-STS:task_state': Type.Union([Type.String(), Type.Null()]),
    'OS-EXT-STS:vm_state': Type.String(),
    'OS-EXT-STS:power_state': Type.Integer(),
    'os-extended-volumes:volumes_attached': Type.Array(Type.Object({ id: Type.String(), delete_on_termination: Type.Optional(Type.Boolean()) })),
    'OS-EXT-SRV-ATTR:host': Type.Optional(Type.Union([Type.String(), Type.Null()])),
    'OS-EXT-SRV-ATTR:instance_name': Type.Optional(Type.String()),
    'OS-EXT-SRV-ATTR:hypervisor_hostname': Type.Optional(Type.Union([Type.String(), Type.Null()])),
    'OS-EXT-SRV-ATTR:reservation_id': Type.Optional(Type.Union([Type.String(), Type.Null()])),
    'OS-EXT-SRV-ATTR:launch_index': Type.Optional(Type.Integer()),
    'OS-EXT-SRV-ATTR:hostname': Type.Optional(Type.String()),
    'OS-EXT-SRV-ATTR:kernel_id': Type.Optional(Type.Union([Type.String(), Type.Null()])),
    'OS-EXT-SRV-ATTR:ramdisk_id': Type.Optional(Type.Union([Type.String(), Type.Null()])),
    'OS-EXT-SRV-ATTR:root_device_name': Type.Optional(Type.Union([Type.String(), Type.Null()])),
    'OS-EXT-SRV-ATTR:user_data': Type.Optional(Type.Union([Type.String(), Type.Null()])),
    locked: Type.Optional(Type.Boolean({ description: 'From 2.9' })),
    host_status: Type.Optional(Type.String({ description: 'From 2.16, admins' })),
    description: Type.Optional(Type.Union([Type.String(), Type.Null()], { description: 'From 2.19' })),
    tags: Type.Optional(Type.Array(Type.String(), { description: 'From 2.26' })),
  },
  { additionalProperties: false },
);

/** Nova's volume attachment: `id` is the volume id; `device` only when the guest has one. */
export const VolumeAttachment = Type.Object({
  id: Type.String(),
  serverId: Type.String(),
  volumeId: Type.String(),
  device: Type.Optional(Type.String()),
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

/** Nova's instance action event: `traceback` for admins only (Nova's `…:events` policy). */
export const InstanceActionEvent = Type.Object({
  event: Type.String(),
  start_time: Type.String(),
  finish_time: Type.Union([Type.String(), Type.Null()]),
  result: Type.Union([Type.String(), Type.Null()]),
  traceback: Type.Optional(Type.Union([Type.String(), Type.Null()])),
});

/** Nova's instance action (ACTION_KEYS): no finish time, result or details (those are in InstanceActionDetail); `events` on show, see views.ts. */
export const InstanceAction = Type.Object({
  action: Type.String(),
  instance_uuid: Type.String(),
  request_id: Type.String(),
  user_id: Type.String(),
  project_id: Type.String(),
  start_time: Type.String(),
  message: Type.Union([Type.String(), Type.Null()]),
  events: Type.Optional(Type.Array(InstanceActionEvent)),
});

/**
 * Our own extension `os-instance-action-details`: an instance action with everything we record
 * of it, which Nova's view has no room for: the event's name, when it finished, how it ended,
 * the error message, and structured details (volume id, bytes requested and measured, device).
 */
export const InstanceActionDetail = Type.Object({
  action: Type.String(),
  event: Type.String(),
  instance_uuid: Type.String(),
  request_id: Type.String(),
  user_id: Type.String(),
  project_id: Type.String(),
  start_time: Type.String(),
  finish_time: Type.Union([Type.String(), Type.Null()]),
  result: Type.Union([Type.String(), Type.Null()]),
  message: Type.Union([Type.String(), Type.Null()]),
  details: Type.Record(Type.String(), Type.Unknown()),
});
