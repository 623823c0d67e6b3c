/**
 * Growing the guest's filesystem through the HTTP APIs on a real guest (libvirt driver, the lab's
 * TCG guest with its QEMU guest agent): the opt-in travels in `os-extend`, the workflow's grow_fs
 * step asks compute, compute asks the guest agent, and the volume records what the guest did.
 * The guest's own `df -B1` (read through its serial console, not through the agent) is the judge.
 * The driver's cases (partitions, xfs, unmounted, hung agent) are in guest-fs.e2e.test.ts.
 */
import { expect, it } from 'vitest';
import { demoGrowFs } from '../../src/demo/growFs.js';
import { e2eMissing } from '../support/e2e.js';
import { createAttached, useLabService } from '../support/labSuite.js';
import { describeReal } from '../support/real.js';

const MiB = 2 ** 20;
const PROJECT = 'e2egrowfsproject';

interface FsGrowthView {
  requested: boolean;
  grown: boolean | null;
  reason: string | null;
  fs_type: string | null;
  fs_bytes_before: number | null;
  fs_bytes: number | null;
}

describeReal(e2eMissing())('the guest filesystem grown by an extend through the APIs, on a real guest', () => {
  const { S, G, log } = useLabService({ project: PROJECT, guestName: `oe-growfs-e2e-${process.pid}` }, 'growfs-e2e');

  const fsGrowth = async (id: string): Promise<FsGrowthView | null> =>
    (await S().volume.request<{ volume: { fs_growth: FsGrowthView | null } }>('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`)).body.volume.fs_growth;

  /** df's total for `mnt` as the guest prints it. */
  const dfTotal = async (mnt: string): Promise<number> => {
    const line = (await G().exec(`df -B1 ${mnt}`)).trim().split('\n').at(-1) ?? '';
    return Number(line.trim().split(/\s+/)[1]);
  };

  it("the demo's grow-fs part: df in the guest shows the grown ext4, the files are unchanged, the record equals df", async () => {
    const ls = S();
    const lines: string[] = [];
    const ok = await demoGrowFs({ compute: ls.compute, volume: ls.volume, project: PROJECT, guest: G(), out: (m) => (lines.push(m), log(m)) });
    expect(ok, lines.join('\n')).toBe(true);
    expect(lines.join('\n')).toMatch(/the volume records: grown ext4 on \/dev\/vd[a-z]+, \d+ → \d+ bytes/);
    expect((await ls.volume.request<{ volumes: unknown[] }>('GET', `/v3/${PROJECT}/volumes`)).body.volumes).toEqual([]);
  }, 240_000);

  it('a guest whose agent is stopped: the block extend succeeds, the volume records no_guest_agent, the filesystem is as it was', async () => {
    const ls = S();
    const { v, dev } = await createAttached(ls, { name: 'growfs-noagent', size: 1, volume_type: 'file' }, 2 ** 30);
    const mnt = '/mnt/growfs-noagent';
    await G().exec(`mkdir -p ${mnt} && mkfs.ext4 -q -F /dev/${dev} && mount -t ext4 /dev/${dev} ${mnt}`, 120_000);
    const before = await dfTotal(mnt);
    await G().exec('oe-agent stop; sleep 0.5; ! pidof qemu-ga');
    try {
      await ls.extend(v.id, { 'os-extend': { new_size: 2, 'online_extend:grow_fs': true } });
      const done = await ls.settle(v.id, 60_000);
      expect(done).toMatchObject({ status: 'in-use', size_bytes: 2 * 2 ** 30 });
      expect(await G().waitForSize(dev, 2 * 2 ** 30, 20_000)).toBe(2 * 2 ** 30);
      expect(await fsGrowth(v.id)).toMatchObject({ requested: true, grown: false, reason: 'no_guest_agent' });
      expect(await dfTotal(mnt)).toBe(before);
    } finally {
      await G().exec('oe-agent start && sleep 1 && pidof qemu-ga').catch(() => undefined);
      await G().exec(`umount ${mnt}`).catch(() => undefined);
    }
    // With the agent back, the next extend that asks grows it to the disk.
    await ls.extend(v.id, { 'os-extend': { new_size: 3, 'online_extend:grow_fs': true } });
    expect(await ls.settle(v.id, 60_000)).toMatchObject({ status: 'in-use', size_bytes: 3 * 2 ** 30 });
    const g = await fsGrowth(v.id);
    // Not mounted any more: grown offline (e2fsck + resize2fs), measured from the superblock.
    expect(g).toMatchObject({ requested: true, grown: true, fs_type: 'ext4' });
    expect(g!.fs_bytes!).toBeGreaterThan(3 * 2 ** 30 - 200 * MiB);
    await ls.detach(v.id);
    await ls.remove(v.id);
  }, 240_000);
});
