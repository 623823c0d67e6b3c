/**
 * LibvirtDriver against a scripted libvirtd (test/virt/support/scriptedLibvirtd.ts): the real
 * driver, client and XDR code, without the lab. Covers what the lab cannot provoke on demand:
 * every libvirt error number's classification, and each re-observation the driver does instead of
 * reading libvirt's messages (the domain's state, its XML, the host size, the file size limit).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ServiceError, type ErrorCode } from '../../src/errors.js';
import { LibvirtDriver } from '../../src/virt/libvirt/driver.js';
import { LIBVIRT_ERRORS, classifyLibvirtError } from '../../src/virt/libvirt/failures.js';
import { DomainAffect, DomainState } from '../../src/virt/libvirt/remote/client.js';
import { VirErrorCode } from '../../src/virt/libvirt/remote/errors.js';
import type { RunCommand } from '../../src/virt/libvirt/storage.js';
import { ComputeManager } from '../../src/compute/manager.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { pino } from 'pino';
import { ScriptedLibvirtd, type ScriptedDisk } from './support/scriptedLibvirtd.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const SECRET = '/var/lib/secret-pool-91c2';

async function caught(p: Promise<unknown>): Promise<ServiceError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected a ServiceError').toBeInstanceOf(ServiceError);
  return err as ServiceError;
}

function expectCode(err: ServiceError, code: ErrorCode, final?: boolean): void {
  expect(err.code, err.message).toBe(code);
  if (final !== undefined) expect(err.final, `${err.code} final`).toBe(final);
}

describe('the libvirt error table', () => {
  // The decision per virErrorNumber, spelled out (the driver's LIBVIRT_ERRORS must agree).
  const cases: Array<[string, number, boolean]> = [
    ['OPERATION_TIMEOUT', VirErrorCode.OPERATION_TIMEOUT, false],
    ['RPC', VirErrorCode.RPC, false],
    ['AGENT_UNRESPONSIVE', VirErrorCode.AGENT_UNRESPONSIVE, false],
    ['AGENT_UNSYNCED', VirErrorCode.AGENT_UNSYNCED, false],
    ['RESOURCE_BUSY', VirErrorCode.RESOURCE_BUSY, false],
    ['BLOCK_COPY_ACTIVE', VirErrorCode.BLOCK_COPY_ACTIVE, false],
    ['NO_MEMORY', VirErrorCode.NO_MEMORY, false],
    ['OPERATION_ABORTED', VirErrorCode.OPERATION_ABORTED, false],
    ['NO_CONNECT', VirErrorCode.NO_CONNECT, false],
    ['INTERNAL_ERROR', VirErrorCode.INTERNAL_ERROR, true],
    ['OPERATION_FAILED', VirErrorCode.OPERATION_FAILED, true],
    ['OPERATION_INVALID', VirErrorCode.OPERATION_INVALID, true],
    ['SYSTEM_ERROR', VirErrorCode.SYSTEM_ERROR, true],
    ['CONFIG_UNSUPPORTED', VirErrorCode.CONFIG_UNSUPPORTED, true],
    ['ACCESS_DENIED', VirErrorCode.ACCESS_DENIED, true],
    ['DEVICE_MISSING', VirErrorCode.DEVICE_MISSING, true],
    ['XML_ERROR', VirErrorCode.XML_ERROR, true],
    ['an unknown number', 4242, true],
  ];

  it.each(cases)('classifies %s (%i) as final=%s', (_name, code, final) => {
    expect(classifyLibvirtError(code).final).toBe(final);
  });

  it('names every entry after its virErrorNumber and gives it a reason without paths', () => {
    for (const [code, c] of Object.entries(LIBVIRT_ERRORS)) {
      const key = Object.entries(VirErrorCode).find(([, v]) => v === Number(code))?.[0];
      expect(c.name).toBe(`VIR_ERR_${key}`);
      expect(c.reason).not.toMatch(/\//);
    }
  });
});

describe('LibvirtDriver on a scripted libvirtd', () => {
  let lv: ScriptedLibvirtd;
  let dir: string;
  let sys: string;
  let driver: LibvirtDriver;
  let runs: string[][];
  /** What `iscsi-readcapacity16` reports for the network disk. */
  let lunBytes: number;
  /** What the file-size-limit probe answers (a function, so a test can make it fail first). */
  let fileLimit: (dir: string) => Promise<number>;

  const RUNNING = '11111111-1111-4111-8111-111111111111';
  const STOPPED = '22222222-2222-4222-8222-222222222222';
  const TRANSIENT = '33333333-3333-4333-8333-333333333333';

  const disks = (): ScriptedDisk[] => [
    { serial: 'vol-block', target: 'vdb', type: 'block', source: '/dev/loop42', capacity: GiB },
    { serial: 'vol-file', target: 'vdc', type: 'file', source: `${SECRET}/vol-file.raw`, format: 'raw', capacity: GiB },
    { serial: 'vol-iscsi', target: 'vdd', type: 'network', source: 'iqn.2026-11.dev.online-extend:vol-iscsi/1', capacity: GiB },
  ];

  const setHostSectors = async (dev: string, bytes: number): Promise<void> => {
    await mkdir(join(sys, 'class', 'block', dev), { recursive: true });
    await writeFile(join(sys, 'class', 'block', dev, 'size'), `${bytes / 512}\n`);
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oe-libvirt-driver-'));
    sys = join(dir, 'sys');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  beforeEach(async () => {
    lv = new ScriptedLibvirtd();
    await lv.listen();
    lv.addDomain({ uuid: RUNNING, name: 'running', active: true, persistent: true, live: disks(), config: disks() });
    lv.addDomain({ uuid: STOPPED, name: 'stopped', active: false, persistent: true, live: [], config: disks() });
    lv.addDomain({ uuid: TRANSIENT, name: 'transient', active: true, persistent: false, live: disks().slice(0, 1), config: [] });
    await setHostSectors('loop42', GiB);
    runs = [];
    lunBytes = GiB;
    fileLimit = async () => 16 * 2 ** 40 - 4096;
    const run: RunCommand = async (file, args) => {
      runs.push([file, ...args]);
      return file === 'iscsi-readcapacity16' ? `${lunBytes}\n` : '';
    };
    driver = new LibvirtDriver({ uri: lv.uri, sysfsRoot: sys, run, maxFileBytes: (d) => fileLimit(d), callTimeoutMs: 2_000 });
  });
  afterEach(async () => {
    await driver.close();
    await lv.close();
  });

  describe('a failed resize is classified by looking again, not by its message', () => {
    it('answers HostSizeTooSmall when the re-measured host size is below the request', async () => {
      lunBytes = GiB + 64 * MiB; // the LUN grew less than asked
      lv.failures.set('DOMAIN_BLOCK_RESIZE', { code: VirErrorCode.INTERNAL_ERROR, message: "unable to execute QEMU command 'block_resize': Cannot grow iSCSI devices" });
      const err = await caught(driver.extendAttached(RUNNING, 'vol-iscsi', 2 * GiB, { currentGuestBytes: GiB }));
      expectCode(err, 'HostSizeTooSmall', false);
      expect(err.message).toContain(String(GiB + 64 * MiB));
    });

    it('answers the table (final DriverFailed) when the host size is enough, whatever the message says', async () => {
      lunBytes = 2 * GiB;
      lv.failures.set('DOMAIN_BLOCK_RESIZE', { code: VirErrorCode.INTERNAL_ERROR, message: "unable to execute QEMU command 'block_resize': Cannot grow iSCSI devices" });
      const err = await caught(driver.extendAttached(RUNNING, 'vol-iscsi', 2 * GiB, { currentGuestBytes: GiB }));
      expectCode(err, 'DriverFailed', true);
      expect(err.message).toContain('VIR_ERR_INTERNAL_ERROR');
      expect(err.detail).toContain('Cannot grow iSCSI devices');
    });

    it('answers InstanceStopped when the domain was shut off under the resize', async () => {
      lv.failures.set('DOMAIN_BLOCK_RESIZE', { code: VirErrorCode.OPERATION_INVALID, message: 'Requested operation is not valid: domain is not running', before: (d) => lv.destroy(d.uuid) });
      const err = await caught(driver.extendAttached(RUNNING, 'vol-block', GiB, { currentGuestBytes: GiB - MiB }));
      expectCode(err, 'InstanceStopped', true);
      expect(err.status).toBe(409);
    });

    it('answers the table when OPERATION_INVALID comes from a domain that still runs', async () => {
      lv.failures.set('DOMAIN_BLOCK_RESIZE', { code: VirErrorCode.OPERATION_INVALID, message: 'Requested operation is not valid: domain is not running' });
      const err = await caught(driver.extendAttached(RUNNING, 'vol-block', GiB, { currentGuestBytes: GiB - MiB }));
      expectCode(err, 'DriverFailed', true);
      expect(err.message).toContain('VIR_ERR_OPERATION_INVALID');
    });

    it('answers VolumeNotAttached when the disk is gone from the re-read domain XML', async () => {
      lv.failures.set('DOMAIN_BLOCK_RESIZE', {
        code: VirErrorCode.INVALID_ARG,
        message: "invalid argument: disk 'vdb' was not found in the domain config",
        before: (d) => {
          d.live = d.live.filter((x) => x.target !== 'vdb');
        },
      });
      const err = await caught(driver.extendAttached(RUNNING, 'vol-block', GiB, { currentGuestBytes: GiB - MiB }));
      expectCode(err, 'VolumeNotAttached');
    });

    it.each([
      ['OPERATION_TIMEOUT', VirErrorCode.OPERATION_TIMEOUT, false],
      ['BLOCK_COPY_ACTIVE', VirErrorCode.BLOCK_COPY_ACTIVE, false],
      ['RESOURCE_BUSY', VirErrorCode.RESOURCE_BUSY, false],
      ['SYSTEM_ERROR', VirErrorCode.SYSTEM_ERROR, true],
      ['OPERATION_FAILED', VirErrorCode.OPERATION_FAILED, true],
    ])('carries %s (%i) through as DriverFailed with final=%s and no path in the message', async (name, code, final) => {
      lv.failures.set('DOMAIN_BLOCK_RESIZE', { code, message: `Cannot access storage file '${SECRET}/vol-file.raw': some words` });
      const err = await caught(driver.extendAttached(RUNNING, 'vol-block', GiB, { currentGuestBytes: GiB - MiB }));
      expectCode(err, 'DriverFailed', final);
      expect(err.message).toContain(`VIR_ERR_${name}`);
      expect(err.message).not.toContain(SECRET);
      expect(err.reason).not.toContain(SECRET);
      expect(err.detail).toContain(SECRET);
    });
  });

  describe('a raw file disk beyond what its filesystem holds', () => {
    it('is refused with SizeLimitExceeded before libvirt is asked, and the disk keeps its size', async () => {
      fileLimit = async () => 4 * GiB;
      const err = await caught(driver.extendAttached(RUNNING, 'vol-file', 4 * GiB + 512, { currentGuestBytes: GiB }));
      expectCode(err, 'SizeLimitExceeded', true);
      expect(err.status).toBe(400);
      expect(err.message).toContain(String(4 * GiB));
      expect(err.message).not.toContain(SECRET);
      expect(lv.calledWith('DOMAIN_BLOCK_RESIZE')).toEqual([]);
      expect(await driver.getGuestBytes(RUNNING, 'vol-file')).toBe(GiB);
    });

    it('turns an EFBIG from QEMU into SizeLimitExceeded by measuring the limit again', async () => {
      // The probe could not run before the resize (say, no write access yet); it can after.
      let probes = 0;
      fileLimit = async () => {
        if (probes++ === 0) throw Object.assign(new Error('EACCES'), { code: 'EACCES' });
        return 2 * GiB;
      };
      lv.failures.set('DOMAIN_BLOCK_RESIZE', { code: VirErrorCode.SYSTEM_ERROR, message: `Failed to grow ${SECRET}/vol-file.raw: File too large` });
      const err = await caught(driver.extendAttached(RUNNING, 'vol-file', 3 * GiB, { currentGuestBytes: GiB }));
      expectCode(err, 'SizeLimitExceeded', true);
      expect(probes).toBe(2);
    });

    it('leaves a failure the limit does not explain to the table', async () => {
      lv.failures.set('DOMAIN_BLOCK_RESIZE', { code: VirErrorCode.SYSTEM_ERROR, message: 'File too large' });
      const err = await caught(driver.extendAttached(RUNNING, 'vol-file', 3 * GiB, { currentGuestBytes: GiB }));
      expectCode(err, 'DriverFailed', true);
    });

    it('does not apply to a qcow2 file disk (QEMU knows its own format limit)', async () => {
      lv.domains.get(RUNNING)!.live[1]!.format = 'qcow2';
      fileLimit = async () => 2 * GiB;
      expect(await driver.extendAttached(RUNNING, 'vol-file', 3 * GiB, { currentGuestBytes: GiB })).toBe(3 * GiB);
    });
  });

  describe('a shut-off persistent domain', () => {
    it('rescans and measures the host side of its volumes from its persistent definition', async () => {
      await setHostSectors('loop42', 2 * GiB);
      await driver.rescan(STOPPED, 'vol-block');
      expect(runs).toContainEqual(['losetup', '-c', '/dev/loop42']);
      expect(await driver.getHostBytes(STOPPED, 'vol-block')).toBe(2 * GiB);
      lunBytes = 3 * GiB;
      expect(await driver.getHostBytes(STOPPED, 'vol-iscsi')).toBe(3 * GiB);
    });

    it('has no live guest size (InstanceStopped) and refuses a resize without calling libvirt', async () => {
      expectCode(await caught(driver.getGuestBytes(STOPPED, 'vol-block')), 'InstanceStopped', true);
      const err = await caught(driver.extendAttached(STOPPED, 'vol-block', 2 * GiB));
      expectCode(err, 'InstanceStopped', true);
      expect(err.status).toBe(409);
      expect(lv.calledWith('DOMAIN_BLOCK_RESIZE')).toEqual([]);
    });

    it('gets a new volume in its persistent definition only, and loses it there on detach', async () => {
      const dev = await driver.attachVolume(STOPPED, { volumeId: 'vol-new', kind: 'block', source: '/dev/loop43' });
      expect(dev).toBe('vde');
      expect(lv.calledWith('DOMAIN_ATTACH_DEVICE_FLAGS').map((c) => c.flags)).toEqual([DomainAffect.CONFIG]);
      await driver.detachVolume(STOPPED, 'vol-new');
      expect(lv.calledWith('DOMAIN_DETACH_DEVICE_FLAGS').map((c) => c.flags)).toEqual([DomainAffect.CONFIG]);
      expect(lv.domains.get(STOPPED)!.config.map((d) => d.serial)).not.toContain('vol-new');
    });
  });

  describe('attach and detach keep the persistent definition in step', () => {
    it('attaches to the live and the persistent definition of a persistent domain, once', async () => {
      const dev = await driver.attachVolume(RUNNING, { volumeId: 'vol-new', kind: 'file', format: 'raw', source: '/pool/vol-new.raw' });
      expect(dev).toBe('vde');
      expect(lv.calledWith('DOMAIN_ATTACH_DEVICE_FLAGS').map((c) => c.flags)).toEqual([DomainAffect.LIVE | DomainAffect.CONFIG]);
      const d = lv.domains.get(RUNNING)!;
      expect(d.config.find((x) => x.serial === 'vol-new')?.target).toBe('vde');
      expect(await driver.attachVolume(RUNNING, { volumeId: 'vol-new', kind: 'file', format: 'raw', source: '/pool/vol-new.raw' })).toBe('vde');
      expect(lv.calledWith('DOMAIN_ATTACH_DEVICE_FLAGS')).toHaveLength(1);
      // After a shut-off and a start, the disk is still there, with its serial.
      lv.destroy(RUNNING);
      lv.start(RUNNING);
      expect((await driver.listServers()).find((s) => s.id === RUNNING)?.disks.map((x) => x.volumeId)).toContain('vol-new');
    });

    it('adds to the persistent definition only what is missing there, under the live device name', async () => {
      const d = lv.domains.get(RUNNING)!;
      d.live.push({ serial: 'vol-half', target: 'vdf', type: 'block', source: '/dev/loop44', capacity: GiB });
      expect(await driver.attachVolume(RUNNING, { volumeId: 'vol-half', kind: 'block', source: '/dev/loop44' })).toBe('vdf');
      expect(lv.calledWith('DOMAIN_ATTACH_DEVICE_FLAGS')).toEqual([expect.objectContaining({ flags: DomainAffect.CONFIG, disk: 'vdf' })]);
    });

    it('gives volumes attached to one domain at the same time different device names', async () => {
      // The compute manager locks per volume; the device name is the domain's, so the driver
      // serializes that choice per domain (hotplug.ts, domainDeviceLocks).
      const devices = await Promise.all(
        ['vol-x', 'vol-y', 'vol-z'].map((id) => driver.attachVolume(RUNNING, { volumeId: id, kind: 'block', source: `/dev/${id}` })),
      );
      expect(new Set(devices).size).toBe(3);
      expect(lv.domains.get(RUNNING)!.live.filter((x) => x.serial.startsWith('vol-')).map((x) => x.target).sort()).toEqual(['vdb', 'vdc', 'vdd', ...devices].sort());
    });

    it('attaches to a transient domain live only', async () => {
      await driver.attachVolume(TRANSIENT, { volumeId: 'vol-new', kind: 'block', source: '/dev/loop45' });
      expect(lv.calledWith('DOMAIN_ATTACH_DEVICE_FLAGS').map((c) => c.flags)).toEqual([DomainAffect.LIVE]);
    });

    it('detaches from both definitions, or only where the disk is', async () => {
      await driver.detachVolume(RUNNING, 'vol-block');
      const d = lv.domains.get(RUNNING)!;
      d.config.push({ serial: 'vol-cfg', target: 'vdg', type: 'block', source: '/dev/loop46', capacity: GiB });
      await driver.detachVolume(RUNNING, 'vol-cfg');
      expect(lv.calledWith('DOMAIN_DETACH_DEVICE_FLAGS').map((c) => c.flags)).toEqual([DomainAffect.LIVE | DomainAffect.CONFIG, DomainAffect.CONFIG]);
      expect([...d.live, ...d.config].map((x) => x.serial)).not.toContain('vol-block');
    });

    it('treats a failed detach as done when the disk is gone when it looks again', async () => {
      lv.failures.set('DOMAIN_DETACH_DEVICE_FLAGS', {
        code: VirErrorCode.DEVICE_MISSING,
        message: 'no target device vdb',
        before: (d) => {
          d.live = d.live.filter((x) => x.target !== 'vdb');
          d.config = d.config.filter((x) => x.target !== 'vdb');
        },
      });
      await driver.detachVolume(RUNNING, 'vol-block');
    });

    it('reports a failed detach whose disk is still there by the table', async () => {
      lv.failures.set('DOMAIN_DETACH_DEVICE_FLAGS', { code: VirErrorCode.OPERATION_TIMEOUT, message: 'Timed out during operation: cannot acquire state change lock' });
      const err = await caught(driver.detachVolume(RUNNING, 'vol-block'));
      expectCode(err, 'DriverFailed', false);
    });
  });

  describe('the connection to libvirtd', () => {
    it('answers HypervisorUnreachable (uncertain) without the socket path in the message', async () => {
      const gone = new LibvirtDriver({ uri: `qemu+unix:///system?socket=${SECRET}/libvirt-sock` });
      try {
        const err = await caught(gone.listServers());
        expectCode(err, 'HypervisorUnreachable', false);
        expect(err.status).toBe(503);
        expect(err.message).toContain('(ENOENT)');
        expect(err.message).not.toContain(SECRET);
        expect(err.detail).toContain(SECRET);
      } finally {
        await gone.close();
      }
    });

    it('answers a call libvirtd never replies to with an uncertain DriverFailed naming no socket', async () => {
      lv.silent.add('DOMAIN_GET_STATE');
      const slow = new LibvirtDriver({ uri: lv.uri, sysfsRoot: sys, callTimeoutMs: 200 });
      try {
        const err = await caught(slow.getGuestBytes(RUNNING, 'vol-block'));
        expectCode(err, 'DriverFailed', false);
        expect(err.message).toContain('DOMAIN_GET_STATE');
        expect(err.message).not.toContain(lv.dir);
      } finally {
        await slow.close();
      }
    });
  });

  it('reports a domain that vanished as InstanceNotFound', async () => {
    lv.domains.delete(RUNNING);
    expectCode(await caught(driver.getHostBytes(RUNNING, 'vol-block')), 'InstanceNotFound');
  });

  it('reports the vCPUs and memory the domain XML gives, and none for a domain whose XML has neither', async () => {
    const SIZED = '55555555-5555-4555-8555-555555555555';
    lv.addDomain({ uuid: SIZED, name: 'sized', active: true, persistent: true, live: [], config: [], sizeXml: "<memory unit='KiB'>1048576</memory><vcpu current='2'>4</vcpu>" });
    const listed = await driver.listServers();
    expect(listed.find((x) => x.id === SIZED)).toMatchObject({ vcpus: 2, memoryMb: 1024 });
    expect(await driver.getServer(SIZED)).toMatchObject({ vcpus: 2, memoryMb: 1024 });
    const bare = listed.find((x) => x.id === RUNNING)!;
    expect(bare).not.toHaveProperty('vcpus');
    expect(bare).not.toHaveProperty('memoryMb');
  });

  describe('getServer: one domain by UUID', () => {
    it.each([
      ['a running domain', RUNNING],
      ['a shut-off persistent domain', STOPPED],
      ['a running transient domain', TRANSIENT],
    ])('reports %s exactly as the listing does', async (_name, uuid) => {
      const listed = (await driver.listServers()).find((x) => x.id === uuid);
      expect(listed).toBeDefined();
      expect(await driver.getServer(uuid)).toEqual(listed);
    });

    it('asks libvirtd afresh, so a domain started since its last lookup reports its new state', async () => {
      expect((await driver.getServer(STOPPED))?.state).toBe('shutoff');
      lv.start(STOPPED);
      const lookups = lv.calledWith('DOMAIN_LOOKUP_BY_UUID').length;
      expect((await driver.getServer(STOPPED))?.state).toBe('active');
      expect(lv.calledWith('DOMAIN_LOOKUP_BY_UUID').length).toBe(lookups + 1);
      expect(lv.calledWith('CONNECT_LIST_ALL_DOMAINS')).toEqual([]);
    });

    it('answers undefined for a UUID libvirtd does not know, and for one that vanishes between the lookup and its XML', async () => {
      expect(await driver.getServer('44444444-4444-4444-8444-444444444444')).toBeUndefined();
      lv.failures.set('DOMAIN_GET_XML_DESC', { code: VirErrorCode.NO_DOMAIN, message: 'Domain not found', before: (d) => lv.domains.delete(d.uuid) });
      expect(await driver.getServer(RUNNING)).toBeUndefined();
      // Gone for the other calls too: the driver forgot its handle.
      expectCode(await caught(driver.getHostBytes(RUNNING, 'vol-block')), 'InstanceNotFound');
    });

    it('answers undefined for an id that is not a UUID without asking libvirtd', async () => {
      const before = lv.calls.length;
      expect(await driver.getServer('../../etc/passwd')).toBeUndefined();
      expect(lv.calls.length).toBe(before);
    });

    it('classifies other failures as the other calls do (a broken call is uncertain)', async () => {
      lv.failures.set('DOMAIN_GET_STATE', { code: VirErrorCode.RPC, message: 'An error occurred, but the cause is unknown' });
      expectCode(await caught(driver.getServer(RUNNING)), 'DriverFailed', false);
    });
  });

  describe('the read-back after a resize is sent behind it, without waiting for its answer', () => {
    // The live size read by GetBlockInfo (one call a read), so the calls libvirtd ran are exact.
    const cases: Array<{ name: string; setup: () => void; calls: string[]; reads: number }> = [
      {
        name: 'answers the size read once, when libvirtd runs the resize first',
        setup: () => undefined,
        calls: ['DOMAIN_BLOCK_RESIZE', 'DOMAIN_GET_BLOCK_INFO'],
        reads: 1,
      },
      {
        name: 'reads again when libvirtd ran the read before the resize (it saw the old size)',
        setup: () => lv.deferredOnce.add('DOMAIN_BLOCK_RESIZE'),
        calls: ['DOMAIN_GET_BLOCK_INFO', 'DOMAIN_BLOCK_RESIZE', 'DOMAIN_GET_BLOCK_INFO'],
        reads: 2,
      },
      {
        name: 'reads again when the read sent behind the resize failed',
        setup: () => lv.failures.set('DOMAIN_GET_BLOCK_INFO', { code: VirErrorCode.INTERNAL_ERROR, message: 'monitor busy' }),
        calls: ['DOMAIN_BLOCK_RESIZE', 'DOMAIN_GET_BLOCK_INFO', 'DOMAIN_GET_BLOCK_INFO'],
        reads: 2,
      },
    ];
    it.each(cases)('$name', async ({ setup, calls, reads }) => {
      const byBlockInfo = new LibvirtDriver({ uri: lv.uri, sysfsRoot: sys, liveSizeMethod: 'blockinfo', callTimeoutMs: 2_000 });
      try {
        await setHostSectors('loop42', 2 * GiB);
        // Resolve the disk first, so only the resize and its read-backs are left to count.
        expect(await byBlockInfo.getGuestBytes(RUNNING, 'vol-block')).toBe(GiB);
        setup();
        const from = lv.calls.length;
        expect(await byBlockInfo.extendAttached(RUNNING, 'vol-block', GiB + 8 * MiB, { currentGuestBytes: GiB })).toBe(GiB + 8 * MiB);
        expect(lv.calls.slice(from).map((c) => c.proc)).toEqual(calls);
        expect(lv.calledWith('DOMAIN_GET_BLOCK_INFO').length - 1).toBe(reads);
      } finally {
        await byBlockInfo.close();
      }
    });
  });

  it('serializes concurrent extends of one volume through the compute manager, so a smaller request cannot shrink a larger one', async () => {
    // The driver takes no lock per volume: the manager, its one caller, does (src/compute/locks.ts).
    const byBlockInfo = new LibvirtDriver({ uri: lv.uri, sysfsRoot: sys, liveSizeMethod: 'blockinfo', callTimeoutMs: 2_000 });
    const store = new SqliteStore(join(dir, `manager-${Date.now()}.sqlite`));
    const manager = new ComputeManager({ host: 'compute-1', driver: byBlockInfo, store, defaultProjectId: 'p', logger: pino({ level: 'silent' }) });
    try {
      await setHostSectors('loop42', 2 * GiB);
      const [big, small] = await Promise.allSettled([
        manager.extendAttached(RUNNING, 'vol-block', GiB + 8 * MiB),
        manager.extendAttached(RUNNING, 'vol-block', GiB + 4 * MiB),
      ]);
      expect(big).toEqual({ status: 'fulfilled', value: GiB + 8 * MiB });
      expect(small.status).toBe('rejected');
      expect(((small as PromiseRejectedResult).reason as ServiceError).code).toBe('VolumeShrinkRefused');
      expect(await byBlockInfo.getGuestBytes(RUNNING, 'vol-block')).toBe(GiB + 8 * MiB);
      expect(lv.calledWith('DOMAIN_BLOCK_RESIZE').map((c) => c.bytes)).toEqual([GiB + 8 * MiB]);
    } finally {
      await manager.close();
      await store.close();
    }
  });

  it('lists a shut-off persistent domain as shutoff, with the volumes of its definition', async () => {
    const s = (await driver.listServers()).find((x) => x.id === STOPPED);
    expect(lv.domains.get(STOPPED)?.state).toBe(DomainState.SHUTOFF);
    expect(s?.state).toBe('shutoff');
    expect(s?.disks.map((d) => d.volumeId)).toEqual(['vol-block', 'vol-file', 'vol-iscsi']);
  });
});
