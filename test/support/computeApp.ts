/** A compute app on the fake driver with an in-memory store and a set of tokens, for API tests. */
import pino from 'pino';
import { buildComputeApp, type ComputeApp } from '../../src/app.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { FakeDriver, type FakeServer } from '../../src/virt/fake/driver.js';
import { issueToken } from '../../src/auth/tokens.js';
import { PolicyEnforcer } from '../../src/auth/policy.js';
import type { DriverCapabilities } from '../../src/virt/driver.js';
import type { FlavorRecord, ImageRecord } from '../../src/db/store.js';
import type { HttpLimits } from '../../src/api/server.js';
import type { Metrics } from '../../src/util/metrics.js';

export const GiB = 1024 ** 3;
export const TENANT = 'f66d7df4b59f4ab98a358a0dab0b238f';
export const OTHER_TENANT = '0ther0000000000000000000000000000';
export const SERVER = '14540a2f-204b-4a30-a61b-e069bf243c87';
export const OFF_SERVER = 'a3c9e1f2-6b4d-4e8a-9c7f-1d2e3f4a5b6c';
export const OTHER_SERVER = 'b4d0f2a3-7c5e-4f9b-8d0a-2e3f4a5b6c7d';
export const BLOCK_VOL = '076cc7cd-1239-4e9f-a1d3-06cb50b107a4';
export const FILE_VOL = '5b0c8f9e-2d7a-4c1e-9f3b-8a6d4e2c1b0a';
export const RO_VOL = '6c1d9a0f-3e8b-4d2f-a04c-9b7e5f3d2c1b';
export const OFF_VOL = 'c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f';
export const OTHER_VOL = 'd2e3f4a5-b6c7-4d8e-9f0a-1b2c3d4e5f60';
export const UNKNOWN = '99999999-9999-4999-8999-999999999999';

export function sampleServers(): FakeServer[] {
  return [
    {
      id: SERVER,
      name: 'web-1',
      projectId: TENANT,
      state: 'active',
      vcpus: 2,
      memoryMb: 2048,
      disks: [
        { volumeId: BLOCK_VOL, device: 'vdb', kind: 'block', backingBytes: 2 * GiB, hostBytes: GiB, guestBytes: GiB },
        { volumeId: FILE_VOL, device: 'vdc', kind: 'file', backingBytes: GiB, hostBytes: GiB, guestBytes: GiB },
        { volumeId: RO_VOL, device: 'vdd', kind: 'block', readonly: true, backingBytes: 2 * GiB, hostBytes: 2 * GiB, guestBytes: GiB },
      ],
    },
    {
      id: OFF_SERVER,
      name: 'db-1',
      projectId: TENANT,
      state: 'shutoff',
      disks: [{ volumeId: OFF_VOL, device: 'vdb', kind: 'block', backingBytes: 2 * GiB, hostBytes: 2 * GiB, guestBytes: GiB }],
    },
    {
      id: OTHER_SERVER,
      name: 'other',
      projectId: OTHER_TENANT,
      state: 'active',
      vcpus: 1,
      memoryMb: 512,
      disks: [{ volumeId: OTHER_VOL, device: 'vdb', kind: 'block', backingBytes: 2 * GiB, hostBytes: 2 * GiB, guestBytes: GiB }],
    },
  ];
}

export interface TestComputeApp extends ComputeApp {
  driver: FakeDriver;
  store: SqliteStore;
  tokens: { admin: string; member: string; otherAdmin: string; expired: string };
  close(): Promise<void>;
}

export async function makeComputeApp(
  opts: {
    capabilities?: Partial<DriverCapabilities>;
    policy?: Record<string, string>;
    latencyMs?: number;
    lookupFlavor?: (id: string) => Promise<FlavorRecord | undefined>;
    /** The HTTP server's limits, over the defaults (batchWrites, maxPipelined, timeouts). */
    http?: Partial<HttpLimits>;
    metrics?: Metrics;
  } = {},
): Promise<TestComputeApp> {
  const store = new SqliteStore(':memory:');
  const driver = new FakeDriver({
    servers: sampleServers(),
    ...(opts.capabilities ? { capabilities: opts.capabilities } : {}),
    ...(opts.latencyMs ? { latencyMs: opts.latencyMs } : {}),
  });
  const built = await buildComputeApp({
    store,
    driver,
    logger: pino({ level: 'silent' }),
    policy: new PolicyEnforcer(opts.policy ?? {}),
    ...(opts.lookupFlavor ? { lookupFlavor: opts.lookupFlavor } : {}),
    ...(opts.http ? { http: opts.http } : {}),
    ...(opts.metrics ? { metrics: opts.metrics } : {}),
  });
  const mk = async (projectId: string, roles: string[], ttlMs = 3_600_000, now?: Date) =>
    (await issueToken(store, { userId: `user-${roles.join('-')}`, projectId, roles, ttlMs, ...(now ? { now } : {}) })).token;
  const tokens = {
    admin: await mk(TENANT, ['admin']),
    member: await mk(TENANT, ['member']),
    otherAdmin: await mk(OTHER_TENANT, ['admin']),
    expired: await mk(TENANT, ['admin'], 1000, new Date(Date.now() - 60_000)),
  };
  return {
    ...built,
    driver,
    store,
    tokens,
    close: async () => {
      await built.app.close();
      await store.close();
    },
  };
}

export const url = {
  rescan: (server = SERVER, tenant = TENANT) => `/v2/${tenant}/servers/${server}/os-online_extend_volume`,
  volume: (volume = BLOCK_VOL, server = SERVER, tenant = TENANT) => `/v2/${tenant}/servers/${server}/os-online_extend_volume/${volume}`,
};

/** Everything a request could have changed: hypervisor state and driver calls that act. */
export function observableState(t: TestComputeApp) {
  return {
    servers: [SERVER, OFF_SERVER, OTHER_SERVER].map((id) => t.driver.snapshot(id)),
    resizes: t.driver.resizes,
    extendCalls: t.driver.calls.extendAttached,
    rescanCalls: t.driver.calls.rescan,
  };
}

/** A registered flavor and image servers are built from in API tests (`registerCatalog`). */
export const TEST_FLAVOR: FlavorRecord = { id: 'f-small', name: 'm1.small', vcpus: 2, ramMb: 2048, diskGb: 20, ephemeralGb: 1, swapMb: 512, isPublic: true, description: null };
export const TEST_IMAGE: ImageRecord = {
  id: 'c1d0e7a2-5b6f-4a3e-9d8c-7b6a5f4e3d2c',
  name: 'cirros',
  kind: 'kernel',
  diskPath: null,
  diskFormat: null,
  kernelPath: '/boot/vmlinux',
  ramdiskPath: '/boot/initramfs.gz',
  cmdline: 'console=ttyS0',
  minDiskGb: 0,
  minRamMb: 128,
  createdAt: '2026-11-30T00:00:00.000Z',
};

/** Register TEST_FLAVOR and TEST_IMAGE in `store`, as `online-extend flavor/image create` would. */
export async function registerCatalog(store: SqliteStore): Promise<void> {
  await store.putFlavor(TEST_FLAVOR);
  await store.putImage(TEST_IMAGE);
}

/**
 * Create a server through POST /servers (TEST_IMAGE, TEST_FLAVOR unless `server` says otherwise)
 * as `token`'s caller, and wait until its build ended (ACTIVE, or ERROR for a failed spawn).
 * Answers its id.
 */
export async function createServerThroughApi(
  t: Pick<TestComputeApp, 'app' | 'servers'>,
  token: string,
  server: Record<string, unknown> = {},
  project = TENANT,
): Promise<string> {
  const res = await t.app.inject({
    method: 'POST',
    url: `/v2.1/${project}/servers`,
    headers: { 'x-auth-token': token },
    payload: { server: { name: 'vm-created', imageRef: TEST_IMAGE.id, flavorRef: TEST_FLAVOR.id, ...server } },
  });
  if (res.statusCode !== 202) throw new Error(`POST /servers answered ${res.statusCode}: ${res.body}`);
  await t.servers.idle();
  return (res.json() as { server: { id: string } }).server.id;
}
