/**
 * Version discovery, as Nova and Cinder answer it (docs/notes/f-openstack-on-the-wire.md §1.6):
 * unauthenticated documents that clients (novaclient, cinderclient, openstacksdk, tempest) read to
 * learn the microversion range. The ranges come from microversion.ts, so what is advertised here
 * is what negotiation serves. The documents themselves are not microversioned.
 */
import type { FastifyRequest } from 'fastify';
import type { App } from '../server.js';
import { COMPUTE_VERSIONS, VOLUME_VERSIONS } from '../microversion.js';
import { ComputeVersionDocument, ComputeVersionList, VolumeVersionList } from '../schemas/versions.js';

const tags = ['versions'];
/** No token, as upstream: OpenAPI's global `token` requirement is lifted for these routes. */
const security: [] = [];
/** Not microversioned, as upstream: a version header the APIs would refuse does not stop discovery (server.ts). */
const config = { unversioned: true };

/** Nova's and Cinder's dates for their versions (nova/api/openstack/compute/versions.py, cinder/api/versions.py). */
const COMPUTE_V20_UPDATED = '2011-01-21T11:33:21Z';
const COMPUTE_V21_UPDATED = '2013-07-23T11:33:21Z';
const VOLUME_V30_UPDATED = '2016-02-08T12:20:21Z';

/**
 * `http://host:port`, from the request's Host as Nova and Cinder build links (no configured public
 * URL yet). An HTTP/1.0 request without Host gets the address it reached.
 */
function baseUrl(req: FastifyRequest): string {
  const host = req.headers.host ?? `${req.socket.localAddress}:${req.socket.localPort}`;
  return `http://${host}`;
}

function computeV20(base: string) {
  return { id: 'v2.0', status: 'SUPPORTED', version: '', min_version: '', updated: COMPUTE_V20_UPDATED, self: `${base}/v2/`, media: 'application/vnd.openstack.compute+json;version=2' };
}

function computeV21(base: string) {
  return {
    id: 'v2.1',
    status: 'CURRENT',
    version: String(COMPUTE_VERSIONS.max),
    min_version: String(COMPUTE_VERSIONS.min),
    updated: COMPUTE_V21_UPDATED,
    self: `${base}/v2.1/`,
    media: `application/vnd.openstack.compute+json;version=2.1`,
  };
}

type ComputeVersion = ReturnType<typeof computeV20>;

/** Nova's list entry: only the `self` link. */
function computeSummary(v: ComputeVersion) {
  return { id: v.id, status: v.status, version: v.version, min_version: v.min_version, updated: v.updated, links: [{ rel: 'self', href: v.self }] };
}

/** Nova's single-version document: `self` then `describedby`, and the media type. */
function computeDocument(v: ComputeVersion) {
  return {
    version: {
      id: v.id,
      status: v.status,
      version: v.version,
      min_version: v.min_version,
      updated: v.updated,
      links: [
        { rel: 'self', href: v.self },
        { rel: 'describedby', type: 'text/html', href: 'http://docs.openstack.org/' },
      ],
      'media-types': [{ base: 'application/json', type: v.media }],
    },
  };
}

/** `GET /`, `GET /v2.1[/]`, `GET /v2[/]` on the compute API. */
export function registerComputeVersions(app: App): void {
  app.get('/', { config, schema: { tags, security, summary: 'List the API versions (Nova)', response: { 200: ComputeVersionList } } }, async (req) => {
    const base = baseUrl(req);
    return { versions: [computeSummary(computeV20(base)), computeSummary(computeV21(base))] };
  });
  for (const [path, version] of [
    ['/v2.1', computeV21],
    ['/v2.1/', computeV21],
    ['/v2', computeV20],
    ['/v2/', computeV20],
  ] as const) {
    app.get(path, { config, schema: { tags, security, summary: `Show the ${version === computeV21 ? 'v2.1' : 'v2.0'} version document (Nova)`, response: { 200: ComputeVersionDocument } } }, async (req) =>
      computeDocument(version(baseUrl(req))),
    );
  }
}

/** Cinder's list, the same for `GET /` and `GET /v3/`: v3.0 with its range, `describedby` then `self`. */
function volumeVersions(base: string) {
  return {
    versions: [
      {
        id: 'v3.0',
        status: 'CURRENT',
        version: String(VOLUME_VERSIONS.max),
        min_version: String(VOLUME_VERSIONS.min),
        updated: VOLUME_V30_UPDATED,
        links: [
          { rel: 'describedby', type: 'text/html', href: 'https://docs.openstack.org/' },
          { rel: 'self', href: `${base}/v3/` },
        ],
        'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.volume+json;version=3' }],
      },
    ],
  };
}

/** `GET /` (300 Multiple Choices, as Cinder) and `GET /v3[/]` (200) on the volume API. */
export function registerVolumeVersions(app: App): void {
  app.get('/', { config, schema: { tags, security, summary: 'List the API versions (Cinder: 300 Multiple Choices)', response: { 300: VolumeVersionList } } }, async (req, reply) =>
    reply.status(300).send(volumeVersions(baseUrl(req))),
  );
  for (const path of ['/v3', '/v3/']) {
    app.get(path, { config, schema: { tags, security, summary: 'Show the v3 versions (Cinder)', response: { 200: VolumeVersionList } } }, async (req) => volumeVersions(baseUrl(req)));
  }
}
