/**
 * Issue D item 12: reads are not audited, and list endpoints page as Nova's do (`limit`,
 * `marker`, a `rel: next` link), in SQL, so a listing of any length answers one bounded page.
 */
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildComputeApp } from '../../src/app.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { issueToken } from '../../src/auth/tokens.js';
import { FakeDriver } from '../../src/virt/fake/driver.js';
import { MAX_LIMIT } from '../../src/api/schemas/paging.js';
import { BLOCK_VOL, FILE_VOL, GiB, OFF_SERVER, SERVER, TENANT, makeComputeApp, sampleServers, url, type TestComputeApp } from '../support/computeApp.js';

let t: TestComputeApp;
const auth = () => ({ 'x-auth-token': t.tokens.admin });
const get = (path: string) => t.app.inject({ method: 'GET', url: path, headers: auth() });
const actionsUrl = (server = SERVER) => `/v2/${TENANT}/servers/${server}/os-instance-actions`;
/** Where inject's requests say they went (Host: localhost:80): next links are absolute, as Nova's. */
const ORIGIN = 'http://localhost:80';

beforeEach(async () => {
  t = await makeComputeApp();
});
afterEach(async () => t.close());

/** `n` finished instance actions on SERVER, written straight through the store. */
async function insertActions(n: number): Promise<void> {
  const writes: Array<Promise<void>> = [];
  for (let i = 0; i < n; i++) {
    const time = new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString();
    writes.push(
      t.store.recordAction({
        requestId: `req-${String(i).padStart(8, '0')}`,
        serverId: SERVER,
        action: 'extend_volume',
        event: 'compute_extend_volume',
        userId: 'u',
        projectId: TENANT,
        startTime: time,
        finishTime: time,
        result: 'Success',
        message: null,
        details: { volume_id: BLOCK_VOL, bytes: 2 * GiB },
      }),
    );
  }
  await Promise.all(writes);
}

describe('get_blockdev is a read: no instance action, a debug log line', () => {
  it('writes no instance action however often it is called, while assist_extend still records one', async () => {
    const before = (await t.store.listActions(SERVER)).length;
    for (let i = 0; i < 20; i++) expect((await get(url.volume())).statusCode).toBe(200);
    expect(await t.store.listActions(SERVER)).toHaveLength(before);
    const grown = await t.app.inject({ method: 'POST', url: url.volume(FILE_VOL), headers: auth(), payload: { onlineExtendVolume: { bytes: 2 * GiB } } });
    expect(grown.statusCode).toBe(200);
    expect((await t.store.listActions(SERVER)).map((a) => a.action)).toEqual(['extend_volume']);
  });

  it('leaves one debug log line per read with its request id, server, volume and bytes', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
        done();
      },
    });
    const store = new SqliteStore(':memory:');
    const built = await buildComputeApp({ store, driver: new FakeDriver({ servers: sampleServers() }), logger: pino({ level: 'debug' }, sink) });
    try {
      const { token } = await issueToken(store, { userId: 'reader', projectId: TENANT, roles: ['admin'], ttlMs: 60_000 });
      const ok = await built.app.inject({ method: 'GET', url: url.volume(), headers: { 'x-auth-token': token } });
      const missing = await built.app.inject({ method: 'GET', url: url.volume('99999999-9999-4999-8999-999999999999'), headers: { 'x-auth-token': token } });
      expect(ok.statusCode).toBe(200);
      expect(missing.statusCode).toBe(404);
      const reads = lines.filter((l) => l.msg === 'volume host size read');
      expect(reads).toEqual([
        expect.objectContaining({ level: 20, requestId: ok.headers['x-openstack-request-id'], userId: 'reader', serverId: SERVER, volumeId: BLOCK_VOL, bytes: ok.json().volume_blockdev.bytes }),
      ]);
      expect(await store.listActions(SERVER)).toEqual([]);
    } finally {
      await built.app.close();
      await store.close();
    }
  });
});

describe('GET os-instance-actions pages as Nova does', () => {
  it('answers one bounded page of 100,000 actions, newest first, with a next link to the rest', async () => {
    await insertActions(100_000);
    const first = await get(actionsUrl());
    expect(first.statusCode).toBe(200);
    const body = first.json() as { instanceActions: Array<{ request_id: string }>; links?: Array<{ rel: string; href: string }> };
    // The default page is MAX_LIMIT rows, a few hundred bytes each: bounded whatever the total.
    expect(body.instanceActions).toHaveLength(MAX_LIMIT);
    expect(first.payload.length).toBeLessThan(MAX_LIMIT * 600);
    expect(body.instanceActions[0]!.request_id).toBe('req-00099999');
    expect(body.links).toEqual([{ rel: 'next', href: `${ORIGIN}${actionsUrl()}?limit=${MAX_LIMIT}&marker=req-00099000` }]);

    const second = (await get(body.links![0]!.href)).json() as typeof body;
    expect(second.instanceActions).toHaveLength(MAX_LIMIT);
    expect(second.instanceActions[0]!.request_id).toBe('req-00098999');
  });

  it.each([
    { total: 25, pages: 3 },
    { total: 20, pages: 2 }, // a full last page has no link either: no empty page to fetch
  ])('follows next links through all $total actions exactly once in $pages pages of 10, the last without a link', async ({ total, pages: expected }) => {
    await insertActions(total);
    const seen: string[] = [];
    let next: string | undefined = `${actionsUrl()}?limit=10`;
    let pages = 0;
    while (next) {
      const res = await get(next);
      expect(res.statusCode).toBe(200);
      const body = res.json() as { instanceActions: Array<{ request_id: string }>; links?: Array<{ href: string }> };
      seen.push(...body.instanceActions.map((a) => a.request_id));
      next = body.links?.[0]?.href;
      pages++;
    }
    expect(pages).toBe(expected);
    expect(seen).toEqual(Array.from({ length: total }, (_, i) => `req-${String(total - 1 - i).padStart(8, '0')}`));
  });

  it.each([
    { name: 'a limit above the maximum is lowered to it', query: `limit=${MAX_LIMIT * 10}`, count: MAX_LIMIT, link: true },
    { name: 'limit=0 answers nothing and no link', query: 'limit=0', count: 0, link: false },
    { name: 'a small limit gives that many and a link', query: 'limit=5', count: 5, link: true },
  ])('$name', async ({ query, count, link }) => {
    await insertActions(MAX_LIMIT + 5);
    const body = (await get(`${actionsUrl()}?${query}`)).json() as { instanceActions: unknown[]; links?: unknown[] };
    expect(body.instanceActions).toHaveLength(count);
    expect(body.links !== undefined).toBe(link);
  });
});

describe('list endpoints refuse bad paging input with a 400 in the error format', () => {
  const bad = [
    { name: 'a negative limit', query: 'limit=-1', message: /querystring\.limit/ },
    { name: 'a limit that is not a number', query: 'limit=ten', message: /querystring\.limit/ },
    { name: 'a fractional limit', query: 'limit=1.5', message: /querystring\.limit/ },
    { name: 'limit given twice', query: 'limit=1&limit=2', message: /querystring\.limit: is given more than once; give it once/ },
    { name: 'an empty marker', query: 'marker=', message: /querystring\.marker/ },
    { name: 'a marker that does not exist', query: 'marker=req-nope', message: /^Marker req-nope could not be found\.$/ },
  ];
  const lists = [
    { list: 'instance actions', path: () => actionsUrl() },
    { list: 'servers', path: () => `/v2/${TENANT}/servers` },
    { list: 'servers (detail)', path: () => `/v2/${TENANT}/servers/detail` },
  ];
  const table = lists.flatMap((l) => bad.map((b) => ({ ...l, ...b })));

  it.each(table)('$list: $name → 400', async ({ path, query, message }) => {
    const res = await get(`${path()}?${query}`);
    expect(res.statusCode).toBe(400);
    expect(res.headers['x-openstack-request-id']).toMatch(/^req-/);
    expect(res.json().badRequest.message).toMatch(message);
  });

  it.each(lists)('$list: ignores parameters it does not know, as Nova below 2.75 (200)', async ({ path }) => {
    const res = await get(`${path()}?offset=10&sort_key=foo&changes-since=2026-01-01`);
    expect(res.statusCode).toBe(200);
  });

  it("refuses another server's action as a marker", async () => {
    await insertActions(3);
    const res = await get(`${actionsUrl(OFF_SERVER)}?marker=req-00000001`);
    expect(res.statusCode).toBe(400);
    expect(res.json().badRequest).toMatchObject({ error_code: 'MarkerNotFound', final: true });
  });
});

describe('GET servers pages as Nova does', () => {
  it.each(['/servers', '/servers/detail'])('%s: limit=1 gives one server and servers_links to the next, then the last page', async (suffix) => {
    const first = (await get(`/v2/${TENANT}/servers${suffix.slice('/servers'.length)}?limit=1`)).json() as {
      servers: Array<{ id: string; name: string }>;
      servers_links?: Array<{ rel: string; href: string }>;
    };
    expect(first.servers).toHaveLength(1);
    expect(first.servers[0]!.name).toBe('db-1'); // by name: db-1, then web-1
    expect(first.servers_links).toEqual([{ rel: 'next', href: `${ORIGIN}/v2/${TENANT}${suffix}?limit=1&marker=${OFF_SERVER}` }]);
    const second = (await get(first.servers_links![0]!.href)).json() as typeof first;
    expect(second.servers.map((s) => s.id)).toEqual([SERVER]);
    expect(second.servers_links).toBeUndefined();
  });

  it('answers every server of the tenant with no link when they fit in one page', async () => {
    const body = (await get(`/v2/${TENANT}/servers`)).json() as { servers: unknown[]; servers_links?: unknown };
    expect(body.servers).toHaveLength(2);
    expect(body.servers_links).toBeUndefined();
  });
});
