/**
 * The whole in-use extend workflow on the fake hypervisor with block and iSCSI disks: create,
 * attach, extend through the volume API, the workflow's storage → rescan → wait_host (polling
 * get_blockdev) → assist → confirm over real HTTP between the two services, and the size the
 * guest sees at the end. Also the "rescan first" path, through the same compute client the
 * workflow uses: assist_extend before the host sees the size → 409 HostSizeTooSmall → rescan →
 * get_blockdev → assist_extend succeeds.
 *
 * No loop devices or tgtd here (the fast tier): the storage is real sparse files, grown by the
 * real file backend's code, handed to compute as the block and iSCSI backends hand theirs:
 * - block: the file named as the block device (`kind: 'block'`, source = the file); the fake's
 *   host sees its growth only after a rescan, as the kernel does a loop device's.
 * - iSCSI: `kind: 'network'`, source `iqn/1` and a portal; a stand-in target exports each file
 *   as its LUN and re-exports a grown one `exportLagMs` after the backend's extend returned (the
 *   real backend re-adds the LUN inside extend; the lag makes the workflow poll get_blockdev
 *   more than once). The fake reads the LUN's capacity from it (`readLunBytes`).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { buildComputeApp, buildVolumeApp } from '../../src/app.js';
import { issueToken, SERVICE_PROJECT, SERVICE_ROLES } from '../../src/auth/tokens.js';
import { PolicyEnforcer } from '../../src/auth/policy.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { errors, ServiceError } from '../../src/errors.js';
import { ApiClient, VOLUME_LATEST } from '../../src/rpc/httpClient.js';
import { ServiceCatalog } from '../../src/rpc/catalog.js';
import { HttpVolumeClient } from '../../src/rpc/volumeClient.js';
import type { AttachSpec } from '../../src/virt/driver.js';
import { FakeDriver, type IscsiLun } from '../../src/virt/fake/driver.js';
import type { BackendVolume, StorageInspection, VolumeBackend } from '../../src/volume/backends/backend.js';
import { FileBackend } from '../../src/volume/backends/file.js';
import { HttpComputeClient } from '../../src/rpc/computeClient.js';
import { InFlight } from '../../src/volume/reconciler.js';

const MiB = 2 ** 20;
const PROJECT = 'p-host';
const SERVER = '7a1c5e2b-3333-4c44-8d55-6e7f8a9b0c1d';
const PORTAL = '127.0.0.1:3260';
const IQN_PREFIX = 'iqn.2026-11.dev.online-extend:';

type Kind = 'block' | 'iscsi';

/**
 * A volume backend of `kind` over the file backend's storage code: what it grows is a real file;
 * what it hands compute is what the block or iSCSI backend would (see the header).
 */
class StandInBackend implements VolumeBackend {
  readonly attachedGrowth = 'storage' as const;
  /** The LUN sizes the stand-in target exports, by volume id (iSCSI only). */
  readonly exported = new Map<string, number>();
  private readonly files: FileBackend;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    readonly name: Kind,
    dir: string,
    private readonly exportLagMs: number,
  ) {
    this.files = new FileBackend({ dir });
  }

  maxBytes(): Promise<number> {
    return this.files.maxBytes({ format: 'raw' });
  }

  async create(volumeId: string, bytes: number): Promise<BackendVolume> {
    await this.files.create(volumeId, bytes, { format: 'raw' });
    this.exported.set(volumeId, bytes);
    return { volumeId, bytes, connection: await this.connection(volumeId) };
  }

  async extend(volumeId: string, bytes: number): Promise<number> {
    const grown = await this.files.extend(volumeId, bytes);
    if (this.name === 'iscsi' && this.exportLagMs === 0) this.exported.set(volumeId, grown);
    else if (this.name === 'iscsi') {
      const t = setTimeout(() => {
        this.timers.delete(t);
        this.exported.set(volumeId, grown);
      }, this.exportLagMs);
      this.timers.add(t);
    }
    return grown;
  }

  getBytes(volumeId: string): Promise<number> {
    return this.files.getBytes(volumeId);
  }

  async connection(volumeId: string): Promise<AttachSpec> {
    const file = await this.files.connection(volumeId);
    return this.name === 'block'
      ? { volumeId, kind: 'block', source: file.source }
      : { volumeId, kind: 'network', source: `${IQN_PREFIX}${volumeId}/1`, portal: PORTAL };
  }

  delete(volumeId: string): Promise<void> {
    this.exported.delete(volumeId);
    return this.files.delete(volumeId);
  }

  exists(volumeId: string): Promise<boolean> {
    return this.files.exists(volumeId);
  }
  inspectStorage(volumeId: string): Promise<StorageInspection> {
    return this.files.inspectStorage(volumeId, { format: 'raw' });
  }

  /** What an initiator reads for a LUN of this stand-in target (FakeDriver's readLunBytes). */
  async readLun(lun: IscsiLun): Promise<number | undefined> {
    if (lun.portal !== PORTAL || lun.lun !== 1 || !lun.iqn.startsWith(IQN_PREFIX)) return undefined;
    return this.exported.get(lun.iqn.slice(IQN_PREFIX.length));
  }

  close(): void {
    for (const t of this.timers) clearTimeout(t);
  }
}

interface Host {
  driver: FakeDriver;
  backend: StandInBackend;
  compute: ApiClient;
  volume: ApiClient;
  /** The compute client the volume service's workflow uses (real HTTP, service token). */
  computeForVolumes: HttpComputeClient;
  close(): Promise<void>;
}

let host: Host | undefined;
afterEach(async () => {
  await host?.close();
  host = undefined;
});

/** Both services in-process over real HTTP on 127.0.0.1, a fake hypervisor with one server. */
async function startHost(kind: Kind, opts: { exportLagMs?: number } = {}): Promise<Host> {
  const dir = mkdtempSync(join(tmpdir(), `oe-fake-host-${kind}-`));
  const logger = pino({ level: 'silent' });
  const store = new SqliteStore(join(dir, 'online-extend.sqlite'));
  const backend = new StandInBackend(kind, join(dir, 'volumes'), opts.exportLagMs ?? 0);
  const backends = new Map<string, VolumeBackend>([[kind, backend]]);
  const driver = new FakeDriver({
    servers: [{ id: SERVER, name: 'vm-host', projectId: PROJECT, state: 'active', disks: [] }],
    readLunBytes: (lun) => backend.readLun(lun),
  });
  const policy = new PolicyEnforcer();
  const inFlight = new InFlight();
  // Each API finds the other in the catalog once it listens, as `serve` wires them (app.ts).
  const catalog = new ServiceCatalog();
  const computeApp = await buildComputeApp({ store, driver, logger, policy, volumes: new HttpVolumeClient({ url: catalog.endpoint('volume') }) });
  const computeUrl = await computeApp.app.listen({ host: '127.0.0.1', port: 0 });
  catalog.register('compute', computeUrl);
  const { token } = await issueToken(store, { userId: 'tester', projectId: PROJECT, roles: ['admin'], ttlMs: 3_600_000 });
  // The volume service calls compute with a service token, as `serve` does (auth/tokens.ts ServiceToken).
  const service = await issueToken(store, { userId: 'volume-service', projectId: SERVICE_PROJECT, roles: [...SERVICE_ROLES], ttlMs: 3_600_000 });
  const computeForVolumes = new HttpComputeClient({ url: computeUrl, token: service.token });
  const volumeApp = await buildVolumeApp({
    store,
    logger,
    policy,
    backends,
    defaultBackend: kind,
    compute: computeForVolumes,
    workflow: { timeoutMs: 10_000, pollBaseMs: 5, backoffBaseMs: 10, backoffMaxMs: 50 },
    inFlight,
  });
  const volumeUrl = await volumeApp.app.listen({ host: '127.0.0.1', port: 0 });
  catalog.register('volume', volumeUrl);
  return {
    driver,
    backend,
    compute: new ApiClient({ url: computeUrl, token }),
    volume: new ApiClient({ url: volumeUrl, token, headers: VOLUME_LATEST }),
    computeForVolumes,
    async close() {
      backend.close();
      await volumeApp.workflow.close();
      await volumeApp.app.close();
      await computeApp.app.close();
      await computeApp.manager.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

type VolumeView = { id: string; status: string; size_bytes: number; extend: { step: string; error: string | null } | null };

async function createAndAttach(h: Host, bytes: number): Promise<string> {
  const created = await h.volume.request<{ volume: VolumeView }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: 'data', size_bytes: bytes } });
  const id = created.body.volume.id;
  await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
  return id;
}

async function settle(h: Host, id: string, timeoutMs = 10_000): Promise<VolumeView> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = (await h.volume.request<{ volume: VolumeView }>('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`)).body.volume;
    if (v.status !== 'extending') return v;
    if (Date.now() > end) throw new Error(`volume ${id} still extending at step ${v.extend?.step}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** What the guest sees: the fake hypervisor's guest view of the disk. */
function guestBytes(h: Host, volumeId: string): number | undefined {
  return h.driver.snapshot(SERVER).disks.find((d) => d.volumeId === volumeId)?.guestBytes;
}

async function rejection(p: Promise<unknown>): Promise<ServiceError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected a ServiceError').toBeInstanceOf(ServiceError);
  return err as ServiceError;
}

const kinds: Array<{ kind: Kind; disk: 'block' | 'network' }> = [
  { kind: 'block', disk: 'block' },
  { kind: 'iscsi', disk: 'network' },
];

describe.each(kinds)('extending an in-use $kind volume on the fake hypervisor (real HTTP between the services)', ({ kind, disk }) => {
  it(`attaches it as a ${disk} disk at its size, not 0: host and guest see what was created`, async () => {
    host = await startHost(kind);
    const id = await createAndAttach(host, 64 * MiB);
    expect(host.driver.snapshot(SERVER).disks.find((d) => d.volumeId === id)).toMatchObject({ kind: disk, hostBytes: 64 * MiB, guestBytes: 64 * MiB });
    expect((await host.computeForVolumes.getBlockdev(PROJECT, SERVER, id)).value).toBe(64 * MiB);
  });

  it('extends end to end: storage grows, the host is rescanned and polled until it sees the size, the guest is grown, and the guest sees the new size', async () => {
    host = await startHost(kind, { exportLagMs: 150 });
    const id = await createAndAttach(host, 64 * MiB);
    const polls = host.driver.calls.getHostBytes;
    const res = await host.volume.request('POST', `/v3/${PROJECT}/volumes/${id}/action`, { 'os-extend-bytes': { new_bytes: 128 * MiB } });
    expect(res.status).toBe(202);
    expect(await settle(host, id)).toMatchObject({ status: 'in-use', size_bytes: 128 * MiB, extend: null });
    expect(guestBytes(host, id)).toBe(128 * MiB);
    expect((await host.computeForVolumes.getBlockdev(PROJECT, SERVER, id)).value).toBe(128 * MiB);
    expect(host.driver.calls.rescan).toBeGreaterThanOrEqual(1);
    // wait_host asked the host until it saw the size; a LUN exported late takes several polls.
    expect(host.driver.calls.getHostBytes - polls).toBeGreaterThanOrEqual(kind === 'iscsi' ? 2 : 1);
    expect(host.driver.resizes).toBe(1);
  });

  it('goes back to rescan when assist_extend answers HostSizeTooSmall, and finishes', async () => {
    host = await startHost(kind);
    const id = await createAndAttach(host, 64 * MiB);
    // The host lost sight of the new size between get_blockdev and the resize (a stale path).
    host.driver.injectFault('extendAttached', errors.hostSizeTooSmall(id, 96 * MiB, 64 * MiB));
    await host.volume.request('POST', `/v3/${PROJECT}/volumes/${id}/action`, { 'os-extend-bytes': { new_bytes: 96 * MiB } });
    expect(await settle(host, id)).toMatchObject({ status: 'in-use', size_bytes: 96 * MiB, extend: null });
    expect(host.driver.calls.extendAttached).toBe(2);
    expect(host.driver.calls.rescan).toBe(2);
    expect(guestBytes(host, id)).toBe(96 * MiB);
  });

  it('refuses assist_extend until the host sees the size ("rescan first"), then rescan, get_blockdev and assist_extend grow the guest', async () => {
    host = await startHost(kind, { exportLagMs: 100 });
    const id = await createAndAttach(host, 64 * MiB);
    await host.backend.extend(id, 96 * MiB); // the storage step
    const early = await rejection(host.computeForVolumes.assistExtend(PROJECT, SERVER, id, 96 * MiB));
    expect(early).toMatchObject({ code: 'HostSizeTooSmall', status: 409 });
    expect(early.message).toMatch(/rescan first/);
    expect(early.message).not.toContain(tmpdir());
    expect(guestBytes(host, id)).toBe(64 * MiB);
    await host.computeForVolumes.rescan(PROJECT, SERVER, id);
    let seen = (await host.computeForVolumes.getBlockdev(PROJECT, SERVER, id)).value;
    for (const end = Date.now() + 5_000; seen < 96 * MiB && Date.now() < end; ) {
      await new Promise((r) => setTimeout(r, 20));
      seen = (await host.computeForVolumes.getBlockdev(PROJECT, SERVER, id)).value;
    }
    expect(seen).toBe(96 * MiB);
    expect((await host.computeForVolumes.assistExtend(PROJECT, SERVER, id, 96 * MiB)).value).toBe(96 * MiB);
    expect(guestBytes(host, id)).toBe(96 * MiB);
  });
});

describe('the fake host tells block and iSCSI disks apart as a real host does', () => {
  it('sees a grown block volume only after a rescan, a grown iSCSI LUN as soon as the target exports it', async () => {
    const seen: Record<Kind, { beforeRescan: number; afterRescan: number }> = {} as never;
    for (const kind of ['block', 'iscsi'] as const) {
      host = await startHost(kind);
      const id = await createAndAttach(host, 64 * MiB);
      await host.backend.extend(id, 80 * MiB);
      const beforeRescan = (await host.computeForVolumes.getBlockdev(PROJECT, SERVER, id)).value;
      await host.computeForVolumes.rescan(PROJECT, SERVER, id);
      const afterRescan = (await host.computeForVolumes.getBlockdev(PROJECT, SERVER, id)).value;
      seen[kind] = { beforeRescan, afterRescan };
      await host.close();
      host = undefined;
    }
    expect(seen).toEqual({ block: { beforeRescan: 64 * MiB, afterRescan: 80 * MiB }, iscsi: { beforeRescan: 80 * MiB, afterRescan: 80 * MiB } });
  });
});
