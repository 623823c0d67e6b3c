/**
 * Nova's flavor reads: GET /flavors (id, name, links), /flavors/detail and /flavors/{id}, under
 * every compute prefix. Flavors are registered with the CLI (`online-extend flavor create`).
 * Shapes as Nova's at each microversion: swap is `""` when 0 before 2.75 (0 from then on),
 * `description` from 2.55; `os-extra_specs` is always empty. Any authenticated caller may read them (Nova checks no policy on them:
 * `os_compute_api:flavors:index` defaults to `@`).
 */
import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import type { App, ServerDeps } from '../../server.js';
import { authorize, inRequest } from '../../server.js';
import { errorResponses, PathId } from '../../schemas/common.js';
import { Link } from '../../schemas/compute.js';
import { ApiVersion } from '../../microversion.js';
import type { ComputeStore, FlavorRecord } from '../../../db/store.js';
import { errors } from '../../../errors.js';
import { COMPUTE_PREFIXES, prefixParams } from './serverLifecycle.js';

const V2_55 = new ApiVersion(2, 55);
const V2_75 = new ApiVersion(2, 75);

const FlavorSummary = Type.Object({ id: Type.String(), name: Type.String(), links: Type.Array(Link), description: Type.Optional(Type.Union([Type.String(), Type.Null()])) });
const FlavorDetail = Type.Object({
  id: Type.String(),
  name: Type.String(),
  ram: Type.Integer({ description: 'MiB' }),
  disk: Type.Integer({ description: 'Root disk, GiB' }),
  swap: Type.Union([Type.Integer(), Type.Literal('')], { description: 'MiB; "" when 0 before 2.75' }),
  'OS-FLV-EXT-DATA:ephemeral': Type.Integer({ description: 'GiB' }),
  'OS-FLV-DISABLED:disabled': Type.Boolean(),
  vcpus: Type.Integer(),
  'os-flavor-access:is_public': Type.Boolean(),
  rxtx_factor: Type.Number(),
  links: Type.Array(Link),
  description: Type.Optional(Type.Union([Type.String(), Type.Null()])),
});

/** Nova's flavor links: `self` under the request's version prefix, `bookmark` without; the project only if the URL had one. */
function flavorLinks(req: FastifyRequest, id: string): Array<{ rel: string; href: string }> {
  const host = req.headers.host ?? `${req.socket.localAddress}:${req.socket.localPort}`;
  const p = req.params as { tenant_id?: string; project_id?: string };
  const project = p.tenant_id ?? p.project_id;
  const version = req.url.startsWith('/v2/') ? 'v2' : 'v2.1';
  const tail = `${project === undefined ? '' : `${encodeURIComponent(project)}/`}flavors/${encodeURIComponent(id)}`;
  return [
    { rel: 'self', href: `http://${host}/${version}/${tail}` },
    { rel: 'bookmark', href: `http://${host}/${tail}` },
  ];
}

function summary(req: FastifyRequest, f: FlavorRecord) {
  return { id: f.id, name: f.name, links: flavorLinks(req, f.id), ...(req.apiVersion?.atLeast(V2_55) ? { description: f.description } : {}) };
}

/** A flavor as Nova's detail view shows it at the request's microversion. */
export function flavorView(req: FastifyRequest, f: FlavorRecord) {
  return {
    id: f.id,
    name: f.name,
    ram: f.ramMb,
    disk: f.diskGb,
    swap: f.swapMb === 0 && !req.apiVersion?.atLeast(V2_75) ? ('' as const) : f.swapMb,
    'OS-FLV-EXT-DATA:ephemeral': f.ephemeralGb,
    'OS-FLV-DISABLED:disabled': false,
    vcpus: f.vcpus,
    'os-flavor-access:is_public': f.isPublic,
    rxtx_factor: 1.0,
    links: flavorLinks(req, f.id),
    ...(req.apiVersion?.atLeast(V2_55) ? { description: f.description } : {}),
  };
}

/** Registers the flavor reads under every compute prefix. */
export function registerFlavors(app: App, deps: ServerDeps & { store: ComputeStore }): void {
  const tags = ['flavors'];
  const RULE = 'os_compute_api:flavors:index';
  for (const prefix of COMPUTE_PREFIXES) {
    const params = prefixParams(prefix);
    app.get(
      `${prefix}/flavors`,
      { schema: { tags, params: Type.Object(params), response: { 200: Type.Object({ flavors: Type.Array(FlavorSummary) }), ...errorResponses(401, 403) } } },
      async (req) => {
        await authorize(deps, req, RULE, {});
        return { flavors: (await inRequest(req, () => deps.store.listFlavors())).map((f) => summary(req, f)) };
      },
    );
    app.get(
      `${prefix}/flavors/detail`,
      { schema: { tags, params: Type.Object(params), response: { 200: Type.Object({ flavors: Type.Array(FlavorDetail) }), ...errorResponses(401, 403) } } },
      async (req) => {
        await authorize(deps, req, RULE, {});
        return { flavors: (await inRequest(req, () => deps.store.listFlavors())).map((f) => flavorView(req, f)) };
      },
    );
    app.get(
      `${prefix}/flavors/:flavor_id`,
      { schema: { tags, params: Type.Object({ ...params, flavor_id: PathId }), response: { 200: Type.Object({ flavor: FlavorDetail }), ...errorResponses(401, 403, 404) } } },
      async (req) => {
        await authorize(deps, req, RULE, {});
        const { flavor_id } = req.params as { flavor_id: string };
        const f = await inRequest(req, () => deps.store.getFlavor(flavor_id));
        if (!f) throw errors.notFound(`Flavor ${flavor_id} could not be found.`);
        return { flavor: flavorView(req, f) };
      },
    );
    // Flavors here have no extra specs; openstacksdk reads them for every flavor it shows (below 2.61).
    app.get(
      `${prefix}/flavors/:flavor_id/os-extra_specs`,
      { schema: { tags, params: Type.Object({ ...params, flavor_id: PathId }), response: { 200: Type.Object({ extra_specs: Type.Record(Type.String(), Type.String()) }), ...errorResponses(401, 403, 404) } } },
      async (req) => {
        await authorize(deps, req, RULE, {});
        const { flavor_id } = req.params as { flavor_id: string };
        if (!(await inRequest(req, () => deps.store.getFlavor(flavor_id)))) throw errors.notFound(`Flavor ${flavor_id} could not be found.`);
        return { extra_specs: {} };
      },
    );
  }
}
