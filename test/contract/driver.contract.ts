/**
 * The virt driver contract: one suite, run against every driver (Nova's test_virt_drivers.py).
 * Each driver's test file only builds a harness: a running server with a block disk, a raw file
 * disk, an iSCSI (network) disk and a read-only disk, a shut-off server with a block disk, and a
 * way to grow the storage under a volume. Every part is required, so every case runs on every driver (the fake can always
 * provide them); nothing here is skipped.
 */
import { stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import type { SpawnImage, VirtDriver } from '../../src/virt/driver.js';
import { ServiceError } from '../../src/errors.js';
import { maxFileBytes } from '../../src/util/fsLimits.js';

export interface DriverHarness {
  driver: VirtDriver;
  /** A running server. */
  serverId: string;
  /** A `block` disk of the running server: its host view must grow before its guest view can. */
  blockVolumeId: string;
  /**
   * A raw `file` disk of the running server, backed by a real file (listed with its `source`):
   * QEMU grows the file itself, within what the file's filesystem holds.
   */
  fileVolumeId: string;
  /**
   * A `network` disk of the running server: an iSCSI LUN (source `iqn/lun`) that QEMU opens
   * itself. The host reads its size from the target, as an initiator does.
   */
  networkVolumeId: string;
  /**
   * Grow the storage under a volume, as its volume backend's extend would. A block disk's host
   * does not see it until rescan. For the network disk: what the iSCSI backend does, grow the
   * LUN's file and have the target export the new size.
   */
  growStorage(volumeId: string, bytes: number): Promise<void>;
  /** A shut-off server (libvirt: a defined, persistent domain) with an attached `block` volume. */
  stopped: { serverId: string; volumeId: string };
  /** A read-only disk of the running server. */
  readonlyVolumeId: string;
  /**
   * What a new server can be built from (spawn): a bootable image for this driver, and a raw file
   * a test can attach to the new server as a volume.
   */
  spawn: { image: SpawnImage; volumeFile: string };
  /**
   * Guest filesystems, for a driver that declares `growGuestFilesystem`: two more `block` disks of
   * the running server, one blank (nothing on it), one carrying an ext4 that fills it, mounted
   * on `mountpoint` in the guest. The contract grows the second one's storage (growStorage).
   */
  guestFs?: { blankVolumeId: string; ext4VolumeId: string; mountpoint: string };
  /** The size the guest itself reports for a volume (real guests only). */
  guestReportedBytes?(volumeId: string, expected: number): Promise<number>;
  teardown(): Promise<void>;
}

const MiB = 1024 * 1024;

async function expectServiceError(p: Promise<unknown>, code: string, status: number): Promise<ServiceError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toBeInstanceOf(ServiceError);
  expect((err as ServiceError).code).toBe(code);
  expect((err as ServiceError).status).toBe(status);
  return err as ServiceError;
}

export function describeDriverContract(name: string, makeHarness: () => Promise<DriverHarness>, describeFn: typeof describe = describe): void {
  describeFn(`VirtDriver contract: ${name}`, () => {
    let h: DriverHarness;

    beforeAll(async () => {
      h = await makeHarness();
    });
    afterAll(async () => {
      await h?.teardown();
    });

    it('lists the running server with its volumes, kinds and devices', async () => {
      const servers = await h.driver.listServers();
      const server = servers.find((s) => s.id === h.serverId);
      expect(server?.state).toBe('active');
      const block = server?.disks.find((d) => d.volumeId === h.blockVolumeId);
      const file = server?.disks.find((d) => d.volumeId === h.fileVolumeId);
      const network = server?.disks.find((d) => d.volumeId === h.networkVolumeId);
      expect(block?.kind).toBe('block');
      expect(file?.kind).toBe('file');
      expect(network?.kind).toBe('network');
      expect(network?.source).toMatch(/^\S+\/\d+$/);
      expect(block?.device).toMatch(/^[vs]d[a-z]+$/);
    });

    it('looks one server up by id exactly as the listing reports it, running or shut off', async () => {
      expect(h.driver.getServer, 'the driver implements getServer').toBeTypeOf('function');
      const listed = await h.driver.listServers();
      for (const id of [h.serverId, h.stopped.serverId]) {
        const one = await h.driver.getServer!(id);
        expect(one, id).toEqual(listed.find((s) => s.id === id));
      }
    });

    it('answers undefined, not an error, for a server the host does not have or an id that names none', async () => {
      expect(await h.driver.getServer!('00000000-0000-4000-8000-000000000000')).toBeUndefined();
      expect(await h.driver.getServer!('not-a-server-id')).toBeUndefined();
    });

    it('declares the spawn capability', () => {
      expect(h.driver.capabilities.spawnServer).toBe(true);
      expect(typeof h.driver.spawn).toBe('function');
      expect(typeof h.driver.destroy).toBe('function');
    });

    it('spawns a server from an image and a flavor: it runs, listed with its name and project and no volumes; destroyed with a volume attached, everything goes, and again is fine', async () => {
      const id = randomUUID();
      const spawned = await h.driver.spawn!({ id, name: 'spawned vm', projectId: 'p-spawn', userId: 'u-spawn', image: h.spawn.image, vcpus: 1, ramMb: 256, rootDiskGb: 1 });
      try {
        expect(spawned).toMatchObject({ id, name: 'spawned vm', projectId: 'p-spawn', state: 'active', disks: [] });
        expect((await h.driver.listServers()).find((s) => s.id === id)).toEqual(spawned);
        // The root disk is vda: the first volume is vdb, in the guest as in the hypervisor.
        expect(await h.driver.attachVolume(id, { volumeId: 'vol-on-spawned', kind: 'file', format: 'raw', source: h.spawn.volumeFile })).toBe('vdb');
        expect((await h.driver.getServer!(id))?.disks.map((d) => d.volumeId)).toEqual(['vol-on-spawned']);
      } finally {
        await h.driver.destroy!(id);
      }
      expect(await h.driver.getServer!(id)).toBeUndefined();
      expect((await h.driver.listServers()).some((s) => s.id === id)).toBe(false);
      await h.driver.destroy!(id);
    });

    it('refuses to spawn an id the host already has (409), and that server runs on as it was', async () => {
      const before = await h.driver.getServer!(h.serverId);
      await expectServiceError(
        h.driver.spawn!({ id: h.serverId, name: 'again', projectId: 'p-spawn', userId: 'u', image: h.spawn.image, vcpus: 1, ramMb: 256, rootDiskGb: 1 }),
        'InstanceInvalidState',
        409,
      );
      expect(await h.driver.getServer!(h.serverId)).toEqual(before);
    });

    it('declares the extend capability', () => {
      expect(h.driver.capabilities.extendVolume).toBe(true);
    });

    it('reports the same host and guest size for an untouched block disk', async () => {
      const host = await h.driver.getHostBytes(h.serverId, h.blockVolumeId);
      const guest = await h.driver.getGuestBytes(h.serverId, h.blockVolumeId);
      expect(host).toBeGreaterThan(0);
      expect(guest).toBe(host);
    });

    it('sizes every kind of disk: an untouched disk has a host size above zero, and the guest sees it', async () => {
      for (const volumeId of [h.blockVolumeId, h.fileVolumeId, h.networkVolumeId]) {
        const host = await h.driver.getHostBytes(h.serverId, volumeId);
        expect(host, volumeId).toBeGreaterThan(0);
        expect(await h.driver.getGuestBytes(h.serverId, volumeId), volumeId).toBe(host);
      }
    });

    it('refuses to grow a network (iSCSI) disk past what the target exports (409 HostSizeTooSmall, "rescan first"), then grows it once the target exports more, a rescan changing nothing', async () => {
      const before = await h.driver.getHostBytes(h.serverId, h.networkVolumeId);
      const guest = await h.driver.getGuestBytes(h.serverId, h.networkVolumeId);
      const err = await expectServiceError(h.driver.extendAttached(h.serverId, h.networkVolumeId, before + 64 * MiB), 'HostSizeTooSmall', 409);
      expect(err.message).toMatch(/rescan first/);
      expect(await h.driver.getGuestBytes(h.serverId, h.networkVolumeId)).toBe(guest);
      await h.growStorage(h.networkVolumeId, before + 64 * MiB);
      // QEMU's own initiator: the host reads the LUN's capacity from the target, no host rescan.
      expect(await h.driver.getHostBytes(h.serverId, h.networkVolumeId)).toBe(before + 64 * MiB);
      await h.driver.rescan(h.serverId, h.networkVolumeId);
      expect(await h.driver.getHostBytes(h.serverId, h.networkVolumeId)).toBe(before + 64 * MiB);
      expect(await h.driver.extendAttached(h.serverId, h.networkVolumeId, before + 64 * MiB)).toBe(before + 64 * MiB);
      expect(await h.driver.getGuestBytes(h.serverId, h.networkVolumeId)).toBe(before + 64 * MiB);
      if (h.guestReportedBytes) expect(await h.guestReportedBytes(h.networkVolumeId, before + 64 * MiB)).toBe(before + 64 * MiB);
    });

    it('keeps the host size of a block disk until rescan, then sees the storage size', async () => {
      const before = await h.driver.getHostBytes(h.serverId, h.blockVolumeId);
      await h.growStorage(h.blockVolumeId, before + 64 * MiB);
      expect(await h.driver.getHostBytes(h.serverId, h.blockVolumeId)).toBe(before);
      await h.driver.rescan(h.serverId, h.blockVolumeId);
      expect(await h.driver.getHostBytes(h.serverId, h.blockVolumeId)).toBe(before + 64 * MiB);
      await h.driver.rescan(h.serverId, h.blockVolumeId); // idempotent
      expect(await h.driver.getHostBytes(h.serverId, h.blockVolumeId)).toBe(before + 64 * MiB);
    });

    it('refuses to grow a block disk past the size the host sees, and changes nothing', async () => {
      const host = await h.driver.getHostBytes(h.serverId, h.blockVolumeId);
      const guest = await h.driver.getGuestBytes(h.serverId, h.blockVolumeId);
      await expectServiceError(h.driver.extendAttached(h.serverId, h.blockVolumeId, host + 64 * MiB), 'HostSizeTooSmall', 409);
      expect(await h.driver.getGuestBytes(h.serverId, h.blockVolumeId)).toBe(guest);
    });

    it('grows a block disk to the host size and returns the measured guest size', async () => {
      const host = await h.driver.getHostBytes(h.serverId, h.blockVolumeId);
      const measured = await h.driver.extendAttached(h.serverId, h.blockVolumeId, host);
      expect(measured).toBe(host);
      expect(await h.driver.getGuestBytes(h.serverId, h.blockVolumeId)).toBe(host);
      if (h.guestReportedBytes) expect(await h.guestReportedBytes(h.blockVolumeId, host)).toBe(host);
    });

    it('refuses to grow a block disk whose storage grew until the host rescans (409 HostSizeTooSmall, "rescan first"), then grows it', async () => {
      const guest = await h.driver.getGuestBytes(h.serverId, h.blockVolumeId);
      await h.growStorage(h.blockVolumeId, guest + 32 * MiB);
      const err = await expectServiceError(h.driver.extendAttached(h.serverId, h.blockVolumeId, guest + 32 * MiB), 'HostSizeTooSmall', 409);
      expect(err.message).toMatch(/rescan first/);
      expect(await h.driver.getGuestBytes(h.serverId, h.blockVolumeId)).toBe(guest);
      await h.driver.rescan(h.serverId, h.blockVolumeId);
      expect(await h.driver.getHostBytes(h.serverId, h.blockVolumeId)).toBe(guest + 32 * MiB);
      expect(await h.driver.extendAttached(h.serverId, h.blockVolumeId, guest + 32 * MiB)).toBe(guest + 32 * MiB);
      if (h.guestReportedBytes) expect(await h.guestReportedBytes(h.blockVolumeId, guest + 32 * MiB)).toBe(guest + 32 * MiB);
    });

    it('returns at once when asked for the size the guest already sees', async () => {
      const guest = await h.driver.getGuestBytes(h.serverId, h.blockVolumeId);
      expect(await h.driver.extendAttached(h.serverId, h.blockVolumeId, guest)).toBe(guest);
    });

    it('refuses to shrink, and the guest keeps its size', async () => {
      const guest = await h.driver.getGuestBytes(h.serverId, h.blockVolumeId);
      const err = await expectServiceError(h.driver.extendAttached(h.serverId, h.blockVolumeId, guest - MiB), 'VolumeShrinkRefused', 400);
      expect(err.message).toMatch(/shrink/i);
      expect(await h.driver.getGuestBytes(h.serverId, h.blockVolumeId)).toBe(guest);
      if (h.guestReportedBytes) expect(await h.guestReportedBytes(h.blockVolumeId, guest)).toBe(guest);
    });

    it('grows a file disk past its file size (QEMU grows the file) and the host sees it', async () => {
      const guest = await h.driver.getGuestBytes(h.serverId, h.fileVolumeId);
      const target = guest + 32 * MiB;
      expect(await h.driver.extendAttached(h.serverId, h.fileVolumeId, target)).toBe(target);
      expect(await h.driver.getGuestBytes(h.serverId, h.fileVolumeId)).toBe(target);
      expect(await h.driver.getHostBytes(h.serverId, h.fileVolumeId)).toBe(target);
      if (h.guestReportedBytes) expect(await h.guestReportedBytes(h.fileVolumeId, target)).toBe(target);
    });

    it('answers 404 for an unknown server and for a volume not attached', async () => {
      await expectServiceError(h.driver.getHostBytes('00000000-0000-4000-8000-000000000000', h.blockVolumeId), 'InstanceNotFound', 404);
      await expectServiceError(h.driver.extendAttached('00000000-0000-4000-8000-000000000000', h.blockVolumeId, MiB), 'InstanceNotFound', 404);
      await expectServiceError(h.driver.getHostBytes(h.serverId, '00000000-0000-4000-8000-00000000beef'), 'VolumeNotAttached', 404);
      await expectServiceError(h.driver.extendAttached(h.serverId, '00000000-0000-4000-8000-00000000beef', MiB), 'VolumeNotAttached', 404);
      await expectServiceError(h.driver.rescan(h.serverId, '00000000-0000-4000-8000-00000000beef'), 'VolumeNotAttached', 404);
    });

    it('refuses to grow a raw file disk beyond what its filesystem holds (400 SizeLimitExceeded), and the disk is unchanged', async () => {
      const listed = (await h.driver.listServers()).find((s) => s.id === h.serverId)?.disks.find((d) => d.volumeId === h.fileVolumeId);
      expect(listed?.source, 'the file disk is listed with its file').toBeDefined();
      const file = listed!.source!;
      const limit = await maxFileBytes(dirname(file));
      const guest = await h.driver.getGuestBytes(h.serverId, h.fileVolumeId);
      const host = await h.driver.getHostBytes(h.serverId, h.fileVolumeId);
      const onDisk = (await stat(file)).size;
      const err = await expectServiceError(h.driver.extendAttached(h.serverId, h.fileVolumeId, limit + 512), 'SizeLimitExceeded', 400);
      expect(err.final).toBe(true);
      expect(err.message).toContain(String(limit));
      expect(err.message).not.toContain(dirname(file));
      expect(await h.driver.getGuestBytes(h.serverId, h.fileVolumeId)).toBe(guest);
      expect(await h.driver.getHostBytes(h.serverId, h.fileVolumeId)).toBe(host);
      expect((await stat(file)).size).toBe(onDisk);
    });

    it('lists the shut-off server as shutoff, with its volume', async () => {
      const server = (await h.driver.listServers()).find((s) => s.id === h.stopped.serverId);
      expect(server?.state).toBe('shutoff');
      expect(server?.disks.map((d) => d.volumeId)).toContain(h.stopped.volumeId);
    });

    it('rescans and measures the host side of a shut-off server\'s volume (offline extend)', async () => {
      const { serverId, volumeId } = h.stopped;
      const before = await h.driver.getHostBytes(serverId, volumeId);
      await h.growStorage(volumeId, before + 64 * MiB);
      expect(await h.driver.getHostBytes(serverId, volumeId)).toBe(before);
      await h.driver.rescan(serverId, volumeId);
      expect(await h.driver.getHostBytes(serverId, volumeId)).toBe(before + 64 * MiB);
    });

    it('has no live guest size for a shut-off server (409 InstanceStopped)', async () => {
      await expectServiceError(h.driver.getGuestBytes(h.stopped.serverId, h.stopped.volumeId), 'InstanceStopped', 409);
    });

    it('refuses to resize a disk of a shut-off server (409 InstanceStopped), and the host side is unchanged', async () => {
      const { serverId, volumeId } = h.stopped;
      const host = await h.driver.getHostBytes(serverId, volumeId);
      const err = await expectServiceError(h.driver.extendAttached(serverId, volumeId, host + 64 * MiB), 'InstanceStopped', 409);
      expect(err.final).toBe(true);
      expect(await h.driver.getHostBytes(serverId, volumeId)).toBe(host);
    });

    describe('growGuestFilesystem', () => {
      /** The driver grows guest filesystems; the harness must then give the disks to do it on. */
      const fs = () => {
        expect(h.driver.growGuestFilesystem, 'declared growGuestFilesystem: implemented').toBeTypeOf('function');
        expect(h.guestFs, 'declared growGuestFilesystem: the harness gives guest filesystems').toBeDefined();
        return { grow: h.driver.growGuestFilesystem!.bind(h.driver), ...h.guestFs! };
      };

      it('declares the capability exactly when it implements the method', () => {
        expect(typeof h.driver.growGuestFilesystem === 'function').toBe(h.driver.capabilities.growGuestFilesystem);
      });

      it('answers not grown (no_filesystem), not an error, for a disk with nothing on it, no partition grown (false)', async () => {
        if (!h.driver.capabilities.growGuestFilesystem) return;
        const { grow, blankVolumeId } = fs();
        const r = await grow(h.serverId, blankVolumeId);
        expect(r).toMatchObject({ grown: false, reason: 'no_filesystem', partitionGrown: false });
      });

      it('answers not grown (no_guest_agent), not an error, for a shut-off server\'s volume: no agent runs, no partition grown (false, as in every answer)', async () => {
        if (!h.driver.capabilities.growGuestFilesystem) return;
        const { grow } = fs();
        const r = await grow(h.stopped.serverId, h.stopped.volumeId);
        expect(r).toMatchObject({ grown: false, reason: 'no_guest_agent', partitionGrown: false });
        expect(r.fsBytes).toBeUndefined();
      });

      it('grows a mounted ext4 online to fill its grown disk, and a second grow changes nothing', async () => {
        if (!h.driver.capabilities.growGuestFilesystem) return;
        const { grow, ext4VolumeId, mountpoint } = fs();
        const guest = await h.driver.getGuestBytes(h.serverId, ext4VolumeId);
        await h.growStorage(ext4VolumeId, guest + 64 * MiB);
        await h.driver.rescan(h.serverId, ext4VolumeId);
        const grown = await h.driver.extendAttached(h.serverId, ext4VolumeId, await h.driver.getHostBytes(h.serverId, ext4VolumeId));
        const first = await grow(h.serverId, ext4VolumeId);
        expect(first).toMatchObject({ grown: true, fsType: 'ext4', mountpoint, partitionGrown: false });
        expect(first.device).toMatch(/^\/dev\/[vs]d[a-z]+$/);
        // df's total: the filesystem now takes (nearly) the whole grown disk, never more.
        expect(first.fsBytes!).toBeGreaterThanOrEqual(first.fsBytesBefore! + 60 * MiB);
        expect(first.fsBytes!).toBeLessThanOrEqual(grown);
        const again = await grow(h.serverId, ext4VolumeId);
        expect(again).toMatchObject({ grown: true, fsBytesBefore: first.fsBytes, fsBytes: first.fsBytes });
      });

      it('answers 404 for an unknown server and for a volume not attached', async () => {
        if (!h.driver.capabilities.growGuestFilesystem) return;
        const { grow, blankVolumeId } = fs();
        await expectServiceError(grow('00000000-0000-4000-8000-000000000000', blankVolumeId), 'InstanceNotFound', 404);
        await expectServiceError(grow(h.serverId, 'ffffffff-0000-4000-8000-000000000000'), 'VolumeNotAttached', 404);
      });
    });

    it('refuses to resize a read-only disk', async () => {
      const guest = await h.driver.getGuestBytes(h.serverId, h.readonlyVolumeId);
      const err = await expectServiceError(h.driver.extendAttached(h.serverId, h.readonlyVolumeId, guest + MiB), 'DiskReadOnly', 500);
      expect(err.final).toBe(true);
      expect(await h.driver.getGuestBytes(h.serverId, h.readonlyVolumeId)).toBe(guest);
    });
  });
}
