/**
 * Nova's views of servers, volume attachments and instance actions at microversions 2.1–2.51
 * (nova/api/openstack/compute/views/servers.py, volume_attachments.py, instance_actions.py;
 * docs/notes/f-openstack-on-the-wire.md §1.1–§1.4). Tempest's strict schemas check them
 * (test/api/compute-conformance.real.test.ts): no key Nova would not send at that version to
 * that caller, none missing.
 *
 * Where our record has no value Nova would have, the view says so as Nova does for the same
 * absence: a server found on the host (not built through the API) has no image (`""`, as a
 * server booted from a volume), no user (`user_id` `""`: we do not invent an owner), and its
 * `created` is its last update. It has no flavor either, but clients need one (openstackclient
 * reads `flavor.id` before 2.47, tempest requires it from 2.3): it shows the host-defined
 * flavor, see `hostDefinedFlavorView`.
 */
import { createHash } from 'node:crypto';
import type { ApiVersion } from '../../microversion.js';
import { ApiVersion as Version } from '../../microversion.js';
import { HOST_DEFINED_FLAVOR, type FlavorRecord, type InstanceActionRecord, type ServerRecord } from '../../../db/store.js';
import { NOVA_SERVER_STATES } from '../../../rpc/shapes.js';
import type { Connection } from '../../../rpc/shapes.js';
import type { ComputeScope } from './route.js';

export const V2_3 = new Version(2, 3);
export const V2_9 = new Version(2, 9);
export const V2_16 = new Version(2, 16);
export const V2_19 = new Version(2, 19);
export const V2_26 = new Version(2, 26);
export const V2_47 = new Version(2, 47);
export const V2_51 = new Version(2, 51);

/** The statuses Nova sends `progress` with (views/servers.py `_progress_statuses`). */
const PROGRESS_STATUSES = new Set(['ACTIVE', 'BUILD', 'REBUILD', 'RESIZE', 'VERIFY_RESIZE', 'MIGRATING']);

/** Nova's availability zone when none is configured (`[DEFAULT] default_availability_zone`). */
export const AVAILABILITY_ZONE = 'nova';

/** `/{project}` when the URL had one, else nothing (Nova's `_get_project_id`). */
function projectPart(scope: ComputeScope): string {
  return scope.urlProject === undefined ? '' : `/${scope.urlProject}`;
}

/** Nova's `self` and `bookmark` links of a resource in `collection` (`servers`). */
export function resourceLinks(scope: ComputeScope, collection: string, id: string): Array<{ rel: string; href: string }> {
  const p = projectPart(scope);
  return [
    { rel: 'self', href: `${scope.base}${scope.versionPath}${p}/${collection}/${id}` },
    { rel: 'bookmark', href: `${scope.base}${p}/${collection}/${id}` },
  ];
}

function bookmark(scope: ComputeScope, collection: string, id: string): Array<{ rel: string; href: string }> {
  return [{ rel: 'bookmark', href: `${scope.base}${projectPart(scope)}/${collection}/${id}` }];
}

/** Nova's `hostId`: sha224 of project id and host, hex; `""` without a host (nova/utils.py `generate_hostid`). */
export function hostId(projectId: string, host: string | null | undefined): string {
  if (!host) return '';
  return createHash('sha224').update(projectId + host).digest('hex');
}

/** Nova's `OS-EXT-SRV-ATTR:hostname` from a display name: lower case, runs of other characters as `-` (nova/utils.py `sanitize_hostname`, simplified). */
function hostname(name: string): string {
  const h = name
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, '-')
    .replace(/^[.-]+|[.-]+$/g, '')
    .slice(0, 63);
  return h === '' ? 'server' : h;
}

/** GET /servers item. */
export function serverSummary(s: ServerRecord, scope: ComputeScope) {
  return { id: s.id, name: s.name, links: resourceLinks(scope, 'servers', s.id) };
}

/** Who is looking and at which version: what decides the keys of a server view. */
export interface ServerViewContext {
  version: ApiVersion;
  scope: ComputeScope;
  /** Passes `os_compute_api:os-extended-server-attributes` (admins): the `OS-EXT-SRV-ATTR:*` keys. */
  extendedAttributes: boolean;
  /** Passes `os_compute_api:servers:show:host_status` (admins): `host_status` from 2.16. */
  hostStatus: boolean;
  /** The `host_status` shown then: the host's compute service (the api role); absent: `UP` (serve, whose one host is this process). */
  hostState?: string | undefined;
  /** The server's flavor for 2.47 and later (undefined: none or unknown). */
  flavor?: FlavorRecord | undefined;
}

/**
 * The flavor id a server found on the host shows (before 2.47): its size was defined on the host,
 * not by a flavor. No flavor has this id: GET /flavors/host-defined answers 404 (Nova's answer
 * for a flavor that is gone, which openstackclient shows as the bare id), because its numbers
 * differ per server (they are in the server's own view from 2.47), and the CLI refuses to
 * register a flavor under it.
 */
export const HOST_DEFINED_FLAVOR_ID = HOST_DEFINED_FLAVOR;

/**
 * The extra spec that names what the driver could not measure of a host-defined flavor, as a
 * comma-separated list of `vcpus` and `ram` (whose values then show 0, which no real domain has).
 */
export const UNMEASURED_EXTRA_SPEC = 'online_extend:unmeasured';

/**
 * The flavor of a server found on the host (no flavorRef): before 2.47 `{id: "host-defined",
 * links}`; from 2.47 its size as the driver measured it (DriverServer.vcpus, memoryMb):
 * `{original_name: "host-defined", vcpus, ram (MiB), disk: 0, ephemeral: 0, swap: 0,
 * extra_specs}`. Nothing is invented: the root disk, ephemeral disk and swap are not measured
 * and show 0 (Nova's "no fixed size"); a vCPU count or memory the driver could not read shows 0,
 * a value no running domain has, and is named in extra_specs[UNMEASURED_EXTRA_SPEC] (tempest's
 * schema requires integers, so `null` is not an option).
 */
function hostDefinedFlavorView(s: ServerRecord, ctx: ServerViewContext): Record<string, unknown> {
  if (!ctx.version.atLeast(V2_47)) return { id: HOST_DEFINED_FLAVOR_ID, links: bookmark(ctx.scope, 'flavors', HOST_DEFINED_FLAVOR_ID) };
  const unmeasured = [...(s.vcpus === undefined ? ['vcpus'] : []), ...(s.memoryMb === undefined ? ['ram'] : [])];
  return {
    vcpus: s.vcpus ?? 0,
    ram: s.memoryMb ?? 0,
    disk: 0,
    ephemeral: 0,
    swap: 0,
    original_name: HOST_DEFINED_FLAVOR_ID,
    extra_specs: unmeasured.length === 0 ? {} : { [UNMEASURED_EXTRA_SPEC]: unmeasured.join(',') },
  };
}

/**
 * Nova's flavor of a server: `{id, links}` before 2.47, the flavor's own fields from 2.47, `{}`
 * when its flavor is no longer registered (as Nova shows a flavor gone from its records); a
 * server without a flavorRef (found on the host) shows the host-defined flavor.
 */
function flavorView(s: ServerRecord, ctx: ServerViewContext): Record<string, unknown> {
  if (!s.flavorRef) return hostDefinedFlavorView(s, ctx);
  if (!ctx.version.atLeast(V2_47)) return { id: s.flavorRef, links: bookmark(ctx.scope, 'flavors', s.flavorRef) };
  const f = ctx.flavor;
  if (!f) return {};
  return { vcpus: f.vcpus, ram: f.ramMb, disk: f.diskGb, ephemeral: f.ephemeralGb, swap: f.swapMb, original_name: f.name, extra_specs: {} };
}

/** Nova's server detail (`show`) for `s` as `ctx` says (see ServerViewContext and the module comment). */
export function serverDetail(s: ServerRecord, ctx: ServerViewContext): Record<string, unknown> {
  const nova = NOVA_SERVER_STATES[s.state] ?? NOVA_SERVER_STATES.unknown;
  const v = ctx.version;
  // A migrating guest is shown as Nova shows one: active, with task_state `migrating`.
  const taskState = s.taskState ?? (s.state === 'migrating' ? 'migrating' : null);
  const view: Record<string, unknown> = {
    id: s.id,
    name: s.name,
    status: nova.status,
    tenant_id: s.projectId,
    user_id: s.userId ?? '',
    metadata: s.metadata ?? {},
    hostId: hostId(s.projectId, s.host),
    image: s.imageRef ? { id: s.imageRef, links: bookmark(ctx.scope, 'images', s.imageRef) } : '',
    flavor: flavorView(s, ctx),
    // A server found on the host: when the inventory first saw it (never moves with its updates).
    created: s.createdAt ?? s.discoveredAt ?? s.updatedAt,
    updated: s.updatedAt,
    // No networking here: Nova's answer for a server without ports.
    addresses: {},
    accessIPv4: '',
    accessIPv6: '',
    links: resourceLinks(ctx.scope, 'servers', s.id),
    'OS-DCF:diskConfig': 'MANUAL',
  };
  if (PROGRESS_STATUSES.has(nova.status)) view.progress = 0;
  // Nova shows the fault of a server in ERROR only (a failed build says why here).
  if (nova.status === 'ERROR' && s.fault) view.fault = { code: s.fault.code, created: s.fault.created, message: s.fault.message };
  view['OS-EXT-AZ:availability_zone'] = AVAILABILITY_ZONE;
  view.config_drive = '';
  view.key_name = null;
  view['OS-SRV-USG:launched_at'] = null;
  view['OS-SRV-USG:terminated_at'] = null;
  if (ctx.extendedAttributes) {
    view['OS-EXT-SRV-ATTR:host'] = s.host;
    // The hypervisor's name for the guest: the libvirt domain name, which is the server's name here.
    view['OS-EXT-SRV-ATTR:instance_name'] = s.name;
    view['OS-EXT-SRV-ATTR:hypervisor_hostname'] = s.host;
    if (v.atLeast(V2_3)) {
      view['OS-EXT-SRV-ATTR:reservation_id'] = null;
      view['OS-EXT-SRV-ATTR:launch_index'] = 0;
      view['OS-EXT-SRV-ATTR:hostname'] = hostname(s.name);
      view['OS-EXT-SRV-ATTR:kernel_id'] = '';
      view['OS-EXT-SRV-ATTR:ramdisk_id'] = '';
      view['OS-EXT-SRV-ATTR:root_device_name'] = null;
      view['OS-EXT-SRV-ATTR:user_data'] = null;
    }
  }
  view['OS-EXT-STS:task_state'] = taskState;
  view['OS-EXT-STS:vm_state'] = nova.vmState;
  view['OS-EXT-STS:power_state'] = nova.powerState;
  // Volumes we attach are never deleted with the server (Nova's delete_on_termination false).
  view['os-extended-volumes:volumes_attached'] = s.attachments.map((a) => (v.atLeast(V2_3) ? { id: a.volumeId, delete_on_termination: false } : { id: a.volumeId }));
  // serve is the compute service of every server it shows: its host is up. The api role asks the host's service.
  if (v.atLeast(V2_16) && ctx.hostStatus) view.host_status = ctx.hostState ?? 'UP';
  if (v.atLeast(V2_9)) view.locked = false;
  if (v.atLeast(V2_19)) view.description = null;
  if (v.atLeast(V2_26)) view.tags = [];
  return view;
}

/** Nova's volume attachment (`_translate_attachment_detail_view`): `id` is the volume id; `device` only when set. */
export function attachmentView(a: Pick<Connection, 'serverId' | 'volumeId' | 'device'>) {
  return { id: a.volumeId, serverId: a.serverId, volumeId: a.volumeId, ...(a.device ? { device: `/dev/${a.device}` } : {}) };
}

/**
 * Nova's instance action (ACTION_KEYS). `message` is Nova's: `Error` when the action failed,
 * else null; our error text and details are in the os-instance-action-details extension.
 */
export function actionView(a: InstanceActionRecord) {
  return {
    action: a.action,
    instance_uuid: a.serverId,
    request_id: a.requestId,
    user_id: a.userId,
    project_id: a.projectId,
    start_time: a.startTime,
    message: a.result === 'Error' ? 'Error' : null,
  };
}

/**
 * Nova's shown instance action: with its events when `events` (admins at any version, owners
 * from 2.51), each with `traceback` when `traceback` (admins; our error message stands in for
 * Nova's Python traceback).
 */
export function actionWithEvents(a: InstanceActionRecord, opts: { events: boolean; traceback: boolean }) {
  const base = actionView(a);
  if (!opts.events) return base;
  const event = {
    event: a.event,
    start_time: a.startTime,
    finish_time: a.finishTime,
    result: a.result,
    ...(opts.traceback ? { traceback: a.result === 'Error' ? a.message : null } : {}),
  };
  return { ...base, events: [event] };
}

/** Our os-instance-action-details view: everything recorded of the action (schemas/compute.ts InstanceActionDetail). */
export function actionDetailView(a: InstanceActionRecord) {
  return {
    action: a.action,
    event: a.event,
    instance_uuid: a.serverId,
    request_id: a.requestId,
    user_id: a.userId,
    project_id: a.projectId,
    start_time: a.startTime,
    finish_time: a.finishTime,
    result: a.result,
    message: a.message,
    details: a.details,
  };
}
