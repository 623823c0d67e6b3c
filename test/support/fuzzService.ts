/**
 * The service a fuzz run aims at, and what the run observes of it.
 *
 * `makeFuzzWorld` starts the whole service in-process (compute and volume APIs, fake driver,
 * file backend, real HTTP) with servers in several states, volumes created and attached through
 * the APIs, an inventory-only block disk, another project's server and volume, and a token of
 * every kind. `snapshot` is everything a refused request must leave as it was: the store's
 * volumes (status, size, version, attachment), the fake hypervisor's disks, its resize count and
 * the calls of its acting methods, and the volume files on disk (size, mtime). `send` puts a
 * request on the wire (node:http, or a bare socket for what no client sends), and `judge` lists
 * what is wrong with an answer.
 */
import { request as httpRequest, Agent } from 'node:http';
import { readdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isDeepStrictEqual } from 'node:util';
import { SqliteStore } from '../../src/db/sqlite.js';
import { issueToken } from '../../src/auth/tokens.js';
import { ApiClient, VOLUME_LATEST } from '../../src/rpc/httpClient.js';
import { CATALOGUE, faultName, isErrorCode } from '../../src/errors.js';
import { FakeDriver, type FakeServer } from '../../src/virt/fake/driver.js';
import type { VolumeStatus } from '../../src/db/store.js';
import { makeService, PROJECT, type ServiceHarness } from './service.js';
import { rawRequest } from './rawHttp.js';
import fc from 'fast-check';
import { GiB, MiB, Obj, Ref, type Hints, type PathHints, type PathValue, type RefKind, type Resolver, type TokenKind, type Val, type WireRequest } from './openapiFuzz.js';

export { PROJECT };
export const OTHER_PROJECT = 'p-other';
export const ACTIVE_1 = '7a000000-0000-4000-8000-000000000001';
export const ACTIVE_2 = '7a000000-0000-4000-8000-000000000002';
export const PAUSED = '7a000000-0000-4000-8000-000000000003';
/** Active while its volume is attached, then shut off: extends of its volume are offline. */
export const STOPPED = '7a000000-0000-4000-8000-000000000004';
export const OTHER_SERVER = '7a000000-0000-4000-8000-0000000000ff';
/** A disk the hypervisor has that no volume of ours is (Nova's view of an unmanaged disk). */
export const INVENTORY_DISK = '7ad15c00-0000-4000-8000-000000000001';

export const PROJECT_SERVERS = [ACTIVE_1, ACTIVE_2, PAUSED, STOPPED];
/** Servers that take new attachments (running or paused). */
const ATTACH_TO = [ACTIVE_1, ACTIVE_2, PAUSED];
/** Below these, the run makes new volumes (see `replenish`). */
const MIN_AVAILABLE = 3;
const MIN_ATTACHED = 4;
export const ALL_SERVERS = [...PROJECT_SERVERS, OTHER_SERVER];
/** The image and flavor POST /servers may name. */
export const FUZZ_IMAGE = 'fuzz-image';
export const FUZZ_FLAVOR = 'fuzz-flavor';

/** Statuses that end by themselves: a snapshot taken while one is present is not at rest. */
const TRANSIENT: ReadonlySet<VolumeStatus> = new Set(['creating', 'attaching', 'detaching', 'extending', 'deleting']);

export interface VolumeView {
  id: string;
  projectId: string;
  status: VolumeStatus;
  sizeBytes: number;
  version: number;
  serverId: string | null;
  device: string | null;
}

export interface Snapshot {
  volumes: VolumeView[];
  /** Servers created through POST /servers: id, vm state, task state (a build or delete under way moves them). */
  created: Array<[string, string, string | null]>;
  servers: FakeServer[];
  resizes: number;
  calls: { rescan: number; extendAttached: number; attachVolume: number; detachVolume: number };
  /** Volume files: name → [size, mtimeMs]. */
  files: Record<string, [number, number]>;
}

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  via: 'http' | 'raw';
}

export interface FuzzWorld {
  h: ServiceHarness;
  driver: FakeDriver;
  tokens: Record<TokenKind, string | undefined>;
  computePort: number;
  volumePort: number;
  /** Strings no answer may contain: the data dir, the temp dir, the working tree. */
  hostPaths: string[];
  snapshot(): Promise<Snapshot>;
  /** Waits until no volume is in a transient status and two snapshots in a row agree. */
  settle(timeoutMs?: number): Promise<Snapshot>;
  /**
   * Creates (and attaches) volumes through the APIs when the run has deleted or detached too many
   * of them, so that valid-looking requests keep finding some. Returns how many it made.
   */
  replenish(s: Snapshot): Promise<number>;
  /** Request ids of the instance actions of each server (for `/os-instance-actions/{request_id}`). */
  actions(): Promise<Map<string, string[]>>;
  send(api: 'compute' | 'volume', w: WireRequest): Promise<Answer>;
  close(): Promise<void>;
}

const fakeInventory = {
  servers: [
    {
      id: ACTIVE_1,
      name: 'web-1',
      project_id: PROJECT,
      state: 'active',
      // Storage grown under the host's view: a rescan has something to do.
      disks: [{ volume_id: INVENTORY_DISK, device: 'vdz', bytes: GiB, backing_bytes: 2 * GiB, kind: 'block' }],
    },
    { id: ACTIVE_2, name: 'web-2', project_id: PROJECT, state: 'active', disks: [] },
    { id: PAUSED, name: 'paused-1', project_id: PROJECT, state: 'paused', disks: [] },
    { id: STOPPED, name: 'db-1', project_id: PROJECT, state: 'active', disks: [] },
    { id: OTHER_SERVER, name: 'other-1', project_id: OTHER_PROJECT, state: 'active', disks: [] },
  ],
};

export async function makeFuzzWorld(): Promise<FuzzWorld> {
  const h = await makeService({
    inventory: fakeInventory,
    // An extend that cannot finish ends within seconds (the run waits for every extend to settle).
    config: { extendTimeoutMs: 8_000 },
  });
  const driver = h.service.driver;
  if (!(driver instanceof FakeDriver)) throw new Error('the fuzz needs the fake driver');
  const db = new SqliteStore(join(h.config.dataDir, 'online-extend.sqlite'));
  // What POST /servers builds from (the fake reads no image).
  await db.putImage({ id: FUZZ_IMAGE, name: 'fuzz', kind: 'kernel', diskPath: null, diskFormat: null, kernelPath: '/nonexistent/vmlinux', ramdiskPath: '/nonexistent/initrd', cmdline: '', minDiskGb: 0, minRamMb: 0, createdAt: '2026-11-30T00:00:00.000Z' });
  await db.putFlavor({ id: FUZZ_FLAVOR, name: 'fuzz', vcpus: 1, ramMb: 64, diskGb: 1, ephemeralGb: 0, swapMb: 0, isPublic: true, description: null });
  const mk = async (projectId: string, roles: string[], ttlMs = 3_600_000, now?: Date) =>
    (await issueToken(db, { userId: `fuzz-${roles.join('-')}`, projectId, roles, ttlMs, ...(now ? { now } : {}) })).token;
  const tokens: Record<TokenKind, string | undefined> = {
    admin: h.token,
    member: await mk(PROJECT, ['member']),
    otherAdmin: await mk(OTHER_PROJECT, ['admin']),
    expired: await mk(PROJECT, ['admin'], 1000, new Date(Date.now() - 60_000)),
    garbage: 'oe-garbage-0000000000000000000000000000000000000',
    none: undefined,
  };
  const other = {
    volume: new ApiClient({ url: h.service.volumeUrl!, token: tokens.otherAdmin!, headers: VOLUME_LATEST }),
    compute: new ApiClient({ url: h.service.computeUrl, token: tokens.otherAdmin! }),
  };

  // Volumes through the APIs: some attached (to an active, a paused, a soon-stopped server),
  // some available, one qcow2; and one of another project, attached to its server.
  const create = async (client: ApiClient, project: string, body: object): Promise<string> =>
    (await client.request<{ volume: { id: string } }>('POST', `/v3/${project}/volumes`, { volume: body })).body.volume.id;
  const attach = (client: ApiClient, project: string, server: string, volumeId: string) =>
    client.request('POST', `/v2/${project}/servers/${server}/os-volume_attachments`, { volumeAttachment: { volumeId } });
  const seeds: Array<{ size_bytes: number; format?: 'raw' | 'qcow2'; server?: string }> = [
    { size_bytes: 64 * MiB, server: ACTIVE_1 },
    { size_bytes: 128 * MiB, format: 'qcow2', server: ACTIVE_1 },
    { size_bytes: 64 * MiB, server: ACTIVE_2 },
    { size_bytes: 32 * MiB, server: PAUSED },
    { size_bytes: 64 * MiB, server: STOPPED },
    { size_bytes: 64 * MiB },
    { size_bytes: 96 * MiB },
    { size_bytes: 64 * MiB, format: 'qcow2' },
  ];
  for (const [i, s] of seeds.entries()) {
    const id = await create(h.volume, PROJECT, { name: `seed-${i}`, size_bytes: s.size_bytes, ...(s.format ? { format: s.format } : {}) });
    if (s.server) await attach(h.compute, PROJECT, s.server, id);
  }
  const otherVol = await create(other.volume, OTHER_PROJECT, { name: 'other', size_bytes: 64 * MiB });
  await attach(other.compute, OTHER_PROJECT, OTHER_SERVER, otherVol);
  await create(other.volume, OTHER_PROJECT, { name: 'other-free', size_bytes: 64 * MiB });
  driver.setState(STOPPED, 'shutoff');
  await h.service.syncInventory();

  const pool = join(h.config.dataDir, 'volumes', 'file');
  const snapshot = async (): Promise<Snapshot> => {
    const volumes = (await db.listVolumes())
      .map((v): VolumeView => ({ id: v.id, projectId: v.projectId, status: v.status, sizeBytes: v.sizeBytes, version: v.version, serverId: v.serverId, device: v.device }))
      .sort((a, b) => a.id.localeCompare(b.id));
    const files: Snapshot['files'] = {};
    for (const name of readdirSync(pool).sort()) {
      try {
        const st = statSync(join(pool, name));
        files[name] = [st.size, st.mtimeMs];
      } catch {
        // Deleted between the listing and the stat: a change the next snapshot shows.
        files[name] = [-1, -1];
      }
    }
    const created = (await db.listServers({ projectId: PROJECT }))
      .filter((s) => s.createdAt !== undefined)
      .map((s): [string, string, string | null] => [s.id, s.state, s.taskState])
      .sort((a, b) => a[0].localeCompare(b[0]));
    const { rescan, extendAttached, attachVolume, detachVolume } = driver.calls;
    return { volumes, created, servers: ALL_SERVERS.map((id) => driver.snapshot(id)), resizes: driver.resizes, calls: { rescan, extendAttached, attachVolume, detachVolume }, files };
  };

  const agent = new Agent({ keepAlive: true, maxSockets: 4 });
  const ports = { compute: Number(new URL(h.service.computeUrl).port), volume: Number(new URL(h.service.volumeUrl!).port) };
  const dir = realpathSync(h.dir);
  return {
    h,
    driver,
    tokens,
    computePort: ports.compute,
    volumePort: ports.volume,
    hostPaths: [...new Set([h.dir, dir, h.config.dataDir, `${tmpdir()}/`, '/tmp/', process.cwd()])],
    snapshot,
    async settle(timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      let prev = await snapshot();
      for (;;) {
        await sleep(5);
        const cur = await snapshot();
        if (!cur.volumes.some((v) => TRANSIENT.has(v.status)) && isDeepStrictEqual(prev, cur)) return cur;
        if (Date.now() > deadline) {
          throw new Error(`the service did not come to rest within ${timeoutMs} ms: ${JSON.stringify(cur.volumes.filter((v) => TRANSIENT.has(v.status)))}`);
        }
        prev = cur;
      }
    },
    async replenish(s) {
      const mine = s.volumes.filter((v) => v.projectId === PROJECT);
      let made = 0;
      for (let n = mine.filter((v) => v.status === 'available' && v.serverId === null).length; n < MIN_AVAILABLE; n++, made++) {
        await create(h.volume, PROJECT, { name: `refill-${made}`, size_bytes: 64 * MiB });
      }
      for (let n = mine.filter((v) => v.serverId !== null).length; n < MIN_ATTACHED; n++, made++) {
        const id = await create(h.volume, PROJECT, { name: `refill-${made}`, size_bytes: 64 * MiB, ...(n % 2 ? { format: 'qcow2' } : {}) });
        await attach(h.compute, PROJECT, ATTACH_TO[n % ATTACH_TO.length]!, id);
      }
      return made;
    },
    async actions() {
      const out = new Map<string, string[]>();
      for (const id of ALL_SERVERS) out.set(id, (await db.listActions(id)).map((a) => a.requestId));
      return out;
    },
    send: (api, w) => send(ports[api], agent, w),
    async close() {
      agent.destroy();
      await db.close();
      await h.cleanup().finally(() => {
        // A backend process (qemu-img) finishing late can race the first removal.
        rmSync(h.dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
      });
    },
  };
}

/** Resolves a case's references against a snapshot of the service (see `Ref`). */
export class SnapshotResolver implements Resolver {
  /** The size the request is about (the last volume or attachment resolved). */
  private current: number | undefined;
  private server: string | undefined;

  constructor(
    private readonly s: Snapshot,
    /** Which one, for references that say "the case's pick" (i = -1). */
    private readonly pick: number,
    private readonly actionIds: Map<string, string[]> = new Map(),
  ) {}

  private nth<T>(list: T[], i: number): T | undefined {
    return list.length ? list[(i < 0 ? this.pick : i) % list.length] : undefined;
  }

  private volumes(filter: (v: VolumeView) => boolean, i: number): string {
    const v = this.nth(this.s.volumes.filter(filter), i) ?? this.nth(this.s.volumes.filter((x) => x.projectId === PROJECT), i);
    if (!v) return '0badc0de-0000-4000-8000-000000000000';
    this.current = v.sizeBytes;
    return v.id;
  }

  private attachment(i: number) {
    const pairs = this.s.servers.filter((s) => s.projectId === PROJECT).flatMap((s) => s.disks.map((d) => ({ server: s.id, volume: d.volumeId, bytes: d.guestBytes })));
    return this.nth(pairs, i);
  }

  resolve(ref: Ref): string | number {
    switch (ref.kind) {
      case 'project':
        return PROJECT;
      case 'otherProject':
        return OTHER_PROJECT;
      case 'server':
        return (this.server = this.nth(PROJECT_SERVERS, ref.i)!);
      case 'otherServer':
        return (this.server = OTHER_SERVER);
      case 'createdServer':
        return (this.server = this.nth(this.s.created.map(([id]) => id), ref.i) ?? ACTIVE_1);
      case 'volume':
        return this.volumes((v) => v.projectId === PROJECT, ref.i);
      case 'availableVolume':
        return this.volumes((v) => v.projectId === PROJECT && v.status === 'available' && v.serverId === null, ref.i);
      case 'attachedVolume':
        return this.volumes((v) => v.projectId === PROJECT && v.serverId !== null, ref.i);
      case 'otherVolume':
        return this.volumes((v) => v.projectId === OTHER_PROJECT, ref.i);
      case 'attachmentServer': {
        const a = this.attachment(ref.i);
        return (this.server = a?.server ?? ACTIVE_1);
      }
      case 'attachmentVolume': {
        const a = this.attachment(ref.i);
        if (!a) return INVENTORY_DISK;
        this.current = a.bytes;
        return a.volume;
      }
      case 'action':
        return this.nth(this.actionIds.get(this.server ?? ACTIVE_1) ?? [], ref.i) ?? 'req-00000000-0000-7000-8000-000000000000';
      case 'bytesAbove':
        return (this.current ?? 64 * MiB) + ref.delta;
      case 'gibAbove':
        return Math.ceil((this.current ?? GiB) / GiB) + ref.delta;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// What valid looks like here (real ids and sizes), by parameter and field name

const ref = (kind: RefKind, i = -1, delta = 0): Ref => new Ref(kind, i, delta);
const some = (kind: RefKind) => fc.nat({ max: 60 }).map((i) => ref(kind, i));
const at = (kind: RefKind): { ref: Ref } => ({ ref: ref(kind) });

/** Path parameters: the token's project, a seeded server, an attached pair, a volume, an action. */
export const pathHints: PathHints = (route, p) => {
  const path = (a: fc.Arbitrary<Ref>): fc.Arbitrary<PathValue> => a.map((r) => ({ ref: r }));
  switch (p.name) {
    case 'tenant_id':
    case 'project_id':
      return fc.oneof({ weight: 30, arbitrary: fc.constant(at('project')) }, { weight: 1, arbitrary: fc.constant(at('otherProject')) });
    case 'server_id':
      return fc.oneof(
        { weight: 6, arbitrary: fc.constant(at('attachmentServer')) },
        { weight: 3, arbitrary: path(some('server')) },
        { weight: 1, arbitrary: fc.constant(at('otherServer')) },
        // DELETE /servers acts only on servers it created.
        { weight: route.method === 'DELETE' && !route.path.includes('{volume_id}') ? 12 : 0, arbitrary: path(some('createdServer')) },
      );
    case 'flavor_id':
      return fc.oneof(
        { weight: 5, arbitrary: fc.constant<PathValue>({ text: FUZZ_FLAVOR, encoding: 'component' }) },
        { weight: 1, arbitrary: fc.constant<PathValue>({ text: 'no-such-flavor', encoding: 'component' }) },
      );
    case 'volume_id':
      // Under a server: the volume attached to it (the case's pick names both); else any volume.
      if (route.path.includes('{server_id}')) {
        return fc.oneof({ weight: 8, arbitrary: fc.constant(at('attachmentVolume')) }, { weight: 2, arbitrary: path(some('volume')) }, { weight: 1, arbitrary: path(some('otherVolume')) });
      }
      // An action on an attached volume needs microversion 3.42, which the fuzz rarely sends, and
      // an attached volume cannot be deleted: actions and deletes go mostly to available volumes,
      // or valid ones would be too rare to count on.
      return fc.oneof(
        { weight: 4, arbitrary: path(some('volume')) },
        { weight: route.path.endsWith('/action') || route.method === 'DELETE' ? 30 : 3, arbitrary: path(some('availableVolume')) },
        { weight: 3, arbitrary: path(some('attachedVolume')) },
        { weight: 1, arbitrary: path(some('otherVolume')) },
      );
    case 'request_id':
      return path(some('action'));
  }
  return undefined;
};

/** Body fields: real volume ids, sizes above the volume's own, small new volumes. */
export const bodyHints: Hints = (key, schema) => {
  const above = (deltas: number[], kind: RefKind = 'bytesAbove') => fc.constantFrom(...deltas).map((d): Val => ref(kind, 0, d));
  switch (key) {
    case 'volume_id':
    case 'volumeId':
      // `volume_id` is rescan's (valid only for the volume attached to the server in the path),
      // `volumeId` an attach's (valid only for an available volume): each mostly gets its own.
      return fc.oneof(
        { weight: key === 'volume_id' ? 10 : 4, arbitrary: fc.constant<Val>(ref('attachmentVolume')) },
        { weight: key === 'volumeId' ? 8 : 2, arbitrary: some('availableVolume') },
        { weight: 2, arbitrary: some('volume') },
        { weight: 1, arbitrary: fc.uuid() },
      );
    case 'bytes':
    case 'new_bytes':
      return fc.oneof(
        { weight: 8, arbitrary: above([512, 4096, MiB, 64 * MiB, GiB]) },
        { weight: 1, arbitrary: above([0, -512, -MiB]) },
        { weight: 1, arbitrary: fc.integer({ min: 1, max: 2 ** 19 }).map((k) => k * 512) },
        // In the schema's range, past what a file system holds (SizeLimitExceeded), or just below it.
        { weight: 1, arbitrary: fc.constantFrom(2 ** 40, 2 ** 44 - 4096, 2 ** 44, 2 ** 50) },
      );
    case 'new_size':
      return fc.oneof(
        { weight: 6, arbitrary: above([1, 2], 'gibAbove') },
        { weight: 1, arbitrary: above([0, -1], 'gibAbove') },
        { weight: 1, arbitrary: fc.constantFrom(16_383, 16_384, 2 ** 20) },
      );
    case 'size_bytes':
      return fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 1, max: 2 ** 18 }).map((k) => k * 512) }, { weight: 1, arbitrary: fc.constantFrom(2 ** 44 - 4096, 2 ** 44, 2 ** 50) });
    case 'size':
      return fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 1, max: 2 }) }, { weight: 1, arbitrary: fc.constantFrom(16_383, 16_384, 2 ** 20) });
    case 'name':
      // Volume names are free text; os-server-external-events names come from a list.
      return fc.oneof(
        { weight: 2, arbitrary: fc.string({ maxLength: 24 }) },
        { weight: 4, arbitrary: fc.constantFrom('network-changed', 'network-vif-plugged', 'network-vif-deleted') },
        // Refused below 2.51 (the fuzz sends no version), accepted and acting from it.
        { weight: 1, arbitrary: fc.constant('volume-extended') },
      );
    // os-services enable/disable: this service's one compute host, mostly (serve's default host name).
    case 'host':
      return fc.oneof({ weight: 6, arbitrary: fc.constant<Val>(hostname()) }, { weight: 1, arbitrary: fc.constantFrom<Val>('no-such-host', '') });
    case 'binary':
      return fc.oneof({ weight: 6, arbitrary: fc.constant<Val>('nova-compute') }, { weight: 1, arbitrary: fc.constantFrom<Val>('nova-scheduler', '') });
    case 'server_uuid':
      return fc.oneof({ weight: 4, arbitrary: fc.constant<Val>(ref('attachmentServer')) }, { weight: 2, arbitrary: some('server') }, { weight: 1, arbitrary: fc.uuid() });
    case 'tag':
      return fc.oneof({ weight: 4, arbitrary: fc.constant<Val>(ref('attachmentVolume')) }, { weight: 1, arbitrary: fc.string({ maxLength: 24 }) });
    case 'volume_type':
      return fc.constantFrom('file', '');
    case 'format':
      return fc.constantFrom('raw', 'raw', 'qcow2');
    case 'device':
      return fc.constantFrom<Val>(null, 'vdb', '/dev/vdc', 'vdq', 'vdy');
    case 'imageRef':
      // A server needs one; a volume accepts only null (an image-backed volume is refused).
      return fc.constantFrom<Val>(FUZZ_IMAGE, FUZZ_IMAGE, FUZZ_IMAGE, `http://glance/v2/images/${FUZZ_IMAGE}`, 'no-such-image', null, null);
    // Cinder's create fields for features we do not have: mostly null (as cinderclient sends
    // them, accepted), sometimes a value (400 naming the feature).
    case 'snapshot_id':
    case 'source_volid':
    case 'image_id':
    case 'backup_id':
    case 'consistencygroup_id':
    case 'group_id':
      return fc.oneof({ weight: 6, arbitrary: fc.constant<Val>(null) }, { weight: 1, arbitrary: fc.uuid() });
    case 'volume':
      // Only the create body's `volume` (the one with a size): the update's has no size and is
      // generated from its schema (a create-shaped body there is always refused, which left
      // valid updates too rare to count on).
      if (!(schema.properties && 'size' in schema.properties)) return undefined;
      // A valid create names exactly one size (size in GiB or our size_bytes); generated freely,
      // both or neither are given most of the time (400) and valid creates are too rare to count
      // on. The hostile variants still break each field of the schema one at a time.
      return fc
        .tuple(
          fc.oneof(
            fc.integer({ min: 1, max: 2 ** 17 }).map((k): [string, Val] => ['size_bytes', k * 512]),
            fc.constant<[string, Val]>(['size', 1]),
          ),
          fc.constantFrom<Array<[string, Val]>>([], [['name', 'fuzz']], [['volume_type', 'file'], ['description', null], ['snapshot_id', null], ['metadata', null]]),
        )
        .map(([size, rest]) => new Obj([size, ...rest]));
    // Cinder's free-text and metadata fields: valid-looking (the hostile ones are tried on `name`).
    case 'display_name':
    case 'description':
    case 'display_description':
      return fc.constantFrom<Val>(null, '', 'data', 'a volume');
    case 'metadata':
      return fc.constantFrom<Val>(null, new Obj([]), new Obj([['purpose', 'fuzz']]));
    case 'multiattach':
      return fc.constantFrom<Val>(null, false, false, true);
    case 'availability_zone':
      return fc.constantFrom<Val>(null, 'nova', 'nova', 'elsewhere');
    case 'flavorRef':
      return fc.constantFrom<Val>(FUZZ_FLAVOR, FUZZ_FLAVOR, FUZZ_FLAVOR, 'no-such-flavor');
  }
  return undefined;
};

// ---------------------------------------------------------------------------------------------
// The wire

/** Node's HTTP client refuses these in a request target or header (they go over a bare socket). */
const CLIENT_PATH_OK = /^[\x21-\xff]*$/;
const CLIENT_HEADER_OK = /^[\t\x20-\x7e\x80-\xff]*$/;

function needsRawSocket(w: WireRequest): boolean {
  return w.raw !== 'none' || !CLIENT_PATH_OK.test(w.path) || w.headers.some(([, v]) => !CLIENT_HEADER_OK.test(v)) || w.path.includes('#');
}

async function send(port: number, agent: Agent, w: WireRequest): Promise<Answer> {
  return needsRawSocket(w) ? sendRaw(port, w) : sendHttp(port, agent, w);
}

function sendHttp(port: number, agent: Agent, w: WireRequest, retried = false): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of w.headers) {
      const cur = headers[k];
      headers[k] = cur === undefined ? v : [...(Array.isArray(cur) ? cur : [cur]), v];
    }
    if (w.body !== undefined && headers['transfer-encoding'] === undefined) headers['content-length'] = String(w.body.length);
    const req = httpRequest({ host: '127.0.0.1', port, method: w.method, path: w.path, headers, agent, timeout: 60_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), via: 'http' }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 60 s')));
    req.on('error', (err: NodeJS.ErrnoException) => {
      // The keep-alive race every HTTP client has: the server closed an idle connection (its
      // keep-alive timeout) just as this request went out on it. Nothing reached the server.
      if (req.reusedSocket && (err.code === 'ECONNRESET' || err.message === 'socket hang up') && !retried) {
        keepAliveRetries++;
        sendHttp(port, agent, w, true).then(resolve, reject);
        return;
      }
      reject(err);
    });
    req.end(w.body);
  });
}

/** Requests sent again after the keep-alive race (see sendHttp), for the run's summary. */
export let keepAliveRetries = 0;

async function sendRaw(port: number, w: WireRequest): Promise<Answer> {
  const eol = w.raw === 'lfOnly' ? '\n' : '\r\n';
  let target = w.path;
  if (w.raw === 'absoluteUri') target = `http://127.0.0.1:${port}${w.path}`;
  if (w.raw === 'rawPath') {
    try {
      target = decodeURIComponent(w.path);
    } catch {
      // A malformed escape stays as it is: that is hostile enough.
    }
  }
  let body = w.body ?? Buffer.alloc(0);
  const lines = [`${w.method} ${target} HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'Connection: close'];
  for (const [k, v] of w.headers) lines.push(`${k}: ${v}`);
  if (w.raw === 'duplicateContentType') lines.push('Content-Type: text/plain');
  if (w.raw === 'shortContentLength') {
    if (body.length === 0) body = Buffer.from('{}');
    lines.push(`Content-Length: ${Math.max(0, body.length - 1 - (body.length >> 1))}`);
  } else if (!w.headers.some(([k]) => k === 'transfer-encoding')) {
    lines.push(`Content-Length: ${body.length}`);
  }
  const head = Buffer.from(lines.join(eol) + eol + eol, 'utf8');
  // Read until the server closes (Connection: close): a HEAD answer has a Content-Length and no
  // body, and an interim 100 Continue comes before the answer itself.
  const res = await rawRequest(port, Buffer.concat([head, body]), { timeoutMs: 60_000, waitForClose: true });
  let answer: Answer = { status: res.status, headers: res.headers, body: res.body, via: 'raw' };
  while (answer.status >= 100 && answer.status < 200) {
    const next = parseResponse(answer.body);
    if (!next) break;
    answer = next;
  }
  return answer;
}

/** The response at the start of `text` (after an interim one), with its body cut at Content-Length. */
function parseResponse(text: string): Answer | undefined {
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const lines = text.slice(0, end).split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  const rest = Buffer.from(text.slice(end + 4), 'utf8');
  const length = headers['content-length'] === undefined ? rest.length : Number(headers['content-length']);
  return { status, headers, body: rest.subarray(0, length).toString('utf8'), via: 'raw' };
}

// ---------------------------------------------------------------------------------------------
// The verdict

const REQUEST_ID = /^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** Whether `status` is an answer, not a refusal: 2xx, and the 300 Multiple Choices of the volume API's version list (Cinder's `GET /`). */
export function isAnswer(status: number): boolean {
  return status < 300 || status === 300;
}

/** What is wrong with an answer, if anything: each item is one broken rule. */
export function judge(w: WireRequest, a: Answer, hostPaths: string[]): string[] {
  const problems: string[] = [];
  if (a.status === 0) return ['no answer: the connection closed without a response'];
  if (a.status >= 500) problems.push(`a server error (${a.status})`);
  const rid = a.headers['x-openstack-request-id'];
  if (typeof rid !== 'string' || !REQUEST_ID.test(rid)) problems.push(`x-openstack-request-id missing or not req-<uuid>: ${JSON.stringify(rid)}`);
  for (const p of hostPaths) if (a.body.includes(p)) problems.push(`a host path (${p}) in the answer`);
  const ct = String(a.headers['content-type'] ?? '');
  const head = w.method === 'HEAD';
  if (!isAnswer(a.status)) {
    if (!/^application\/json/.test(ct)) problems.push(`content-type ${JSON.stringify(ct)}, not JSON`);
    if (!head) {
      let body: unknown;
      try {
        body = JSON.parse(a.body);
      } catch {
        problems.push(`a body that is not JSON: ${JSON.stringify(a.body.slice(0, 200))}`);
        return problems;
      }
      const keys = body && typeof body === 'object' && !Array.isArray(body) ? Object.keys(body) : [];
      if (keys.length !== 1) {
        problems.push(`not one fault: ${a.body.slice(0, 200)}`);
        return problems;
      }
      const name = keys[0]!;
      const f = (body as Record<string, Record<string, unknown>>)[name]!;
      if (name !== faultName(a.status)) problems.push(`fault name ${name} for status ${a.status}`);
      if (f.code !== a.status) problems.push(`fault code ${String(f.code)} is not the status ${a.status}`);
      if (typeof f.message !== 'string' || f.message === '') problems.push('no message');
      if (!isErrorCode(f.error_code)) problems.push(`error_code ${JSON.stringify(f.error_code)} is not in the catalogue`);
      else if (CATALOGUE[f.error_code].status !== a.status) problems.push(`error_code ${f.error_code} is a ${CATALOGUE[f.error_code].status}, answered as ${a.status}`);
      if (typeof f.final !== 'boolean') problems.push('final is not a boolean');
      if (f.reason !== undefined && typeof f.reason !== 'string') problems.push('reason is not a string');
      const extra = Object.keys(f).filter((k) => !['code', 'message', 'error_code', 'final', 'reason'].includes(k));
      if (extra.length) problems.push(`unexpected fault fields ${extra.join(', ')}`);
    }
  } else if (!head && a.body !== '') {
    try {
      JSON.parse(a.body);
    } catch {
      problems.push(`a ${a.status} whose body is not JSON: ${JSON.stringify(a.body.slice(0, 200))}`);
    }
  }
  return problems;
}
