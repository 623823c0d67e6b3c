/**
 * The QEMU guest agent in the lab's guest, and LibvirtDriver.growGuestFilesystem on a real guest
 * (one lab, one TCG guest, several volumes): the agent answers through libvirtd's
 * qemu-agent-command (our remote client), and after an online extend the driver grows the last
 * partition and the filesystem in the guest. The proof is read by the guest itself through its
 * serial console (not the agent): `df -B1` shows the new size, checksums of files written before
 * are unchanged, and the driver's answer equals what df says.
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { bootGuest, type GuestShell } from '../../src/lab/index.js';
import { LibvirtDriver } from '../../src/virt/libvirt/driver.js';
import { GuestAgent } from '../../src/virt/libvirt/agent.js';
import { RemoteClient } from '../../src/virt/libvirt/remote/client.js';
import type { GuestFilesystemGrowth } from '../../src/virt/driver.js';
import { describeReal } from '../support/real.js';
import { labMissing, startLab, type TestLab } from '../virt/support/lab.js';

const MiB = 1024 * 1024;

/** The cases: how the volume is prepared in the guest, and what growGuestFilesystem must answer. */
interface FsCase {
  name: string;
  /** Initial and extended size of the volume. */
  from: number;
  to: number;
  /** Shell run in the guest with DEV set to the disk (e.g. /dev/vdb), MNT to its mount point and MNT_ID to its serial; leaves files in MNT when it has a filesystem. */
  prepare: string;
  /** The device growGuestFilesystem grows, from DEV ('' = none). */
  part: '' | '1' | '2' | '5';
  mounted: boolean;
  expect: Partial<GuestFilesystemGrowth>;
}

/** Writes two files (one random, one patterned) into $MNT. */
const WRITE_FILES = 'dd if=/dev/urandom of=$MNT/random.bin bs=1024 count=3000 2>/dev/null && yes OE-GROWFS | head -c 1000000 > $MNT/pattern.txt && sync';

const CASES: FsCase[] = [
  {
    name: 'ext4 on the whole disk, mounted',
    from: 64 * MiB,
    to: 160 * MiB,
    prepare: `mkfs.ext4 -q -F $DEV && mount -t ext4 $DEV $MNT && ${WRITE_FILES}`,
    part: '',
    mounted: true,
    expect: { grown: true, fsType: 'ext4' },
  },
  {
    name: 'a DOS partition table with ext4 in the last of two partitions, mounted',
    from: 64 * MiB,
    to: 160 * MiB,
    prepare: `printf ',16M\\n,+\\n' | sfdisk -q --label dos $DEV && partx -u $DEV; mkfs.ext4 -q -F \${DEV}2 && mount -t ext4 \${DEV}2 $MNT && ${WRITE_FILES}`,
    part: '2',
    mounted: true,
    expect: { grown: true, fsType: 'ext4', partitionGrown: true },
  },
  {
    name: 'a GPT partition table with ext4 in its only partition, mounted',
    from: 64 * MiB,
    to: 128 * MiB,
    prepare: `printf ',+\\n' | sfdisk -q --label gpt $DEV && partx -u $DEV; mkfs.ext4 -q -F \${DEV}1 && mount -t ext4 \${DEV}1 $MNT && ${WRITE_FILES}`,
    part: '1',
    mounted: true,
    expect: { grown: true, fsType: 'ext4', partitionGrown: true },
  },
  {
    name: 'ext4 on the whole disk, not mounted',
    from: 64 * MiB,
    to: 128 * MiB,
    prepare: `mkfs.ext4 -q -F $DEV && mount -t ext4 $DEV $MNT && ${WRITE_FILES} && umount $MNT`,
    part: '',
    mounted: false,
    expect: { grown: true, fsType: 'ext4' },
  },
  {
    name: 'ext4 on the whole disk, mounted through a /dev/disk/by-id link (as udev names it)',
    from: 64 * MiB,
    to: 96 * MiB,
    prepare: `mkfs.ext4 -q -F $DEV && mkdir -p /dev/disk/by-id && ln -sf ../../\${DEV#/dev/} /dev/disk/by-id/virtio-$MNT_ID && mount -t ext4 /dev/disk/by-id/virtio-$MNT_ID $MNT && grep -q "^/dev/disk/by-id/virtio-$MNT_ID " /proc/mounts && ${WRITE_FILES}`,
    part: '',
    mounted: true,
    expect: { grown: true, fsType: 'ext4' },
  },
  {
    // sfdisk -N exits 0 on a logical partition and changes nothing (its extended container would
    // have to grow first): the answer must say not grown, and nothing in the guest changes.
    name: 'a DOS partition table with ext4 in a logical partition (inside an extended one), mounted',
    from: 64 * MiB,
    to: 96 * MiB,
    prepare: `printf 'start=2048,size=16384,type=83\\nstart=18432,type=5\\nstart=20480,type=83\\n' | sfdisk -q $DEV && partx -u $DEV; mkfs.ext4 -q -F \${DEV}5 && mount -t ext4 \${DEV}5 $MNT && ${WRITE_FILES}`,
    part: '5',
    mounted: true,
    expect: { grown: false, reason: 'grow_failed', partitionGrown: false },
  },
  {
    name: 'nothing on the disk',
    from: 32 * MiB,
    to: 48 * MiB,
    prepare: 'true',
    part: '',
    mounted: false,
    expect: { grown: false, reason: 'no_filesystem' },
  },
  {
    name: 'XFS on the whole disk, mounted',
    from: 320 * MiB,
    to: 400 * MiB,
    prepare: `mkfs.xfs -q -f $DEV && mount -t xfs $DEV $MNT && ${WRITE_FILES}`,
    part: '',
    mounted: true,
    expect: { grown: true, fsType: 'xfs' },
  },
];

/**
 * df -B1's total for the mount point `mnt`, from the guest's whole `df -B1` listing (busybox's
 * `df PATH` picks the wrong line for a filesystem mounted through a /dev/disk link; a long device
 * name wraps its line, so the total is the fourth field before the mount point).
 */
async function dfTotal(guest: GuestShell, mnt: string): Promise<number> {
  const out = await guest.exec('df -B1');
  const line = out.split('\n').find((l) => l.trimEnd().endsWith(` ${mnt}`));
  const n = Number(line?.trim().split(/\s+/).at(-5));
  if (!Number.isSafeInteger(n)) throw new Error(`no df total for ${mnt} in: ${out}`);
  return n;
}

describeReal(labMissing())('the guest agent and growGuestFilesystem on a real guest (lab, TCG)', () => {
  let lv: TestLab | undefined;
  let guest: GuestShell | undefined;
  let driver: LibvirtDriver | undefined;
  let client: RemoteClient | undefined;
  const vols = CASES.map((c, i) => ({ c, id: randomUUID(), target: `vd${String.fromCharCode(98 + i)}`, dev: '', mnt: `/mnt/c${i}`, md5: '' }));
  const log = (m: string): void => console.log(`[guest-fs] ${m}`);
  const G = (): GuestShell => {
    if (!guest) throw new Error('no guest');
    return guest;
  };
  const D = (): LibvirtDriver => {
    if (!driver) throw new Error('no driver');
    return driver;
  };

  beforeAll(async () => {
    lv = await startLab();
    await mkdir(join(lv.dir, 'vols'), { recursive: true });
    const disks: string[] = [];
    for (const v of vols) {
      const p = join(lv.dir, 'vols', `${v.id}.raw`);
      await writeFile(p, '');
      await truncate(p, v.c.from);
      disks.push(`<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${p}'/><target dev='${v.target}' bus='virtio'/><serial>${v.id}</serial></disk>`);
    }
    guest = await bootGuest(lv.lab, { name: 'guest-fs', disks, memoryMiB: 384 });
    driver = new LibvirtDriver({ uri: lv.lab.libvirtUri });
    client = new RemoteClient({ uri: lv.lab.libvirtUri });
    await G().waitForLog(/OE-AGENT started/, 30_000);
    for (const v of vols) {
      const dev = await G().deviceForSerial(v.id, 20_000);
      if (!dev) throw new Error(`the guest never showed volume ${v.id}`);
      v.dev = `/dev/${dev}`;
      await G().exec(`mkdir -p ${v.mnt}; DEV=${v.dev}; MNT=${v.mnt}; MNT_ID=${v.id.slice(0, 20)}; ${v.c.prepare}`, 120_000);
      if (v.c.part !== '' || v.c.expect.fsType) v.md5 = await filesMd5(v);
    }
  }, 600_000);

  afterAll(async () => {
    await client?.close().catch(() => {});
    await driver?.close().catch(() => {});
    await guest?.destroy().catch(() => {});
    await lv?.down();
  }, 120_000);

  /** md5 of the files in the volume's filesystem, read by the guest (mounting it for the read when it was not mounted). */
  async function filesMd5(v: (typeof vols)[number]): Promise<string> {
    const dev = `${v.dev}${v.c.part}`;
    const mountIt = v.c.mounted ? '' : `mount -t ${v.c.expect.fsType ?? 'ext4'} ${dev} ${v.mnt} && `;
    const umount = v.c.mounted ? '' : ` ; umount ${v.mnt}`;
    const out = await G().exec(`${mountIt}echo 3 > /proc/sys/vm/drop_caches; cat ${v.mnt}/random.bin ${v.mnt}/pattern.txt | md5sum${umount}`, 60_000);
    const m = /^([0-9a-f]{32})/m.exec(out);
    if (!m?.[1]) throw new Error(`no md5 from the guest: ${out}`);
    return m[1];
  }

  it('answers guest-ping, guest-info and guest-exec through qemu-agent-command, output and exit code round-tripped', async () => {
    const dom = await client!.lookupByUuid(G().uuid);
    const agent = new GuestAgent({ agentCommand: (cmd, t) => client!.qemuAgentCommand(dom, cmd, t) });
    await agent.ping(5);
    const info = await agent.command<{ version: string; supported_commands: Array<{ name: string; enabled: boolean }> }>('guest-info');
    expect(info.version).toMatch(/^7\.2/);
    expect(info.supported_commands.filter((c) => ['guest-exec', 'guest-exec-status', 'guest-ping'].includes(c.name) && c.enabled)).toHaveLength(3);
    const r = await agent.exec('sh', ['-c', 'echo out; echo "err $1" >&2; exit 3', 'sh', "a'b c"]);
    expect(r).toEqual({ exitCode: 3, stdout: 'out\n', stderr: "err a'b c\n" });
    const input = `${randomUUID()}\n`.repeat(1000);
    const md5 = await agent.exec('md5sum', [], { input });
    expect(md5.stdout.split(/\s+/)[0]).toBe(createHash('md5').update(input).digest('hex'));
  }, 60_000);

  it.each(vols.map((v) => [v.c.name, v] as const))('grows %s after an online extend, as the guest itself reports', async (_name, v) => {
    const dev = `${v.dev}${v.c.part}`;
    const dfBefore = v.c.mounted ? await dfTotal(G(), v.mnt) : undefined;
    expect(await D().extendAttached(G().uuid, v.id, v.c.to)).toBe(v.c.to);
    await G().waitForSize(v.dev.slice('/dev/'.length), v.c.to, 20_000);
    const t0 = performance.now();
    const r = await D().growGuestFilesystem(G().uuid, v.id);
    const ms = performance.now() - t0;
    log(`${v.c.name}: ${JSON.stringify({ ...r, detail: undefined })} in ${ms.toFixed(0)} ms${r.detail ? `; detail: ${r.detail}` : ''}`);
    expect(r).toMatchObject({ ...v.c.expect, device: v.c.expect.grown ? dev : r.device });
    if (!v.c.expect.grown) {
      // Not grown: the guest's filesystem and files are as they were.
      if (v.md5) expect(await filesMd5(v)).toBe(v.md5);
      if (v.c.mounted) expect(await dfTotal(G(), v.mnt)).toBe(dfBefore);
      return;
    }
    if (v.c.mounted) {
      // The guest's own df, read through the serial console, agrees with the driver's answer.
      const dfAfter = await dfTotal(G(), v.mnt);
      expect(r.mountpoint).toBe(v.mnt);
      expect(r.fsBytes).toBe(dfAfter);
      expect(r.fsBytesBefore).toBe(dfBefore);
      expect(dfAfter).toBeGreaterThan(dfBefore! + (v.c.to - v.c.from) * 0.8);
    } else {
      // Unmounted: the filesystem's own size (dumpe2fs) is the measure; mounted afterwards df grew too.
      const dump = await G().exec(`/sbin/dumpe2fs -h ${dev} 2>/dev/null | grep -E '^Block (count|size):'`);
      const [count, size] = [...dump.matchAll(/:\s+(\d+)/g)].map((m) => Number(m[1]));
      expect(r.fsBytes).toBe(count! * size!);
      expect(r.fsBytes! - r.fsBytesBefore!).toBeGreaterThan((v.c.to - v.c.from) * 0.9);
    }
    if (v.c.part !== '') {
      // The partition now reaches the (new) end of the disk, as the guest's kernel sees it.
      const [start, sectors, disk] = (await G().exec(`cat /sys/block/${v.dev.slice(5)}/${dev.slice(5)}/start /sys/block/${v.dev.slice(5)}/${dev.slice(5)}/size /sys/block/${v.dev.slice(5)}/size`)).trim().split(/\s+/).map(Number);
      expect(disk! - (start! + sectors!)).toBeLessThan(2048 + 34);
    }
    expect(await filesMd5(v)).toBe(v.md5);
  }, 180_000);

  it("refuses while the guest's filesystems are frozen (409 InstanceBusy, uncertain: it passes by itself), and grows once they are thawed", async () => {
    const v = vols[0]!;
    const dom = await client!.lookupByUuid(G().uuid);
    const agent = new GuestAgent({ agentCommand: (cmd, t) => client!.qemuAgentCommand(dom, cmd, t) });
    await agent.command('guest-fsfreeze-freeze');
    try {
      const err = await D().growGuestFilesystem(G().uuid, v.id).then(
        () => undefined,
        (e: unknown) => e as { code?: string; status?: number; final?: boolean },
      );
      expect(err).toMatchObject({ code: 'InstanceBusy', status: 409, final: false });
    } finally {
      await agent.command('guest-fsfreeze-thaw');
    }
    expect(await D().growGuestFilesystem(G().uuid, v.id)).toMatchObject({ grown: true, fsType: 'ext4' });
  }, 120_000);

  it('answers grown=false, reason no_guest_agent, within a few seconds when the agent is stopped, and grows again once it runs', async () => {
    const v = vols[0]!;
    await G().exec('oe-agent stop; sleep 0.5; ! pidof qemu-ga');
    const t0 = performance.now();
    const r = await D().growGuestFilesystem(G().uuid, v.id);
    const ms = performance.now() - t0;
    log(`agent stopped: ${JSON.stringify(r)} in ${ms.toFixed(0)} ms`);
    expect(r).toMatchObject({ grown: false, reason: 'no_guest_agent' });
    expect(ms).toBeLessThan(5_000);
    await G().exec('oe-agent start && sleep 1 && pidof qemu-ga');
    // Idempotent: a filesystem already grown is grown (it fills its device), same size before and after.
    let again: GuestFilesystemGrowth | undefined;
    for (let i = 0; i < 20; i++) {
      again = await D().growGuestFilesystem(G().uuid, v.id);
      if (again.reason !== 'no_guest_agent') break;
      await new Promise((res) => setTimeout(res, 500));
    }
    expect(again).toMatchObject({ grown: true, fsType: 'ext4' });
    expect(again!.fsBytes).toBe(again!.fsBytesBefore);
  }, 120_000);

  it('answers grown=false, reason no_guest_agent, within the ping timeout when the agent hangs (SIGSTOP), and grows again once it runs', async () => {
    const v = vols[0]!;
    await G().exec('kill -STOP $(pidof qemu-ga)');
    try {
      const t0 = performance.now();
      const r = await D().growGuestFilesystem(G().uuid, v.id);
      const ms = performance.now() - t0;
      log(`agent hung: ${JSON.stringify(r)} in ${ms.toFixed(0)} ms`);
      expect(r).toMatchObject({ grown: false, reason: 'no_guest_agent' });
      expect(ms).toBeLessThan(4_000);
    } finally {
      await G().exec('kill -CONT $(pidof qemu-ga)');
    }
    let again: GuestFilesystemGrowth | undefined;
    for (let i = 0; i < 20; i++) {
      again = await D().growGuestFilesystem(G().uuid, v.id);
      if (again.reason !== 'no_guest_agent') break;
      await new Promise((res) => setTimeout(res, 500));
    }
    expect(again).toMatchObject({ grown: true, fsType: 'ext4' });
  }, 120_000);

  it('answers grown=false, reason no_guest_agent, at once for a guest whose domain has no agent channel', async () => {
    const id = randomUUID();
    const p = join(lv!.dir, 'vols', `${id}.raw`);
    await writeFile(p, '');
    await truncate(p, 32 * MiB);
    const bare = await bootGuest(lv!.lab, {
      name: 'guest-fs-noagent',
      guestAgent: false,
      disks: [`<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${p}'/><target dev='vdb' bus='virtio'/><serial>${id}</serial></disk>`],
    });
    try {
      const t0 = performance.now();
      const r = await D().growGuestFilesystem(bare.uuid, id);
      const ms = performance.now() - t0;
      log(`no agent channel: ${JSON.stringify(r)} in ${ms.toFixed(0)} ms`);
      expect(r).toMatchObject({ grown: false, reason: 'no_guest_agent' });
      expect(r.detail).toMatch(/not configured/);
      expect(ms).toBeLessThan(5_000);
    } finally {
      await bare.destroy();
    }
  }, 120_000);

  it('reaches the agent of a server the driver spawned (its domain carries the channel) and grows ext4 on a volume attached to it', async () => {
    const spawner = new LibvirtDriver({ uri: lv!.lab.libvirtUri, instancesDir: join(lv!.dir, 'instances') });
    const serverId = randomUUID();
    const volumeId = randomUUID();
    const p = join(lv!.dir, 'vols', `${volumeId}.raw`);
    await writeFile(p, '');
    await truncate(p, 64 * MiB);
    try {
      await spawner.spawn({
        id: serverId,
        name: 'guest-fs-spawned',
        projectId: 'p1',
        userId: 'u1',
        vcpus: 1,
        ramMb: 256,
        rootDiskGb: 0,
        image: { kind: 'kernel', kernelPath: lv!.lab.kernel, ramdiskPath: lv!.lab.initrd, cmdline: lv!.lab.cmdline },
      });
      await spawner.attachVolume(serverId, { volumeId, kind: 'file', format: 'raw', source: p });
      // The guest boots and starts its agent; until then the answer is no_guest_agent.
      let r: GuestFilesystemGrowth | undefined;
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline) {
        r = await spawner.growGuestFilesystem(serverId, volumeId);
        if (r.reason !== 'no_guest_agent') break;
        await new Promise((res) => setTimeout(res, 500));
      }
      expect(r).toMatchObject({ grown: false, reason: 'no_filesystem' });
      // Format it through the agent itself (this guest has no console shell the test holds), extend, grow.
      const dom = await client!.lookupByUuid(serverId);
      const agent = new GuestAgent({ agentCommand: (cmd, t) => client!.qemuAgentCommand(dom, cmd, t) });
      const mk = await agent.exec('mkfs.ext4', ['-q', '-F', r!.device!], { timeoutMs: 60_000 });
      expect(mk.exitCode).toBe(0);
      expect(await spawner.extendAttached(serverId, volumeId, 96 * MiB)).toBe(96 * MiB);
      const grown = await spawner.growGuestFilesystem(serverId, volumeId);
      expect(grown).toMatchObject({ grown: true, fsType: 'ext4', fsBytes: 96 * MiB, fsBytesBefore: 64 * MiB });
    } finally {
      await spawner.destroy(serverId).catch((e: unknown) => console.error('destroy failed', e));
      await spawner.close();
    }
  }, 180_000);

  it('times the grow step against resize2fs run by hand in the guest (printed for the benchmarks)', async () => {
    const v = vols[0]!;
    const by = 32 * MiB;
    const sizes: Array<{ agentMs: number; handMs: number }> = [];
    let size = v.c.to;
    for (let i = 0; i < 3; i++) {
      size += by;
      await D().extendAttached(G().uuid, v.id, size);
      await G().waitForSize(v.dev.slice(5), size, 20_000);
      const t0 = performance.now();
      const r = await D().growGuestFilesystem(G().uuid, v.id);
      const agentMs = performance.now() - t0;
      expect(r.grown).toBe(true);
      size += by;
      await D().extendAttached(G().uuid, v.id, size);
      await G().waitForSize(v.dev.slice(5), size, 20_000);
      const dfBeforeHand = await dfTotal(G(), v.mnt);
      // By hand: resize2fs alone, timed by the guest's clock (/proc/uptime, 10 ms resolution).
      const out = await G().exec(`read a _ < /proc/uptime; resize2fs ${v.dev} >/dev/null 2>&1; read b _ < /proc/uptime; echo $a $b`);
      const [a, b] = out.trim().split(/\s+/).map(Number);
      sizes.push({ agentMs, handMs: (b! - a!) * 1000 });
      expect(await dfTotal(G(), v.mnt)).toBeGreaterThan(dfBeforeHand + by * 0.8);
    }
    const med = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
    log(`grow step (growGuestFilesystem, agent): median ${med(sizes.map((s) => s.agentMs)).toFixed(0)} ms; resize2fs by hand in the guest: median ${med(sizes.map((s) => s.handMs)).toFixed(0)} ms (${JSON.stringify(sizes)})`);
    expect(await filesMd5(v)).toBe(v.md5);
  }, 180_000);
});
