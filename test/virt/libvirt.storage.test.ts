import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CommandFailed, runCommand } from '../../src/host/exec.js';
import { HostStorage, hostFailed, type RunCommand } from '../../src/virt/libvirt/storage.js';
import { describeReal } from '../support/real.js';

/** A fake sysfs with two SCSI disks (sdb at 2:0:0:1, sdc at 3:0:0:1) under multipath map dm-0. */
async function fakeSysfs(root: string): Promise<void> {
  const disks: Array<[string, string, number]> = [
    ['sdb', '2:0:0:1', 2097152],
    ['sdc', '3:0:0:1', 2097152],
    ['sdd', '4:0:0:2', 4096],
  ];
  for (const [name, hctl, sectors] of disks) {
    await mkdir(join(root, 'block', name, 'device', 'scsi_device', hctl), { recursive: true });
    await mkdir(join(root, 'class', 'scsi_device', hctl, 'device'), { recursive: true });
    await writeFile(join(root, 'class', 'scsi_device', hctl, 'device', 'rescan'), '');
    await mkdir(join(root, 'class', 'block', name), { recursive: true });
    await writeFile(join(root, 'class', 'block', name, 'size'), `${sectors}\n`);
  }
  await mkdir(join(root, 'block', 'dm-0', 'slaves'), { recursive: true });
  await mkdir(join(root, 'block', 'dm-0', 'slaves', 'sdb'));
  await mkdir(join(root, 'block', 'dm-0', 'slaves', 'sdc'));
  await mkdir(join(root, 'class', 'block', 'dm-0'), { recursive: true });
  await writeFile(join(root, 'class', 'block', 'dm-0', 'size'), '2097152\n');
}

describe('HostStorage', () => {
  let dir: string;
  let sys: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oe-storage-'));
    sys = join(dir, 'sys');
    await fakeSysfs(sys);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const rescanned = async (hctl: string): Promise<string> =>
    readFile(join(sys, 'class', 'scsi_device', hctl, 'device', 'rescan'), 'utf8');
  const reset = async (): Promise<void> => {
    for (const h of ['2:0:0:1', '3:0:0:1', '4:0:0:2']) await writeFile(join(sys, 'class', 'scsi_device', h, 'device', 'rescan'), '');
  };

  it('rescans a SCSI disk by writing 1 to its H:C:T:L rescan file', async () => {
    await reset();
    const s = new HostStorage({ sysfsRoot: sys });
    const written = await s.rescanBlockDevice('/dev/sdd');
    expect(written).toEqual([join(sys, 'class', 'scsi_device', '4:0:0:2', 'device', 'rescan')]);
    expect(await rescanned('4:0:0:2')).toBe('1');
    expect(await rescanned('2:0:0:1')).toBe('');
  });

  it('rescans every path of a multipath map', async () => {
    await reset();
    const s = new HostStorage({ sysfsRoot: sys });
    const written = await s.rescanBlockDevice('/dev/dm-0');
    expect(written).toHaveLength(2);
    expect(await rescanned('2:0:0:1')).toBe('1');
    expect(await rescanned('3:0:0:1')).toBe('1');
    expect(await rescanned('4:0:0:2')).toBe('');
  });

  it('follows a /dev/mapper style symlink to the dm device', async () => {
    await reset();
    await mkdir(join(dir, 'dev', 'mapper'), { recursive: true });
    await writeFile(join(dir, 'dev', 'dm-0'), '');
    await symlink('../dm-0', join(dir, 'dev', 'mapper', 'mpatha'));
    const s = new HostStorage({ sysfsRoot: sys });
    expect(await s.blockDeviceName(join(dir, 'dev', 'mapper', 'mpatha'))).toBe('dm-0');
    expect(await s.rescanBlockDevice(join(dir, 'dev', 'mapper', 'mpatha'))).toHaveLength(2);
  });

  it('grows a loop device with losetup -c and leaves other devices alone', async () => {
    const calls: string[][] = [];
    const run: RunCommand = async (file, args) => {
      calls.push([file, ...args]);
      return '';
    };
    const s = new HostStorage({ sysfsRoot: sys, run });
    expect(await s.rescanBlockDevice('/dev/loop12')).toEqual([]);
    expect(await s.rescanBlockDevice('/dev/nvme0n1')).toEqual([]);
    expect(calls).toEqual([['losetup', '-c', '/dev/loop12']]);
  });

  it('reads a block device size from sysfs in 512-byte sectors', async () => {
    const s = new HostStorage({ sysfsRoot: sys });
    expect(await s.blockDeviceBytes('/dev/sdb')).toBe(2097152 * 512);
    expect(await s.blockDeviceBytes('/dev/dm-0')).toBe(1024 * 1024 * 1024);
  });

  it('reads the iSCSI LUN capacity from iscsi-readcapacity16 -s', async () => {
    const calls: string[][] = [];
    const run: RunCommand = async (file, args) => {
      calls.push([file, ...args]);
      return '33554432\n';
    };
    const s = new HostStorage({ run });
    expect(await s.iscsiLunBytes('iqn.2024-01.x:t/1', '127.0.0.1:3260')).toBe(33554432);
    expect(calls).toEqual([['iscsi-readcapacity16', '-s', 'iscsi://127.0.0.1:3260/iqn.2024-01.x:t/1']]);
    const bad = new HostStorage({ run: async () => 'Login Failed\n' });
    await expect(bad.iscsiLunBytes('iqn.x:t/9', undefined)).rejects.toThrow(/unexpected/);
  });

  it('turns a failed host tool into a DriverFailed without its command line: a timeout uncertain, an exit final', async () => {
    const s = new HostStorage({ sysfsRoot: sys });
    const timedOut = hostFailed('rescan the host block device', new CommandFailed('losetup', 'losetup -c /dev/loop7: killed', { timedOut: true }));
    expect(timedOut).toMatchObject({ code: 'DriverFailed', final: false });
    const exited = hostFailed('rescan the host block device', new CommandFailed('losetup', 'losetup -c /dev/loop7: no such device', { exitCode: 1 }));
    expect(exited).toMatchObject({ code: 'DriverFailed', final: true });
    expect(exited.message).toBe('Hypervisor driver failed: cannot rescan the host block device: losetup exited with status 1');
    expect(exited.detail).toContain('/dev/loop7');
    // A device without a sysfs entry: ENOENT, final, and the message names no path.
    const gone = await s.blockDeviceBytes('/dev/loop999').catch((e: unknown) => hostFailed('read the host size of the volume', e));
    expect(gone).toMatchObject({ code: 'DriverFailed', final: true });
    expect((gone as Error).message).toContain('(ENOENT)');
    expect((gone as Error).message).not.toContain(sys);
  });

  it('runs a real host tool and reports its exit status and timeout by kind', async () => {
    const exit = await runCommand('sh', ['-c', 'echo nope >&2; exit 3']).catch((e: unknown) => e);
    expect(exit).toBeInstanceOf(CommandFailed);
    expect((exit as CommandFailed).outcome).toEqual({ exitCode: 3 });
    expect((exit as CommandFailed).detail).toContain('nope');
    const slow = await runCommand('sleep', ['5'], { timeoutMs: 100 }).catch((e: unknown) => e);
    expect((slow as CommandFailed).outcome).toEqual({ timedOut: true });
    const missing = await runCommand('no-such-tool-oe', []).catch((e: unknown) => e);
    expect((missing as CommandFailed).outcome).toEqual({ errno: 'ENOENT' });
  });
});

// qemu-img is a real part: in CI its absence fails the run; locally the block is skipped loudly.
describeReal(existsSync('/usr/bin/qemu-img') ? undefined : 'qemu-img is not installed (apt-get install qemu-utils)')('HostStorage with qemu-img images', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oe-storage-img-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads the virtual size of a qcow2 image from its header, and a raw file size', async () => {
    const q = join(dir, 'v.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', q, '3G']);
    const r = join(dir, 'v.raw');
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', r, '5M']);
    const s = new HostStorage();
    expect(await s.fileBytes(q, 'qcow2')).toBe(3 * 1024 ** 3);
    expect(await s.fileBytes(r, 'raw')).toBe(5 * 1024 ** 2);
    execFileSync('qemu-img', ['resize', '-q', '-f', 'qcow2', q, '4G']);
    expect(await s.fileBytes(q, 'qcow2')).toBe(4 * 1024 ** 3);
    await expect(s.fileBytes(r, 'qcow2')).rejects.toThrow(/not a qcow2 image/);
  });
});
