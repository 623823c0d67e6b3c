import { Type, type Static } from '@sinclair/typebox';
import { GiB } from '../../util/units.js';
import { Bytes, MAX_VOLUME_BYTES, PathId, ProjectId } from './common.js';
import { ListQuery } from './paging.js';

/** The largest size in GiB a volume may have (MAX_VOLUME_BYTES). */
export const MAX_GIB = Math.floor(MAX_VOLUME_BYTES / GiB);

export const ProjectParams = Type.Object({ project_id: ProjectId });
export const VolumeIdParams = Type.Object({ project_id: ProjectId, volume_id: PathId });

/** Cinder's nullable id fields of a create body (a uuid or null); naming a value asks for a feature we do not have (see the route). */
const NullableId = Type.Union([Type.String({ maxLength: 255 }), Type.Null()]);
const NullableText = Type.Union([Type.String({ maxLength: 255 }), Type.Null()]);

/** Cinder's volume metadata: string keys of 1–255 characters to strings of at most 255. */
export const VolumeMetadata = Type.Record(Type.String({ minLength: 1, maxLength: 255 }), Type.String({ maxLength: 255 }));

/**
 * A size in GiB as Cinder's `volume_size` (cinder/api/validation/parameter_types.py): an integer,
 * or its decimal text (`"2"`); create's `size` and os-extend's `new_size` both take it. The text's
 * range is checked where it is read (`sizeGiB` in the volume routes).
 */
export const VolumeSizeGiB = Type.Union([Type.Integer({ minimum: 1, maximum: MAX_GIB }), Type.String({ pattern: '^[0-9]{1,20}$' })], {
  description: 'Size in GiB (Cinder: an integer, or its decimal text)',
});

/**
 * Body of Cinder's `POST /v3/{project_id}/volumes` (cinder/api/schemas/volumes.py `create`): the
 * `volume` object accepts unknown keys and takes Cinder's optional fields as null, as
 * cinderclient sends them. Our own extras: `size_bytes` (exact bytes, instead of `size` in GiB)
 * and `format` (the file backend's raw or qcow2). Fields naming features this service lacks
 * (snapshot_id, source_volid, imageRef, backup_id, consistencygroup_id, group_id, multiattach
 * true) are refused by the route with a 400 naming them.
 */
export const CreateVolumeBody = Type.Object(
  {
    volume: Type.Object(
      {
        name: Type.Optional(NullableText),
        display_name: Type.Optional(NullableText),
        description: Type.Optional(NullableText),
        display_description: Type.Optional(NullableText),
        size: Type.Optional(Type.Union([VolumeSizeGiB, Type.Null()])),
        size_bytes: Type.Optional(Type.Union([Bytes, Type.Null()], { description: 'Ours: the size in exact bytes, instead of `size`' })),
        volume_type: Type.Optional(
          Type.Union([Type.String({ maxLength: 255 }), Type.Null()], {
            description: 'Backend: file, block or iscsi (null or empty: the default); encrypted (LUKS): `luks` (the default backend) or `<backend>-luks`',
          }),
        ),
        availability_zone: Type.Optional(Type.Union([Type.String({ maxLength: 255 }), Type.Null()], { description: 'Only `nova` exists' })),
        metadata: Type.Optional(Type.Union([VolumeMetadata, Type.Null()])),
        format: Type.Optional(Type.Union([Type.Literal('raw'), Type.Literal('qcow2')], { description: 'Ours: the file backend’s format' })),
        encryption: Type.Optional(
          Type.Union([Type.String({ maxLength: 64 }), Type.Null()], {
            description: 'Ours: `luks` encrypts the volume (QEMU-native LUKS), as the volume types `luks` and `<backend>-luks` do; another name is a 400',
          }),
        ),
        multiattach: Type.Optional(Type.Union([Type.Boolean(), Type.Null()], { description: 'Only false: a volume attaches to one server' })),
        snapshot_id: Type.Optional(NullableId),
        source_volid: Type.Optional(NullableId),
        imageRef: Type.Optional(NullableId),
        image_id: Type.Optional(NullableId),
        backup_id: Type.Optional(NullableId),
        consistencygroup_id: Type.Optional(NullableId),
        group_id: Type.Optional(NullableId),
      },
      { additionalProperties: true },
    ),
    'OS-SCH-HNT:scheduler_hints': Type.Optional(Type.Union([Type.Object({}, { additionalProperties: true }), Type.Null()], { description: 'Accepted and ignored: one host serves every volume' })),
  },
  { additionalProperties: false },
);
/** Body of `POST volumes` (see CreateVolumeBody). */
export type CreateVolumeBody = Static<typeof CreateVolumeBody>;

/**
 * Body of Cinder's `PUT /v3/{project_id}/volumes/{volume_id}` (cinder/api/schemas/volumes.py
 * `update`): the name and description (or their v1 names) and the metadata, which replaces the
 * volume's whole metadata as Cinder's does. No other key.
 */
export const UpdateVolumeBody = Type.Object(
  {
    volume: Type.Object(
      {
        name: Type.Optional(NullableText),
        display_name: Type.Optional(NullableText),
        description: Type.Optional(NullableText),
        display_description: Type.Optional(NullableText),
        metadata: Type.Optional(Type.Union([VolumeMetadata, Type.Null()])),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);
/** Body of `PUT volumes/{id}` (see UpdateVolumeBody). */
export type UpdateVolumeBody = Static<typeof UpdateVolumeBody>;

/**
 * Query of the volume lists, as Cinder's: paging, exact `name` and `status` filters,
 * `all_tenants` (an admin's listing of every project; ignored for others, as Cinder does) and,
 * for admins, `project_id` (the owner).
 * Other keys are checked by the route (see `volumeFilters`).
 */
export const VolumeListQuery = Type.Object(
  {
    ...ListQuery.properties,
    name: Type.Optional(Type.String({ maxLength: 255 })),
    status: Type.Optional(Type.String({ maxLength: 255 })),
    all_tenants: Type.Optional(Type.String({ maxLength: 16, description: 'A boolean as Cinder reads one: 1/0, true/false, yes/no, on/off, y/n, t/f' })),
    project_id: Type.Optional(Type.String({ maxLength: 255, description: "Admins only: the owner's project (with all_tenants; without it, within the caller's own)" })),
  },
  { additionalProperties: true },
);
/** The volume lists' query (see VolumeListQuery). */
export type VolumeListQuery = Static<typeof VolumeListQuery>;

/**
 * Ours, inside os-extend and os-extend-bytes: grow the guest's filesystem after the block extend
 * (true) or not (false), whatever the volume's metadata key `online_extend:grow_fs` says; absent:
 * as that key says. A JSON boolean only (Cinder's clients never send the key).
 */
const GrowFsOption = Type.Boolean({
  description: 'Grow the last partition and the filesystem on the disk inside the guest after the extend (QEMU guest agent); overrides the volume metadata key online_extend:grow_fs',
});

/** Body of Cinder's `POST volumes/{id}/metadata` (set: merges the keys given). */
export const VolumeMetadataBody = Type.Object({ metadata: VolumeMetadata }, { additionalProperties: false });
/** See VolumeMetadataBody. */
export type VolumeMetadataBody = Static<typeof VolumeMetadataBody>;

/** One action per request, Cinder style: `os-extend` (GiB) or our exact-bytes `os-extend-bytes`. */
export const VolumeActionBody = Type.Union([
  Type.Object(
    { 'os-extend': Type.Object({ new_size: VolumeSizeGiB, 'online_extend:grow_fs': Type.Optional(GrowFsOption) }, { additionalProperties: false }) },
    { additionalProperties: false },
  ),
  Type.Object(
    { 'os-extend-bytes': Type.Object({ new_bytes: Bytes, 'online_extend:grow_fs': Type.Optional(GrowFsOption) }, { additionalProperties: false }) },
    { additionalProperties: false },
  ),
]);
/** Body of `POST volumes/{id}/action`: `{"os-extend": {"new_size": GiB or its text}}` or `{"os-extend-bytes": {"new_bytes": bytes}}`. */
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

/**
 * What the volume's latest extend did about the guest's filesystem (null: no extend recorded
 * since this was kept): whether it asked to grow it and the outcome the guest reported, sizes in
 * bytes as `df -B1` totals them. `grown` null while the extend runs, or when it was not asked.
 */
export const FsGrowthView = Type.Union([
  Type.Null(),
  Type.Object({
    request_id: Type.String({ description: 'The extend’s request id' }),
    requested: Type.Boolean(),
    grown: Type.Union([Type.Boolean(), Type.Null()]),
    reason: Type.Union([Type.String(), Type.Null()], {
      description:
        'Why not grown: no_guest_agent, disk_not_found, no_filesystem, unsupported_filesystem, not_mounted, grow_failed, not_supported (the host cannot), server_stopped (extended offline), detached',
    }),
    device: Type.Union([Type.String(), Type.Null()], { description: 'Guest block device grown, e.g. /dev/vdb1' }),
    partition_grown: Type.Union([Type.Boolean(), Type.Null()]),
    fs_type: Type.Union([Type.String(), Type.Null()]),
    mountpoint: Type.Union([Type.String(), Type.Null()]),
    fs_bytes_before: Type.Union([Type.Integer(), Type.Null()]),
    fs_bytes: Type.Union([Type.Integer(), Type.Null()]),
    finished_at: Type.Union([Type.String(), Type.Null()]),
  }),
]);

/** Cinder's link (self, bookmark, next): absolute URLs built from the request's Host. */
export const CinderLink = Type.Object({ rel: Type.String(), href: Type.String() });

/** An attachment as Cinder's volume views list it (`id` is the volume id; `host_name` only for admins and services). */
export const CinderAttachment = Type.Object({
  id: Type.String(),
  attachment_id: Type.String(),
  volume_id: Type.String(),
  server_id: Type.String(),
  host_name: Type.Union([Type.String(), Type.Null()]),
  device: Type.Union([Type.String(), Type.Null()]),
  attached_at: Type.Union([Type.String(), Type.Null()]),
});

/**
 * A volume as Cinder 3.x shows it (cinder/api/v3/views/volumes.py `detail`), up to microversion
 * 3.42: the same keys on create, show, detail and update, plus `group_id` from 3.13 and, for
 * admins, `migration_status` and `provider_id` (3.21). Show and detail add the extension keys
 * (`os-vol-tenant-attr:tenant_id`; for admins `os-vol-host-attr:host` and
 * `os-vol-mig-status-attr:*`); create and update never carry them. Nothing else: tempest's
 * schemas refuse unknown keys (our extras are on `…/os-online-extend`).
 */
export const CinderVolume = Type.Object({
  id: Type.String(),
  name: Type.Union([Type.String(), Type.Null()]),
  status: Type.String(),
  size: Type.Integer({ description: 'GiB, rounded down' }),
  availability_zone: Type.String(),
  created_at: Type.String(),
  updated_at: Type.Union([Type.String(), Type.Null()]),
  description: Type.Union([Type.String(), Type.Null()]),
  volume_type: Type.Union([Type.String(), Type.Null()]),
  snapshot_id: Type.Null(),
  source_volid: Type.Null(),
  metadata: Type.Record(Type.String(), Type.String()),
  links: Type.Array(CinderLink),
  user_id: Type.String(),
  bootable: Type.Union([Type.Literal('true'), Type.Literal('false')]),
  encrypted: Type.Boolean(),
  replication_status: Type.Union([Type.String(), Type.Null()]),
  consistencygroup_id: Type.Null(),
  multiattach: Type.Boolean(),
  attachments: Type.Array(CinderAttachment),
  migration_status: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  group_id: Type.Optional(Type.Null()),
  provider_id: Type.Optional(Type.Null()),
  'os-vol-tenant-attr:tenant_id': Type.Optional(Type.String()),
  'os-vol-host-attr:host': Type.Optional(Type.Union([Type.String(), Type.Null()])),
  'os-vol-mig-status-attr:migstat': Type.Optional(Type.Union([Type.String(), Type.Null()])),
  'os-vol-mig-status-attr:name_id': Type.Optional(Type.Union([Type.String(), Type.Null()])),
});

/** A volume in Cinder's summary list (`GET volumes`). */
export const CinderVolumeSummary = Type.Object({ id: Type.String(), name: Type.Union([Type.String(), Type.Null()]), links: Type.Array(CinderLink) });

/**
 * Our own view of a volume, off Cinder's (`GET …/volumes/{id}/os-online-extend` and
 * `GET …/volumes/os-online-extend`): the exact size in bytes, the file backend's format and the
 * extend in progress or failed, with the status they go with.
 */
export const OnlineExtendView = Type.Object({
  id: Type.String(),
  name: Type.String(),
  size: Type.Integer({ description: 'GiB, rounded down' }),
  size_bytes: Type.Integer(),
  status: Type.String(),
  volume_type: Type.String(),
  format: Type.Union([Type.String(), Type.Null()]),
  encryption: Type.Union([Type.Literal('luks'), Type.Null()], { description: 'QEMU-native LUKS, or null: unencrypted' }),
  payload_offset: Type.Union([Type.Integer(), Type.Null()], { description: 'Bytes of the LUKS header before the payload (null: unencrypted, or not made yet)' }),
  guest_size_bytes: Type.Union([Type.Integer(), Type.Null()], {
    description: 'Bytes the guest sees: size_bytes, less payload_offset when encrypted (null: not known yet)',
  }),
  project_id: Type.String(),
  attachments: Type.Array(Type.Object({ server_id: Type.String(), device: Type.String(), attachment_id: Type.String() })),
  extend: ExtendView,
  fs_growth: FsGrowthView,
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
