/**
 * Cinder-shaped volume API (v3, microversions 3.0–3.42): volumes and their extend, with Cinder's
 * views (cinder/api/v3/views/volumes.py) and nothing more on them, since tempest's schemas refuse
 * unknown keys. Our own extras (exact bytes, format, the extend in progress, the audit) are on
 * routes of our own: `…/volumes/{id}/os-online-extend`, `…/volumes/os-online-extend` and
 * `…/volumes/{id}/os-volume-actions`.
 */
import { hostname } from 'node:os';
import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import type { App, ServerDeps } from '../../server.js';
import { allowed, authorize, authorizeOn, inRequest } from '../../server.js';
import { errorResponses } from '../../schemas/common.js';
import {
  CinderLink,
  CinderVolume,
  CinderVolumeSummary,
  CreateVolumeBody,
  MAX_GIB,
  OnlineExtendView,
  ProjectParams,
  UpdateVolumeBody,
  VolumeActionBody,
  VolumeActionView,
  VolumeIdParams,
  VolumeListQuery,
  VolumeMetadataBody,
} from '../../schemas/volume.js';
import type { CreateVolumeRequest, VolumeService } from '../../../volume/service.js';
import type { FsGrowthRecord, VolumeActionRecord, VolumeRecord, VolumeStatus } from '../../../db/store.js';
import { errors } from '../../../errors.js';
import { Link } from '../../schemas/compute.js';
import { ListQuery } from '../../schemas/paging.js';
import { pageOf, pageResult, storePage, type Link as PageLink } from '../../paging.js';
import { ApiVersion } from '../../microversion.js';
import type { AuthContext } from '../../../auth/tokens.js';
import { bytesToGiB, gibToBytes } from '../../../util/units.js';
import { volumeTypeOf } from '../../../volume/encryption.js';

const tags = ['volumes'];

/** 3.13: volumes show `group_id`. */
const VOLUME_3_13 = new ApiVersion(3, 13);
/** 3.21: admins see `provider_id`. */
const VOLUME_3_21 = new ApiVersion(3, 21);
/** 3.33: Cinder refuses a non-admin's list filters it does not know ("Invalid filters …"); below, it drops them. */
const VOLUME_3_33 = new ApiVersion(3, 33);
/** 3.42: an attached (in-use) volume may be extended. */
export const VOLUME_3_42 = new ApiVersion(3, 42);

/** The one availability zone (Cinder's default name). */
export const AVAILABILITY_ZONE = 'nova';

/**
 * The base of absolute links, `http://host:port`, from the request's Host as Cinder builds them
 * (no configured public URL). An HTTP/1.0 request without Host gets the address it reached.
 */
function baseUrl(req: FastifyRequest): string {
  const host = req.headers.host ?? `${req.socket.localAddress}:${req.socket.localPort}`;
  return `http://${host}`;
}

/** Who asks, as the views need it: admins see the admin-only keys, admins and services see attachment hosts. */
interface Viewer {
  admin: boolean;
  service: boolean;
}

function viewerOf(deps: ServerDeps, auth: AuthContext): Viewer {
  return {
    admin: deps.policy.allows('admin_api', auth, {}),
    service: auth.roles.some((r) => r.toLowerCase() === 'service'),
  };
}

/** What a Cinder view is built from besides the volume: links base and project, microversion, viewer, this host's name. */
export interface CinderViewContext {
  base: string;
  /** The project in the request URL (Cinder's links carry the caller's). */
  projectId: string;
  version: ApiVersion;
  viewer: Viewer;
  /** This service's host, shown to admins as Cinder's `host@backend#pool`. */
  host: string;
}

function links(c: CinderViewContext, id: string): Array<{ rel: string; href: string }> {
  const p = encodeURIComponent(c.projectId);
  return [
    { rel: 'self', href: `${c.base}/v3/${p}/volumes/${id}` },
    { rel: 'bookmark', href: `${c.base}/${p}/volumes/${id}` },
  ];
}

/** A volume in Cinder's summary list: `{id, name, links}`. */
export function cinderSummary(v: VolumeRecord, c: CinderViewContext) {
  return { id: v.id, name: v.name, links: links(c, v.id) };
}

/**
 * A volume as Cinder 3.x shows it at `c.version` (see CinderVolume). `extensions`: the
 * show/detail extension keys (`os-vol-*`), which Cinder's create and update answers lack.
 */
export function cinderVolumeView(v: VolumeRecord, c: CinderViewContext, extensions: boolean) {
  const { admin, service } = c.viewer;
  // Reserved for a server but not plugged in yet (attaching) is not an attachment to show, as
  // Cinder lists only attachments in status `attached`.
  const attached = v.serverId !== null && v.device !== null;
  return {
    id: v.id,
    name: v.name,
    status: v.status,
    size: bytesToGiB(v.sizeBytes),
    availability_zone: AVAILABILITY_ZONE,
    created_at: v.createdAt,
    updated_at: v.updatedAt,
    description: v.description ?? null,
    volume_type: volumeTypeOf(v),
    snapshot_id: null,
    source_volid: null,
    metadata: v.metadata ?? {},
    links: links(c, v.id),
    // Volumes made before the creator was recorded have none; the schema wants a string.
    user_id: v.userId ?? '',
    bootable: 'false' as const,
    encrypted: Boolean(v.encryption),
    replication_status: 'disabled',
    consistencygroup_id: null,
    multiattach: false,
    attachments: attached
      ? [
          {
            id: v.id,
            attachment_id: v.id,
            volume_id: v.id,
            server_id: v.serverId!,
            host_name: admin || service ? c.host : null,
            device: `/dev/${v.device}`,
            attached_at: v.attachedAt ?? null,
          },
        ]
      : [],
    ...(admin ? { migration_status: null } : {}),
    ...(c.version.atLeast(VOLUME_3_13) ? { group_id: null } : {}),
    ...(admin && c.version.atLeast(VOLUME_3_21) ? { provider_id: null } : {}),
    ...(extensions ? { 'os-vol-tenant-attr:tenant_id': v.projectId } : {}),
    ...(extensions && admin
      ? { 'os-vol-host-attr:host': `${c.host}@${v.backend}#${v.backend}`, 'os-vol-mig-status-attr:migstat': null, 'os-vol-mig-status-attr:name_id': null }
      : {}),
  };
}

/** Our own view (OnlineExtendView): exact bytes, format and the extend, with the status they go with. */
export function onlineExtendView(v: VolumeRecord, growth?: FsGrowthRecord) {
  return {
    id: v.id,
    name: v.name,
    size: bytesToGiB(v.sizeBytes),
    size_bytes: v.sizeBytes,
    status: v.status,
    volume_type: volumeTypeOf(v),
    format: v.format,
    encryption: v.encryption ?? null,
    payload_offset: v.encryption ? (v.payloadOffset ?? null) : null,
    guest_size_bytes: v.encryption ? (v.payloadOffset == null ? null : v.sizeBytes - v.payloadOffset) : v.sizeBytes,
    project_id: v.projectId,
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
    fs_growth: growth
      ? {
          request_id: growth.requestId,
          requested: growth.requested,
          grown: growth.grown,
          reason: growth.reason,
          device: growth.device,
          partition_grown: growth.partitionGrown,
          fs_type: growth.fsType,
          mountpoint: growth.mountpoint,
          fs_bytes_before: growth.fsBytesBefore,
          fs_bytes: growth.fsBytes,
          finished_at: growth.finishedAt,
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

/** Query keys of the lists that are not filters (Cinder removes them before filtering). */
const PAGING_KEYS = new Set(['limit', 'marker']);
/** Filters the lists apply. */
const FILTER_KEYS = new Set(['name', 'status', 'all_tenants']);
/** Filters the lists apply for admins only (Cinder lets admins filter on any column; others' `project_id` is an unknown key). */
const ADMIN_FILTER_KEYS = new Set(['project_id']);
/** Cinder's ordering and counting parameters: answering in another order or without the count would mislead, so they are refused at every version. */
const UNSUPPORTED_LIST_KEYS = new Set(['sort', 'sort_key', 'sort_dir', 'offset', 'with_count']);

/** Cinder's booleans (oslo strutils.bool_from_string, strict), as `all_tenants` is read. */
function cinderBool(name: string, text: string): boolean {
  const t = text.trim().toLowerCase();
  if (['1', 't', 'true', 'on', 'y', 'yes'].includes(t)) return true;
  if (['0', 'f', 'false', 'off', 'n', 'no'].includes(t)) return false;
  throw errors.invalidInput(`Invalid value '${text}' for ${name}: acceptable values are 1/0, true/false, yes/no, on/off, y/n, t/f.`);
}

/**
 * The filters of a volume list, as Cinder reads them: `name` and `status` exactly; `all_tenants`
 * lists every project for admins and is ignored for others (Cinder's get_all); `project_id`, for
 * admins, the owner (see `listScope`). A non-admin's unknown keys (`project_id` too) are dropped
 * below 3.33 (Cinder's remove_invalid_filter_options) and refused from 3.33 with Cinder's
 * "Invalid filters … are found in query options.". An admin's are refused at every version: Cinder
 * filters admins' lists on any column at every version, and we cannot, so we refuse rather than
 * answer with more than was asked. Sorting and counting are refused at every version.
 */
export function volumeFilters(
  query: Record<string, unknown>,
  version: ApiVersion,
  admin: boolean,
): { allProjects: boolean; projectId?: string; name?: string; status?: VolumeStatus } {
  const unknown: string[] = [];
  for (const key of Object.keys(query)) {
    if (UNSUPPORTED_LIST_KEYS.has(key)) throw errors.invalidInput(`The volume list parameter '${key}' is not supported here: volumes are listed oldest first (created_at, then id), without a count.`);
    if (!PAGING_KEYS.has(key) && !FILTER_KEYS.has(key) && !(admin && ADMIN_FILTER_KEYS.has(key))) unknown.push(key);
  }
  if (unknown.length > 0 && (admin || version.atLeast(VOLUME_3_33))) throw errors.invalidInput(`Invalid filters ${unknown.join(',')} are found in query options.`);
  const q = query as VolumeListQuery;
  const allProjects = admin && q.all_tenants !== undefined && cinderBool('all_tenants', q.all_tenants);
  if (!admin && q.all_tenants !== undefined) cinderBool('all_tenants', q.all_tenants);
  return {
    allProjects,
    ...(admin && q.project_id !== undefined ? { projectId: q.project_id } : {}),
    ...(q.name !== undefined ? { name: q.name } : {}),
    ...(q.status !== undefined ? { status: q.status as VolumeStatus } : {}),
  };
}

/**
 * The projects a list covers: a project id, `undefined` for every project, or `null` for none.
 * An admin's `project_id` with `all_tenants` names the owner (Cinder's get_all filters on it);
 * without `all_tenants` the list stays within the caller's project (Cinder's
 * get_all_by_project), so a `project_id` naming another project lists nothing rather than
 * something other than what was asked.
 */
export function listScope(filters: { allProjects: boolean; projectId?: string }, ownProject: string): string | undefined | null {
  if (filters.projectId === undefined) return filters.allProjects ? undefined : ownProject;
  if (filters.allProjects || filters.projectId === ownProject) return filters.projectId;
  return null;
}

/** A size in GiB as VolumeSizeGiB lets it through, as a number; InvalidInput (400) naming `field` outside 1..MAX_GIB. */
function sizeGiB(field: string, size: number | string): number {
  const gib = typeof size === 'string' ? Number(size) : size;
  if (!Number.isSafeInteger(gib) || gib < 1 || gib > MAX_GIB) throw errors.invalidInput(`Invalid input for field/attribute ${field}: ${size} is not a size in GiB from 1 to ${MAX_GIB}.`);
  return gib;
}

/** Cinder's next-page link: the same URL, absolute, its other parameters kept, with `limit` and the last id as `marker`. */
function nextLink(req: FastifyRequest, limit: number, marker: string): Array<{ rel: string; href: string }> {
  const url = new URL(req.url, baseUrl(req));
  url.searchParams.set('limit', String(limit));
  url.searchParams.set('marker', marker);
  return [{ rel: 'next', href: url.toString() }];
}

/** Create-body fields naming features this service does not have (a value asks for one). */
const UNSUPPORTED_CREATE_FIELDS: ReadonlyArray<readonly [string, string]> = [
  ['snapshot_id', 'volumes from snapshots'],
  ['source_volid', 'volume clones'],
  ['imageRef', 'volumes from images'],
  ['image_id', 'volumes from images'],
  ['backup_id', 'volumes from backups'],
  ['consistencygroup_id', 'consistency groups'],
  ['group_id', 'groups'],
];

/** Whether a create field is unset as Cinder's clients leave it: absent, null or empty. */
function unset(value: unknown): boolean {
  return value === undefined || value === null || value === '';
}

/**
 * Registers the volume routes. Lists page as Cinder's (`limit`/`marker`, paged in SQL by the
 * store): a page of volumes comes with `volumes_links`, a page of a volume's actions with `links`
 * (shaped as Nova's instance actions), while more items follow. `volumeHost`: this service's
 * host name in `os-vol-host-attr:host` and attachments' `host_name` (default: the OS's).
 */
export function registerVolumes(app: App, deps: ServerDeps & { volumes: VolumeService; volumeHost?: string }): void {
  const { volumes } = deps;
  const host = deps.volumeHost ?? hostname();
  const viewContext = (req: FastifyRequest, projectId: string): CinderViewContext => ({
    base: baseUrl(req),
    projectId,
    version: req.apiVersion,
    viewer: viewerOf(deps, req.auth!),
    host,
  });

  /**
   * Cinder's `volume_api.get` then its policy check on the volume's owner: an admin
   * (`context_is_admin`) finds a volume of any project by id; others only their project's (404
   * otherwise, revealing nothing). Throws VolumeNotFound (404), Unauthorized (401), Forbidden (403).
   */
  const findVolume = async (req: FastifyRequest, projectId: string, volumeId: string, action: string) => {
    const anyProject = await allowed(deps, req, 'context_is_admin', {});
    const volume = await inRequest(req, () => volumes.get(projectId, volumeId, anyProject));
    const ctx = await authorizeOn(deps, req, action, { project_id: volume.projectId });
    return { volume, ctx, anyProject };
  };

  app.post(
    '/v3/:project_id/volumes',
    {
      schema: {
        tags,
        summary: 'Create a volume (Cinder’s body; ours also takes size_bytes and format)',
        params: ProjectParams,
        body: CreateVolumeBody,
        response: { 202: Type.Object({ volume: CinderVolume }), ...errorResponses(400, 401, 403, 500) },
      },
    },
    async (req, reply) => {
      const { project_id } = req.params;
      const ctx = await authorize(deps, req, 'volume:create', { project_id });
      const b = req.body.volume;
      for (const [field, feature] of UNSUPPORTED_CREATE_FIELDS) {
        if (!unset((b as Record<string, unknown>)[field])) throw errors.invalidInput(`volume.${field} is not supported: this service does not offer ${feature}.`);
      }
      if (b.multiattach === true) throw errors.invalidInput('volume.multiattach true is not supported: a volume attaches to one server at a time.');
      if (!unset(b.availability_zone) && b.availability_zone !== AVAILABILITY_ZONE) {
        throw errors.invalidInput(`Availability zone '${b.availability_zone}' is invalid: the only one is '${AVAILABILITY_ZONE}'.`);
      }
      const size = b.size ?? undefined;
      const sizeBytes = b.size_bytes ?? undefined;
      if ((size === undefined) === (sizeBytes === undefined)) throw errors.invalidInput('Give exactly one of volume.size (GiB) and volume.size_bytes.');
      const request: CreateVolumeRequest = {
        name: b.name ?? b.display_name ?? '',
        sizeBytes: sizeBytes ?? gibToBytes(sizeGiB('volume.size', size!)),
        backend: b.volume_type ?? '',
        ...(b.format ? { format: b.format } : {}),
        // "" is not "no encryption": a template's empty variable must not make plaintext (400).
        ...(b.encryption === undefined || b.encryption === null ? {} : { encryption: b.encryption }),
        description: b.description ?? b.display_description ?? null,
        metadata: b.metadata ?? {},
      };
      const v = await inRequest(req, () => volumes.create(ctx, project_id, request));
      return reply.status(202).send({ volume: cinderVolumeView(v, viewContext(req, project_id), false) });
    },
  );

  // The three lists share their query (the schema helper's union type leaves params untyped).
  const listQuery = async (req: FastifyRequest) => {
    const { project_id } = req.params as { project_id: string };
    const query = req.query as VolumeListQuery;
    await authorize(deps, req, 'volume:get_all', { project_id });
    const filters = volumeFilters(query, req.apiVersion, viewerOf(deps, req.auth!).admin);
    const page = pageOf(query);
    const scope = listScope(filters, project_id);
    if (scope === null) return { items: [] as VolumeRecord[], next: undefined };
    const filter = {
      ...(filters.name !== undefined ? { name: filters.name } : {}),
      ...(filters.status !== undefined ? { status: filters.status } : {}),
    };
    const rows = await inRequest(req, () => volumes.list(scope, storePage(page), filter));
    const { items, next } = pageResult(rows, page, (v) => v.id, req.url);
    return { items, next: next ? nextLink(req, page.limit, items.at(-1)!.id) : undefined };
  };
  const listSchema = (item: typeof CinderVolume | typeof CinderVolumeSummary | typeof OnlineExtendView, summary: string) => ({
    tags,
    summary,
    params: ProjectParams,
    querystring: VolumeListQuery,
    response: { 200: Type.Object({ volumes: Type.Array(item), volumes_links: Type.Optional(Type.Array(CinderLink)) }), ...errorResponses(400, 401, 403) },
  });

  app.get(
    '/v3/:project_id/volumes',
    { schema: listSchema(CinderVolumeSummary, 'A page of volumes (id, name, links), oldest first; filters name, status, all_tenants (admins); `marker` is a volume id') },
    async (req) => {
      const { items, next } = await listQuery(req);
      const c = viewContext(req, (req.params as { project_id: string }).project_id);
      return { volumes: items.map((v) => cinderSummary(v, c)), ...(next ? { volumes_links: next } : {}) };
    },
  );

  app.get(
    '/v3/:project_id/volumes/detail',
    { schema: listSchema(CinderVolume, 'A page of volumes in detail, oldest first; filters name, status, all_tenants (admins); `marker` is a volume id') },
    async (req) => {
      const { items, next } = await listQuery(req);
      const c = viewContext(req, (req.params as { project_id: string }).project_id);
      return { volumes: items.map((v) => cinderVolumeView(v, c, true)), ...(next ? { volumes_links: next } : {}) };
    },
  );

  app.get(
    '/v3/:project_id/volumes/os-online-extend',
    { schema: listSchema(OnlineExtendView, 'Ours: a page of volumes with their exact size in bytes, format and extend in progress; same query as the Cinder lists') },
    async (req) => {
      const { items, next } = await listQuery(req);
      const growths = await inRequest(req, () => volumes.latestFsGrowths(items.map((v) => v.id)));
      return { volumes: items.map((v) => onlineExtendView(v, growths.get(v.id))), ...(next ? { volumes_links: next } : {}) };
    },
  );

  app.get(
    '/v3/:project_id/volumes/:volume_id',
    { schema: { tags, params: VolumeIdParams, response: { 200: Type.Object({ volume: CinderVolume }), ...errorResponses(401, 403, 404) } } },
    async (req) => {
      const { project_id, volume_id } = req.params;
      const { volume } = await findVolume(req, project_id, volume_id, 'volume:get');
      return { volume: cinderVolumeView(volume, viewContext(req, project_id), true) };
    },
  );

  app.get(
    '/v3/:project_id/volumes/:volume_id/os-online-extend',
    {
      schema: {
        tags,
        summary:
          'Ours: the volume’s exact size in bytes, format and the extend in progress or failed (step, target, error), with its status, and what its latest extend did about the guest’s filesystem (fs_growth)',
        params: VolumeIdParams,
        response: { 200: Type.Object({ volume: OnlineExtendView }), ...errorResponses(401, 403, 404) },
      },
    },
    async (req) => {
      const { project_id, volume_id } = req.params;
      const { volume } = await findVolume(req, project_id, volume_id, 'volume:get');
      const growths = await inRequest(req, () => volumes.latestFsGrowths([volume.id]));
      return { volume: onlineExtendView(volume, growths.get(volume.id)) };
    },
  );

  app.get(
    '/v3/:project_id/volumes/:volume_id/os-volume-actions',
    {
      schema: {
        tags,
        summary: 'Ours: a page of the volume’s actions, newest first; `marker` is a request id',
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
      await findVolume(req, project_id, volume_id, 'volume:get');
      const page = pageOf(req.query);
      const actions = await inRequest(req, () => volumes.listActions(volume_id, storePage(page)));
      const { items, next } = pageResult(actions, page, (a) => a.requestId, req.url);
      return { volumeActions: items.map(actionView), ...(next ? { links: next satisfies PageLink[] } : {}) };
    },
  );

  app.put(
    '/v3/:project_id/volumes/:volume_id',
    {
      schema: {
        tags,
        summary: 'Cinder’s update: the name, description and metadata (which replaces the set); 200 with the volume',
        params: VolumeIdParams,
        body: UpdateVolumeBody,
        response: { 200: Type.Object({ volume: CinderVolume }), ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (req) => {
      const { project_id, volume_id } = req.params;
      const { anyProject } = await findVolume(req, project_id, volume_id, 'volume:update');
      const b = req.body.volume;
      // Cinder's v1 names count when the v2 name is absent, as on create.
      const name = b.name !== undefined ? b.name : b.display_name;
      const description = b.description !== undefined ? b.description : b.display_description;
      const patch = {
        ...(name !== undefined ? { name: name ?? '' } : {}),
        ...(description !== undefined ? { description } : {}),
        ...(b.metadata !== undefined ? { metadata: b.metadata ?? {} } : {}),
      };
      const v = await inRequest(req, () => volumes.update(project_id, volume_id, patch, { anyProject }));
      // Cinder's update answers with the detail view without the show extensions (tempest's update_volume is create_volume's).
      return { volume: cinderVolumeView(v, viewContext(req, project_id), false) };
    },
  );

  app.get(
    '/v3/:project_id/volumes/:volume_id/metadata',
    {
      schema: {
        tags,
        summary: 'Cinder’s volume metadata: every key and value',
        params: VolumeIdParams,
        response: { 200: Type.Object({ metadata: Type.Record(Type.String(), Type.String()) }), ...errorResponses(401, 403, 404) },
      },
    },
    async (req) => {
      const { project_id, volume_id } = req.params;
      const { volume } = await findVolume(req, project_id, volume_id, 'volume:get');
      return { metadata: volume.metadata ?? {} };
    },
  );

  app.post(
    '/v3/:project_id/volumes/:volume_id/metadata',
    {
      schema: {
        tags,
        summary:
          'Cinder’s set metadata (`openstack volume set --property k=v`): merges the keys given, answers every key; `online_extend:grow_fs` must be "true" or "false"',
        params: VolumeIdParams,
        body: VolumeMetadataBody,
        response: { 200: Type.Object({ metadata: Type.Record(Type.String(), Type.String()) }), ...errorResponses(400, 401, 403, 404) },
      },
    },
    async (req) => {
      const { project_id, volume_id } = req.params;
      const { anyProject } = await findVolume(req, project_id, volume_id, 'volume:update');
      return { metadata: await inRequest(req, () => volumes.setMetadata(project_id, volume_id, req.body.metadata, { anyProject })) };
    },
  );

  app.delete(
    '/v3/:project_id/volumes/:volume_id',
    { schema: { tags, summary: 'Delete a volume that is not attached: 202 with no body', params: VolumeIdParams, response: { 202: { type: 'null' }, ...errorResponses(401, 403, 404, 409, 500) } } },
    async (req, reply) => {
      const { project_id, volume_id } = req.params;
      const { ctx, anyProject } = await findVolume(req, project_id, volume_id, 'volume:delete');
      await inRequest(req, () => volumes.delete(ctx, project_id, volume_id, { anyProject }));
      return reply.status(202).send();
    },
  );

  app.post(
    '/v3/:project_id/volumes/:volume_id/action',
    {
      schema: {
        tags,
        summary:
          'os-extend (GiB) or our os-extend-bytes (exact bytes): 202 with no body, the volume already `extending` (an attached one needs microversion 3.42 and is extended online, in the background); ours: `online_extend:grow_fs` in either also grows the guest’s filesystem',
        params: VolumeIdParams,
        body: VolumeActionBody,
        response: { 202: { type: 'null' }, ...errorResponses(400, 401, 403, 404, 409, 500, 501, 503) },
      },
    },
    async (req, reply) => {
      const { project_id, volume_id } = req.params;
      const body = req.body;
      const newBytes = 'os-extend' in body ? gibToBytes(sizeGiB('os-extend.new_size', body['os-extend'].new_size)) : body['os-extend-bytes'].new_bytes;
      const growFs = ('os-extend' in body ? body['os-extend'] : body['os-extend-bytes'])['online_extend:grow_fs'];
      const { volume, ctx, anyProject } = await findVolume(req, project_id, volume_id, 'volume:extend');
      // The lifecycle table names the rules the volume needs (extend_attached_volume whenever
      // it has an attachment); the service checks them on the record its decision is about,
      // with its owner as the target (the owner of a volume never changes).
      const target = { project_id: volume.projectId };
      await volumes.extend(ctx, project_id, volume_id, newBytes, (rule) => deps.policy.allows(rule, req.auth!, target), {
        detachedOnly: !req.apiVersion.atLeast(VOLUME_3_42),
        anyProject,
        ...(growFs === undefined ? {} : { growFs }),
      });
      return reply.status(202).send();
    },
  );
}
