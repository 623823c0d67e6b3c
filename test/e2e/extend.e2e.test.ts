/**
 * Issue B end to end: the real HTTP API (the whole compute stack on LibvirtDriver) grows the four
 * kinds of volume attached to one running lab guest, and the guest's own report (its kernel's
 * /sys/block sizes, printed on its console) must show exactly the new size, with its data intact.
 *
 * One lab, one guest (TCG: ~1 core per guest), disks:
 *   vdb  file raw     (FileBackend)   QEMU grows the file itself on assist_extend
 *   vdc  file qcow2   (FileBackend)   QEMU grows the image (it holds the image lock)
 *   vdd  block        (BlockBackend)  a loop device over a file: grow the file, rescan (losetup -c)
 *   vde  network      (IscsiBackend)  a LUN on the lab's tgtd: grow the file + refresh the LUN
 * plus a defined, shut-off domain with one volume.
 */
import { randomUUID } from 'node:crypto';
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { bootGuest, domainXml, virsh, type GuestShell as Guest } from '../../src/lab/index.js';
import { buildDiskXml } from '../../src/virt/libvirt/domxml.js';
import type { AttachSpec } from '../../src/virt/driver.js';
import { BlockBackend, FileBackend, IscsiBackend } from '../../src/volume/backends/index.js';
import { acquireLab, e2eMissing, paths, startApi, type E2eApi, type E2eLab } from '../support/e2e.js';
import { describeReal } from '../support/real.js';
import { fileHeadMd5 } from '../support/files.js';
import { serverTimingParts } from '../support/serverTiming.js';

const MiB = 1024 * 1024;
const START = 32 * MiB;
const TENANT = 'e2e0project0000000000000000000000';
const PATTERN_MIB = 2;

interface Vol {
  id: string;
  /** libvirt target = the guest's name (contiguous vdb.. after the placeholder vda). */
  dev: string;
  spec: AttachSpec;
  /** Host file holding the raw data (raw-format volumes only), for a host-side check. */
  rawFile?: string;
}


describeReal(e2eMissing())('online extend end to end (HTTP API → LibvirtDriver → lab guest)', () => {
  let env: E2eLab | undefined;
  let api: E2eApi | undefined;
  let guest: Guest | undefined;
  let fileBackend: FileBackend;
  let blockBackend: BlockBackend;
  let iscsiBackend: IscsiBackend;
  const vols: Record<'raw' | 'qcow2' | 'block' | 'iscsi', Vol> = {} as never;
  const off = { server: randomUUID(), volume: randomUUID(), name: '' };
  const log = (m: string): void => console.log(`[e2e] ${m}`);
  const t0 = Date.now();

  beforeAll(async () => {
    env = await acquireLab(log);
    const { lab, work } = env;
    log(`lab ready after ${Date.now() - t0} ms (${env.owned ? 'private' : 'reused'})`);
    fileBackend = new FileBackend({ dir: join(work, 'file') });
    blockBackend = new BlockBackend({ dir: join(work, 'block') });
    iscsiBackend = new IscsiBackend({ dir: join(work, 'iscsi'), portal: lab.tgtPortal, controlPort: lab.tgtControlPort });

    const raw = await fileBackend.create(randomUUID(), START, { format: 'raw' });
    const qcow2 = await fileBackend.create(randomUUID(), START, { format: 'qcow2' });
    const block = await blockBackend.create(randomUUID(), START);
    const iscsi = await iscsiBackend.create(randomUUID(), START);
    vols.raw = { id: raw.volumeId, dev: 'vdb', spec: raw.connection, rawFile: raw.connection.source };
    vols.qcow2 = { id: qcow2.volumeId, dev: 'vdc', spec: qcow2.connection };
    vols.block = { id: block.volumeId, dev: 'vdd', spec: block.connection, rawFile: blockBackend.pathOf(block.volumeId) };
    vols.iscsi = { id: iscsi.volumeId, dev: 'vde', spec: iscsi.connection, rawFile: iscsiBackend.pathOf(iscsi.volumeId) };

    const name = `oe-e2e-${process.pid}`;
    const t1 = Date.now();
    guest = await bootGuest(lab, {
      name,
      projectId: TENANT,
      disks: Object.values(vols).map((v) => buildDiskXml(v.spec, v.dev)),
    });
    log(`guest ready after ${Date.now() - t1} ms`);

    // A second domain, defined but never started, with one volume.
    off.name = `oe-e2e-off-${process.pid}`;
    const offDisk = join(work, 'off.raw');
    writeFileSync(offDisk, '');
    truncateSync(offDisk, 8 * MiB);
    const offXml = join(work, 'off.xml');
    writeFileSync(
      offXml,
      domainXml({
        name: off.name,
        uuid: off.server,
        kernel: lab.kernel,
        initrd: lab.initrd,
        cmdline: lab.cmdline,
        consoleLog: join(work, 'off.console.log'),
        shellSocket: join(work, 'off.sock'),
        projectId: TENANT,
        disks: [buildDiskXml({ volumeId: off.volume, kind: 'file', format: 'raw', source: offDisk }, 'vdb')],
      }),
    );
    await virsh(lab, ['define', offXml]);

    api = await startApi(lab, { tenant: TENANT, dbDir: work, serverTimingDetail: true });
    log(`setup done after ${Date.now() - t0} ms`);
  }, 300_000);

  afterAll(async () => {
    const t = Date.now();
    await api?.close();
    await guest?.destroy().catch((e: unknown) => console.error('guest destroy failed', e));
    if (env && off.name) await virsh(env.lab, ['undefine', off.name]).catch(() => undefined);
    for (const v of Object.values(vols)) {
      if (v.spec.kind === 'file') await fileBackend.delete(v.id).catch((e: unknown) => console.error('delete', v.id, e));
      if (v.spec.kind === 'block') await blockBackend.delete(v.id).catch((e: unknown) => console.error('delete', v.id, e));
      if (v.spec.kind === 'network') await iscsiBackend.delete(v.id).catch((e: unknown) => console.error('delete', v.id, e));
    }
    await env?.release();
    log(`teardown ${Date.now() - t} ms; whole file ${Date.now() - t0} ms`);
  }, 120_000);

  const A = (): E2eApi => {
    if (!api) throw new Error('no API');
    return api;
  };
  const G = (): Guest => {
    if (!guest) throw new Error('no guest');
    return guest;
  };
  const server = (): string => G().uuid;

  async function getBlockdev(v: Vol): Promise<number> {
    const r = await A().call('GET', paths.volume(TENANT, server(), v.id));
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const b = r.body as { volume_blockdev: { id: string; bytes: number } };
    expect(b.volume_blockdev.id).toBe(v.id);
    return b.volume_blockdev.bytes;
  }

  async function pollBlockdev(v: Vol, bytes: number, timeoutMs = 10_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let seen = await getBlockdev(v);
    while (seen !== bytes && Date.now() < deadline) {
      await sleep(50);
      seen = await getBlockdev(v);
    }
    return seen;
  }

  /** Write random data over the first MiBs in the guest; returns its md5 as the guest reads it. */
  async function writePattern(dev: string): Promise<string> {
    const out = await G().exec(
      `dd if=/dev/urandom of=/dev/${dev} bs=1048576 count=${PATTERN_MIB} conv=fsync 2>/dev/null && ` +
        `echo 3 > /proc/sys/vm/drop_caches && dd if=/dev/${dev} bs=1048576 count=${PATTERN_MIB} 2>/dev/null | md5sum`,
      30_000,
    );
    const m = /^([0-9a-f]{32})\b/m.exec(out);
    if (!m?.[1]) throw new Error(`no md5 from the guest: ${out}`);
    return m[1];
  }

  async function guestMd5(dev: string): Promise<string> {
    const out = await G().exec(`echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/${dev} bs=1048576 count=${PATTERN_MIB} 2>/dev/null | md5sum`, 30_000);
    const m = /^([0-9a-f]{32})\b/m.exec(out);
    if (!m?.[1]) throw new Error(`no md5 from the guest: ${out}`);
    return m[1];
  }

  /**
   * The whole flow for one disk: (grow storage) → PUT rescan 202 → poll GET → POST assist_extend
   * 200 with the measured size → the guest's own report and its kernel's capacity-change line,
   * and the data written before reads the same after.
   */

  async function extendFlow(v: Vol, growStorage: ((bytes: number) => Promise<void>) | undefined): Promise<void> {
    const g = G();
    const before = (await g.sizes())[v.dev];
    expect(before).toBeGreaterThanOrEqual(START);
    const target = before! + 16 * MiB;
    const md5 = await writePattern(v.dev);
    if (v.rawFile) expect(fileHeadMd5(v.rawFile, PATTERN_MIB * MiB)).toBe(md5);

    if (growStorage) await growStorage(target);
    const rescan = await A().call('PUT', paths.rescan(TENANT, server()), { onlineExtendVolume: { volume_id: v.id } });
    expect(rescan.status, JSON.stringify(rescan.body)).toBe(202);
    // File disks: the host size is the file's, which QEMU grows on assist_extend (until then it
    // stays what it was). Block and network disks: the host must see the new size first.
    const hostBefore = await pollBlockdev(v, growStorage ? target : before!);
    expect(hostBefore).toBe(growStorage ? target : before);

    const mark = await g.logMark();
    const res = await A().call('POST', paths.volume(TENANT, server(), v.id), { onlineExtendVolume: { bytes: target } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toEqual({ volume_blockdev: { id: v.id, bytes: target } });
    expect(res.headers.get('x-openstack-request-id')).toBeTruthy();
    // Server-Timing follows the request down through every layer it passed (util/timing.ts):
    // the store, the RPC, the volume's lock, the driver and, inside it, the libvirt calls.
    const parts = serverTimingParts(res.headers.get('server-timing'));
    expect(Object.keys(parts).sort()).toEqual(['auth', 'driver', 'libvirt', 'lock', 'rpc', 'store', 'total']);
    // (The driver reads the domain's state and the disk's size at once: the libvirt part, a sum,
    // may exceed the driver's wall time; the driver's calls, one after the other, fit in the RPC's.)
    expect(parts.libvirt).toBeGreaterThan(0);
    expect(parts.driver).toBeGreaterThan(0);
    expect(parts.rpc).toBeGreaterThanOrEqual(parts.driver! - 0.01);
    expect(parts.total).toBeGreaterThanOrEqual(parts.rpc!);

    // The guest's own view, exactly.
    expect(await g.waitForSize(v.dev, target, 10_000)).toBe(target);
    await g.waitForLog(new RegExp(`${v.dev}: detected capacity change from ${before! / 512} to ${target / 512}\\b`), 10_000, mark);
    // The host now sees it too (file disks: QEMU grew the file).
    expect(await getBlockdev(v)).toBe(target);
    // Data untouched.
    expect(await guestMd5(v.dev)).toBe(md5);
    if (v.rawFile) expect(fileHeadMd5(v.rawFile, PATTERN_MIB * MiB)).toBe(md5);
  }

  it('file raw: assist_extend grows the file through QEMU; the guest sees exactly the new size, data intact', async () => {
    await extendFlow(vols.raw, undefined);
  });

  it('file qcow2: assist_extend grows the image; the guest sees exactly the new size, data intact', async () => {
    await extendFlow(vols.qcow2, undefined);
  });

  it('block (loop): grow the storage, rescan makes the host see it, then the guest; data intact', async () => {
    await extendFlow(vols.block, async (bytes) => {
      expect(await blockBackend.extend(vols.block.id, bytes)).toBe(bytes);
    });
  });

  it('network (iSCSI): grow + refresh the LUN, then the guest; data intact', async () => {
    await extendFlow(vols.iscsi, async (bytes) => {
      expect(await iscsiBackend.extend(vols.iscsi.id, bytes)).toBe(bytes);
    });
  });

  it('refuses a shrink with 400 and the guest still sees its size', async () => {
    const v = vols.raw;
    const before = (await G().sizes())[v.dev]!;
    const res = await A().call('POST', paths.volume(TENANT, server(), v.id), { onlineExtendVolume: { bytes: before - MiB } });
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(JSON.stringify(res.body)).toMatch(/shrink/i);
    await sleep(500); // the guest reports a change within 0.1–0.3 s; give it time to show one
    expect((await G().sizes())[v.dev]).toBe(before);
    expect(await getBlockdev(v)).toBe(before);
  });

  it('refuses a block disk grown past what the host sees (no rescan yet) with 409 "rescan first"', async () => {
    const v = vols.block;
    const before = (await G().sizes())[v.dev]!;
    const target = before + 8 * MiB;
    await blockBackend.extend(v.id, target); // storage grown, loop device not rescanned
    expect(await getBlockdev(v)).toBe(before);
    const res = await A().call('POST', paths.volume(TENANT, server(), v.id), { onlineExtendVolume: { bytes: target } });
    expect(res.status, JSON.stringify(res.body)).toBe(409);
    expect(JSON.stringify(res.body)).toMatch(/rescan first/);
    await sleep(300);
    expect((await G().sizes())[v.dev]).toBe(before);
    // ...and after the rescan the same request succeeds.
    expect((await A().call('PUT', paths.rescan(TENANT, server()), { onlineExtendVolume: { volume_id: v.id } })).status).toBe(202);
    expect(await pollBlockdev(v, target)).toBe(target);
    const ok = await A().call('POST', paths.volume(TENANT, server(), v.id), { onlineExtendVolume: { bytes: target } });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(await G().waitForSize(v.dev, target, 10_000)).toBe(target);
  });

  it('refuses a shut-off instance with 409', async () => {
    const res = await A().call('POST', paths.volume(TENANT, off.server, off.volume), { onlineExtendVolume: { bytes: 16 * MiB } });
    expect(res.status, JSON.stringify(res.body)).toBe(409);
    expect(JSON.stringify(res.body)).toMatch(/shutoff/i);
  });

  it('records the extend as an instance action with result Success', async () => {
    const v = vols.raw;
    const before = (await G().sizes())[v.dev]!;
    const res = await A().call('POST', paths.volume(TENANT, server(), v.id), { onlineExtendVolume: { bytes: before + MiB } });
    expect(res.status).toBe(200);
    const requestId = res.headers.get('x-openstack-request-id');
    expect(requestId).toBeTruthy();
    const one = await A().call('GET', `${paths.actions(TENANT, server())}/${requestId}`);
    expect(one.status, JSON.stringify(one.body)).toBe(200);
    const action = (one.body as { instanceAction: Record<string, unknown> }).instanceAction;
    expect(action).toMatchObject({ action: 'extend_volume', request_id: requestId, instance_uuid: server(), message: null, events: [{ event: 'compute_extend_volume', result: 'Success' }] });
    const detail = await A().call('GET', `${paths.actionDetails(TENANT, server())}/${requestId}`);
    const recorded = (detail.body as { instanceActionDetail: Record<string, unknown> }).instanceActionDetail;
    expect(recorded).toMatchObject({ action: 'extend_volume', request_id: requestId, result: 'Success' });
    expect(recorded.details).toMatchObject({ volume_id: v.id, requested_bytes: before + MiB, bytes: before + MiB });
    const list = await A().call('GET', paths.actionDetails(TENANT, server()));
    const actions = (list.body as { instanceActionDetails: Array<{ action: string; result: string }> }).instanceActionDetails;
    expect(actions.filter((a) => a.action === 'extend_volume' && a.result === 'Success').length).toBeGreaterThanOrEqual(5);
    await G().waitForSize(v.dev, before + MiB, 10_000);
  });
});
