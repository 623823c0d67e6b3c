/**
 * The extend's grow_fs step through the HTTP APIs, on the fake driver's guest filesystems: the
 * opt-in (os-extend's `online_extend:grow_fs`, the volume metadata key), what the guest answers
 * in each case, what is recorded (`fs_growth` on os-online-extend, the volume action, compute's
 * instance action), and that the block extend stands whatever happens to the filesystem.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errors } from '../../src/errors.js';
import { ApiError } from '../../src/rpc/httpClient.js';
import type { FakeDriver } from '../../src/virt/fake/driver.js';
import { join } from 'node:path';
import { SqliteStore } from '../../src/db/sqlite.js';
import type { InstanceActionRecord } from '../../src/db/store.js';
import { issueToken } from '../../src/auth/tokens.js';
import { ApiClient } from '../../src/rpc/httpClient.js';
import { makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;
const FROM = 64 * MiB;
const TO = 128 * MiB;

interface FsGrowthView {
  request_id: string;
  requested: boolean;
  grown: boolean | null;
  reason: string | null;
  device: string | null;
  partition_grown: boolean | null;
  fs_type: string | null;
  mountpoint: string | null;
  fs_bytes_before: number | null;
  fs_bytes: number | null;
  finished_at: string | null;
}
interface Vol {
  id: string;
  status: string;
  size_bytes: number;
  attachments: Array<{ device: string }>;
  extend: { step: string } | null;
  fs_growth: FsGrowthView | null;
}

let h: ServiceHarness;
const fake = () => h.service.driver as FakeDriver;

beforeAll(async () => {
  h = await makeService();
});
afterAll(async () => h.cleanup());

const show = async (id: string) => (await h.volume.request<{ volume: Vol }>('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`)).body.volume;

async function newVolume(metadata?: Record<string, string>): Promise<string> {
  return (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: FROM, ...(metadata ? { metadata } : {}) } })).body.volume.id;
}

async function attached(metadata?: Record<string, string>): Promise<{ id: string; device: string }> {
  const id = await newVolume(metadata);
  await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
  const device = (await show(id)).attachments[0]!.device.replace('/dev/', '');
  return { id, device };
}

/** Extend `id` to TO with `option` as os-extend-bytes' online_extend:grow_fs (absent: undefined), and wait until it has ended. */
async function extend(id: string, option?: unknown): Promise<Vol> {
  const res = await h.volume.request('POST', `/v3/${PROJECT}/volumes/${id}/action`, {
    'os-extend-bytes': { new_bytes: TO, ...(option === undefined ? {} : { 'online_extend:grow_fs': option }) },
  });
  expect(res.status).toBe(202);
  const end = Date.now() + 15_000;
  for (;;) {
    const v = await show(id);
    if (v.status !== 'extending') return v;
    if (Date.now() > end) throw new Error(`still extending at step ${v.extend?.step}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function fails(p: Promise<unknown>): Promise<ApiError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ApiError);
  return err as ApiError;
}

/** What the guest has on the disk now (the fake hypervisor's own record). */
function guestFs(volumeId: string) {
  return fake()
    .snapshot(SERVER)
    .disks.find((d) => d.volumeId === volumeId)?.guestFs;
}

interface Case {
  name: string;
  /** Put the guest in the state the case needs (the volume is attached, 64 MiB, seen by the guest). */
  arrange(volumeId: string): void;
  growth: Partial<FsGrowthView>;
  /** The filesystem's size afterwards, as the guest has it (undefined: no filesystem). */
  fsBytes: number | undefined;
  /** growGuestFilesystem calls the step made. */
  calls: number;
}

const cases: Case[] = [
  {
    name: 'a mounted ext4 on the whole disk grows online to the new size',
    arrange: (v) => fake().setGuestFilesystem(SERVER, v, { type: 'ext4', mountpoint: '/data' }),
    growth: { grown: true, reason: null, fs_type: 'ext4', mountpoint: '/data', partition_grown: false, fs_bytes_before: FROM, fs_bytes: TO },
    fsBytes: TO,
    calls: 1,
  },
  {
    name: 'a partitioned disk grows its last partition, then the ext4 on it',
    arrange: (v) => fake().setGuestFilesystem(SERVER, v, { type: 'ext4', mountpoint: '/data', partitioned: true }),
    growth: { grown: true, fs_type: 'ext4', partition_grown: true, fs_bytes_before: FROM - MiB, fs_bytes: TO - MiB },
    fsBytes: TO - MiB,
    calls: 1,
  },
  {
    name: 'an ext4 that is not mounted grows offline',
    arrange: (v) => fake().setGuestFilesystem(SERVER, v, { type: 'ext4' }),
    growth: { grown: true, fs_type: 'ext4', mountpoint: null, fs_bytes: TO },
    fsBytes: TO,
    calls: 1,
  },
  {
    name: 'a mounted xfs grows',
    arrange: (v) => fake().setGuestFilesystem(SERVER, v, { type: 'xfs', mountpoint: '/srv' }),
    growth: { grown: true, fs_type: 'xfs', mountpoint: '/srv', fs_bytes_before: FROM, fs_bytes: TO },
    fsBytes: TO,
    calls: 1,
  },
  {
    name: 'an xfs that is not mounted is not grown (not_mounted)',
    arrange: (v) => fake().setGuestFilesystem(SERVER, v, { type: 'xfs' }),
    growth: { grown: false, reason: 'not_mounted', partition_grown: false, fs_type: 'xfs', fs_bytes: FROM },
    fsBytes: FROM,
    calls: 1,
  },
  {
    name: 'a blank disk has nothing to grow (no_filesystem)',
    arrange: () => undefined,
    growth: { grown: false, reason: 'no_filesystem', partition_grown: false, fs_type: null, fs_bytes: null },
    fsBytes: undefined,
    calls: 1,
  },
  {
    name: 'a btrfs is not grown (unsupported_filesystem)',
    arrange: (v) => fake().setGuestFilesystem(SERVER, v, { type: 'btrfs', mountpoint: '/data' }),
    growth: { grown: false, reason: 'unsupported_filesystem', fs_type: 'btrfs', fs_bytes: FROM },
    fsBytes: FROM,
    calls: 1,
  },
  {
    name: 'a guest without its agent is not grown (no_guest_agent)',
    arrange: (v) => {
      fake().setGuestFilesystem(SERVER, v, { type: 'ext4', mountpoint: '/data' });
      fake().setGuestAgent(SERVER, false);
    },
    growth: { grown: false, reason: 'no_guest_agent', device: null, partition_grown: false, fs_bytes: null },
    fsBytes: FROM,
    calls: 1,
  },
  {
    name: 'a grow command failing in the guest is recorded (grow_failed)',
    arrange: (v) => fake().setGuestFilesystem(SERVER, v, { type: 'ext4', mountpoint: '/data', failWith: 'resize2fs: Permission denied' }),
    growth: { grown: false, reason: 'grow_failed', fs_type: 'ext4', fs_bytes: FROM },
    fsBytes: FROM,
    calls: 1,
  },
  {
    name: 'an unreachable hypervisor is retried (uncertain) until the grow works',
    arrange: (v) => {
      fake().setGuestFilesystem(SERVER, v, { type: 'ext4', mountpoint: '/data' });
      fake().injectFault('growGuestFilesystem', errors.hypervisorUnreachable('qemu:///system', 'libvirtd is not answering'), 2);
    },
    growth: { grown: true, fs_bytes: TO },
    fsBytes: TO,
    calls: 3,
  },
  {
    name: 'a final driver failure is recorded as not grown (grow_failed), not as a failed extend',
    arrange: (v) => {
      fake().setGuestFilesystem(SERVER, v, { type: 'ext4', mountpoint: '/data' });
      fake().injectFault('growGuestFilesystem', errors.driverFailed('the guest agent answered garbage'));
    },
    growth: { grown: false, reason: 'grow_failed', device: null },
    fsBytes: FROM,
    calls: 1,
  },
];

describe('extend with online_extend:grow_fs', () => {
  it.each(cases)('$name, and the volume is in-use at its new size', async (c) => {
    const { id, device } = await attached();
    c.arrange(id);
    const before = fake().calls.growGuestFilesystem;
    try {
      const v = await extend(id, true);
      // The block extend stands whatever happened to the filesystem.
      expect(v).toMatchObject({ status: 'in-use', size_bytes: TO, extend: null });
      const partitioned = c.growth.partition_grown === true;
      const expectedDevice = c.growth.device === null ? null : `/dev/${device}${partitioned ? '1' : ''}`;
      expect(v.fs_growth).toMatchObject({ requested: true, device: expectedDevice, ...c.growth });
      expect(v.fs_growth?.finished_at).toEqual(expect.any(String));
      expect(guestFs(id)?.bytes).toBe(c.fsBytes);
      expect(fake().calls.growGuestFilesystem - before).toBe(c.calls);
      // The extend's volume action names the outcome; its details carry it.
      const actions = (await h.volume.request<{ volumeActions: Array<{ request_id: string; action: string; result: string; message: string; details: Record<string, unknown> }> }>('GET', `/v3/${PROJECT}/volumes/${id}/os-volume-actions`)).body.volumeActions;
      const action = actions.find((a) => a.action === 'extend')!;
      expect(action.request_id).toBe(v.fs_growth?.request_id);
      expect(action.result).toBe('Success');
      expect(action.message).toMatch(c.growth.grown ? /guest filesystem .*grown/ : new RegExp(`guest filesystem not grown \\(${c.growth.reason}\\)`));
      expect(action.details).toMatchObject({ grow_fs: { grown: c.growth.grown } });
    } finally {
      fake().setGuestAgent(SERVER, true);
      fake().clearFaults();
    }
  });

  it('times the grow_fs step and counts its retries in the workflow metrics, by step name', async () => {
    const text = await (await fetch(`${h.service.computeUrl}/metrics`)).text();
    expect(text).toMatch(/online_extend_workflow_step_duration_seconds_count\{step="grow_fs"\} [1-9]/);
    // The uncertain case above retried grow_fs twice.
    expect(text).toMatch(/online_extend_workflow_step_retries_total\{step="grow_fs"\} [2-9]/);
  });

  it("records compute's grow as an extend_volume instance action whose event names the result, without the guest's detail text", async () => {
    const { id } = await attached();
    fake().setGuestFilesystem(SERVER, id, { type: 'ext4', mountpoint: '/data', failWith: 'resize2fs: secret /host/path' });
    const v = await extend(id, true);
    // Nova's API shows no action details: read them where compute recorded them.
    const store = new SqliteStore(join(h.config.dataDir, 'online-extend.sqlite'));
    let grow: InstanceActionRecord | undefined;
    try {
      grow = (await store.listActions(SERVER)).find((a) => a.event === 'compute_grow_guest_filesystem' && a.details.volume_id === id);
    } finally {
      await store.close();
    }
    expect(grow).toMatchObject({ action: 'extend_volume', result: 'Success', details: { volume_id: id, grown: false, reason: 'grow_failed', fs_type: 'ext4' } });
    expect(JSON.stringify(grow)).not.toContain('/host/path');
    // The volume action lists that compute call among its compute request ids.
    const actions = (await h.volume.request<{ volumeActions: Array<{ request_id: string; compute_request_ids: string[] }> }>('GET', `/v3/${PROJECT}/volumes/${id}/os-volume-actions`)).body.volumeActions;
    expect(actions.find((a) => a.request_id === v.fs_growth?.request_id)?.compute_request_ids).toContain(grow?.requestId);
    expect(JSON.stringify(await show(id))).not.toContain('/host/path');
  });
});

describe('the opt-in', () => {
  it('without it the extend never asks the guest, and the record says it was not asked', async () => {
    const { id } = await attached();
    fake().setGuestFilesystem(SERVER, id, { type: 'ext4', mountpoint: '/data' });
    const before = fake().calls.growGuestFilesystem;
    const v = await extend(id);
    expect(v).toMatchObject({ status: 'in-use', size_bytes: TO });
    expect(v.fs_growth).toMatchObject({ requested: false, grown: null, reason: null, finished_at: null });
    expect(fake().calls.growGuestFilesystem).toBe(before);
    expect(guestFs(id)?.bytes).toBe(FROM);
  });

  it('takes the volume metadata key online_extend:grow_fs = "true" (any case) for an extend that does not say', async () => {
    const { id } = await attached({ 'online_extend:grow_fs': 'True' });
    fake().setGuestFilesystem(SERVER, id, { type: 'ext4', mountpoint: '/data' });
    const v = await extend(id);
    expect(v.fs_growth).toMatchObject({ requested: true, grown: true, fs_bytes: TO });
  });

  it("lets os-extend's false win over the metadata's true", async () => {
    const { id } = await attached({ 'online_extend:grow_fs': 'true' });
    fake().setGuestFilesystem(SERVER, id, { type: 'ext4', mountpoint: '/data' });
    const v = await extend(id, false);
    expect(v.fs_growth).toMatchObject({ requested: false, grown: null });
    expect(guestFs(id)?.bytes).toBe(FROM);
  });

  it("lets os-extend's true win over the metadata's false, in os-extend (GiB) too", async () => {
    const id = (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size: 1, metadata: { 'online_extend:grow_fs': 'false' } } })).body.volume.id;
    await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
    fake().setGuestFilesystem(SERVER, id, { type: 'xfs', mountpoint: '/data' });
    await h.volume.request('POST', `/v3/${PROJECT}/volumes/${id}/action`, { 'os-extend': { new_size: 2, 'online_extend:grow_fs': true } });
    let v = await show(id);
    for (const end = Date.now() + 15_000; v.status === 'extending' && Date.now() < end; v = await show(id)) await new Promise((r) => setTimeout(r, 10));
    expect(v).toMatchObject({ status: 'in-use', size_bytes: 2 * 2 ** 30 });
    expect(v.fs_growth).toMatchObject({ requested: true, grown: true, fs_bytes: 2 * 2 ** 30 });
  });

  it('opts a volume in with Cinder’s set-metadata call (openstack volume set --property), merging the keys', async () => {
    const id = await newVolume({ purpose: 'db' });
    const res = await h.volume.request<{ metadata: Record<string, string> }>('POST', `/v3/${PROJECT}/volumes/${id}/metadata`, { metadata: { 'online_extend:grow_fs': 'true' } });
    expect(res.body.metadata).toEqual({ purpose: 'db', 'online_extend:grow_fs': 'true' });
    expect((await h.volume.request<{ metadata: Record<string, string> }>('GET', `/v3/${PROJECT}/volumes/${id}/metadata`)).body.metadata).toEqual(res.body.metadata);
  });

  it('records an offline extend (its server shut off) asked to grow the filesystem as not grown (server_stopped)', async () => {
    const OFF = '6e8f1d5b-2222-4b33-8c44-1d5e6f7a8b9c';
    fake().addServer({ id: OFF, name: 'off-later', projectId: PROJECT, state: 'active', disks: [] });
    const id = await newVolume();
    await h.compute.request('POST', `/v2/${PROJECT}/servers/${OFF}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
    fake().setGuestFilesystem(OFF, id, { type: 'ext4', mountpoint: '/data' });
    fake().setState(OFF, 'shutoff');
    const before = fake().calls.growGuestFilesystem;
    const v = await extend(id, true);
    expect(v).toMatchObject({ status: 'in-use', size_bytes: TO });
    expect(v.fs_growth).toMatchObject({ requested: true, grown: false, reason: 'server_stopped' });
    expect(fake().calls.growGuestFilesystem).toBe(before);
  });

  it('records a detached volume asked to grow its filesystem as not grown (detached): no guest runs it', async () => {
    const id = await newVolume();
    const v = await extend(id, true);
    expect(v).toMatchObject({ status: 'available', size_bytes: TO });
    expect(v.fs_growth).toMatchObject({ requested: true, grown: false, reason: 'detached' });
  });

  describe.each([
    { action: 'os-extend', size: { new_size: 1 } },
    { action: 'os-extend-bytes', size: { new_bytes: TO } },
  ])('$action with online_extend:grow_fs not a JSON boolean', ({ action, size }) => {
    it.each([
      { name: 'an empty array', option: [], got: 'an array' },
      { name: 'an array of strings', option: ['true'], got: 'an array' },
      { name: 'an empty object', option: {}, got: 'an object' },
      { name: 'an object', option: { yes: true }, got: 'an object' },
      { name: 'the string "true"', option: 'true', got: 'a string ("true")' },
      { name: 'the number 1', option: 1, got: 'a number (1)' },
      { name: 'null', option: null, got: 'null' },
    ])('is refused as $name with a 400 naming the key and asking for a JSON boolean, and nothing changes', async ({ option, got }) => {
      const { id } = await attached();
      try {
        const calls = fake().calls.growGuestFilesystem;
        const err = await fails(h.volume.request('POST', `/v3/${PROJECT}/volumes/${id}/action`, { [action]: { ...size, 'online_extend:grow_fs': option } }));
        expect(err.status).toBe(400);
        expect(err.message).toBe(`Invalid input for field/attribute body.${action}.online_extend:grow_fs: must be a JSON boolean (true or false), got ${got}`);
        expect(await show(id)).toMatchObject({ status: 'in-use', size_bytes: FROM, extend: null, fs_growth: null });
        expect(fake().calls.growGuestFilesystem).toBe(calls);
      } finally {
        // The server has 25 device names: give this one back.
        await h.compute.request('DELETE', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments/${id}`);
      }
    });
  });

  it.each([
    { name: 'create', call: () => h.volume.request('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: FROM, metadata: { 'online_extend:grow_fs': 'yes' } } }) },
    { name: 'update', call: (id: string) => h.volume.request('PUT', `/v3/${PROJECT}/volumes/${id}`, { volume: { metadata: { 'online_extend:grow_fs': '1' } } }) },
    { name: 'set metadata', call: (id: string) => h.volume.request('POST', `/v3/${PROJECT}/volumes/${id}/metadata`, { metadata: { 'online_extend:grow_fs': 'maybe' } }) },
  ])('refuses a metadata value other than "true" or "false" on $name (400), and nothing changes', async ({ call }) => {
    const id = await newVolume({ purpose: 'keep' });
    const count = (await h.volume.request<{ volumes: unknown[] }>('GET', `/v3/${PROJECT}/volumes`)).body.volumes.length;
    const err = await fails(call(id));
    // The same code as a non-boolean in an extend's body (the schema's InvalidInput).
    expect(err).toMatchObject({ status: 400, code: 'InvalidInput' });
    expect(err.message).toMatch(/online_extend:grow_fs/);
    expect((await h.volume.request<{ metadata: Record<string, string> }>('GET', `/v3/${PROJECT}/volumes/${id}/metadata`)).body.metadata).toEqual({ purpose: 'keep' });
    expect((await h.volume.request<{ volumes: unknown[] }>('GET', `/v3/${PROJECT}/volumes`)).body.volumes.length).toBe(count);
  });
});

describe('a host whose driver cannot grow filesystems', () => {
  let h2: ServiceHarness;
  beforeAll(async () => {
    h2 = await makeService({
      inventory: { capabilities: { extend_volume: true, grow_guest_filesystem: false }, servers: [{ id: SERVER, name: 'vm-1', project_id: PROJECT, state: 'active', disks: [] }] },
    });
  });
  afterAll(async () => h2.cleanup());

  it('extends the volume all the same and records the filesystem as not grown (not_supported)', async () => {
    const id = (await h2.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: FROM } })).body.volume.id;
    await h2.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
    await h2.volume.request('POST', `/v3/${PROJECT}/volumes/${id}/action`, { 'os-extend-bytes': { new_bytes: TO, 'online_extend:grow_fs': true } });
    let v = (await h2.volume.request<{ volume: Vol }>('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`)).body.volume;
    for (const end = Date.now() + 15_000; v.status === 'extending' && Date.now() < end; ) {
      await new Promise((r) => setTimeout(r, 10));
      v = (await h2.volume.request<{ volume: Vol }>('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`)).body.volume;
    }
    expect(v).toMatchObject({ status: 'in-use', size_bytes: TO });
    expect(v.fs_growth).toMatchObject({ requested: true, grown: false, reason: 'not_supported' });
    expect((h2.service.driver as FakeDriver).calls.growGuestFilesystem).toBe(0);
  });

  it("answers compute's grow call with 501 GuestFilesystemGrowNotSupported", async () => {
    const id = (await h2.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: FROM } })).body.volume.id;
    await h2.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
    // compute's internal route is the volume service's: a service token calls it.
    const store = new SqliteStore(join(h2.config.dataDir, 'online-extend.sqlite'));
    const { token } = await issueToken(store, { userId: 'svc', projectId: 'service', roles: ['admin', 'service'], ttlMs: 3_600_000 }).finally(() => store.close());
    const svc = new ApiClient({ url: h2.service.computeUrl, token });
    const err = await fails(svc.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_connections/${id}/grow_fs`));
    expect(err.status).toBe(501);
    expect(err.code).toBe('GuestFilesystemGrowNotSupported');
  });
});

describe('the deadline during grow_fs', () => {
  let h3: ServiceHarness;
  afterAll(async () => h3?.cleanup());

  it('ends the extend well at its deadline when the host stays unreachable: in-use at the new size, the filesystem recorded as not grown', async () => {
    h3 = await makeService({ config: { extendTimeoutMs: 1000, extendWatchdogMs: 200 } });
    const id = (await h3.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: FROM } })).body.volume.id;
    await h3.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
    const driver = h3.service.driver as FakeDriver;
    driver.setGuestFilesystem(SERVER, id, { type: 'ext4', mountpoint: '/data' });
    driver.injectFault('growGuestFilesystem', errors.hypervisorUnreachable('qemu:///system', 'libvirtd is not answering'), 1_000_000);
    await h3.volume.request('POST', `/v3/${PROJECT}/volumes/${id}/action`, { 'os-extend-bytes': { new_bytes: TO, 'online_extend:grow_fs': true } });
    const get = async () => (await h3.volume.request<{ volume: Vol }>('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`)).body.volume;
    let v = await get();
    for (const end = Date.now() + 10_000; v.status === 'extending' && Date.now() < end; v = await get()) await new Promise((r) => setTimeout(r, 20));
    expect(v).toMatchObject({ status: 'in-use', size_bytes: TO, extend: null });
    expect(v.fs_growth).toMatchObject({ requested: true, grown: false, reason: 'grow_failed' });
    // It was retried (uncertain), not given up at once.
    expect(driver.calls.growGuestFilesystem).toBeGreaterThan(1);
    driver.clearFaults();
  });
});
