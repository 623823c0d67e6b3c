/** The volume API's lists page as Cinder's do: `limit`, `marker`, and a next link while more follow. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiError } from '../../src/rpc/httpClient.js';
import { MAX_LIMIT } from '../../src/api/schemas/paging.js';
import { makeService, PROJECT, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;
let h: ServiceHarness;
const ids: string[] = [];
type Links = Array<{ rel: string; href: string }>;

beforeAll(async () => {
  h = await makeService();
  for (let i = 0; i < 5; i++) {
    ids.push((await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: `v${i}`, size_bytes: 64 * MiB } })).body.volume.id);
  }
  for (let i = 0; i < 3; i++) await h.volume.request('POST', `/v3/${PROJECT}/volumes/${ids[0]}/action`, { 'os-extend-bytes': { new_bytes: (65 + i) * MiB } });
});
afterAll(async () => h.cleanup());

async function status(path: string): Promise<{ status: number; message: string; code: string }> {
  const err = await h.volume.request('GET', path).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ApiError);
  const e = err as ApiError;
  return { status: e.status, message: e.message, code: e.code };
}

describe('GET volumes pages as Cinder does', () => {
  it.each(['/volumes', '/volumes/detail'])('%s: pages of 2 through all 5 volumes, oldest first, volumes_links until the last', async (suffix) => {
    const all = (await h.volume.request<{ volumes: Array<{ id: string }> }>('GET', `/v3/${PROJECT}${suffix}`)).body;
    expect(all.volumes.map((v) => v.id)).toEqual(ids);
    expect(all).not.toHaveProperty('volumes_links');
    const seen: string[] = [];
    let next: string | undefined = `/v3/${PROJECT}${suffix}?limit=2`;
    const pages: number[] = [];
    while (next) {
      const body: { volumes: Array<{ id: string }>; volumes_links?: Links } = (await h.volume.request<{ volumes: Array<{ id: string }>; volumes_links?: Links }>('GET', next)).body;
      seen.push(...body.volumes.map((v) => v.id));
      pages.push(body.volumes.length);
      // Cinder's next link is absolute, built from the request's Host.
      if (body.volumes_links) expect(body.volumes_links).toEqual([{ rel: 'next', href: `${h.service.volumeUrl}/v3/${PROJECT}${suffix}?limit=2&marker=${body.volumes.at(-1)!.id}` }]);
      const href = body.volumes_links?.[0]?.href;
      next = href === undefined ? undefined : href.slice(h.service.volumeUrl!.length);
    }
    expect(pages).toEqual([2, 2, 1]);
    expect(seen).toEqual(ids);
  });

  it('lowers a limit above the maximum to it', async () => {
    const body = (await h.volume.request<{ volumes: unknown[] }>('GET', `/v3/${PROJECT}/volumes?limit=${MAX_LIMIT * 100}`)).body;
    expect(body.volumes).toHaveLength(5);
  });
});

describe("GET a volume's os-volume-actions pages newest first", () => {
  it('pages of 2 through its create and 3 extends, with links until the last', async () => {
    const path = `/v3/${PROJECT}/volumes/${ids[0]}/os-volume-actions`;
    const all = (await h.volume.request<{ volumeActions: Array<{ request_id: string; action: string }> }>('GET', path)).body.volumeActions;
    expect(all.length).toBeGreaterThanOrEqual(4);
    const first = (await h.volume.request<{ volumeActions: Array<{ request_id: string }>; links?: Links }>('GET', `${path}?limit=2`)).body;
    expect(first.volumeActions.map((a) => a.request_id)).toEqual(all.slice(0, 2).map((a) => a.request_id));
    expect(first.links).toEqual([{ rel: 'next', href: `${path}?limit=2&marker=${all[1]!.request_id}` }]);
    const second = (await h.volume.request<{ volumeActions: Array<{ request_id: string }>; links?: Links }>('GET', first.links![0]!.href)).body;
    expect(second.volumeActions.map((a) => a.request_id)).toEqual(all.slice(2, 4).map((a) => a.request_id));
  });
});

describe('the volume lists refuse bad paging input with a 400', () => {
  const lists = [
    { list: 'volumes', path: () => `/v3/${PROJECT}/volumes` },
    { list: 'volumes (detail)', path: () => `/v3/${PROJECT}/volumes/detail` },
    { list: 'volume actions', path: () => `/v3/${PROJECT}/volumes/${ids[0]}/os-volume-actions` },
  ];
  const bad = [
    { name: 'a negative limit', query: 'limit=-2', code: 'InvalidInput', message: /querystring\.limit/ },
    // Sorting is refused by name on the volume lists (Cinder's parameter, not offered), as an unknown key on the actions list.
    { name: 'sorting or an unknown parameter', query: 'sort=name', code: 'InvalidInput', message: /'sort' (was unexpected|is not supported here)/ },
    { name: 'a marker that does not exist', query: 'marker=9c1f0000-0000-4000-8000-000000000000', code: 'MarkerNotFound', message: /^Marker 9c1f0000-0000-4000-8000-000000000000 could not be found\.$/ },
  ];
  it.each(lists.flatMap((l) => bad.map((b) => ({ ...l, ...b }))))('$list: $name → 400 $code', async ({ path, query, code, message }) => {
    const res = await status(`${path()}?${query}`);
    expect(res).toMatchObject({ status: 400, code });
    expect(res.message).toMatch(message);
  });

  it("refuses another project's volume as a marker, as if it did not exist", async () => {
    expect((await status(`/v3/${PROJECT}-other/volumes?marker=${ids[0]}`)).status).toBe(400);
  });
});
