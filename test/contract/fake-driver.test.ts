import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeDriver, parseFakeInventory, type FakeServer } from '../../src/virt/fake/driver.js';
import { fakeGuestFs } from '../../src/virt/fake/state.js';
import { describeReal } from '../support/real.js';
import { makeService, PROJECT, SERVER as SVC_SERVER } from '../support/service.js';
import { describeDriverContract } from './driver.contract.js';

const GiB = 1024 ** 3;
const SERVER = '11111111-1111-4111-8111-111111111111';
const STOPPED = '22222222-2222-4222-8222-222222222222';
const CONTRACT_IQN = 'iqn.2026-11.dev.online-extend:contract';

describeDriverContract('FakeDriver', async () => {
  // The file disk sits on a real (sparse) file, as it would on a file volume backend, so the
  // fake grows it and measures what its filesystem holds.
  const dir = await mkdtemp(join(tmpdir(), 'oe-fake-contract-'));
  const file = join(dir, 'vol-file.raw');
  await writeFile(file, '');
  await truncate(file, GiB);
  // The iSCSI disk's LUN exports a real file; the fake reads its capacity as an initiator would
  // (the test stands in for the target: growing the file is the backend's grow-and-re-export).
  const lunFile = join(dir, 'lun-1.raw');
  await writeFile(lunFile, '');
  await truncate(lunFile, GiB);
  const driver = new FakeDriver({
    readLunBytes: async (lun) => (lun.iqn === CONTRACT_IQN && lun.lun === 1 ? (await stat(lunFile)).size : undefined),
    servers: [
      {
        id: SERVER,
        name: 'vm',
        state: 'active',
        disks: [
          { volumeId: 'aaaaaaaa-0000-4000-8000-000000000001', device: 'vdb', kind: 'block', backingBytes: GiB, hostBytes: GiB, guestBytes: GiB },
          { volumeId: 'aaaaaaaa-0000-4000-8000-000000000002', device: 'vdc', kind: 'file', format: 'raw', source: file, backingBytes: GiB, hostBytes: GiB, guestBytes: GiB },
          { volumeId: 'aaaaaaaa-0000-4000-8000-000000000003', device: 'vdd', kind: 'block', readonly: true, backingBytes: GiB, hostBytes: GiB, guestBytes: GiB },
          { volumeId: 'aaaaaaaa-0000-4000-8000-000000000005', device: 'vde', kind: 'network', source: `${CONTRACT_IQN}/1`, portal: '127.0.0.1:3260', backingBytes: GiB, hostBytes: GiB, guestBytes: GiB },
          { volumeId: 'aaaaaaaa-0000-4000-8000-000000000006', device: 'vdf', kind: 'block', backingBytes: GiB, hostBytes: GiB, guestBytes: GiB },
          { volumeId: 'aaaaaaaa-0000-4000-8000-000000000007', device: 'vdg', kind: 'block', backingBytes: GiB, hostBytes: GiB, guestBytes: GiB, guestFs: fakeGuestFs({ type: 'ext4', mountpoint: '/data' }, GiB) },
        ],
      },
      {
        id: STOPPED,
        name: 'off',
        state: 'shutoff',
        disks: [{ volumeId: 'aaaaaaaa-0000-4000-8000-000000000004', device: 'vdb', kind: 'block', backingBytes: GiB, hostBytes: GiB, guestBytes: GiB }],
      },
    ],
  });
  return {
    driver,
    serverId: SERVER,
    blockVolumeId: 'aaaaaaaa-0000-4000-8000-000000000001',
    fileVolumeId: 'aaaaaaaa-0000-4000-8000-000000000002',
    readonlyVolumeId: 'aaaaaaaa-0000-4000-8000-000000000003',
    networkVolumeId: 'aaaaaaaa-0000-4000-8000-000000000005',
    stopped: { serverId: STOPPED, volumeId: 'aaaaaaaa-0000-4000-8000-000000000004' },
    guestFs: { blankVolumeId: 'aaaaaaaa-0000-4000-8000-000000000006', ext4VolumeId: 'aaaaaaaa-0000-4000-8000-000000000007', mountpoint: '/data' },
    growStorage: async (volumeId, bytes) => (volumeId === 'aaaaaaaa-0000-4000-8000-000000000005' ? truncate(lunFile, bytes) : driver.setBackingBytes(volumeId, bytes)),
    // The fake reads no image: any kernel image will do.
    spawn: { image: { kind: 'kernel', kernelPath: join(dir, 'vmlinux'), ramdiskPath: join(dir, 'initrd.gz'), cmdline: 'console=ttyS0' }, volumeFile: file },
    teardown: async () => {
      await driver.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});

/**
 * The fake sizes a `block` disk from its source (on the block volume backend it used to report 0
 * bytes, so an extend waited in wait_host until its deadline). The kinds of source, table-driven.
 */
describe('FakeDriver: block disks sized from their source', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oe-fake-block-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const fileOf = async (bytes: number) => {
    const f = join(await mkdtemp(join(dir, 'f-')), 'backing.raw');
    await writeFile(f, '');
    await truncate(f, bytes);
    return f;
  };

  it('attaches a regular file named as a block device at its size, keeps the host size until rescan, then extends to the file size', async () => {
    const f = await fileOf(64 * MiB);
    const driver = new FakeDriver({ servers: [emptyServer()] });
    await driver.attachVolume(SERVER, { volumeId: VOL, kind: 'block', source: f });
    await expectSizesFollowStorage(driver, (b) => truncate(f, b));
  });

  it('keeps the recorded sizes of a block disk whose source does not exist (inventory files)', async () => {
    const driver = new FakeDriver({
      servers: [{ ...emptyServer(), disks: [{ volumeId: VOL, device: 'vdb', kind: 'block', source: join(dir, 'no-such-loop'), backingBytes: 2 * GiB, hostBytes: GiB, guestBytes: GiB }] }],
    });
    expect(await driver.getHostBytes(SERVER, VOL)).toBe(GiB);
    await driver.rescan(SERVER, VOL);
    expect(await driver.getHostBytes(SERVER, VOL)).toBe(2 * GiB);
    expect(await driver.extendAttached(SERVER, VOL, 2 * GiB)).toBe(2 * GiB);
  });

  // A real block device node of this machine stands for the device; the sysfs tree is the test's
  // own (what the kernel would show for it), so this needs no root.
  const node = findBlockDeviceNode();
  describeReal(node ? undefined : 'no block device node under /dev')('on a block device node (sysfs of the test\'s own)', () => {
    async function sysfsFor(bytes: number, backingFile?: string): Promise<{ root: string; size: string }> {
      const root = await mkdtemp(join(dir, 'sys-'));
      const dev = join(root, 'class', 'block', basename(realpathSync(node!)));
      await mkdir(join(dev, 'loop'), { recursive: true });
      await writeFile(join(dev, 'size'), `${bytes / 512}\n`);
      if (backingFile) await writeFile(join(dev, 'loop', 'backing_file'), `${backingFile}\n`);
      return { root, size: join(dev, 'size') };
    }

    it('attaches a loop device at the kernel size (sysfs), keeps it until rescan, then extends to its backing file size', async () => {
      const backing = await fileOf(64 * MiB);
      const driver = new FakeDriver({ servers: [emptyServer()], sysfsRoot: (await sysfsFor(64 * MiB, backing)).root });
      await driver.attachVolume(SERVER, { volumeId: VOL, kind: 'block', source: node! });
      await expectSizesFollowStorage(driver, (b) => truncate(backing, b));
    });

    it('follows the kernel when a device grows by itself (an LVM volume, or a rescan done elsewhere)', async () => {
      const sys = await sysfsFor(64 * MiB);
      const driver = new FakeDriver({ servers: [emptyServer()], sysfsRoot: sys.root });
      await driver.attachVolume(SERVER, { volumeId: VOL, kind: 'block', source: node! });
      await writeFile(sys.size, `${(96 * MiB) / 512}\n`);
      expect(await driver.getHostBytes(SERVER, VOL)).toBe(96 * MiB);
      expect(await driver.getGuestBytes(SERVER, VOL)).toBe(64 * MiB);
      expect(await driver.extendAttached(SERVER, VOL, 96 * MiB)).toBe(96 * MiB);
    });
  });

  // A real loop device (root): the fake reads the kernel's own sysfs.
  const noLoop = process.getuid?.() !== 0 ? 'loop devices need root' : !hasLosetup() ? 'losetup is not installed' : undefined;
  describeReal(noLoop)('on a real loop device', () => {
    let loop: string | undefined;
    afterAll(() => {
      if (loop) execFileSync('losetup', ['-d', loop]);
    });

    it('attaches it at its size, keeps it after its file grew until rescan, then extends the guest to the new size', async () => {
      const backing = await fileOf(64 * MiB);
      loop = execFileSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' }).trim();
      const driver = new FakeDriver({ servers: [emptyServer()] });
      await driver.attachVolume(SERVER, { volumeId: VOL, kind: 'block', source: loop });
      await expectSizesFollowStorage(driver, (b) => truncate(backing, b));
      // The kernel still sees the old size: the fake recorded the rescan, it did not perform it.
      expect(Number(readFileSync(`/sys/class/block/${basename(loop)}/size`, 'utf8')) * 512).toBe(64 * MiB);
    });

    it('extends an in-use volume of the block backend end to end (no wait in wait_host until the deadline)', async () => {
      const h = await makeService({ config: { backends: ['block'], defaultBackend: 'block', extendTimeoutMs: 20_000 } });
      const files = join(h.config.dataDir, 'volumes', 'block');
      try {
        const created = await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: 'blk', size_bytes: 64 * MiB } });
        const id = created.body.volume.id;
        await h.compute.request('POST', `/v2/${PROJECT}/servers/${SVC_SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
        const driver = h.service.driver as FakeDriver;
        expect(driver.snapshot(SVC_SERVER).disks.find((d) => d.volumeId === id)?.guestBytes).toBe(64 * MiB);
        await h.volume.request('POST', `/v3/${PROJECT}/volumes/${id}/action`, { 'os-extend-bytes': { new_bytes: 128 * MiB } });
        let v: { status: string; size_bytes: number; extend: { step: string } | null };
        const end = Date.now() + 10_000;
        do {
          await new Promise((r) => setTimeout(r, 20));
          v = (await h.volume.request<{ volume: typeof v }>('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`)).body.volume;
        } while (v.status === 'extending' && Date.now() < end);
        expect(v, `still at step ${v.extend?.step}`).toMatchObject({ status: 'in-use', size_bytes: 128 * MiB });
        expect(driver.snapshot(SVC_SERVER).disks.find((d) => d.volumeId === id)?.guestBytes).toBe(128 * MiB);
        await h.compute.request('DELETE', `/v2/${PROJECT}/servers/${SVC_SERVER}/os-volume_attachments/${id}`);
        await h.volume.request('DELETE', `/v3/${PROJECT}/volumes/${id}`);
      } finally {
        // Loop devices are global to the machine: detach any the backend left behind.
        for (const f of readdirSync(files, { withFileTypes: true }).filter((e) => e.isFile())) {
          for (const line of execFileSync('losetup', ['-j', join(files, f.name)], { encoding: 'utf8' }).split('\n')) {
            const dev = /^(\/dev\/loop\d+):/.exec(line)?.[1];
            if (dev) execFileSync('losetup', ['-d', dev]);
          }
        }
        await h.cleanup();
      }
    });
  });
});

/**
 * Every kind of disk gets a size at attach from what connection_info names (it used to be 0 for
 * block and iSCSI disks), and keeps the kind's rule for when the host sees growth.
 */
describe('FakeDriver: every kind of disk sized from connection_info', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oe-fake-kinds-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const sparse = async (name: string, bytes: number): Promise<string> => {
    const f = join(dir, name);
    await writeFile(f, '');
    await truncate(f, bytes);
    return f;
  };
  const IQN = 'iqn.2026-11.dev.online-extend:kinds';

  type Case = { kind: 'file' | 'block' | 'network'; needsRescan: boolean; when: string };
  const cases: Case[] = [
    { kind: 'file', needsRescan: false, when: 'at once (the file is the host\'s view)' },
    { kind: 'block', needsRescan: true, when: 'only after a rescan (as the kernel)' },
    { kind: 'network', needsRescan: false, when: 'as soon as the target exports it (no host rescan)' },
  ];

  it.each(cases)('attaches a $kind disk at the size of its source, and the host sees its growth $when', async ({ kind, needsRescan }) => {
    const backing = await sparse(`${kind}.raw`, 64 * MiB);
    const lunsRead: unknown[] = [];
    const driver = new FakeDriver({
      servers: [emptyServer()],
      readLunBytes: async (lun) => {
        lunsRead.push(lun);
        return lun.iqn === IQN ? (await stat(backing)).size : undefined;
      },
    });
    const spec =
      kind === 'network'
        ? { volumeId: VOL, kind, source: `${IQN}/1`, portal: '127.0.0.1:3260' }
        : { volumeId: VOL, kind, source: backing, ...(kind === 'file' ? { format: 'raw' as const } : {}) };
    await driver.attachVolume(SERVER, spec);
    expect(await driver.getHostBytes(SERVER, VOL)).toBe(64 * MiB);
    expect(await driver.getGuestBytes(SERVER, VOL)).toBe(64 * MiB);
    await truncate(backing, 96 * MiB); // what the volume backend's extend does
    expect(await driver.getHostBytes(SERVER, VOL)).toBe(needsRescan ? 64 * MiB : 96 * MiB);
    await driver.rescan(SERVER, VOL);
    expect(await driver.getHostBytes(SERVER, VOL)).toBe(96 * MiB);
    expect(await driver.extendAttached(SERVER, VOL, 96 * MiB)).toBe(96 * MiB);
    expect(await driver.getGuestBytes(SERVER, VOL)).toBe(96 * MiB);
    if (kind === 'network') expect(lunsRead[0]).toEqual({ iqn: IQN, lun: 1, portal: '127.0.0.1:3260' });
    else expect(lunsRead).toEqual([]);
  });

  it('refuses an iSCSI disk past what the target exports with the libvirt driver\'s error (409 HostSizeTooSmall, "rescan first"), and the guest keeps its size', async () => {
    const lun = await sparse('lun-refuse.raw', 64 * MiB);
    const driver = new FakeDriver({ servers: [emptyServer()], readLunBytes: async () => (await stat(lun)).size });
    await driver.attachVolume(SERVER, { volumeId: VOL, kind: 'network', source: `${IQN}/1` });
    const err = await driver.extendAttached(SERVER, VOL, 128 * MiB).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'HostSizeTooSmall', status: 409 });
    expect((err as Error).message).toMatch(/rescan first/);
    expect(await driver.getGuestBytes(SERVER, VOL)).toBe(64 * MiB);
    expect(driver.resizes).toBe(0);
  });

  it('sizes an iSCSI disk by what it is told when it has no way to read the LUN', async () => {
    const driver = new FakeDriver({ servers: [emptyServer()] });
    await driver.attachVolume(SERVER, { volumeId: VOL, kind: 'network', source: `${IQN}/1` });
    driver.setBackingBytes(VOL, 80 * MiB); // the target exports the LUN with 80 MiB
    expect(await driver.getHostBytes(SERVER, VOL)).toBe(80 * MiB);
    expect(await driver.extendAttached(SERVER, VOL, 80 * MiB)).toBe(80 * MiB);
  });

  it('keeps the last size it read when the target cannot be read, and never shrinks it', async () => {
    let answer: number | undefined = 64 * MiB;
    const driver = new FakeDriver({
      servers: [emptyServer()],
      readLunBytes: async () => {
        if (answer === undefined) throw new Error('target unreachable');
        return answer;
      },
    });
    await driver.attachVolume(SERVER, { volumeId: VOL, kind: 'network', source: `${IQN}/1` });
    answer = undefined;
    expect(await driver.getHostBytes(SERVER, VOL)).toBe(64 * MiB);
    answer = 32 * MiB;
    expect(await driver.getHostBytes(SERVER, VOL)).toBe(64 * MiB);
  });

  it('gives volumes attached to one server at the same time different device names', async () => {
    const files = await Promise.all(['a', 'b', 'c'].map((n) => sparse(`race-${n}.raw`, 8 * MiB)));
    const driver = new FakeDriver({ servers: [emptyServer()] });
    const devices = await Promise.all(
      files.map((f, i) => driver.attachVolume(SERVER, { volumeId: `cccccccc-0000-4000-8000-00000000000${i}`, kind: 'file', format: 'raw', source: f })),
    );
    expect(new Set(devices).size).toBe(3);
  });
});

const MiB = 2 ** 20;
const VOL = 'bbbbbbbb-0000-4000-8000-000000000001';
const emptyServer = (): FakeServer => ({ id: SERVER, name: 'vm', state: 'active', disks: [] });

/** A 64 MiB block disk just attached: host and guest see 64 MiB; storage grows to 128 MiB; rescan; extend. */
async function expectSizesFollowStorage(driver: FakeDriver, growStorage: (bytes: number) => Promise<void>): Promise<void> {
  expect(await driver.getHostBytes(SERVER, VOL)).toBe(64 * MiB);
  expect(await driver.getGuestBytes(SERVER, VOL)).toBe(64 * MiB);
  await growStorage(128 * MiB); // what the block volume backend does
  expect(await driver.getHostBytes(SERVER, VOL)).toBe(64 * MiB);
  await expect(driver.extendAttached(SERVER, VOL, 128 * MiB)).rejects.toMatchObject({ code: 'HostSizeTooSmall' });
  await driver.rescan(SERVER, VOL);
  expect(await driver.getHostBytes(SERVER, VOL)).toBe(128 * MiB);
  expect(await driver.extendAttached(SERVER, VOL, 128 * MiB)).toBe(128 * MiB);
  expect(await driver.getGuestBytes(SERVER, VOL)).toBe(128 * MiB);
}

/** A block device node of this machine (`/dev/loop0`, `/dev/vda`…), or undefined. */
function findBlockDeviceNode(): string | undefined {
  for (const name of readdirSync('/dev').sort()) {
    const p = join('/dev', name);
    try {
      if (statSync(p).isBlockDevice()) return p;
    } catch {
      // gone meanwhile, or unreadable: look further
    }
  }
  return undefined;
}

function hasLosetup(): boolean {
  try {
    execFileSync('losetup', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('FakeDriver: the size of its servers (vCPUs, memory)', () => {
  const inventory = (server: Record<string, unknown>) => JSON.stringify({ servers: [{ id: 'srv-1', ...server }] });

  it('reports the vcpus and memory_mb an inventory file gives a server, and none for a server without them (no default is made up)', async () => {
    const inv = parseFakeInventory(JSON.stringify({ servers: [{ id: 'a', vcpus: 2, memory_mb: 1024 }, { id: 'b' }, { id: 'c', vcpus: 1 }] }));
    const driver = new FakeDriver({ servers: inv.servers });
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((id) => driver.getServer(id)));
    expect(a).toMatchObject({ vcpus: 2, memoryMb: 1024 });
    expect(b).not.toHaveProperty('vcpus');
    expect(b).not.toHaveProperty('memoryMb');
    expect(c).toMatchObject({ vcpus: 1 });
    expect(c).not.toHaveProperty('memoryMb');
    expect((await driver.listServers()).find((s) => s.id === 'a')).toEqual(a);
  });

  it.each([
    ['vcpus', 0],
    ['vcpus', 1.5],
    ['vcpus', '2'],
    ['memory_mb', -1],
    ['memory_mb', null],
  ])('refuses an inventory whose %s is %j, naming the field', (field, value) => {
    expect(() => parseFakeInventory(inventory({ [field]: value }))).toThrow(new RegExp(`servers\\[0\\]\\.${field} must be a positive integer`));
  });

  it('builds a server with the size spawn asks for, and reports it', async () => {
    const driver = new FakeDriver();
    const spawned = await driver.spawn({ id: 'srv-new', name: 'n', projectId: 'p', userId: 'u', image: { kind: 'disk', diskPath: '/i.qcow2', diskFormat: 'qcow2' }, vcpus: 3, ramMb: 640, rootDiskGb: 0 });
    expect(spawned).toMatchObject({ vcpus: 3, memoryMb: 640 });
    expect(await driver.getServer('srv-new')).toMatchObject({ vcpus: 3, memoryMb: 640 });
  });
});

/** The fake guest's filesystems (growGuestFilesystem), case by case: what LibvirtDriver's guest agent answers. */
describe('FakeDriver: guest filesystems', () => {
  const SRV = '33333333-3333-4333-8333-333333333333';
  const VOL = 'bbbbbbbb-0000-4000-8000-000000000001';
  const MiB = 2 ** 20;
  const fresh = () =>
    new FakeDriver({ servers: [{ id: SRV, name: 'fs', state: 'active', disks: [{ volumeId: VOL, device: 'vdb', kind: 'block', backingBytes: 64 * MiB, hostBytes: 64 * MiB, guestBytes: 64 * MiB }] }] });
  /** The guest sees the disk grown to 128 MiB (its storage and host view too). */
  const grownDisk = async (d: FakeDriver) => {
    d.setBackingBytes(VOL, 128 * MiB);
    await d.rescan(SRV, VOL);
    await d.extendAttached(SRV, VOL, 128 * MiB);
  };

  it.each([
    { name: 'a paused guest has no agent answering', fs: { type: 'ext4', mountpoint: '/d' }, state: 'paused' as const, want: { grown: false, reason: 'no_guest_agent' }, bytes: 64 * MiB },
    { name: 'a partitioned xfs grows its partition to the disk end, then the xfs', fs: { type: 'xfs', mountpoint: '/d', partitioned: true }, want: { grown: true, device: '/dev/vdb1', partitionGrown: true, fsBytesBefore: 63 * MiB, fsBytes: 127 * MiB }, bytes: 127 * MiB },
    { name: 'an unmounted partitioned xfs gets its partition grown but not the xfs', fs: { type: 'xfs', partitioned: true }, want: { grown: false, reason: 'not_mounted', fsBytes: 63 * MiB }, bytes: 63 * MiB },
    { name: 'ext3 grows like ext4', fs: { type: 'ext3' }, want: { grown: true, fsType: 'ext3', fsBytes: 128 * MiB }, bytes: 128 * MiB },
    { name: 'vfat is unsupported', fs: { type: 'vfat', mountpoint: '/boot' }, want: { grown: false, reason: 'unsupported_filesystem' }, bytes: 64 * MiB },
  ])('$name', async (c) => {
    // The guest made its filesystem on the 64 MiB disk; then the disk grew to 128 MiB.
    const d = fresh();
    d.setGuestFilesystem(SRV, VOL, c.fs);
    await grownDisk(d);
    if (c.state) d.setState(SRV, c.state);
    const r = await d.growGuestFilesystem(SRV, VOL);
    expect(r).toMatchObject(c.want);
    expect(d.snapshot(SRV).disks[0]!.guestFs!.bytes).toBe(c.bytes);
  });

  it('keeps guest filesystems and the agent switch across a restart (state file) and reads them from an inventory file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'oe-fake-fs-'));
    try {
      const statePath = join(dir, 'state.json');
      const a = new FakeDriver({ statePath, servers: [fresh().snapshot(SRV)] });
      a.setGuestFilesystem(SRV, VOL, { type: 'ext4', mountpoint: '/d' });
      a.setGuestAgent(SRV, false);
      const b = new FakeDriver({ statePath });
      expect(b.snapshot(SRV)).toMatchObject({ guestAgent: false, disks: [{ guestFs: { type: 'ext4', mountpoint: '/d', bytes: 64 * MiB } }] });
      expect(await b.growGuestFilesystem(SRV, VOL)).toMatchObject({ grown: false, reason: 'no_guest_agent' });
      const inv = parseFakeInventory(
        JSON.stringify({ servers: [{ id: SRV, guest_agent: true, disks: [{ volume_id: VOL, device: 'vdb', bytes: 64 * MiB, guest_fs: { type: 'xfs', mountpoint: '/x', partitioned: true } }] }] }),
      );
      expect(inv.capabilities.growGuestFilesystem).toBe(true);
      expect(inv.servers[0]!.disks[0]!.guestFs).toEqual({ type: 'xfs', mountpoint: '/x', partition: { startBytes: MiB, bytes: 63 * MiB }, bytes: 63 * MiB });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses with GuestFilesystemGrowNotSupported (501) when the capability is off', async () => {
    const d = new FakeDriver({ capabilities: { growGuestFilesystem: false }, servers: [fresh().snapshot(SRV)] });
    await expect(d.growGuestFilesystem(SRV, VOL)).rejects.toMatchObject({ code: 'GuestFilesystemGrowNotSupported', status: 501 });
  });
});
