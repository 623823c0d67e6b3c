/**
 * Issue C end to end: the volume API (Cinder's role) grows an in-use volume of each backend
 * online, on a real lab guest, through the whole product as `online-extend serve` runs it
 * (startService: compute + volume APIs, LibvirtDriver, SQLite, the durable extend workflow).
 * The proof is the guest's own report: its kernel's size of the disk, printed on its console,
 * must be exactly the new size, and data written before the extend must read the same after.
 *
 * One private lab (own libvirtd and tgtd in a temp dir), one service, one guest; each test
 * creates, attaches, extends, detaches and deletes its own volume through the APIs. The workflow's
 * failure paths (5xx retries, deadlines, restarts) are covered on the fake driver in
 * test/volume/workflow.test.ts and test/volume/crash.test.ts.
 */
import { expect, it } from 'vitest';
import { ApiError } from '../../src/rpc/httpClient.js';
import { e2eMissing } from '../support/e2e.js';
import { statusOf, type VolumeView } from '../support/labService.js';
import { createAttached, guestData, useLabService } from '../support/labSuite.js';
import { describeReal } from '../support/real.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const PROJECT = 'e2evolumeproject';
const PATTERN_MIB = 4;

describeReal(e2eMissing())('in-use extend through the volume API on a real guest (file raw/qcow2, block, iSCSI)', () => {
  const { S, G, log } = useLabService({ project: PROJECT, guestName: `oe-vol-e2e-${process.pid}` }, 'volume-e2e');
  const data = guestData(G, PATTERN_MIB);



  async function detachAndDelete(v: VolumeView, dev: string): Promise<void> {
    const mark = await G().logMark();
    await S().detach(v.id);
    expect(await S().show(v.id)).toMatchObject({ status: 'available', attachments: [] });
    // The guest's next size report no longer lists the disk.
    await G().waitForLog(new RegExp(`^OE-SIZES(?!.*\\b${dev}=).*$`, 'm'), 15_000, mark);
    await S().remove(v.id);
    const err = (await S().show(v.id).catch((e: unknown) => e)) as ApiError;
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(404);
  }

  /**
   * The whole issue-C flow for one backend: create → attach → pattern → extend through the volume
   * API → in-use at the measured size → the guest reports exactly that, data intact → audit →
   * detach → delete.
   */
  async function extendOnline(create: Record<string, unknown>, startBytes: number, action: Record<string, unknown>, target: number): Promise<void> {
    const ls = S();
    const g = G();
    const { v, dev } = await createAttached(S(), create, startBytes);
    const md5 = await data.writePattern(dev);

    const mark = await g.logMark();
    const t = Date.now();
    const res = await ls.extend(v.id, action);
    expect(res.status).toBe(202);
    expect(res.requestId).toMatch(/^req-/);
    const done = await ls.settle(v.id, 60_000);
    expect(done, JSON.stringify(done.extend)).toMatchObject({ status: 'in-use', size_bytes: target, extend: null });
    // The guest's own view, exactly; and its kernel saw the capacity change.
    expect(await g.waitForSize(dev, target, 20_000)).toBe(target);
    log(`${String(create.volume_type)}${create.format ? `/${String(create.format)}` : ''}: ${startBytes} → ${target} bytes, guest reported it ${Date.now() - t} ms after the API call`);
    await g.waitForLog(new RegExp(`${dev}: detected capacity change from ${startBytes / 512} to ${target / 512}\\b`), 10_000, mark);
    expect(await data.md5(dev)).toBe(md5);

    // The audit: the extend succeeded, with the compute calls it made (check, rescan, poll, assist).
    const actions = await ls.volumeActions(v.id);
    const ext = actions.find((a) => a.request_id === res.requestId);
    expect(ext).toMatchObject({ action: 'extend', result: 'Success' });
    expect(ext!.finish_time).toBeTruthy();
    expect(ext!.compute_request_ids.length).toBeGreaterThanOrEqual(3);
    expect(ext!.compute_request_ids.every((id) => /^req-/.test(id))).toBe(true);
    // ...the ones that changed something (rescan, the resize) recorded on the server as instance
    // actions; reads (get_blockdev, the server's state) are not audited, as in Nova.
    const server = new Map((await ls.instanceActions()).map((a) => [a.request_id, a]));
    const calls = ext!.compute_request_ids.map((id) => server.get(id)).filter((a) => a !== undefined);
    expect(calls.every((a) => a?.result === 'Success'), JSON.stringify(calls)).toBe(true);
    expect(calls.map((a) => a?.action)).toEqual(expect.arrayContaining(['rescan_volume', 'extend_volume']));
    expect(calls.find((a) => a?.action === 'extend_volume')?.details).toMatchObject({ volume_id: v.id, bytes: target });

    await detachAndDelete(v, dev);
  }

  it('file raw: os-extend to 2 GiB; the guest reports exactly 2 GiB and the data is intact', async () => {
    await extendOnline({ name: 'raw', size: 1, volume_type: 'file' }, GiB, { 'os-extend': { new_size: 2 } }, 2 * GiB);
  }, 90_000);

  it('file qcow2: os-extend-bytes to an exact size; the guest reports exactly it and the data is intact', async () => {
    const target = GiB + 77 * MiB + 4096;
    await extendOnline({ name: 'qcow2', size: 1, volume_type: 'file', format: 'qcow2' }, GiB, { 'os-extend-bytes': { new_bytes: target } }, target);
  }, 90_000);

  it('block (loop device): os-extend to 2 GiB; the guest reports exactly 2 GiB and the data is intact', async () => {
    await extendOnline({ name: 'block', size: 1, volume_type: 'block' }, GiB, { 'os-extend': { new_size: 2 } }, 2 * GiB);
  }, 90_000);

  it('iSCSI (tgt LUN): os-extend-bytes to an exact size; the guest reports exactly it and the data is intact', async () => {
    const target = GiB + 33 * MiB + 512;
    await extendOnline({ name: 'iscsi', size: 1, volume_type: 'iscsi' }, GiB, { 'os-extend-bytes': { new_bytes: target } }, target);
  }, 90_000);

  it('refuses to shrink an in-use volume (400, also for an equal size) and the guest still sees its size', async () => {
    const start = 64 * MiB;
    const { v, dev } = await createAttached(S(), { name: 'shrink', size_bytes: start, volume_type: 'block' }, start);
    const mark = await G().logMark();
    for (const bytes of [start - MiB, start]) {
      const err = (await S().extend(v.id, { 'os-extend-bytes': { new_bytes: bytes } }).catch((e: unknown) => e)) as ApiError;
      expect(err).toBeInstanceOf(ApiError);
      expect(err.status).toBe(400);
      expect(err.message).toMatch(bytes < start ? /never shrunk/ : /must be greater than the current size/);
    }
    // In GiB too: 0 is not a size.
    expect(await statusOf(S().extend(v.id, { 'os-extend': { new_size: 0 } }))).toBe(400);
    expect(await S().show(v.id)).toMatchObject({ status: 'in-use', size_bytes: start, extend: null });
    const acts = await S().volumeActions(v.id);
    expect(acts.filter((a) => a.action === 'extend')).toEqual([]);
    await new Promise((r) => setTimeout(r, 500)); // the guest reports a change within ~0.1–0.3 s
    expect((await G().sizes())[dev]).toBe(start);
    expect((await G().readLog()).slice(mark)).not.toMatch(new RegExp(`${dev}: detected capacity change`));
    await detachAndDelete(v, dev);
  }, 60_000);

  it('refuses a second extend while the first runs (409), then the first ends at its size', async () => {
    const start = 64 * MiB;
    const { v, dev } = await createAttached(S(), { name: 'twice', size_bytes: start, volume_type: 'block' }, start);
    // Both requests are in flight together; exactly one moves the volume in-use → extending.
    const [a, b] = await Promise.all([
      statusOf(S().extend(v.id, { 'os-extend-bytes': { new_bytes: 80 * MiB } })),
      statusOf(S().extend(v.id, { 'os-extend-bytes': { new_bytes: 96 * MiB } })),
    ]);
    expect([a, b].sort()).toEqual([202, 409]);
    const winner = a === 202 ? 80 * MiB : 96 * MiB;
    expect(await S().settle(v.id)).toMatchObject({ status: 'in-use', size_bytes: winner, extend: null });
    expect(await G().waitForSize(dev, winner, 20_000)).toBe(winner);
    const extends_ = (await S().volumeActions(v.id)).filter((x) => x.action === 'extend');
    expect(extends_.map((x) => x.result)).toEqual(['Success']);
    await detachAndDelete(v, dev);
  }, 60_000);
});
