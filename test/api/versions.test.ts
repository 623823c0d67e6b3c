/**
 * Version discovery over real HTTP, as Nova and Cinder answer it (docs/notes/f-openstack-on-the-wire.md
 * §1.6): shapes and statuses, links to the server's own address, no token, and the ranges that
 * microversion negotiation serves. Each document is also checked against a schema written from the
 * notes' table of required and allowed fields (tempest's), independent of the route schemas.
 */
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Type, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { makeService, PROJECT, type ServiceHarness } from '../support/service.js';
import { COMPUTE_VERSIONS, VOLUME_VERSIONS } from '../../src/api/microversion.js';

interface Answer {
  status: number;
  body: unknown;
  contentType: string | undefined;
  versionEcho: string | undefined;
}

/** A GET with no token and no other header than Host and `headers`. */
function get(base: string, path: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(new URL(path, base), { method: 'GET', headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as unknown, contentType: res.headers['content-type'], versionEcho: res.headers['openstack-api-version'] as string | undefined }));
    });
    req.on('error', reject);
    req.end();
  });
}

// The shapes of the notes (tempest's schemas): closed objects, these fields required.
const ISO8601 = '^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ$';
const closed = { additionalProperties: false } as const;
const NoteLink = Type.Object({ href: Type.String({ pattern: '^https?://' }), rel: Type.String(), type: Type.Optional(Type.String()) }, closed);
const NoteMedia = Type.Object({ base: Type.String(), type: Type.String() }, closed);
const NoteComputeVersion = Type.Object(
  {
    id: Type.String(),
    links: Type.Array(NoteLink),
    status: Type.String(),
    updated: Type.String({ pattern: ISO8601 }),
    version: Type.Optional(Type.String()),
    min_version: Type.Optional(Type.String()),
    'media-types': Type.Optional(Type.Array(NoteMedia)),
  },
  closed,
);
const NoteVolumeVersion = Type.Object(
  {
    id: Type.String(),
    links: Type.Array(NoteLink),
    status: Type.String(),
    updated: Type.String({ pattern: ISO8601 }),
    version: Type.String(),
    min_version: Type.String(),
    'media-types': Type.Array(NoteMedia),
  },
  closed,
);
const noteShapes: Record<string, TSchema> = {
  computeList: Type.Object({ versions: Type.Array(NoteComputeVersion) }, closed),
  computeOne: Type.Object({ version: NoteComputeVersion }, closed),
  volumeList: Type.Object({ versions: Type.Array(NoteVolumeVersion) }, closed),
};

let h: ServiceHarness;
beforeAll(async () => {
  h = await makeService();
});
afterAll(async () => h.cleanup());

const compute = () => h.service.computeUrl.replace(/\/$/, '');
const volume = () => h.service.volumeUrl!.replace(/\/$/, '');

function computeV21(base: string, full: boolean) {
  return {
    id: 'v2.1',
    status: 'CURRENT',
    version: String(COMPUTE_VERSIONS.max),
    min_version: String(COMPUTE_VERSIONS.min),
    updated: '2013-07-23T11:33:21Z',
    links: full ? [{ rel: 'self', href: `${base}/v2.1/` }, { rel: 'describedby', type: 'text/html', href: 'http://docs.openstack.org/' }] : [{ rel: 'self', href: `${base}/v2.1/` }],
    ...(full ? { 'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.compute+json;version=2.1' }] } : {}),
  };
}

function computeV20(base: string, full: boolean) {
  return {
    id: 'v2.0',
    status: 'SUPPORTED',
    version: '',
    min_version: '',
    updated: '2011-01-21T11:33:21Z',
    links: full ? [{ rel: 'self', href: `${base}/v2/` }, { rel: 'describedby', type: 'text/html', href: 'http://docs.openstack.org/' }] : [{ rel: 'self', href: `${base}/v2/` }],
    ...(full ? { 'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.compute+json;version=2' }] } : {}),
  };
}

function volumeList(base: string) {
  return {
    versions: [
      {
        id: 'v3.0',
        status: 'CURRENT',
        version: String(VOLUME_VERSIONS.max),
        min_version: '3.0',
        updated: '2016-02-08T12:20:21Z',
        links: [{ rel: 'describedby', type: 'text/html', href: 'https://docs.openstack.org/' }, { rel: 'self', href: `${base}/v3/` }],
        'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.volume+json;version=3' }],
      },
    ],
  };
}

interface Row {
  name: string;
  api: () => string;
  path: string;
  status: number;
  shape: keyof typeof noteShapes;
  expected: (base: string) => unknown;
}

const rows: Row[] = [
  { name: 'compute GET / lists v2.0 (SUPPORTED) and v2.1 (CURRENT) with self links', api: compute, path: '/', status: 200, shape: 'computeList', expected: (b) => ({ versions: [computeV20(b, false), computeV21(b, false)] }) },
  { name: 'compute GET /v2.1 shows the v2.1 document', api: compute, path: '/v2.1', status: 200, shape: 'computeOne', expected: (b) => ({ version: computeV21(b, true) }) },
  { name: 'compute GET /v2.1/ shows the v2.1 document', api: compute, path: '/v2.1/', status: 200, shape: 'computeOne', expected: (b) => ({ version: computeV21(b, true) }) },
  { name: 'compute GET /v2 shows the legacy v2.0 document with empty versions', api: compute, path: '/v2', status: 200, shape: 'computeOne', expected: (b) => ({ version: computeV20(b, true) }) },
  { name: 'compute GET /v2/ shows the legacy v2.0 document', api: compute, path: '/v2/', status: 200, shape: 'computeOne', expected: (b) => ({ version: computeV20(b, true) }) },
  { name: 'volume GET / answers 300 Multiple Choices with the versions list', api: volume, path: '/', status: 300, shape: 'volumeList', expected: volumeList },
  { name: 'volume GET /v3 answers 200 with the same list', api: volume, path: '/v3', status: 200, shape: 'volumeList', expected: volumeList },
  { name: 'volume GET /v3/ answers 200 with the same list', api: volume, path: '/v3/', status: 200, shape: 'volumeList', expected: volumeList },
];

describe('version documents', () => {
  it.each(rows)('$name, with no token', async (row) => {
    const base = row.api();
    const a = await get(base, row.path);
    expect(a.status).toBe(row.status);
    expect(a.contentType).toMatch(/^application\/json/);
    expect(a.body).toEqual(row.expected(base));
  });

  it.each(rows)('$name, in the shape the notes give', async (row) => {
    const a = await get(row.api(), row.path);
    const problems = [...Value.Errors(noteShapes[row.shape]!, a.body)].map((e) => `${e.path}: ${e.message}`);
    expect(problems).toEqual([]);
  });

  it.each(rows)('$name, every self link at the server’s own address', async (row) => {
    const base = row.api();
    const a = (await get(base, row.path)).body as { versions?: { links: { rel: string; href: string }[] }[]; version?: { links: { rel: string; href: string }[] } };
    const links = (a.versions ?? [a.version!]).flatMap((v) => v.links).filter((l) => l.rel === 'self');
    expect(links.length).toBeGreaterThan(0);
    for (const l of links) expect(new URL(l.href).origin).toBe(new URL(base).origin);
  });

  // Not microversioned, as upstream: a version the APIs would refuse (406, 400) does not stop
  // discovery, and no version is echoed. The same headers on a project route are refused.
  const refusedHeaders: Array<[string, Record<string, string>]> = [
    ['an out-of-range compute version', { 'openstack-api-version': 'compute 9.99' }],
    ['a malformed compute version', { 'x-openstack-nova-api-version': '2.01' }],
    ['an out-of-range volume version', { 'openstack-api-version': 'volume 9.99' }],
    ['a header with no volume entry', { 'openstack-api-version': 'compute 2.1' }],
  ];
  it.each(rows.flatMap((row) => refusedHeaders.map(([what, headers]) => ({ ...row, what, headers }))))('$name, even with $what, echoing no version', async (row) => {
    const base = row.api();
    const a = await get(base, row.path, row.headers);
    expect({ status: a.status, echo: a.versionEcho }).toEqual({ status: row.status, echo: undefined });
    expect(a.body).toEqual(row.expected(base));
  });

  it('refuses those headers on a project route of each API (the control)', async () => {
    const statuses = await Promise.all(
      refusedHeaders.map(async ([, headers]) => {
        const c = await get(compute(), `/v2/${PROJECT}/servers`, { ...headers, 'x-auth-token': h.token });
        const v = await get(volume(), `/v3/${PROJECT}/volumes`, { ...headers, 'x-auth-token': h.token });
        return [c.status, v.status];
      }),
    );
    expect(statuses).toEqual([
      [406, 400], // the volume API refuses a standard header without a volume entry
      [400, 200],
      [200, 406],
      [200, 400],
    ]);
  });

  it('advertises the ranges that microversion negotiation serves', async () => {
    const list = (await get(compute(), '/')).body as { versions: { id: string; version: string; min_version: string }[] };
    const v21 = list.versions.find((v) => v.id === 'v2.1')!;
    expect([v21.min_version, v21.version]).toEqual([String(COMPUTE_VERSIONS.min), String(COMPUTE_VERSIONS.max)]);
    const vol = (await get(volume(), '/v3/')).body as { versions: { version: string; min_version: string }[] };
    expect([vol.versions[0]!.min_version, vol.versions[0]!.version]).toEqual([String(VOLUME_VERSIONS.min), String(VOLUME_VERSIONS.max)]);
  });

  it('builds the links from the Host the client used', async () => {
    const port = new URL(compute()).port;
    const a = await new Promise<unknown>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, path: '/v2.1/', headers: { host: `localhost:${port}` } }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve(JSON.parse(text)));
      });
      req.on('error', reject);
      req.end();
    });
    expect((a as { version: { links: { href: string }[] } }).version.links[0]!.href).toBe(`http://localhost:${port}/v2.1/`);
  });

  it.each([
    ['compute', compute],
    ['volume', volume],
  ] as const)('the %s API’s OpenAPI document lists the version routes without a token requirement', async (_name, api) => {
    const doc = (await get(api(), '/openapi.json')).body as { paths: Record<string, { get?: { security?: unknown[] } }> };
    const paths = api === compute ? ['/', '/v2.1', '/v2.1/', '/v2', '/v2/'] : ['/', '/v3', '/v3/'];
    for (const p of paths) expect(doc.paths[p]?.get?.security, p).toEqual([]);
  });
});
