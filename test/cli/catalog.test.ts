/**
 * `online-extend flavor …` and `image …` write the data dir's database as `token create` does:
 * create prints the id, list shows them, delete removes them; bad options are refused with a
 * message naming the option and write nothing. Run in-process (buildProgram) on a temp data dir.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildProgram } from '../../src/cli.js';
import { openDataDir } from '../../src/db/dataDir.js';
import { SqliteStore } from '../../src/db/sqlite.js';
import { registerLabGuest } from '../../src/cli/lab.js';

let root: string;
let data: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'oe-cli-catalog-'));
  data = join(root, 'data');
  writeFileSync(join(root, 'vmlinux'), 'kernel');
  writeFileSync(join(root, 'initrd.gz'), 'ramdisk');
  // A qcow2 header's magic is enough for the format check; a raw file is anything else.
  writeFileSync(join(root, 'disk.qcow2'), Buffer.concat([Buffer.from('QFI\xfb', 'latin1'), Buffer.alloc(100)]));
  writeFileSync(join(root, 'disk.raw'), Buffer.alloc(4096));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

/** Runs the command; its printed lines, or the error it failed with. */
async function cli(...args: string[]): Promise<string[]> {
  const lines: string[] = [];
  const program = buildProgram((s) => lines.push(s), {});
  program.exitOverride();
  await program.parseAsync(['node', 'online-extend', ...args, '--data-dir', data]);
  return lines;
}

async function inStore<T>(fn: (s: SqliteStore) => Promise<T>): Promise<T> {
  const store = new SqliteStore(join(data, 'online-extend.sqlite'));
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

describe('flavor create', () => {
  it('registers a flavor and prints its id (a new UUID, or the one given)', async () => {
    const [generated] = await cli('flavor', 'create', '--name', 'm1.small', '--vcpus', '2', '--ram', '512', '--disk', '1');
    expect(generated).toMatch(/^[0-9a-f-]{36}$/);
    expect(await cli('flavor', 'create', '--name', 'tiny', '--id', 'tiny', '--vcpus', '1', '--ram', '64', '--disk', '0')).toEqual(['tiny']);
    expect(await inStore((s) => s.getFlavor(generated!))).toEqual({ id: generated, name: 'm1.small', vcpus: 2, ramMb: 512, diskGb: 1, ephemeralGb: 0, swapMb: 0, isPublic: true, description: null });
    const listed = JSON.parse((await cli('flavor', 'list', '-f', 'json')).join('\n')) as { flavors: Array<{ id: string }> };
    expect(listed.flavors.map((f) => f.id)).toEqual(['tiny', generated]);
  });

  it.each([
    ['no vCPUs', ['--vcpus', '0', '--ram', '64', '--disk', '1'], /--vcpus must be a whole number of at least 1/],
    ['RAM that is not a number', ['--vcpus', '1', '--ram', 'lots', '--disk', '1'], /--ram \(MiB\) must be a whole number/],
    ['a negative disk', ['--vcpus', '1', '--ram', '64', '--disk', '-1'], /--disk \(GiB\) must be a whole number/],
    ['an id with a slash', ['--id', 'a/b', '--vcpus', '1', '--ram', '64', '--disk', '1'], /--id must be/],
    ['the id servers found on the host show (host-defined)', ['--id', 'host-defined', '--vcpus', '1', '--ram', '64', '--disk', '1'], /reserved for servers found on the host/],
  ])('refuses %s, naming the option, and writes nothing', async (_name, args, message) => {
    await expect(cli('flavor', 'create', '--name', 'x', ...args)).rejects.toThrow(message);
    expect(await inStore((s) => s.listFlavors()).catch(() => [])).toEqual([]);
  });

  it('refuses an id that exists and deletes by id', async () => {
    await cli('flavor', 'create', '--name', 'a', '--id', 'f1', '--vcpus', '1', '--ram', '64', '--disk', '1');
    await expect(cli('flavor', 'create', '--name', 'b', '--id', 'f1', '--vcpus', '1', '--ram', '64', '--disk', '1')).rejects.toThrow(/exists already/);
    expect(await cli('flavor', 'delete', 'f1')).toEqual(['f1']);
    await expect(cli('flavor', 'delete', 'f1')).rejects.toThrow(/no flavor with id f1/);
  });
});

describe('image create', () => {
  it('registers a kernel image with absolute paths and its command line', async () => {
    const [id] = await cli('image', 'create', '--name', 'guest', '--kernel', join(root, 'vmlinux'), '--ramdisk', join(root, 'initrd.gz'), '--cmdline', 'console=ttyS0');
    expect(await inStore((s) => s.getImage(id!))).toMatchObject({ kind: 'kernel', kernelPath: join(root, 'vmlinux'), ramdiskPath: join(root, 'initrd.gz'), cmdline: 'console=ttyS0', diskPath: null });
  });

  it('registers a disk image, detecting its format, or checking the one given', async () => {
    const [q] = await cli('image', 'create', '--name', 'q', '--disk', join(root, 'disk.qcow2'));
    const [r] = await cli('image', 'create', '--name', 'r', '--disk', join(root, 'disk.raw'), '--disk-format', 'raw');
    expect(await inStore((s) => s.getImage(q!))).toMatchObject({ kind: 'disk', diskFormat: 'qcow2', diskPath: join(root, 'disk.qcow2') });
    expect(await inStore((s) => s.getImage(r!))).toMatchObject({ kind: 'disk', diskFormat: 'raw' });
    await expect(cli('image', 'create', '--name', 'x', '--disk', join(root, 'disk.raw'), '--disk-format', 'qcow2')).rejects.toThrow(/is not a qcow2 image/);
  });

  it.each([
    ['a disk that does not exist', ['--disk', '/nonexistent/disk.img'], /--disk \/nonexistent\/disk.img: ENOENT/],
    ['a kernel without its ramdisk', ['--kernel', 'vmlinux'], /--kernel PATH and --ramdisk PATH/],
    ['a disk and a kernel at once', ['--disk', 'disk.raw', '--kernel', 'vmlinux', '--ramdisk', 'initrd.gz'], /not both/],
    ['neither', [], /give --disk PATH/],
  ])('refuses %s and writes nothing', async (_name, args, message) => {
    const abs = args.map((a) => (a.startsWith('-') || a.startsWith('/') ? a : join(root, a)));
    await expect(cli('image', 'create', '--name', 'x', ...abs)).rejects.toThrow(message);
    expect(await inStore((s) => s.listImages()).catch(() => [])).toEqual([]);
  });
});

describe('the lab guest as an image and a flavor', () => {
  it('registers both under lab-guest, idempotently, the image following a rebuilt guest', async () => {
    await openDataDir(data, { lock: false }).close(); // a data dir, as serve makes it
    const lab = { kernel: join(root, 'vmlinux'), initrd: join(root, 'initrd.gz'), cmdline: 'console=ttyS0 quiet' };
    expect(await inStore((s) => registerLabGuest(s, lab))).toEqual({ image: 'lab-guest', flavor: 'lab-guest' });
    writeFileSync(join(root, 'vmlinux2'), 'kernel');
    expect(await inStore((s) => registerLabGuest(s, { ...lab, kernel: join(root, 'vmlinux2') }))).toEqual({ image: 'lab-guest', flavor: 'lab-guest' });
    expect(await inStore((s) => s.getImage('lab-guest'))).toMatchObject({ kind: 'kernel', kernelPath: join(root, 'vmlinux2'), cmdline: 'console=ttyS0 quiet' });
    expect(await inStore((s) => s.getFlavor('lab-guest'))).toMatchObject({ vcpus: 1, ramMb: 256, diskGb: 1 });
  });
});
