/**
 * The service catalog the embedded Keystone puts in its tokens, shaped as Keystone 22's
 * (`keystone/catalog/backends/sql.py` get_v3_catalog): one entry per service type with a public,
 * an internal and an admin endpoint in RegionOne, all with the same URL. URLs come from where
 * each API of this process actually listens (after binding port 0), read when a token is made.
 */
import { createHash } from 'node:crypto';

/** Base URLs by service (our names), as the ServiceCatalog of src/rpc records them. */
export interface EndpointSource {
  urls(): Partial<Record<'compute' | 'volume' | 'identity' | 'image', string>>;
}

/** One endpoint of a catalog entry. */
export interface CatalogEndpoint {
  id: string;
  interface: 'public' | 'internal' | 'admin';
  region: string;
  region_id: string;
  url: string;
}

/** One service of the catalog. */
export interface CatalogEntry {
  endpoints: CatalogEndpoint[];
  id: string;
  type: string;
  name: string;
}

/** The only region (devstack's and tempest's default). */
export const REGION = 'RegionOne';

const INTERFACES = ['public', 'internal', 'admin'] as const;

/** A stable Keystone-style id (32 hex digits) for `what`: the same on every start, whatever the ports. */
export function stableId(what: string): string {
  return createHash('sha256').update(`online-extend:${what}`).digest('hex').slice(0, 32);
}

/**
 * Which catalog entries each of our services gives: Keystone type, name, and the URL under the
 * service's base URL. `%(project_id)s` is substituted per token, as Keystone does. The volume
 * API is listed as both `volumev3` (tempest's `catalog_type`, cinderclient) and `block-storage`
 * (the official type, which keystoneauth and openstacksdk look for), as devstack registers it.
 */
const SERVICES: ReadonlyArray<{ source: keyof ReturnType<EndpointSource['urls']>; type: string; name: string; path: string }> = [
  { source: 'compute', type: 'compute', name: 'nova', path: '/v2.1' },
  { source: 'volume', type: 'volumev3', name: 'cinderv3', path: '/v3/%(project_id)s' },
  { source: 'volume', type: 'block-storage', name: 'cinder', path: '/v3/%(project_id)s' },
  { source: 'identity', type: 'identity', name: 'keystone', path: '/v3' },
  { source: 'image', type: 'image', name: 'glance', path: '' },
];

/** The catalog for a token scoped to `projectId`: one entry per service that listens now (see SERVICES). */
export function buildCatalog(source: EndpointSource, projectId: string): CatalogEntry[] {
  const urls = source.urls();
  const entries: CatalogEntry[] = [];
  for (const s of SERVICES) {
    const base = urls[s.source];
    if (base === undefined) continue;
    const url = `${base.replace(/\/+$/, '')}${s.path.replace('%(project_id)s', encodeURIComponent(projectId))}`;
    entries.push({
      endpoints: INTERFACES.map((i) => ({ id: stableId(`endpoint:${s.type}:${i}`), interface: i, region: REGION, region_id: REGION, url })),
      id: stableId(`service:${s.type}`),
      type: s.type,
      name: s.name,
    });
  }
  return entries;
}
