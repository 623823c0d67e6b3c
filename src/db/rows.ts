/**
 * Row mapping of the SQLite store: database rows (snake_case columns, JSON text, 0/1 booleans)
 * to the store's records (src/db/store.ts), and the column names the writes use.
 */
import type {
  ActionResult,
  AttachmentRecord,
  FlavorRecord,
  FsGrowthRecord,
  ImageRecord,
  ServerFault,
  InstanceActionRecord,
  ServerRecord,
  TokenRecord,
  VolumeActionRecord,
  VolumeGuard,
  VolumeRecord,
  VolumeStatus,
} from './store.js';

/** One row as better-sqlite3 returns it: column name → value. */
export type Row = Record<string, unknown>;

/** Now, as the ISO 8601 UTC text every timestamp column holds. */
export function nowIso(): string {
  return new Date().toISOString();
}

/** An `attachments` row; `readonly` is stored 0/1, `format` and `source` may be NULL. */
export function toAttachment(r: Row): AttachmentRecord {
  return {
    serverId: r.server_id as string,
    volumeId: r.volume_id as string,
    device: r.device as string,
    kind: r.kind as AttachmentRecord['kind'],
    ...(r.format == null ? {} : { format: r.format as 'raw' | 'qcow2' }),
    ...(r.source == null ? {} : { source: r.source as string }),
    readonly: r.readonly === 1,
  };
}

/** A `servers` row with its attachments (read separately). */
export function toServer(r: Row, attachments: AttachmentRecord[]): ServerRecord {
  return {
    id: r.id as string,
    name: r.name as string,
    projectId: r.project_id as string,
    host: r.host as string,
    state: r.state as ServerRecord['state'],
    taskState: (r.task_state as string | null) ?? null,
    updatedAt: r.updated_at as string,
    attachments,
    ...(r.user_id == null ? {} : { userId: r.user_id as string }),
    ...(r.created_at == null ? {} : { createdAt: r.created_at as string }),
    ...(r.discovered_at == null ? {} : { discoveredAt: r.discovered_at as string }),
    ...(r.created_at == null ? {} : { imageRef: (r.image_ref as string | null) ?? null, flavorRef: (r.flavor_ref as string | null) ?? null }),
    ...(r.metadata == null ? {} : { metadata: JSON.parse(r.metadata as string) as Record<string, string> }),
    ...(r.fault == null ? {} : { fault: JSON.parse(r.fault as string) as ServerFault }),
    ...(r.vcpus == null ? {} : { vcpus: r.vcpus as number }),
    ...(r.memory_mb == null ? {} : { memoryMb: r.memory_mb as number }),
  };
}

/** A `flavors` row; `is_public` is stored 0/1. */
export function toFlavor(r: Row): FlavorRecord {
  return {
    id: r.id as string,
    name: r.name as string,
    vcpus: r.vcpus as number,
    ramMb: r.ram_mb as number,
    diskGb: r.disk_gb as number,
    ephemeralGb: r.ephemeral_gb as number,
    swapMb: r.swap_mb as number,
    isPublic: r.is_public === 1,
    description: (r.description as string | null) ?? null,
  };
}

/** An `images` row. */
export function toImage(r: Row): ImageRecord {
  return {
    id: r.id as string,
    name: r.name as string,
    kind: r.kind as ImageRecord['kind'],
    diskPath: (r.disk_path as string | null) ?? null,
    diskFormat: (r.disk_format as ImageRecord['diskFormat']) ?? null,
    kernelPath: (r.kernel_path as string | null) ?? null,
    ramdiskPath: (r.ramdisk_path as string | null) ?? null,
    cmdline: (r.cmdline as string | null) ?? null,
    minDiskGb: r.min_disk_gb as number,
    minRamMb: r.min_ram_mb as number,
    createdAt: r.created_at as string,
  };
}

/** A `tokens` row; roles are stored comma-separated. */
export function toToken(r: Row): TokenRecord {
  return {
    hash: r.hash as string,
    userId: r.user_id as string,
    projectId: r.project_id as string,
    roles: (r.roles as string).split(',').filter(Boolean),
    createdAt: r.created_at as string,
    expiresAt: r.expires_at as string,
  };
}

/** A `volumes` row; `size_bytes` in bytes, `extend` is JSON text or NULL. */
export function toVolume(r: Row): VolumeRecord {
  return {
    id: r.id as string,
    projectId: r.project_id as string,
    name: r.name as string,
    sizeBytes: r.size_bytes as number,
    status: r.status as VolumeStatus,
    backend: r.backend as string,
    format: (r.format as 'raw' | 'qcow2' | null) ?? null,
    serverId: (r.server_id as string | null) ?? null,
    serverProjectId: (r.server_project_id as string | null) ?? null,
    device: (r.device as string | null) ?? null,
    extend: r.extend ? (JSON.parse(r.extend as string) as VolumeRecord['extend']) : null,
    version: (r.version as number | undefined) ?? 0,
    createdAt: r.created_at as string,
    updatedAt: r.updated_at as string,
    userId: (r.user_id as string | null | undefined) ?? null,
    description: (r.description as string | null | undefined) ?? null,
    metadata: r.metadata ? (JSON.parse(r.metadata as string) as Record<string, string>) : {},
    attachedAt: (r.attached_at as string | null | undefined) ?? null,
    encryption: (r.encryption as 'luks' | null | undefined) ?? null,
    payloadOffset: (r.payload_offset as number | null | undefined) ?? null,
  };
}

/** A `volume_fs_growths` row (migration 12); booleans are 0/1, unknown is NULL. */
export function toFsGrowth(r: Row): FsGrowthRecord {
  const bool = (x: unknown) => (x === null || x === undefined ? null : Number(x) !== 0);
  const num = (x: unknown) => (x === null || x === undefined ? null : Number(x));
  return {
    volumeId: r.volume_id as string,
    requestId: r.request_id as string,
    requested: Number(r.requested) !== 0,
    grown: bool(r.grown),
    reason: (r.reason as FsGrowthRecord['reason']) ?? null,
    device: (r.device as string | null) ?? null,
    partitionGrown: bool(r.partition_grown),
    fsType: (r.fs_type as string | null) ?? null,
    mountpoint: (r.mountpoint as string | null) ?? null,
    fsBytesBefore: num(r.fs_bytes_before),
    fsBytes: num(r.fs_bytes),
    requestedAt: r.requested_at as string,
    finishedAt: (r.finished_at as string | null) ?? null,
  };
}

/** The columns of `volume_fs_growths`, in order, and a record's values for them. */
export const FS_GROWTH_COLUMNS = [
  'volume_id', 'request_id', 'requested', 'grown', 'reason', 'device', 'partition_grown', 'fs_type', 'mountpoint', 'fs_bytes_before', 'fs_bytes', 'requested_at', 'finished_at',
] as const;

/** `r` as the values of FS_GROWTH_COLUMNS. */
export function fsGrowthValues(r: FsGrowthRecord): unknown[] {
  const bit = (b: boolean | null) => (b === null ? null : b ? 1 : 0);
  return [r.volumeId, r.requestId, bit(r.requested), bit(r.grown), r.reason, r.device, bit(r.partitionGrown), r.fsType, r.mountpoint, r.fsBytesBefore, r.fsBytes, r.requestedAt, r.finishedAt];
}

/** A `volume_actions` row; compute request ids and details are JSON text. */
export function toVolumeAction(r: Row): VolumeActionRecord {
  return {
    requestId: r.request_id as string,
    volumeId: r.volume_id as string,
    action: r.action as string,
    userId: r.user_id as string,
    projectId: r.project_id as string,
    startTime: r.start_time as string,
    finishTime: (r.finish_time as string | null) ?? null,
    result: (r.result as ActionResult | null) ?? null,
    message: (r.message as string | null) ?? null,
    computeRequestIds: JSON.parse(r.compute_request_ids as string) as string[],
    details: JSON.parse(r.details as string) as Record<string, unknown>,
  };
}

/** An `instance_actions` row; details are JSON text (NULL read as `{}`). */
export function toAction(r: Row): InstanceActionRecord {
  return {
    requestId: r.request_id as string,
    serverId: r.server_id as string,
    action: r.action as string,
    event: r.event as string,
    userId: r.user_id as string,
    projectId: r.project_id as string,
    startTime: r.start_time as string,
    finishTime: (r.finish_time as string | null) ?? null,
    result: (r.result as ActionResult | null) ?? null,
    message: (r.message as string | null) ?? null,
    details: JSON.parse((r.details as string | null) ?? '{}') as Record<string, unknown>,
  };
}

/** Whether an `updateVolume` guard is the short form (a list of statuses). */
export function isStatusList(g: readonly VolumeStatus[] | VolumeGuard): g is readonly VolumeStatus[] {
  return Array.isArray(g);
}

/** Column order of the positional instance_actions inserts. */
export const ACTION_COLUMNS = ['request_id', 'server_id', 'action', 'event', 'user_id', 'project_id', 'start_time', 'finish_time', 'result', 'message', 'details'] as const;

/** The `volumes` column of each VolumeRecord field `updateVolume` may patch. */
export const VOLUME_COLUMNS: Record<string, string> = {
  projectId: 'project_id',
  name: 'name',
  sizeBytes: 'size_bytes',
  status: 'status',
  backend: 'backend',
  format: 'format',
  serverId: 'server_id',
  serverProjectId: 'server_project_id',
  device: 'device',
  extend: 'extend',
  userId: 'user_id',
  description: 'description',
  metadata: 'metadata',
  attachedAt: 'attached_at',
  encryption: 'encryption',
  payloadOffset: 'payload_offset',
};
