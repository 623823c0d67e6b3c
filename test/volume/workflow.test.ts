/**
 * The in-use extend workflow on the fake driver with the file backend: the volume service calls
 * the compute API over real HTTP, as it does in production.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { ApiError } from '../../src/rpc/httpClient.js';
import { errors } from '../../src/errors.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import type { FakeDriver } from '../../src/virt/fake/driver.js';
import { fakeInventory, makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
let h: ServiceHarness;
afterEach(async () => h?.cleanup());

type VolumeView = { id: string; status: string; size_bytes: number; extend: { step: string; error: string | null } | null };

async function createVolume(bytes = 64 * MiB, extra: Record<string, unknown> = {}): Promise<VolumeView> {
  return (await h.volume.request<{ volume: VolumeView }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: 'data', size_bytes: bytes, ...extra } })).body.volume;
}
async function show(id: string): Promise<VolumeView> {
  return (await h.volume.request<{ volume: VolumeView }>('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`)).body.volume;
}
async function attach(id: string): Promise<void> {
  await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
}
function extend(id: string, bytes: number) {
  return h.volume.request('POST', `/v3/${PROJECT}/volumes/${id}/action`, { 'os-extend-bytes': { new_bytes: bytes } });
}
async function settle(id: string, timeoutMs = 10_000): Promise<VolumeView> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await show(id);
    if (v.status !== 'extending') return v;
    if (Date.now() > end) throw new Error(`volume ${id} still extending at step ${v.extend?.step}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
/** What the guest sees: the fake hypervisor's guest view (get_blockdev would be the host's). */
async function guestBytes(volumeId: string): Promise<number> {
  return (h.service.driver as FakeDriver).snapshot(SERVER).disks.find((d) => d.volumeId === volumeId)!.guestBytes;
}
const fileOf = (id: string) => join(h.config.dataDir, 'volumes', 'file', `${id}.raw`);
async function status(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 200;
  } catch (err) {
    return (err as ApiError).status;
  }
}

describe('extending an in-use volume (fake driver, file backend, real HTTP between services)', () => {
  it('extends end to end and records the measured size and the compute request ids', async () => {
    h = await makeService();
    const v = await createVolume();
    await attach(v.id);
    expect((await show(v.id)).status).toBe('in-use');
    const res = await extend(v.id, 128 * MiB);
    expect(res.status).toBe(202);
    const done = await settle(v.id);
    expect(done).toMatchObject({ status: 'in-use', size_bytes: 128 * MiB, extend: null });
    expect(await guestBytes(v.id)).toBe(128 * MiB);
    expect(statSync(fileOf(v.id)).size).toBe(128 * MiB);
    const actions = (await h.volume.request<{ volumeActions: Array<{ action: string; result: string; request_id: string; compute_request_ids: string[] }> }>('GET', `/v3/${PROJECT}/volumes/${v.id}/os-volume-actions`)).body.volumeActions;
    const ext = actions.find((a) => a.action === 'extend')!;
    expect(ext.result).toBe('Success');
    expect(ext.request_id).toBe(res.requestId);
    expect(ext.compute_request_ids.length).toBeGreaterThanOrEqual(3);
    expect(ext.compute_request_ids.every((id) => /^req-/.test(id))).toBe(true);
  });

  it('extends an available volume on the backend only', async () => {
    h = await makeService();
    const v = await createVolume();
    expect((await extend(v.id, 96 * MiB)).status).toBe(202);
    expect(await show(v.id)).toMatchObject({ status: 'available', size_bytes: 96 * MiB });
    expect(statSync(fileOf(v.id)).size).toBe(96 * MiB);
  });

  it('refuses shrink and equal sizes with 400, changing nothing', async () => {
    h = await makeService();
    const v = await createVolume();
    await attach(v.id);
    for (const bytes of [32 * MiB, 64 * MiB]) {
      const err = (await extend(v.id, bytes).catch((e: unknown) => e)) as ApiError;
      expect(err.status).toBe(400);
      expect(err.message).toMatch(/must be greater than the current size/);
    }
    expect(await show(v.id)).toMatchObject({ status: 'in-use', size_bytes: 64 * MiB });
    expect(statSync(fileOf(v.id)).size).toBe(64 * MiB);
  });

  it('accepts the Cinder os-extend form in GiB', async () => {
    h = await makeService();
    const v = await createVolume(GiB);
    await attach(v.id);
    await h.volume.request('POST', `/v3/${PROJECT}/volumes/${v.id}/action`, { 'os-extend': { new_size: 2 } });
    expect(await settle(v.id)).toMatchObject({ status: 'in-use', size_bytes: 2 * GiB });
  });

  it('does not touch the storage when the compute host cannot extend (501)', async () => {
    h = await makeService({ inventory: fakeInventory({ extend_volume: false }) });
    const v = await createVolume();
    await attach(v.id);
    const err = (await extend(v.id, 128 * MiB).catch((e: unknown) => e)) as ApiError;
    expect(err.status).toBe(501);
    expect(err.message).toMatch(/cannot extend/);
    expect(await show(v.id)).toMatchObject({ status: 'in-use', size_bytes: 64 * MiB });
    expect(statSync(fileOf(v.id)).size).toBe(64 * MiB);
  });

  it('lets only one of two concurrent extends of one volume through (the other gets 409)', async () => {
    h = await makeService({ config: { extendStepDelayMs: 50 } });
    const v = await createVolume();
    await attach(v.id);
    const results = await Promise.all([status(extend(v.id, 128 * MiB)), status(extend(v.id, 256 * MiB))]);
    expect(results.sort()).toEqual([200, 409]);
    const done = await settle(v.id);
    expect(done.status).toBe('in-use');
    expect([128 * MiB, 256 * MiB]).toContain(done.size_bytes);
    expect(await guestBytes(v.id)).toBe(done.size_bytes);
  });

  it('refuses to detach a volume while it is extending (409)', async () => {
    h = await makeService({ config: { extendStepDelayMs: 200 } });
    const v = await createVolume();
    await attach(v.id);
    await extend(v.id, 128 * MiB);
    expect(await status(h.compute.request('DELETE', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments/${v.id}`))).toBe(409);
    expect(await settle(v.id)).toMatchObject({ status: 'in-use', size_bytes: 128 * MiB });
  });

  it('ends in error_extending at once, with the cause and its code, when compute answers a final error', async () => {
    h = await makeService();
    const v = await createVolume();
    await attach(v.id);
    const driver = h.service.driver as FakeDriver;
    driver.injectFault('extendAttached', errors.diskReadOnly(v.id, 'vdb', SERVER), 1_000);
    const started = Date.now();
    await extend(v.id, 128 * MiB);
    const done = await settle(v.id);
    expect(done.status).toBe('error_extending');
    expect(done.extend?.error).toMatch(/^step assist: .*read-only/);
    expect((done.extend as { error_code?: string }).error_code).toBe('DiskReadOnly');
    // Final: tried once, not retried until the deadline (15 min by default).
    expect(driver.calls.extendAttached).toBe(1);
    expect(Date.now() - started).toBeLessThan(10_000);
    const actions = (await h.volume.request<{ volumeActions: Array<{ action: string; result: string; message: string }> }>('GET', `/v3/${PROJECT}/volumes/${v.id}/os-volume-actions`)).body.volumeActions;
    expect(actions.find((a) => a.action === 'extend')).toMatchObject({ result: 'Error', message: expect.stringMatching(/read-only/) });
    // Once the cause is gone, the same extend can simply be asked for again, and detach works meanwhile.
    driver.clearFaults();
    await extend(v.id, 128 * MiB);
    expect(await settle(v.id)).toMatchObject({ status: 'in-use', size_bytes: 128 * MiB, extend: null });
  });

  it('extends offline when the server was shut off behind the volume service’s back', async () => {
    h = await makeService({ config: { extendStepDelayMs: 100 } });
    const v = await createVolume();
    await attach(v.id);
    await extend(v.id, 128 * MiB);
    const driver = h.service.driver as FakeDriver;
    driver.setState(SERVER, 'shutoff');
    const done = await settle(v.id);
    expect(done).toMatchObject({ status: 'in-use', size_bytes: 128 * MiB, extend: null });
    expect(statSync(fileOf(v.id)).size).toBe(128 * MiB);
    // The guest gets the size when it next starts.
    expect(driver.snapshot(SERVER).disks[0]!.guestBytes).toBe(64 * MiB);
    driver.setState(SERVER, 'active');
    expect(driver.snapshot(SERVER).disks[0]!.guestBytes).toBe(128 * MiB);
  });

  it('retries an uncertain error (5xx) and finishes', async () => {
    h = await makeService();
    const v = await createVolume();
    await attach(v.id);
    (h.service.driver as FakeDriver).injectFault('extendAttached', errors.driverFailed('transient', { retryable: true }), 2);
    await extend(v.id, 128 * MiB);
    expect(await settle(v.id)).toMatchObject({ status: 'in-use', size_bytes: 128 * MiB });
    expect((h.service.driver as FakeDriver).calls.extendAttached).toBe(3);
  });

  it('gives up at the deadline with error_extending when the errors never stop', async () => {
    h = await makeService({ config: { extendTimeoutMs: 1000 } });
    const v = await createVolume();
    await attach(v.id);
    (h.service.driver as FakeDriver).injectFault('extendAttached', errors.driverFailed('hypervisor busy', { retryable: true }), 1_000_000);
    await extend(v.id, 128 * MiB);
    const done = await settle(v.id, 10_000);
    expect(done.status).toBe('error_extending');
    expect(done.extend?.error).toMatch(/timed out after 1000 ms at step assist; last error: .*hypervisor busy/);
  });

  it('ends an extend at its deadline even while its run is stuck (the watchdog, not the run, enforces it)', async () => {
    // The run sleeps 60 s before its first step; the deadline is 1 s; the watchdog looks every 200 ms.
    h = await makeService({ config: { extendTimeoutMs: 1000, extendStepDelayMs: 60_000, extendWatchdogMs: 200 } });
    const v = await createVolume();
    await attach(v.id);
    const t0 = Date.now();
    await extend(v.id, 128 * MiB);
    const done = await settle(v.id, 10_000);
    expect(done.status).toBe('error_extending');
    expect(done.extend?.error).toMatch(/timed out after 1000 ms at step storage/);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(statSync(fileOf(v.id)).size).toBe(64 * MiB);
  });

  for (const step of ['storage', 'rescan', 'wait_host', 'assist', 'confirm']) {
    it(`resumes after a restart at step ${step} and finishes with the measured size`, async () => {
      h = await makeService({ config: { extendStepDelayMs: 300 } });
      const v = await createVolume();
      await attach(v.id);
      await extend(v.id, 128 * MiB);
      const end = Date.now() + 10_000;
      while ((await show(v.id)).extend?.step !== step) {
        if (Date.now() > end) throw new Error(`never saw step ${step}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      await h.stop();
      await h.start({ extendStepDelayMs: 0 });
      const done = await settle(v.id);
      expect(done).toMatchObject({ status: 'in-use', size_bytes: 128 * MiB });
      expect(await guestBytes(v.id)).toBe(128 * MiB);
    });
  }
});

describe('a volume with an attachment is never deleted', () => {
  it('refuses to delete an attached volume whose extend timed out (error_extending), and the file stays', async () => {
    h = await makeService({ config: { extendTimeoutMs: 1 } });
    const v = await createVolume(GiB);
    await attach(v.id);
    await h.volume.request('POST', `/v3/${PROJECT}/volumes/${v.id}/action`, { 'os-extend': { new_size: 2 } });
    const failed = await settle(v.id);
    expect(failed.status).toBe('error_extending');
    const err = (await h.volume.request('DELETE', `/v3/${PROJECT}/volumes/${v.id}`).catch((e: unknown) => e)) as ApiError;
    expect(err.status).toBe(409);
    expect(err.code).toBe('VolumeAttached');
    expect(err.message).toMatch(/attached to instance/);
    expect(await show(v.id)).toMatchObject({ status: 'error_extending' });
    expect(statSync(fileOf(v.id)).size).toBeGreaterThanOrEqual(GiB);
    // Detached, it can go.
    await h.compute.request('DELETE', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments/${v.id}`);
    expect((await h.volume.request('DELETE', `/v3/${PROJECT}/volumes/${v.id}`)).status).toBe(202);
    expect(() => statSync(fileOf(v.id))).toThrow(/ENOENT/);
  });
});

describe('extending the volume of a server in each state', () => {
  const cases = [
    { state: 'active', answer: 202, mode: 'online' },
    { state: 'paused', answer: 202, mode: 'online' },
    { state: 'shutoff', answer: 202, mode: 'offline' },
    { state: 'suspended', answer: 409 },
    { state: 'crashed', answer: 409 },
    { state: 'building', answer: 409 },
    { state: 'migrating', answer: 409 },
    { state: 'error', answer: 409 },
  ] as const;

  it.each(cases)('server $state → $answer', async (c) => {
    h = await makeService();
    const v = await createVolume();
    await attach(v.id);
    const driver = h.service.driver as FakeDriver;
    driver.setState(SERVER, c.state);
    await h.service.syncInventory();
    const res = await extend(v.id, 128 * MiB).then(
      (r) => r.status,
      (e: ApiError) => e,
    );
    const disk = () => driver.snapshot(SERVER).disks.find((d) => d.volumeId === v.id)!;
    if (c.answer === 409) {
      expect((res as ApiError).status).toBe(409);
      expect((res as ApiError).code).toBe('InstanceInvalidState');
      expect((res as ApiError).message).toMatch(new RegExp(`state ${c.state}`));
      expect(await show(v.id)).toMatchObject({ status: 'in-use', size_bytes: 64 * MiB, extend: null });
      expect(statSync(fileOf(v.id)).size).toBe(64 * MiB);
      expect(driver.resizes).toBe(0);
      return;
    }
    expect(res).toBe(202);
    expect(await settle(v.id)).toMatchObject({ status: 'in-use', size_bytes: 128 * MiB, extend: null });
    expect(statSync(fileOf(v.id)).size).toBe(128 * MiB);
    const actions = (await h.volume.request<{ volumeActions: Array<{ action: string; message: string; details: { mode?: string } }> }>('GET', `/v3/${PROJECT}/volumes/${v.id}/os-volume-actions`)).body.volumeActions;
    expect(actions.find((a) => a.action === 'extend')?.details.mode).toBe(c.mode);
    if (c.mode === 'online') {
      expect(disk().guestBytes).toBe(128 * MiB);
    } else {
      expect(actions.find((a) => a.action === 'extend')?.message).toMatch(/offline.*next starts/);
      expect(disk().guestBytes).toBe(64 * MiB);
      driver.setState(SERVER, 'active');
      expect(disk().guestBytes).toBe(128 * MiB);
    }
  });
});

describe('messages name what has the size', () => {
  it('names what has the size (the storage, not a guest) when a retry is below what a failed extend gave the storage', async () => {
    h = await makeService({ config: { extendStepDelayMs: 100 } });
    const v = await createVolume();
    await attach(v.id);
    const driver = h.service.driver as FakeDriver;
    // Offline, so the storage grows first; then the host size read fails for good.
    driver.setState(SERVER, 'shutoff');
    await h.service.syncInventory();
    await extend(v.id, 192 * MiB);
    driver.injectFault('getHostBytes', errors.driverFailed('host size unreadable'), 1_000);
    const failed = await settle(v.id);
    expect(failed.status).toBe('error_extending');
    expect(statSync(fileOf(v.id)).size).toBe(192 * MiB);
    driver.clearFaults();
    // Still attached: a smaller retry is refused up front, naming what the storage already has.
    const early = (await extend(v.id, 128 * MiB).catch((e: unknown) => e)) as ApiError;
    expect(early.status).toBe(400);
    expect(early.message).toMatch(/below the 201326592 bytes the storage already has/);
    // Detached, its size is what its storage has, measured.
    await h.compute.request('DELETE', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments/${v.id}`);
    expect(await show(v.id)).toMatchObject({ status: 'available', size_bytes: 192 * MiB });
    const err = (await extend(v.id, 128 * MiB).catch((e: unknown) => e)) as ApiError;
    expect(err.status).toBe(400);
    expect(err.message).toMatch(/current size 201326592 bytes: volumes are never shrunk/);
    expect(err.message).not.toMatch(/guest/);
    expect(statSync(fileOf(v.id)).size).toBe(192 * MiB);
  });
});

describe('a retry after an extend that grew more than the record says', () => {
  it('refuses up front (400, nothing changed) a target below what the compute host already sees', async () => {
    h = await makeService();
    const v = await createVolume();
    await attach(v.id);
    // An extend that timed out after the guest grew: compute has 192 MiB, the record 64 MiB.
    await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-online_extend_volume/${v.id}`, { onlineExtendVolume: { bytes: 192 * MiB } });
    const db = new SqliteStore(join(h.config.dataDir, 'online-extend.sqlite'));
    await db.updateVolume(v.id, ['in-use'], { status: 'error_extending' });
    const before = await db.getVolume(v.id);
    const err = (await extend(v.id, 128 * MiB).catch((e: unknown) => e)) as ApiError;
    expect(err.status).toBe(400);
    expect(err.code).toBe('VolumeShrinkRefused');
    expect(err.message).toMatch(/below the 201326592 bytes the compute host sees/);
    expect(await db.getVolume(v.id)).toEqual(before);
    // The size it has, or more, finishes the job.
    expect((await extend(v.id, 192 * MiB)).status).toBe(202);
    expect(await settle(v.id)).toMatchObject({ status: 'in-use', size_bytes: 192 * MiB });
    await db.close();
  });
});
