/**
 * The lab itself, end to end: a private libvirtd and tgtd, a guest that reports the size it sees,
 * a command shell in the guest, and a clean teardown (no pids, no loop devices, no directory).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeReal } from '../support/real.js';
import { bootGuest, labDown, labLoopDevices, labUp, pidAlive, virsh, type GuestShell, type LabInfo } from '../../src/lab/index.js';
import { fileHeadMd5 } from '../support/files.js';

const MiB = 1024 * 1024;

function whyNot(): string | undefined {
  if (process.platform !== 'linux') return 'the lab needs Linux';
  if (process.getuid?.() !== 0) return 'the lab needs root (private mount namespace, loop devices, apt-get)';
  return undefined;
}

/** The pattern the guest writes: `yes OE-PATTERN-0123456789 | head -c N`. */
function patternMd5(bytes: number): string {
  const line = Buffer.from('OE-PATTERN-0123456789\n');
  const buf = Buffer.alloc(bytes);
  for (let off = 0; off < bytes; off += line.length) line.copy(buf, off, 0, Math.min(line.length, bytes - off));
  return createHash('md5').update(buf).digest('hex');
}


describeReal(whyNot())('lab (real libvirtd, tgtd and a TCG guest)', () => {
  let dir = '';
  let lab: LabInfo | undefined;
  let guest: GuestShell | undefined;
  const log = (m: string): void => console.log(`[lab] ${m}`);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'oe-lab-test-'));
    lab = await labUp({ dir, log });
  }, 900_000);

  afterAll(async () => {
    await guest?.destroy().catch(() => {});
    if (dir) await labDown({ dir, log }).catch((e: unknown) => console.error('labDown failed', e));
  }, 120_000);

  it('comes up with a libvirtd and a tgtd that answer, and is idempotent', async () => {
    if (!lab) throw new Error('no lab');
    expect(pidAlive(lab.libvirtdPid)).toBe(true);
    expect(pidAlive(lab.tgtdPid)).toBe(true);
    expect(await virsh(lab, ['version'])).toMatch(/QEMU/);
    const again = await labUp({ dir, install: false });
    expect(again).toEqual(lab);
  }, 60_000);

  it('boots a guest that reports its raw file disk at exactly the host size', async () => {
    if (!lab) throw new Error('no lab');
    const disk = join(lab.dir, 'vol-1.raw');
    writeFileSync(disk, Buffer.alloc(0));
    truncateSync(disk, 64 * MiB);
    const t0 = Date.now();
    guest = await bootGuest(lab, {
      name: 'lab-e2e',
      projectId: 'proj-lab',
      disks: [
        `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${disk}'/>` +
          `<target dev='vdb' bus='virtio'/><serial>vol-1</serial></disk>`,
      ],
    });
    log(`guest ready after ${Date.now() - t0} ms`);
    expect((await guest.sizes()).vdb).toBe(64 * MiB);
    expect((await guest.exec('cat /sys/block/vdb/size')).trim()).toBe(String((64 * MiB) / 512));
    expect((await guest.exec('cat /sys/block/vdb/serial')).trim()).toBe('vol-1');
    const xml = await virsh(lab, ['dumpxml', guest.uuid]);
    expect(xml).toContain('<oe:project xmlns:oe="https://online-extend.dev/xmlns/1">proj-lab</oe:project>');
    await expect(guest.waitForSize('vdb', 1, 200)).rejects.toThrow(/last seen vdb=67108864/);
  }, 120_000);

  it('runs commands in the guest: writes a pattern to vdb and reads back the same md5', async () => {
    if (!guest || !lab) throw new Error('no guest');
    const n = 4 * MiB;
    const out = await guest.exec(
      `yes OE-PATTERN-0123456789 | head -c ${n} > /tmp/p && dd if=/tmp/p of=/dev/vdb bs=1M conv=fsync 2>/dev/null && ` +
        `md5sum < /tmp/p && dd if=/dev/vdb bs=1M count=4 2>/dev/null | md5sum`,
      60_000,
    );
    const sums = out.trim().split('\n').map((l) => l.split(/\s+/)[0]);
    const expected = patternMd5(n);
    expect(sums).toEqual([expected, expected]);
    expect(fileHeadMd5(join(lab.dir, 'vol-1.raw'), n)).toBe(expected);
    const failed = await guest.execStatus('exit 3');
    expect(failed.code).toBe(3);
    // A syntax error fails that command only; the shell keeps serving.
    expect((await guest.execStatus("echo 'unterminated")).code).not.toBe(0);
    expect(await guest.exec(`printf '%s|' "a b" 'c"d'`)).toBe('a b|c"d|');
    expect((await guest.exec('echo still here')).trim()).toBe('still here');
  }, 120_000);

  it('sees virsh blockresize: the guest reports the new size and logs the capacity change', async () => {
    if (!guest || !lab) throw new Error('no guest');
    const mark = await guest.logMark();
    const t0 = Date.now();
    await virsh(lab, ['blockresize', guest.uuid, 'vdb', `${128 * MiB}B`]);
    const t1 = Date.now();
    expect(await guest.waitForSize('vdb', 128 * MiB, 15_000)).toBe(128 * MiB);
    log(`blockresize ${t1 - t0} ms; guest reported the new size ${Date.now() - t1} ms later`);
    await guest.waitForLog(/vdb: detected capacity change from 131072 to 262144/, 10_000, mark);
    expect((await guest.exec('cat /sys/block/vdb/size')).trim()).toBe(String((128 * MiB) / 512));
    // The data written before the resize is intact.
    expect((await guest.exec('dd if=/dev/vdb bs=1M count=4 2>/dev/null | md5sum')).split(/\s+/)[0]).toBe(patternMd5(4 * MiB));
  }, 60_000);

  it('destroys the guest', async () => {
    if (!guest || !lab) throw new Error('no guest');
    await guest.destroy();
    const names = await virsh(lab, ['list', '--all', '--name']);
    expect(names).not.toContain('lab-e2e');
    guest = undefined;
  }, 60_000);

  it('lab down leaves no pids, no loop devices and no directory, and is idempotent', async () => {
    if (!lab) throw new Error('no lab');
    // A loop device over a file in the lab dir, as the block-disk tests make.
    const backing = join(lab.dir, 'loop.raw');
    writeFileSync(backing, Buffer.alloc(0));
    truncateSync(backing, 8 * MiB);
    const dev = execFileSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' }).trim();
    expect(await labLoopDevices(lab.dir)).toEqual([dev]);
    // And a running guest, which labDown must destroy first.
    guest = await bootGuest(lab, { name: 'lab-e2e-left', waitReady: false });
    const { libvirtdPid, tgtdPid } = lab;

    await labDown({ dir, log });
    expect(pidAlive(libvirtdPid)).toBe(false);
    expect(pidAlive(tgtdPid)).toBe(false);
    expect(await labLoopDevices(lab.dir)).toEqual([]);
    expect(existsSync(dir)).toBe(false);
    const qemu = execFileSync('sh', ['-c', `ps -eo args | grep -F -- '${dir}/' | grep -v grep || true`], { encoding: 'utf8' });
    expect(qemu.trim()).toBe('');
    await labDown({ dir });
    guest = undefined;
    lab = undefined;
  }, 120_000);
});
