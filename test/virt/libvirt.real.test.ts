/**
 * The libvirt remote client and LibvirtDriver against a real libvirtd: the lab's (src/lab, one
 * private lab per describe block). Client-level tests use a QEMU domain that boots nothing
 * (QEMU resizes its disks whatever the guest runs); driver tests that need a guest to act
 * (hot-unplug, the size the guest itself reports) use the lab's test guest. The VirtDriver
 * contract suite runs here against LibvirtDriver on the lab guest.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it, onTestFinished } from 'vitest';
import { pino } from 'pino';
import { ComputeManager } from '../../src/compute/manager.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { ServiceError } from '../../src/errors.js';
import { LibvirtDriver } from '../../src/virt/libvirt/driver.js';
import { BLOCK_RESIZE_BYTES, DomainState, RemoteClient } from '../../src/virt/libvirt/remote/client.js';
import { LibvirtConnectionError, LibvirtError, VirErrorCode } from '../../src/virt/libvirt/remote/errors.js';
import { bytesToUuid, type RemoteDomain } from '../../src/virt/libvirt/remote/protocol.js';
import { describeDriverContract } from '../contract/driver.contract.js';
import { describeReal } from '../support/real.js';
import { diskXml, domainXml, losetupAttach, losetupDetach } from './support/domains.js';
import { WaitForSizeTimeout, bootGuest, type GuestShell as LabGuest } from '../../src/lab/index.js';
import { labMissing, startLab, type TestLab } from './support/lab.js';
import { tgtOn, type TestTgt } from './support/tgtd.js';

const MiB = 1024 * 1024;
const describeLibvirt = describeReal(labMissing());

/** A sparse file of `bytes` under the lab dir (labDown cleans up loop devices backed there). */
async function volumeFile(lv: TestLab, name: string, bytes: number): Promise<string> {
  await mkdir(join(lv.dir, 'vols'), { recursive: true });
  const p = join(lv.dir, 'vols', name);
  await writeFile(p, '');
  await truncate(p, bytes);
  return p;
}

describeLibvirt('libvirt remote client on a real libvirtd', () => {
  let lv: TestLab;
  let client: RemoteClient;
  let dom: RemoteDomain;
  const uuid = randomUUID();

  beforeAll(async () => {
    lv = await startLab();
    client = new RemoteClient({ uri: lv.lab.libvirtUri });
    const a = await volumeFile(lv, 'a.raw', 64 * MiB);
    dom = await client.createXml(domainXml({ name: 'oe-client-test', uuid, projectId: 'p1', disks: [{ serial: 'vol-a', target: 'vdb', type: 'file', path: a }] }));
  });
  afterAll(async () => {
    await client?.close();
    await lv?.down();
  });

  it('connects, lists and looks up the domain by UUID', async () => {
    const all = await client.listAllDomains(0);
    expect(all.map((d) => bytesToUuid(d.uuid))).toContain(uuid);
    const found = await client.lookupByUuid(uuid);
    expect(found.name).toBe('oe-client-test');
    expect(found.id).toBe(dom.id);
  });

  it('reads the domain state and XML', async () => {
    expect((await client.getState(dom)).state).toBe(DomainState.RUNNING);
    expect(await client.getXmlDesc(dom)).toContain('<serial>vol-a</serial>');
  });

  it('answers an unknown UUID with libvirt NO_DOMAIN', async () => {
    const err = await client.lookupByUuid(randomUUID()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LibvirtError);
    expect((err as LibvirtError).code).toBe(VirErrorCode.NO_DOMAIN);
  });

  it('resizes a disk in bytes and reads the new size back live', async () => {
    await client.blockResize(dom, 'vdb', 96 * MiB, BLOCK_RESIZE_BYTES);
    expect((await client.getBlockInfo(dom, 'vdb')).capacity).toBe(96 * MiB);
    const qb = JSON.parse(await client.qemuMonitorCommand(dom, '{"execute":"query-block"}')) as {
      return: Array<{ inserted?: { image?: { 'virtual-size'?: number } } }>;
    };
    expect(qb.return.map((e) => e.inserted?.image?.['virtual-size'])).toContain(96 * MiB);
    const stats = await client.getDomainStats([dom], 32);
    expect(stats[0]?.params.get('block.0.capacity')).toBe(BigInt(96 * MiB));
  });

  it('serves many calls in flight on one connection', async () => {
    const states = await Promise.all(Array.from({ length: 50 }, () => client.getState(dom)));
    expect(new Set(states.map((s) => s.state))).toEqual(new Set([DomainState.RUNNING]));
  });

  it('names the URI in its logs, never in the error a client gets, when the socket cannot be reached', async () => {
    const uri = `qemu+unix:///system?socket=${join(lv.dir, 'no-such-sock')}`;
    const c = new RemoteClient({ uri });
    const err = await c.connect().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LibvirtConnectionError);
    expect((err as Error).message).toContain(uri);
    await c.close();
    const d = new LibvirtDriver({ uri });
    const derr = (await d.listServers().catch((e: unknown) => e)) as ServiceError;
    expect(derr.code).toBe('HypervisorUnreachable');
    expect(derr.final).toBe(false);
    expect(derr.message).not.toContain(lv.dir);
    expect(derr.detail).toContain(uri);
    await d.close();
  });
});

describeLibvirt('LibvirtDriver on the lab guest', () => {
  let lv: TestLab;
  let client: RemoteClient;
  let driver: LibvirtDriver;
  let guest: LabGuest;
  let uuid: string;
  let fRaw: string;
  let attRaw: string;

  beforeAll(async () => {
    lv = await startLab();
    client = new RemoteClient({ uri: lv.lab.libvirtUri });
    fRaw = await volumeFile(lv, 'f.raw', 16 * MiB);
    attRaw = await volumeFile(lv, 'att.raw', 8 * MiB);
    guest = await bootGuest(lv.lab, { name: 'oe-driver-test', disks: [diskXml({ serial: 'vol-f', target: 'vda', type: 'file', path: fRaw })] });
    uuid = guest.uuid;
    driver = new LibvirtDriver({ uri: lv.lab.libvirtUri, defaultProjectId: 'default-project', detachTimeoutMs: 15_000 });
  });
  afterAll(async () => {
    await driver?.close();
    await client?.close();
    await lv?.down();
  });

  it('fills in the default project for domains without our metadata', async () => {
    const s = (await driver.listServers()).find((x) => x.id === uuid);
    expect(s?.projectId).toBe('default-project');
    expect(s?.disks).toEqual([{ volumeId: 'vol-f', device: 'vda', kind: 'file', format: 'raw', source: fRaw }]);
  });

  it('hot-plugs a volume on the next free device, is idempotent, and the guest sees it grow', async () => {
    const spec = { volumeId: 'vol-att', kind: 'file' as const, format: 'raw' as const, source: attRaw };
    expect(await driver.attachVolume(uuid, spec)).toBe('vdb');
    expect(await driver.attachVolume(uuid, spec)).toBe('vdb');
    await guest.waitForSize('vdb', 8 * MiB);
    expect(await driver.getGuestBytes(uuid, 'vol-att')).toBe(8 * MiB);
    expect(await driver.extendAttached(uuid, 'vol-att', 12 * MiB)).toBe(12 * MiB);
    expect(await guest.waitForSize('vdb', 12 * MiB)).toBe(12 * MiB);
  });

  it('hot-unplugs by serial and waits until the guest released the disk', async () => {
    const mark = await guest.logMark();
    await driver.detachVolume(uuid, 'vol-att');
    const s = (await driver.listServers()).find((x) => x.id === uuid);
    expect(s?.disks.map((d) => d.volumeId)).toEqual(['vol-f']);
    await guest.waitForLog(/^OE-SIZES vda=\d+ *$/m, 15_000, mark);
    const err = (await driver.detachVolume(uuid, 'vol-att').catch((e: unknown) => e)) as ServiceError;
    expect(err.code).toBe('VolumeNotAttached');
  });

  it('reads the same live size through query-block and GetBlockInfo', async () => {
    const viaBlockInfo = new LibvirtDriver({ uri: lv.lab.libvirtUri, liveSizeMethod: 'blockinfo' });
    try {
      const a = await driver.getGuestBytes(uuid, 'vol-f');
      expect(await viaBlockInfo.getGuestBytes(uuid, 'vol-f')).toBe(a);
      expect(await driver.extendAttached(uuid, 'vol-f', a + MiB)).toBe(a + MiB);
      expect(await viaBlockInfo.getGuestBytes(uuid, 'vol-f')).toBe(a + MiB);
    } finally {
      await viaBlockInfo.close();
    }
  });

  it('refuses a size that is not a positive whole number of bytes', async () => {
    const err = (await driver.extendAttached(uuid, 'vol-f', 1.5).catch((e: unknown) => e)) as ServiceError;
    expect(err.code).toBe('InvalidInput');
  });

  it('rounds a qcow2-style odd size up to what QEMU reports, never down', async () => {
    const got = await driver.extendAttached(uuid, 'vol-f', 20 * MiB + 1000);
    expect(got).toBeGreaterThanOrEqual(20 * MiB + 1000);
    expect(got % 512).toBe(0);
  });

  it('serializes concurrent extends of one volume (through the compute manager, which holds the lock) so a smaller request cannot shrink a larger one', async () => {
    const base = await driver.getGuestBytes(uuid, 'vol-f');
    const store = new SqliteStore(join(lv.dir, 'manager.sqlite'));
    onTestFinished(() => store.close());
    const manager = new ComputeManager({ host: 'lab', driver, store, defaultProjectId: 'p', logger: pino({ level: 'silent' }) });
    const [big, small] = await Promise.allSettled([
      manager.extendAttached(uuid, 'vol-f', base + 8 * MiB),
      manager.extendAttached(uuid, 'vol-f', base + 4 * MiB),
    ]);
    expect(big).toEqual({ status: 'fulfilled', value: base + 8 * MiB });
    expect(small.status).toBe('rejected');
    expect(((small as PromiseRejectedResult).reason as ServiceError).code).toBe('VolumeShrinkRefused');
    expect(await driver.getGuestBytes(uuid, 'vol-f')).toBe(base + 8 * MiB);
  });

  it('sees a domain restart (new id) instead of trusting cached XML', async () => {
    const d = await client.lookupByUuid(uuid);
    expect(await driver.getGuestBytes(uuid, 'vol-f')).toBeGreaterThan(0);
    await client.destroy(d);
    const err = (await driver.getGuestBytes(uuid, 'vol-f').catch((e: unknown) => e)) as ServiceError;
    expect(err.code).toBe('InstanceNotFound');
    await client.createXml(domainXml({ name: 'oe-driver-test', uuid, disks: [{ serial: 'vol-f', target: 'vdd', type: 'file', path: fRaw }] }));
    const s = (await driver.listServers()).find((x) => x.id === uuid);
    expect(s?.disks[0]?.device).toBe('vdd');
  });
});

describeLibvirt('LibvirtDriver on a persistent domain (offline extend)', () => {
  let lv: TestLab;
  let client: RemoteClient;
  let driver: LibvirtDriver;
  let dom: RemoteDomain;
  let fileVol: string;
  let blockFile: string;
  let loop: string;
  const uuid = randomUUID();

  beforeAll(async () => {
    lv = await startLab();
    client = new RemoteClient({ uri: lv.lab.libvirtUri });
    fileVol = await volumeFile(lv, 'p-file.raw', 16 * MiB);
    blockFile = await volumeFile(lv, 'p-block.img', 16 * MiB);
    loop = losetupAttach(blockFile);
    // A defined domain that boots nothing: QEMU runs, which is all attach and resize need.
    dom = await client.defineXml(domainXml({ name: 'oe-persistent', uuid, disks: [] }));
    await client.create(dom);
    driver = new LibvirtDriver({ uri: lv.lab.libvirtUri, detachTimeoutMs: 1_000 });
  });
  afterAll(async () => {
    await driver?.close();
    const d = await client?.lookupByUuid(uuid).catch(() => undefined);
    if (d) {
      await client.destroy(d).catch(() => undefined);
      await client.undefine(d).catch(() => undefined);
    }
    await client?.close();
    await lv?.down();
    if (loop) losetupDetach(loop);
  });

  const inactiveXml = async (): Promise<string> => client.getXmlDesc(await client.lookupByUuid(uuid), 2);

  it('attaches to the running domain and to its persistent definition, with the serial', async () => {
    expect(await driver.attachVolume(uuid, { volumeId: 'vol-pf', kind: 'file', format: 'raw', source: fileVol })).toBe('vdb');
    expect(await driver.attachVolume(uuid, { volumeId: 'vol-pb', kind: 'block', source: loop })).toBe('vdc');
    const config = await inactiveXml();
    expect(config).toContain('<serial>vol-pf</serial>');
    expect(config).toContain('<serial>vol-pb</serial>');
    expect(await driver.getGuestBytes(uuid, 'vol-pb')).toBe(16 * MiB);
  });

  it('keeps the volumes after a shut-off; rescan and host sizes work there, a resize answers InstanceStopped', async () => {
    await client.destroy(await client.lookupByUuid(uuid));
    const s = (await driver.listServers()).find((x) => x.id === uuid);
    expect(s?.state).toBe('shutoff');
    expect(s?.disks.map((d) => d.volumeId).sort()).toEqual(['vol-pb', 'vol-pf']);
    // Offline: the storage grows, the host rescans and sees it, the guest is not asked.
    await truncate(blockFile, 32 * MiB);
    await truncate(fileVol, 24 * MiB);
    expect(await driver.getHostBytes(uuid, 'vol-pb')).toBe(16 * MiB);
    await driver.rescan(uuid, 'vol-pb');
    expect(await driver.getHostBytes(uuid, 'vol-pb')).toBe(32 * MiB);
    expect(await driver.getHostBytes(uuid, 'vol-pf')).toBe(24 * MiB);
    for (const v of ['vol-pb', 'vol-pf']) {
      expect(((await driver.getGuestBytes(uuid, v).catch((e: unknown) => e)) as ServiceError).code).toBe('InstanceStopped');
      const err = (await driver.extendAttached(uuid, v, 40 * MiB).catch((e: unknown) => e)) as ServiceError;
      expect(err.code).toBe('InstanceStopped');
      expect(err.status).toBe(409);
    }
  });

  it('boots with the sizes the host had: the offline extend reached the guest', async () => {
    await client.create(await client.lookupByUuid(uuid));
    expect(await driver.getGuestBytes(uuid, 'vol-pb')).toBe(32 * MiB);
    expect(await driver.getGuestBytes(uuid, 'vol-pf')).toBe(24 * MiB);
  });

  it('detaches from the persistent definition too', async () => {
    // This domain boots no OS: nothing answers the unplug request, so QEMU keeps the live disk
    // until it stops; what matters here is the definition it will boot with next.
    const err = (await driver.detachVolume(uuid, 'vol-pf').catch((e: unknown) => e)) as ServiceError | undefined;
    // The live unplug waits for a guest that never answers: uncertain (it may still happen).
    expect(err).toMatchObject({ code: 'DriverFailed', final: false });
    expect(await inactiveXml()).not.toContain('<serial>vol-pf</serial>');
    expect(await inactiveXml()).toContain('<serial>vol-pb</serial>');
  });
});

describeLibvirt('LibvirtDriver with an iSCSI network disk', () => {
  let lv: TestLab;
  let tgt: TestTgt;
  let client: RemoteClient;
  let driver: LibvirtDriver;
  let lunFile: string;
  const uuid = randomUUID();
  const iqn = `iqn.2024-01.dev.online-extend:test-${uuid.slice(0, 8)}`;

  beforeAll(async () => {
    lv = await startLab();
    tgt = tgtOn(lv.lab.tgtPortal, lv.lab.tgtControlPort);
    lunFile = await volumeFile(lv, 'lun.img', 32 * MiB);
    const source = tgt.export(iqn, lunFile);
    client = new RemoteClient({ uri: lv.lab.libvirtUri });
    await client.createXml(
      domainXml({ name: 'oe-iscsi-test', uuid, disks: [{ serial: 'vol-i', target: 'vdb', type: 'network', path: source, portal: tgt.portal }] }),
    );
    driver = new LibvirtDriver({ uri: lv.lab.libvirtUri });
  });
  afterAll(async () => {
    await driver?.close();
    await client?.close();
    await tgt?.stop();
    await lv?.down();
  });

  it('lists the disk as a network volume named iqn/lun', async () => {
    const s = (await driver.listServers()).find((x) => x.id === uuid);
    expect(s?.disks).toEqual([{ volumeId: 'vol-i', device: 'vdb', kind: 'network', source: `${iqn}/1` }]);
  });

  it('reads the LUN capacity on the host as an initiator does', async () => {
    expect(await driver.getHostBytes(uuid, 'vol-i')).toBe(32 * MiB);
    expect(await driver.getGuestBytes(uuid, 'vol-i')).toBe(32 * MiB);
  });

  it('refuses with HostSizeTooSmall until the target exposes the new size, then grows', async () => {
    await truncate(lunFile, 48 * MiB);
    const err = (await driver.extendAttached(uuid, 'vol-i', 48 * MiB).catch((e: unknown) => e)) as ServiceError;
    expect(err.code).toBe('HostSizeTooSmall');
    expect(err.status).toBe(409);
    expect(await driver.getGuestBytes(uuid, 'vol-i')).toBe(32 * MiB);
    tgt.reexpose(iqn);
    await driver.rescan(uuid, 'vol-i'); // a no-op for network disks
    expect(await driver.getHostBytes(uuid, 'vol-i')).toBe(48 * MiB);
    expect(await driver.extendAttached(uuid, 'vol-i', 48 * MiB)).toBe(48 * MiB);
  });
});

// The contract suite on LibvirtDriver: the lab guest with a loop-device block disk, a raw file
// disk and a read-only disk (the guest names them vda, vdb, vdc and reports their sizes), plus
// a defined, shut-off domain with a loop-device block disk.
describeDriverContract(
  'LibvirtDriver (lab libvirtd, lab guest)',
  async () => {
    const lv = await startLab();
    const client = new RemoteClient({ uri: lv.lab.libvirtUri });
    const loops: string[] = [];
    let tgt: TestTgt | undefined;
    try {
      const blockFile = await volumeFile(lv, 'block.img', 64 * MiB);
      const loop = losetupAttach(blockFile);
      loops.push(loop);
      const offFile = await volumeFile(lv, 'off.img', 8 * MiB);
      const offLoop = losetupAttach(offFile);
      loops.push(offLoop);
      const ids = { block: randomUUID(), file: randomUUID(), ro: randomUUID(), off: randomUUID(), net: randomUUID(), blank: randomUUID(), ext4: randomUUID() };
      // The iSCSI disk: a file exported as LUN 1 by the lab's tgtd, opened by QEMU's initiator.
      tgt = tgtOn(lv.lab.tgtPortal, lv.lab.tgtControlPort);
      const lunFile = await volumeFile(lv, 'lun.img', 32 * MiB);
      const netIqn = `iqn.2024-01.dev.online-extend:contract-${ids.net.slice(0, 8)}`;
      const netSource = tgt.export(netIqn, lunFile);
      // Two more file disks for growGuestFilesystem: one blank, one ext4 made and mounted in the guest.
      const blankFile = await volumeFile(lv, 'blank.raw', 16 * MiB);
      const ext4File = await volumeFile(lv, 'ext4.raw', 64 * MiB);
      const files: Record<string, string> = { [ids.block]: blockFile, [ids.off]: offFile, [ids.net]: lunFile, [ids.ext4]: ext4File, [ids.blank]: blankFile };
      const guestDev: Record<string, string> = { [ids.block]: 'vda', [ids.file]: 'vdb', [ids.ro]: 'vdc', [ids.net]: 'vdd', [ids.blank]: 'vde', [ids.ext4]: 'vdf' };
      const guest = await bootGuest(lv.lab, {
        name: 'oe-contract',
        projectId: 'p-contract',
        disks: [
          diskXml({ serial: ids.block, target: 'vda', type: 'block', path: loop }),
          diskXml({ serial: ids.file, target: 'vdb', type: 'file', path: await volumeFile(lv, 'file.raw', 32 * MiB) }),
          diskXml({ serial: ids.ro, target: 'vdc', type: 'file', path: await volumeFile(lv, 'ro.raw', 8 * MiB), readonly: true }),
          diskXml({ serial: ids.net, target: 'vdd', type: 'network', path: netSource, portal: tgt.portal }),
          diskXml({ serial: ids.blank, target: 'vde', type: 'file', path: blankFile }),
          diskXml({ serial: ids.ext4, target: 'vdf', type: 'file', path: ext4File }),
        ],
      });
      // 4 KiB blocks and few inodes: what the contract's "fills its grown disk" bound assumes (a
      // small ext4's default 1 KiB blocks and inode ratio spend ~6% of a growth on inode tables).
      await guest.exec('mkfs.ext4 -q -F -b 4096 -i 65536 /dev/vdf && mkdir -p /mnt/contract && mount -t ext4 /dev/vdf /mnt/contract', 60_000);
      const stoppedId = randomUUID();
      await client.defineXml(
        domainXml({ name: 'oe-contract-off', uuid: stoppedId, disks: [{ serial: ids.off, target: 'vdb', type: 'block', path: offLoop }] }),
      );
      const driver = new LibvirtDriver({ uri: lv.lab.libvirtUri, instancesDir: join(lv.dir, 'instances') });
      return {
        driver,
        serverId: guest.uuid,
        spawn: {
          image: { kind: 'kernel', kernelPath: lv.lab.kernel, ramdiskPath: lv.lab.initrd, cmdline: lv.lab.cmdline },
          volumeFile: await volumeFile(lv, 'spawned-vol.raw', 8 * MiB),
        },
        blockVolumeId: ids.block,
        fileVolumeId: ids.file,
        readonlyVolumeId: ids.ro,
        networkVolumeId: ids.net,
        stopped: { serverId: stoppedId, volumeId: ids.off },
        guestFs: { blankVolumeId: ids.blank, ext4VolumeId: ids.ext4, mountpoint: '/mnt/contract' },
        growStorage: async (volumeId: string, bytes: number) => {
          const f = files[volumeId];
          if (!f) throw new Error(`no storage for ${volumeId}`);
          await truncate(f, bytes);
          // As the iSCSI backend's extend: tgt caches a LUN's size until it is re-added.
          if (volumeId === ids.net) tgt!.reexpose(netIqn);
        },
        guestReportedBytes: async (volumeId: string, expected: number) => {
          const dev = guestDev[volumeId];
          if (!dev) throw new Error(`no guest device for ${volumeId}`);
          try {
            return await guest.waitForSize(dev, expected, 10_000);
          } catch (err) {
            if (err instanceof WaitForSizeTimeout) return err.lastSeen ?? -1;
            throw err;
          }
        },
        teardown: async () => {
          await driver.close();
          const off = await client.lookupByUuid(stoppedId).catch(() => undefined);
          if (off) await client.undefine(off).catch(() => undefined);
          await client.close();
          await tgt?.stop();
          await lv.down();
          for (const l of loops) losetupDetach(l);
        },
      };
    } catch (err) {
      await client.close();
      await tgt?.stop();
      await lv.down();
      for (const l of loops) losetupDetach(l);
      throw err;
    }
  },
  describeLibvirt,
);
