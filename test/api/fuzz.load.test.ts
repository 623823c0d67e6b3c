/**
 * Property-based hostile input against the whole service (compute and volume APIs, fake driver,
 * file backend, real HTTP), derived from the two APIs' own `/openapi.json`: every route and
 * method, thousands of requests a run, mostly hostile with valid-looking values mixed in so that
 * many reach the services (test/support/openapiFuzz.ts, test/support/fuzzService.ts).
 *
 * Every answer: below 500; a request id `req-<uuid>`; no host path; every non-2xx answer a Nova
 * fault whose code is the status and whose error_code is the catalogue's for that status. Every
 * refused answer changed nothing (the store's volumes, the hypervisor's disks and acting calls,
 * the volume files); an accepted one becomes the new baseline once what it started has settled.
 *
 * The seed is printed first; `OE_FUZZ_SEED=<seed>` replays a run, `OE_FUZZ_PATH=<path>` (from
 * fast-check's failure report) replays one case, `OE_FUZZ_RUNS=<n>` sets the number of requests.
 * A replayed case runs against a freshly seeded service, so a failure that needed the state built
 * by the requests before it may need the whole seed replayed instead.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isDeepStrictEqual } from 'node:util';
import { request as httpRequest } from 'node:http';
import { rawRequest } from '../support/rawHttp.js';
import { caseArb, describeWire, materialize, routeLabel, routesOf, type FuzzCase, type Route } from '../support/openapiFuzz.js';
import { bodyHints, isAnswer, judge, keepAliveRetries, makeFuzzWorld, pathHints, PROJECT, SnapshotResolver, type FuzzWorld, type Snapshot } from '../support/fuzzService.js';

const SEED = process.env.OE_FUZZ_SEED ? Number(process.env.OE_FUZZ_SEED) : Math.floor(Math.random() * 2 ** 31);
const PATH = process.env.OE_FUZZ_PATH || undefined;
const RUNS = Number(process.env.OE_FUZZ_RUNS ?? 4000);
/** A full run (not a replay of one case, not a short one) also checks that every route was reached. */
const FULL = PATH === undefined && RUNS >= 2000;

let w: FuzzWorld;
let routes: Route[];

beforeAll(async () => {
  console.log(`fuzz: seed ${SEED} (replay with OE_FUZZ_SEED=${SEED})${PATH ? `, path ${PATH}` : ''}, ${RUNS} runs`);
  w = await makeFuzzWorld();
  const doc = async (url: string) => (await fetch(`${url}/openapi.json`)).json() as Promise<Parameters<typeof routesOf>[1]>;
  routes = [...routesOf('compute', await doc(w.h.service.computeUrl)), ...routesOf('volume', await doc(w.h.service.volumeUrl!))];
});
afterAll(async () => w?.close());

/**
 * Refusals the driver contract (src/virt/driver.ts, `extendAttached`) says the driver itself
 * makes once asked, because only the hypervisor host knows: the host's view of a block disk, a
 * read-only disk, what a file disk's filesystem holds. Such a refusal may count one call of an
 * acting method; everything the call acts on must still be as it was.
 */
const DRIVER_REFUSALS = new Set(['HostSizeTooSmall', 'DiskReadOnly', 'SizeLimitExceeded']);

function errorCodeOf(body: string): string | undefined {
  try {
    const fault = Object.values(JSON.parse(body) as Record<string, { error_code?: unknown }>)[0];
    return typeof fault?.error_code === 'string' ? fault.error_code : undefined;
  } catch {
    return undefined;
  }
}

/** `after` equals `before`, but for the one acting call a driver's own refusal (`code`) makes. */
function unchanged(before: Snapshot, after: Snapshot, code: string | undefined): boolean {
  if (isDeepStrictEqual(after, before)) return true;
  if (code === undefined || !DRIVER_REFUSALS.has(code)) return false;
  const calls = (s: Snapshot) => Object.values(s.calls).reduce((a, b) => a + b, 0);
  return calls(after) - calls(before) === 1 && isDeepStrictEqual({ ...after, calls: before.calls }, before);
}

/** Where two snapshots differ, in a few lines. */
function diff(a: Snapshot, b: Snapshot): string {
  const out: string[] = [];
  const byId = (s: Snapshot) => new Map(s.volumes.map((v) => [v.id, v]));
  const va = byId(a);
  const vb = byId(b);
  for (const id of new Set([...va.keys(), ...vb.keys()])) {
    if (!isDeepStrictEqual(va.get(id), vb.get(id))) out.push(`volume ${id}: ${JSON.stringify(va.get(id))} → ${JSON.stringify(vb.get(id))}`);
  }
  a.servers.forEach((s, i) => {
    if (!isDeepStrictEqual(s, b.servers[i])) out.push(`server ${s.id}: ${JSON.stringify(s.disks)} → ${JSON.stringify(b.servers[i]?.disks)}`);
  });
  if (a.resizes !== b.resizes) out.push(`resizes ${a.resizes} → ${b.resizes}`);
  if (!isDeepStrictEqual(a.calls, b.calls)) out.push(`driver calls ${JSON.stringify(a.calls)} → ${JSON.stringify(b.calls)}`);
  for (const f of new Set([...Object.keys(a.files), ...Object.keys(b.files)])) {
    if (!isDeepStrictEqual(a.files[f], b.files[f])) out.push(`file ${f}: ${JSON.stringify(a.files[f])} → ${JSON.stringify(b.files[f])}`);
  }
  return out.join('\n    ');
}

describe('hostile requests generated from /openapi.json of both APIs', () => {
  it('finds every route of both documents, each with its path parameters', () => {
    expect(routes.filter((r) => r.api === 'compute').length).toBeGreaterThanOrEqual(10);
    expect(routes.filter((r) => r.api === 'volume').length).toBeGreaterThanOrEqual(6);
    for (const r of routes) {
      const names = [...r.path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
      expect(r.params.filter((p) => p.in === 'path').map((p) => p.name).sort(), routeLabel(r)).toEqual(names.sort());
      if (r.method === 'POST' || r.method === 'PUT') expect(r.body, routeLabel(r)).toBeDefined();
    }
  });

  it('answers every one below 500, as a fault with a request id and no host path, and changes nothing it refuses', async () => {
    const started = Date.now();
    const tally = { tried: 0, replenished: 0, byCode: new Map<string, number>(), byStatus: new Map<number, number>(), byRoute: new Map<string, { tried: number; accepted: number }>() };
    for (const r of routes) tally.byRoute.set(routeLabel(r), { tried: 0, accepted: 0 });
    const recent: string[] = [];
    let baseline = await w.settle();
    // After a failed case (fast-check then shrinks), the baseline is taken again.
    let dirty = false;

    // Routes with a body, and deletes, are drawn twice as often: most of their cases break the
    // body or name a volume in use, so valid ones are rarer there (an action ~1 in 10), and each
    // handler must see some.
    const arb = fc.oneof(...routes.map((r) => ({ weight: r.body || r.method === 'DELETE' ? 2 : 1, arbitrary: caseArb(r, { body: bodyHints, path: pathHints }) })));
    // The first failure as it happened, with the requests before it (shrinking replays smaller
    // cases on a service whose state has moved on, which may hide what led to it).
    let firstFailure: string | undefined;
    const property = fc.asyncProperty(arb, async (c: FuzzCase) => {
      try {
        await runCase(c);
      } catch (err) {
        firstFailure ??= (err as Error).message;
        throw err;
      }
    });
    const runCase = async (c: FuzzCase) => {
      if (dirty) baseline = await w.settle();
      dirty = true;
      const made = await w.replenish(baseline);
      if (made) {
        tally.replenished += made;
        baseline = await w.settle();
      }
      const actionIds = c.route.params.some((p) => p.name === 'request_id') ? await w.actions() : undefined;
      const wire = materialize(c, new SnapshotResolver(baseline, c.pick, actionIds), w.tokens);
      const answer = await w.send(c.route.api as 'compute' | 'volume', wire).catch((err: unknown) => {
        throw new Error(`no answer that HTTP can read (${(err as Error).message})\n    ${routeLabel(c.route)}: ${describeWire(wire)}\n  the requests before it:\n    ${recent.join('\n    ')}`);
      });
      tally.tried++;
      tally.byStatus.set(answer.status, (tally.byStatus.get(answer.status) ?? 0) + 1);
      const t = tally.byRoute.get(routeLabel(c.route))!;
      t.tried++;
      if (isAnswer(answer.status)) t.accepted++;
      const code = !isAnswer(answer.status) ? (errorCodeOf(answer.body) ?? (c.method === 'HEAD' ? '(HEAD)' : '?')) : undefined;
      if (code) tally.byCode.set(code, (tally.byCode.get(code) ?? 0) + 1);

      const line = `${routeLabel(c.route)}: ${describeWire(wire)}\n      → ${answer.status} (${answer.via}) ${answer.body.slice(0, 400)}`;
      recent.push(line);
      if (recent.length > 4) recent.shift();
      const problems = judge(wire, answer, w.hostPaths);
      if (problems.length) throw new Error(`${problems.join('; ')}\n    ${line}`);

      if (!isAnswer(answer.status)) {
        const after = await w.snapshot();
        if (!unchanged(baseline, after, errorCodeOf(answer.body))) {
          throw new Error(`a refused request changed state:\n    ${diff(baseline, after)}\n    ${line}\n  the requests before it:\n    ${recent.slice(0, -1).join('\n    ')}`);
        }
        baseline = after;
      } else {
        baseline = await w.settle();
      }
      dirty = false;
    };

    try {
      await fc.assert(property, { seed: SEED, numRuns: RUNS, ...(PATH ? { path: PATH } : {}) });
    } catch (err) {
      throw new Error(
        `${(err as Error).message}\n\nfirst failure, before shrinking: ${firstFailure}\n\nreplay: OE_FUZZ_SEED=${SEED} (and OE_FUZZ_PATH from the report above for the one case)`,
        { cause: err },
      );
    } finally {
      const classes = { '2xx': 0, '4xx': 0, '5xx': 0, other: 0 };
      for (const [s, n] of tally.byStatus) classes[s >= 200 && s < 300 ? '2xx' : s >= 400 && s < 500 ? '4xx' : s >= 500 ? '5xx' : 'other'] += n;
      const statuses = [...tally.byStatus].sort(([a], [b]) => a - b).map(([s, n]) => `${s}:${n}`).join(' ');
      console.log(
        `fuzz: seed ${SEED}: ${tally.tried} requests over ${routes.length} routes in ${((Date.now() - started) / 1000).toFixed(1)} s; ` +
          `2xx ${classes['2xx']}, 4xx ${classes['4xx']}, 5xx ${classes['5xx']}${classes.other ? `, other ${classes.other}` : ''} (${statuses}); ` +
          `${tally.replenished} volumes made between requests, ${keepAliveRetries} sent again after a keep-alive close`,
      );
      console.log(`fuzz: refusals by error_code: ${[...tally.byCode].sort(([, a], [, b]) => b - a).map(([k, n]) => `${k} ${n}`).join(', ')}`);
      console.log(`fuzz: per route (tried/accepted): ${[...tally.byRoute].map(([r, x]) => `${r} ${x.tried}/${x.accepted}`).join('; ')}`);
    }

    if (FULL) {
      // Every route was reached often, and valid-looking requests got past validation on each
      // handler: a compute route's three URL forms (/v2.1, /v2.1/{project_id}, /v2/{tenant_id})
      // are one handler, so their acceptances count together (an attach is rarely valid by
      // chance, and ~50 tries per form would make a per-form count flaky).
      const acceptedByHandler = new Map<string, number>();
      for (const [route, x] of tally.byRoute) {
        expect(x.tried, route).toBeGreaterThanOrEqual(RUNS / routes.length / 3);
        const handler = route.replace(/ \/v2(\.1)?(\/\{(project_id|tenant_id)\})?\//, ' /v2.1/');
        acceptedByHandler.set(handler, (acceptedByHandler.get(handler) ?? 0) + x.accepted);
      }
      for (const [handler, accepted] of acceptedByHandler) expect(accepted, handler).toBeGreaterThan(0);
    }
  }, 600_000);
});

/**
 * Transport cases the fuzz found, pinned (they need bytes only a bare socket or a strict HTTP
 * client shows). Each failed before its fix in src/api/transport.ts.
 */
describe('answers the fuzz found wrong on the wire', () => {
  const REQUEST_ID = /^req-[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

  it('answers a request that arrived in full with its own answer when garbage follows it, then closes (the action and the answer agree)', async () => {
    const id = (await w.h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 2 ** 20 } })).body.volume.id;
    // Content-Length 0, then bytes that are no request: the DELETE was served, and the parser's
    // 400 for the garbage once took its place (the client was told "refused" for a deletion).
    const res = await rawRequest(w.volumePort, `DELETE /v3/${PROJECT}/volumes/${id} HTTP/1.1\r\nHost: api\r\nX-Auth-Token: ${w.tokens.admin}\r\nContent-Length: 0\r\n\r\nxx\r\n\r\n`, {
      waitForClose: true,
    });
    expect(res.status).toBe(202);
    expect(res.headers['x-openstack-request-id']).toMatch(REQUEST_ID);
    expect(res.closed).toBe(true);
    const gone = await w.h.volume.request('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(gone).toMatchObject({ status: 404 });
  });

  it('answers a HEAD the HTTP parser refuses with headers only, which a strict client reads', async () => {
    const raw = await rawRequest(w.volumePort, Buffer.concat([Buffer.from(`HEAD /v3/${PROJECT}/volumes/`), Buffer.from([0x85]), Buffer.from(' HTTP/1.1\r\nHost: api\r\n\r\n')]), { waitForClose: true });
    expect(raw.status).toBe(400);
    expect(raw.headers['x-openstack-request-id']).toMatch(REQUEST_ID);
    expect(Number(raw.headers['content-length'])).toBeGreaterThan(0);
    expect(raw.body).toBe('');
    // Node's client sends the byte as it is; it failed with "Parse Error: Data after `Connection: close`".
    const status = await new Promise<number>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port: w.volumePort, method: 'HEAD', path: `/v3/${PROJECT}/volumes/\u0085`, headers: { 'x-auth-token': w.tokens.admin! } }, (r) => {
        r.resume();
        r.on('end', () => resolve(r.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(400);
  });
});
