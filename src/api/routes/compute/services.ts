/**
 * Nova's os-services (the 2.1 forms, up to our max 2.51), under the three URL forms of
 * `computeRoute`, admins only by default:
 *
 * - `GET os-services[?host=&binary=]` (`os_compute_api:os-services:list`): every compute service
 *   with `state` up or down (ComputeServices: heartbeat within serviceDownTimeMs) and `status`
 *   enabled or disabled; `forced_down` from 2.11 (always false: forcing down is not implemented).
 *   Ids stay integers: the UUID ids of 2.53 are above our max.
 * - `PUT os-services/enable`, `os-services/disable`, `os-services/disable-log-reason`
 *   (`os_compute_api:os-services:update`), body `{"host", "binary"[, "disabled_reason"]}`, as
 *   Nova's 2.1 `update`: only `nova-compute` may be updated (400), an unknown host or binary is
 *   404. A disabled host takes no new servers; its servers keep working.
 */
import { Type } from '@sinclair/typebox';
import type { App, ServerDeps } from '../../server.js';
import { authorize, inRequest } from '../../server.js';
import { errorResponses } from '../../schemas/common.js';
import { ApiVersion } from '../../microversion.js';
import type { ComputeServices, ServiceState } from '../../../compute/services.js';
import { NOVA_COMPUTE } from '../../../compute/services.js';
import { errors } from '../../../errors.js';
import { computeRoute } from './route.js';

const V2_11 = new ApiVersion(2, 11);

/** Nova's availability zone of every compute service here: one zone. */
const ZONE = 'nova';

const QueryValue = Type.Union([Type.String({ maxLength: 255 }), Type.Array(Type.String({ maxLength: 255 }), { maxItems: 100 })]);
const ServicesQuery = Type.Object({ host: Type.Optional(QueryValue), binary: Type.Optional(QueryValue) }, { additionalProperties: true });

const Service = Type.Object({
  id: Type.Integer(),
  binary: Type.String(),
  host: Type.String(),
  zone: Type.String(),
  status: Type.Union([Type.Literal('enabled'), Type.Literal('disabled')]),
  state: Type.Union([Type.Literal('up'), Type.Literal('down')]),
  updated_at: Type.Union([Type.String(), Type.Null()]),
  disabled_reason: Type.Union([Type.String(), Type.Null()]),
  forced_down: Type.Optional(Type.Boolean({ description: 'From 2.11' })),
});

const Name = Type.String({ minLength: 1, maxLength: 255 });
const UpdateBody = Type.Object({ host: Name, binary: Name, disabled_reason: Type.Optional(Name) }, { additionalProperties: false });
const UpdateAction = Type.Union([Type.Literal('enable'), Type.Literal('disable'), Type.Literal('disable-log-reason')]);
const UpdatedService = Type.Object({
  service: Type.Object({ host: Type.String(), binary: Type.String(), status: Type.String(), disabled_reason: Type.Optional(Type.String()) }),
});

/** The last value of a repeated query parameter (webob's MultiDict, which Nova reads). */
function last(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.at(-1) : v;
}

/** Nova's time format in this view: ISO 8601 without a zone, microseconds (`2012-10-29T13:42:02.000000`). */
function novaTime(iso: string): string {
  const m = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?Z?$/.exec(iso);
  return m ? `${m[1]}.${(m[2] ?? '').padEnd(6, '0').slice(0, 6)}` : iso;
}

function serviceView(s: ServiceState, withForcedDown: boolean) {
  return {
    id: s.id,
    binary: s.binary,
    host: s.host,
    zone: ZONE,
    status: s.disabled ? ('disabled' as const) : ('enabled' as const),
    state: s.up ? ('up' as const) : ('down' as const),
    updated_at: novaTime(s.updatedAt),
    disabled_reason: s.disabledReason,
    ...(withForcedDown ? { forced_down: false } : {}),
  };
}

/** Registers os-services (see the module comment) on `app`. */
export function registerServices(app: App, deps: ServerDeps & { services: ComputeServices }): void {
  const tags = ['os-services'];
  computeRoute(app, {
    method: 'GET',
    path: '/os-services',
    params: {},
    querystring: ServicesQuery,
    schema: { tags, summary: 'List compute services (admin)', response: { 200: Type.Object({ services: Type.Array(Service) }), ...errorResponses(400, 401, 403) } },
    handler: async (req) => {
      await authorize(deps, req, 'os_compute_api:os-services:list', {});
      const host = last(req.query.host);
      const binary = last(req.query.binary);
      const list = await inRequest(req, () => deps.services.list({ ...(host === undefined ? {} : { host }), ...(binary === undefined ? {} : { binary }) }));
      const withForcedDown = req.apiVersion?.atLeast(V2_11) ?? false;
      return { services: list.map((s) => serviceView(s, withForcedDown)) };
    },
  });

  computeRoute(app, {
    method: 'PUT',
    path: '/os-services/:action',
    params: { action: UpdateAction },
    body: UpdateBody,
    schema: { tags, summary: 'Enable or disable a compute service (admin; the 2.1 forms)', response: { 200: UpdatedService, ...errorResponses(400, 401, 403, 404) } },
    handler: async (req) => {
      await authorize(deps, req, 'os_compute_api:os-services:update', {});
      const { host, binary, disabled_reason: reason } = req.body;
      const action = req.params.action;
      if (action === 'disable-log-reason' && reason === undefined) throw errors.badRequest('Missing disabled reason field');
      if (binary !== NOVA_COMPUTE) throw errors.badRequest(`Updating a ${binary} service is not supported. Only nova-compute services can be updated.`);
      const disabled = action !== 'enable';
      const why = action === 'disable-log-reason' ? reason! : null;
      if (!(await inRequest(req, () => deps.services.setDisabled(host, binary, disabled, why)))) throw errors.notFound(`Could not find binary ${binary} on host ${host}.`);
      return { service: { host, binary, status: disabled ? 'disabled' : 'enabled', ...(why === null ? {} : { disabled_reason: why }) } };
    },
  });
}
