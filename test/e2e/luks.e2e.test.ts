/**
 * Issue H, encrypted volumes end to end on a real lab guest: QEMU-native LUKS volumes on the file,
 * block (loop) and iSCSI backends, through the whole product (volume API → compute API →
 * LibvirtDriver → libvirtd → QEMU). The proof is the guest's own report of the disk's size (its
 * kernel's, printed on its serial console): exactly the volume's size minus the LUKS payload
 * offset, before and after an online extend through the HTTP API; data written through the
 * encryption layer reads back identical; the data at rest is ciphertext; a shrink is refused; the
 * libvirt secret exists only while the volume is attached, and without it QEMU's tools cannot open
 * the volume.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { issueToken } from '../../src/auth/tokens.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { demoLuks } from '../../src/demo/luks.js';
import { virsh } from '../../src/lab/index.js';
import { ApiError } from '../../src/rpc/httpClient.js';
import { secretUuidOf } from '../../src/virt/libvirt/secrets.js';
import { e2eMissing } from '../support/e2e.js';
import { volumeStorageFile } from '../support/files.js';
import { statusOf, type VolumeView } from '../support/labService.js';
import { guestData, useLabService } from '../support/labSuite.js';
import { describeReal } from '../support/real.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const PROJECT = 'e2eluksproject';
const PATTERN_MIB = 4;

type LuksView = VolumeView & { encryption: string | null; payload_offset: number | null; guest_size_bytes: number | null };

describeReal(e2eMissing())('LUKS-encrypted volumes extended online on a real guest (file, block, iSCSI)', () => {
  const { S, G, log } = useLabService({ project: PROJECT, guestName: `oe-luks-e2e-${process.pid}` }, 'luks-e2e');
  const data = guestData(G, PATTERN_MIB);

  /** The volume's storage file (the file volume itself, or the loop device's / LUN's backing file). */
  const storageOf = (id: string): string => volumeStorageFile(S().dataDir, id);

  function qemuImgInfo(path: string): { format: string; encrypted?: boolean; 'format-specific': { data: { 'payload-offset': number } } } {
    return JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', path], { encoding: 'utf8' })) as ReturnType<typeof qemuImgInfo>;
  }

  /** md5 of `mib` MiB of the storage from `offset`, as the host reads it (ciphertext for a LUKS volume). */
  function hostMd5(path: string, offset: number, mib: number): string {
    const fd = openSync(path, 'r');
    try {
      const buf = Buffer.alloc(mib * MiB);
      readSync(fd, buf, 0, buf.length, offset);
      return createHash('md5').update(buf).digest('hex');
    } finally {
      closeSync(fd);
    }
  }

  /** An admin token of the project (the external-events route takes the service or admin role). */
  async function eventToken(): Promise<string> {
    const store = new SqliteStore(join(S().dataDir, 'online-extend.sqlite'));
    try {
      return (await issueToken(store, { userId: 'e2e-events', projectId: PROJECT, roles: ['admin'], ttlMs: 600_000 })).token;
    } finally {
      await store.close();
    }
  }

  async function secrets(): Promise<string> {
    return virsh(S().lab, ['secret-list']);
  }

  it.each([
    ['file', 'file-luks'],
    ['block', 'block-luks'],
    ['iscsi', 'iscsi-luks'],
  ])('%s: the guest sees exactly volume - payload offset before and after an online extend; data intact; shrink refused; secret gone after detach', async (backend, volumeType) => {
    const ls = S();
    const g = G();
    const t0 = Date.now();
    const v = (await ls.createVolume({ name: `luks-${backend}`, size: 1, volume_type: volumeType })) as LuksView;
    expect(v).toMatchObject({ status: 'available', size_bytes: GiB, encryption: 'luks', volume_type: volumeType });
    const path = storageOf(v.id);
    const info = qemuImgInfo(path);
    expect(info).toMatchObject({ format: 'luks', encrypted: true });
    const offset = info['format-specific'].data['payload-offset'];
    expect(v.payload_offset).toBe(offset);
    expect(v.guest_size_bytes).toBe(GiB - offset);
    log(`${backend}: created a 1 GiB LUKS volume in ${Date.now() - t0} ms; payload offset ${offset} bytes`);

    await ls.attach(v.id);
    const dev = await g.deviceForSerial(v.id, 20_000);
    if (!dev) throw new Error(`the guest never showed volume ${v.id}`);
    // The guest's own kernel: exactly the volume minus the LUKS header.
    expect(await g.waitForSize(dev, GiB - offset, 20_000)).toBe(GiB - offset);
    expect(await secrets()).toContain(secretUuidOf(v.id));
    // The secret is private: libvirt gives nobody its value back.
    expect(spawnSync('virsh', ['-c', ls.lab.libvirtUri, 'secret-get-value', secretUuidOf(v.id)]).status).not.toBe(0);

    // Data through the encryption layer; on the host it is ciphertext.
    const md5 = await data.writePattern(dev);
    expect(hostMd5(path, offset, PATTERN_MIB)).not.toBe(md5);

    // get_blockdev answers the host's size (the volume's, header included).
    const blockdev = `/v2/${PROJECT}/servers/${g.uuid}/os-online_extend_volume/${v.id}`;
    expect((await ls.compute.request<{ volume_blockdev: { bytes: number } }>('GET', blockdev)).body.volume_blockdev.bytes).toBe(GiB);

    const mark = await g.logMark();
    const t = Date.now();
    const res = await ls.extend(v.id, { 'os-extend': { new_size: 2 } });
    expect(res.status).toBe(202);
    const done = (await ls.settle(v.id, 90_000)) as LuksView;
    expect(done, JSON.stringify(done.extend)).toMatchObject({ status: 'in-use', size_bytes: 2 * GiB, extend: null, guest_size_bytes: 2 * GiB - offset });
    expect(await g.waitForSize(dev, 2 * GiB - offset, 20_000)).toBe(2 * GiB - offset);
    await g.waitForLog(new RegExp(`${dev}: detected capacity change from ${(GiB - offset) / 512} to ${(2 * GiB - offset) / 512}\\b`), 10_000, mark);
    log(`${backend}: 1 GiB → 2 GiB; the guest reported ${2 * GiB - offset} bytes ${Date.now() - t} ms after the API call`);
    expect(await data.md5(dev)).toBe(md5);
    expect(qemuImgInfo(path)['format-specific'].data['payload-offset']).toBe(offset);
    expect((await ls.compute.request<{ volume_blockdev: { bytes: number } }>('GET', blockdev)).body.volume_blockdev.bytes).toBe(2 * GiB);

    // A volume-extended event now (Cinder's way to say "the volume grew"): compute reads the
    // header's offset (over iSCSI too) and finds the guest already at host - offset: unchanged.
    // Were the offset taken as 0, it would try to grow the guest past the header and fail.
    const ev = await fetch(`${ls.service.computeUrl}/v2.1/os-server-external-events`, {
      method: 'POST',
      headers: { 'x-auth-token': await eventToken(), 'x-openstack-nova-api-version': '2.51', 'content-type': 'application/json' },
      body: JSON.stringify({ events: [{ name: 'volume-extended', server_uuid: g.uuid, tag: v.id }] }),
    });
    expect(ev.status).toBe(200);
    const evRequest = ev.headers.get('x-openstack-request-id');
    let evAction: Awaited<ReturnType<typeof ls.instanceActions>>[number] | undefined;
    for (const end = Date.now() + 20_000; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) {
      evAction = (await ls.instanceActions()).find((a) => a.request_id === evRequest && a.finish_time !== null);
      if (evAction) break;
    }
    expect(evAction, 'the volume-extended action').toMatchObject({ result: 'Success' });
    expect(evAction!.details).toMatchObject({ volumes: [{ volume_id: v.id, outcome: 'unchanged', host_bytes: 2 * GiB, guest_bytes: 2 * GiB - offset }] });

    // Shrinks are refused: the volume API compares volume sizes, assist_extend guest sizes.
    expect(await statusOf(ls.extend(v.id, { 'os-extend-bytes': { new_bytes: 2 * GiB - 512 } }))).toBe(400);
    const shrink = (await ls.compute.request('POST', blockdev, { onlineExtendVolume: { bytes: 2 * GiB - offset - 512 } }).catch((e: unknown) => e)) as ApiError;
    expect(shrink).toBeInstanceOf(ApiError);
    expect(shrink.status).toBe(400);
    expect(await g.waitForSize(dev, 2 * GiB - offset, 5_000)).toBe(2 * GiB - offset);
    expect(await data.md5(dev)).toBe(md5);

    // Detach: the secret goes with the disk; the volume stays encrypted and unreadable without it.
    const before = await g.logMark();
    await ls.detach(v.id);
    await g.waitForLog(new RegExp(`^OE-SIZES(?!.*\\b${dev}=).*$`, 'm'), 15_000, before);
    expect(await secrets()).not.toContain(secretUuidOf(v.id));
    expect(qemuImgInfo(path)).toMatchObject({ format: 'luks', encrypted: true });
    const open = spawnSync('qemu-img', ['dd', '-f', 'luks', `if=${path}`, 'of=/dev/null', 'bs=1M', 'count=1']);
    expect(open.status).not.toBe(0);
    expect(open.stderr.toString()).toMatch(/key-secret/);
    await ls.remove(v.id);
  }, 180_000);

  it("the demo's LUKS part prints the guest's own sizes and the payload offset, and leaves nothing behind", async () => {
    const ls = S();
    const lines: string[] = [];
    const ok = await demoLuks({ compute: ls.compute, volume: ls.volume, project: PROJECT, guest: G(), out: (m) => (lines.push(m), log(m)), backend: 'block' });
    expect(ok).toBe(true);
    const text = lines.join('\n');
    const made = /volume (\S+) made in .*LUKS payload offset (\d+) bytes/.exec(text);
    expect(made, text).not.toBeNull();
    const offset = Number(made![2]);
    expect(offset).toBeGreaterThan(0);
    expect(text).toContain(`before ${GiB - offset} bytes, after ${2 * GiB - offset} bytes`);
    expect((await ls.volume.request<{ volumes: unknown[] }>('GET', `/v3/${PROJECT}/volumes`)).body.volumes).toEqual([]);
    expect(await secrets()).not.toContain(secretUuidOf(made![1]!));
  }, 120_000);
});
