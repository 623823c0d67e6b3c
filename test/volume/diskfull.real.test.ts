/**
 * A write failure mid-operation (the red team's "disk full for 5 s while 8 extends run"): the data
 * dir lives on a small tmpfs that is filled to the last byte while work is under way, then freed.
 * Every store write and the fake hypervisor's state file fail with ENOSPC / SQLITE_FULL meanwhile.
 * - 8 in-use extends: the supervised workflow rides it out in the same process; all 8 volumes end
 *   in-use at their new size within their deadline, and a new extend works after, no restart.
 * - extends whose deadline passes while the disk is still full end with that cause, not just
 *   "timed out" (the cause is kept in memory when it cannot be stored).
 * - attaches and detaches whose last write fails: the reconciler brings each volume to the status
 *   the hypervisor says (in-use if the disk is plugged in, available if not), no restart.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, openSync, rmSync, statSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FakeDriver } from '../../src/virt/fake/driver.js';
import { describeReal } from '../support/real.js';
import { makeService, PROJECT, SERVER, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;
const N = 8;

/** Fills the filesystem at `dir` to the last sector with one file; returns its path (rm it to free). */
function fillDisk(dir: string, name: string): string {
  const filler = join(dir, name);
  const fd = openSync(filler, 'w');
  try {
    for (const size of [MiB, 512]) {
      try {
        for (;;) writeSync(fd, Buffer.alloc(size));
      } catch (err) {
        expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
      }
    }
  } finally {
    closeSync(fd);
  }
  return filler;
}

function tmpfsMissing(): string | undefined {
  if (process.platform !== 'linux') return 'needs Linux (tmpfs)';
  if (process.getuid?.() !== 0) return 'needs root to mount a small tmpfs for the full disk';
  return undefined;
}

describeReal(tmpfsMissing())('a full disk for a few seconds in the middle of work', () => {
  let mnt: string;
  let h: ServiceHarness | undefined;

  beforeAll(() => {
    mnt = mkdtempSync(join(tmpdir(), 'oe-full-'));
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=48m,mode=0700', 'tmpfs', mnt], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`mount tmpfs failed: ${r.stderr}`);
  });

  afterAll(async () => {
    await h?.cleanup().catch(() => undefined);
    spawnSync('umount', ['-l', mnt]);
    rmSync(mnt, { recursive: true, force: true });
  });

  it('leaves no attach or detach half-done: once space is back the records agree with the hypervisor', async () => {
    await h?.cleanup();
    h = await makeService({ dataRoot: mnt, config: { volumeReconcileMs: 300, fakeLatencyMs: 300 } });
    const svc = h;
    const make = async (name: string) => (await svc.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name, size_bytes: 16 * MiB } })).body.volume.id;
    const toAttach = [await make('a1'), await make('a2'), await make('a3')];
    const toDetach = [await make('d1'), await make('d2'), await make('d3')];
    for (const id of toDetach) await svc.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });

    const calls = [
      ...toAttach.map((id) => svc.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } })),
      ...toDetach.map((id) => svc.compute.request('DELETE', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments/${id}`)),
    ].map((p) => p.then(() => 'ok', (e: { status?: number }) => String(e.status)));
    // Fill the disk while the calls wait on the (slow) hypervisor, so their last writes fail.
    await new Promise((r) => setTimeout(r, 100));
    const filler = fillDisk(mnt, 'filler2');
    const answers = await Promise.all(calls);
    await new Promise((r) => setTimeout(r, 1_500));
    rmSync(filler);
    console.log(`[diskfull] attach/detach answers while full: ${answers.join(', ')}`);

    type Vol = { id: string; status: string; attachments: Array<{ server_id: string }> };
    const end = Date.now() + 15_000;
    let list: Vol[] = [];
    for (;;) {
      list = (await svc.volume.request<{ volumes: Vol[] }>('GET', `/v3/${PROJECT}/volumes/os-online-extend`)).body.volumes;
      if (list.every((v) => v.status === 'available' || v.status === 'in-use')) break;
      if (Date.now() > end) throw new Error(`still transitional: ${JSON.stringify(list.map((v) => v.status))}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const plugged = new Set((svc.service.driver as FakeDriver).snapshot(SERVER).disks.map((d) => d.volumeId));
    for (const v of list) {
      expect(v.status, v.id).toBe(plugged.has(v.id) ? 'in-use' : 'available');
      expect(v.attachments.length, v.id).toBe(plugged.has(v.id) ? 1 : 0);
    }
  }, 60_000);

  it('keeps the real cause when the deadline passes while the disk is still full', async () => {
    await h?.cleanup();
    h = await makeService({ dataRoot: mnt, config: { extendStepDelayMs: 150, extendTimeoutMs: 2_000, extendWatchdogMs: 200 } });
    const svc = h;
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const v = (await svc.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: `late-${i}`, size_bytes: 16 * MiB } })).body.volume;
      await svc.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: v.id } });
      ids.push(v.id);
    }
    for (const id of ids) await svc.volume.request('POST', `/v3/${PROJECT}/volumes/${id}/action`, { 'os-extend-bytes': { new_bytes: 32 * MiB } });
    const filler = fillDisk(mnt, 'filler3');
    // Full for longer than the 2 s deadline.
    await new Promise((r) => setTimeout(r, 4_000));
    rmSync(filler);
    type Vol = { id: string; status: string; extend: { error: string | null; error_code: string | null } | null };
    const end = Date.now() + 15_000;
    let list: Vol[] = [];
    for (;;) {
      list = (await svc.volume.request<{ volumes: Vol[] }>('GET', `/v3/${PROJECT}/volumes/os-online-extend`)).body.volumes;
      if (list.every((v) => v.status !== 'extending')) break;
      if (Date.now() > end) throw new Error('still extending');
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const v of list) {
      expect(v.status, v.id).toBe('error_extending');
      expect(v.extend?.error, v.id).toMatch(/timed out after 2000 ms at step \w+; last error: .*(disk is full|no space left)/);
      expect(v.extend?.error_code, v.id).toBe('InternalError');
    }
  }, 60_000);

  it('finishes every extend in the same process once space is back, and takes new ones', async () => {
    await h?.cleanup();
    h = await makeService({ dataRoot: mnt, config: { extendStepDelayMs: 150, extendTimeoutMs: 30_000 } });
    const svc = h;
    const ids: string[] = [];
    for (let i = 0; i < N; i++) {
      const v = (await svc.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: `full-${i}`, size_bytes: 64 * MiB } })).body.volume;
      await svc.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: v.id } });
      ids.push(v.id);
    }
    for (const id of ids) expect((await svc.volume.request('POST', `/v3/${PROJECT}/volumes/${id}/action`, { 'os-extend-bytes': { new_bytes: 128 * MiB } })).status).toBe(202);

    // Fill the filesystem to the last byte, hold it full for 5 s, then free it.
    const filler = fillDisk(mnt, 'filler');
    const fullUntil = Date.now() + 5_000;
    let stillExtending = 0;
    while (Date.now() < fullUntil) {
      const list = (await svc.volume.request<{ volumes: Array<{ status: string }> }>('GET', `/v3/${PROJECT}/volumes/os-online-extend`)).body.volumes;
      expect(list.every((v) => v.status === 'extending' || v.status === 'in-use')).toBe(true);
      stillExtending = list.filter((v) => v.status === 'extending').length;
      await new Promise((r) => setTimeout(r, 100));
    }
    rmSync(filler);

    const end = Date.now() + 25_000;
    type Vol = { id: string; status: string; size_bytes: number; extend: { error: string | null } | null };
    let list: Vol[] = [];
    while (Date.now() < end) {
      list = (await svc.volume.request<{ volumes: Vol[] }>('GET', `/v3/${PROJECT}/volumes/os-online-extend`)).body.volumes;
      if (list.every((v) => v.status !== 'extending')) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const v of list) {
      expect(v, `${v.id}: ${v.extend?.error}`).toMatchObject({ status: 'in-use', size_bytes: 128 * MiB });
      expect(statSync(join(svc.config.dataDir, 'volumes', 'file', `${v.id}.raw`)).size).toBe(128 * MiB);
    }
    const driver = svc.service.driver as FakeDriver;
    for (const id of ids) expect(driver.snapshot(SERVER).disks.find((d) => d.volumeId === id)!.guestBytes).toBe(128 * MiB);
    // The outage was real: an extend takes under a second here, yet extends were still under way
    // after 5 s of full disk (their stored steps could not advance).
    expect(stillExtending).toBeGreaterThan(0);

    // And the same process takes new extends.
    expect((await svc.volume.request('POST', `/v3/${PROJECT}/volumes/${ids[0]}/action`, { 'os-extend-bytes': { new_bytes: 192 * MiB } })).status).toBe(202);
    for (let i = 0; i < 200; i++) {
      const v = (await svc.volume.request<{ volume: Vol }>('GET', `/v3/${PROJECT}/volumes/${ids[0]}/os-online-extend`)).body.volume;
      if (v.status !== 'extending') {
        expect(v).toMatchObject({ status: 'in-use', size_bytes: 192 * MiB });
        return;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('the extend after the outage did not finish');
  }, 90_000);
});
