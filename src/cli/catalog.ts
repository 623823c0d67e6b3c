/**
 * `online-extend flavor …` and `online-extend image …`: the flavors and images servers are built
 * from (POST /servers), registered in the data dir's database as `token create` writes tokens
 * (the same checks as serve, without its lock: they may be added while serve runs, which reads
 * them on every use). `create` prints the new id. `list` and `delete` refuse a missing or empty
 * database, creating nothing (cli/store.ts).
 *
 * An image is a disk image (`--disk PATH`, qcow2 or raw, copied per server, never booted in place)
 * or a kernel and ramdisk pair (`--kernel PATH --ramdisk PATH [--cmdline TEXT]`), as Glance images
 * with kernel_id/ramdisk_id. Paths are made absolute and must be readable files; they stay on this
 * host (the image API never shows them).
 */
import { randomUUID } from 'node:crypto';
import { accessSync, constants, openSync, readSync, closeSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { loadConfig } from '../config.js';
import { DATABASE_URL_HELP, openCommandStore } from './store.js';
import { HOST_DEFINED_FLAVOR, type FlavorRecord, type ImageRecord, type Store } from '../db/store.js';
import { render, type Format } from './output.js';

type Out = (s: string) => void;

/** What `flavor create` takes (units as Nova's: RAM and swap in MiB, disks in GiB). */
export interface FlavorOptions {
  name: string;
  id?: string;
  vcpus: string | number;
  ram: string | number;
  disk: string | number;
  ephemeral?: string | number;
  swap?: string | number;
  isPublic?: boolean;
  description?: string;
}

/** What `image create` takes: `disk` (with `diskFormat`, detected when absent), or `kernel` and `ramdisk` (with `cmdline`). */
export interface ImageOptions {
  name: string;
  id?: string;
  disk?: string;
  diskFormat?: string;
  kernel?: string;
  ramdisk?: string;
  cmdline?: string;
  minDisk?: string | number;
  minRam?: string | number;
}

const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;

function count(what: string, v: string | number | undefined, min: number, fallback?: number): number {
  if (v === undefined && fallback !== undefined) return fallback;
  const n = typeof v === 'number' ? v : /^\d+$/.test(String(v ?? '').trim()) ? Number(String(v).trim()) : NaN;
  if (!Number.isSafeInteger(n) || n < min) throw new Error(`${what} must be a whole number of at least ${min}, got ${JSON.stringify(v ?? '')}`);
  return n;
}

function name(v: string): string {
  const n = v.trim();
  if (n.length === 0 || n.length > 255) throw new Error('--name must be 1 to 255 characters');
  return n;
}

function idOf(v: string | undefined): string {
  if (v === undefined) return randomUUID();
  if (!ID.test(v)) throw new Error(`--id must be 1 to 255 of A-Z a-z 0-9 . _ - (starting with a letter or digit), got ${JSON.stringify(v)}`);
  return v;
}

/** An absolute path to a readable regular file, or a plain Error naming the option. */
function readableFile(option: string, p: string): string {
  const abs = resolve(p);
  try {
    if (!statSync(abs).isFile()) throw new Error('not a regular file');
    accessSync(abs, constants.R_OK);
  } catch (err) {
    throw new Error(`${option} ${abs}: ${(err as Error).message}`);
  }
  return abs;
}

/** qcow2 if the file starts with QCOW2's magic, else raw. */
function detectFormat(path: string): 'qcow2' | 'raw' {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(4);
    return readSync(fd, b, 0, 4, 0) === 4 && b.toString('latin1') === 'QFI\xfb' ? 'qcow2' : 'raw';
  } finally {
    closeSync(fd);
  }
}

/** A flavor record from `flavor create`'s options; throws a plain Error naming the bad option. */
export function newFlavor(o: FlavorOptions): FlavorRecord {
  return {
    id: idOf(o.id),
    name: name(o.name),
    vcpus: count('--vcpus', o.vcpus, 1),
    ramMb: count('--ram (MiB)', o.ram, 1),
    diskGb: count('--disk (GiB)', o.disk, 0),
    ephemeralGb: count('--ephemeral (GiB)', o.ephemeral, 0, 0),
    swapMb: count('--swap (MiB)', o.swap, 0, 0),
    isPublic: o.isPublic ?? true,
    description: o.description ?? null,
  };
}

/** An image record from `image create`'s options; throws a plain Error naming the bad option. */
export function newImage(o: ImageOptions, now: Date = new Date()): ImageRecord {
  const base = { id: idOf(o.id), name: name(o.name), minDiskGb: count('--min-disk (GiB)', o.minDisk, 0, 0), minRamMb: count('--min-ram (MiB)', o.minRam, 0, 0), createdAt: now.toISOString() };
  const kernelish = o.kernel !== undefined || o.ramdisk !== undefined || o.cmdline !== undefined;
  if (o.disk !== undefined && kernelish) throw new Error('give either --disk, or --kernel and --ramdisk, not both');
  if (o.disk !== undefined) {
    const diskPath = readableFile('--disk', o.disk);
    if (o.diskFormat !== undefined && o.diskFormat !== 'qcow2' && o.diskFormat !== 'raw') throw new Error(`--disk-format must be qcow2 or raw, got ${JSON.stringify(o.diskFormat)}`);
    const found = detectFormat(diskPath);
    const diskFormat = (o.diskFormat as 'qcow2' | 'raw' | undefined) ?? found;
    if (diskFormat === 'raw' && found === 'qcow2') throw new Error(`--disk ${diskPath} is a qcow2 image, not raw`);
    if (diskFormat === 'qcow2' && found !== 'qcow2') throw new Error(`--disk ${diskPath} is not a qcow2 image`);
    return { ...base, kind: 'disk', diskPath, diskFormat, kernelPath: null, ramdiskPath: null, cmdline: null };
  }
  if (o.kernel === undefined || o.ramdisk === undefined) throw new Error('give --disk PATH, or --kernel PATH and --ramdisk PATH');
  return {
    ...base,
    kind: 'kernel',
    diskPath: null,
    diskFormat: null,
    kernelPath: readableFile('--kernel', o.kernel),
    ramdiskPath: readableFile('--ramdisk', o.ramdisk),
    cmdline: o.cmdline ?? '',
  };
}

/** Store `flavor`; a plain Error if its id is taken. Answers its id. */
export async function addFlavor(store: Store, flavor: FlavorRecord): Promise<string> {
  // The compute API shows this id for servers found on the host (their size is not a flavor's).
  if (flavor.id === HOST_DEFINED_FLAVOR) throw new Error(`the flavor id ${HOST_DEFINED_FLAVOR} is reserved for servers found on the host`);
  if (!(await store.putFlavor(flavor))) throw new Error(`a flavor with id ${flavor.id} exists already`);
  return flavor.id;
}

/** Store `image`; a plain Error if its id is taken. Answers its id. */
export async function addImage(store: Store, image: ImageRecord): Promise<string> {
  if (!(await store.putImage(image))) throw new Error(`an image with id ${image.id} exists already`);
  return image.id;
}

interface StoreOpts {
  dataDir?: string;
  databaseUrl?: string;
  config?: string;
  format: Format;
}

/** Adds `flavor create|list|delete` and `image create|list|delete` to `program`; output goes to `out`. */
export function registerCatalogCommands(program: Command, out: Out, env: NodeJS.ProcessEnv): void {
  /** Runs `fn` on the store `o` names; `existing` for a command that only reads or removes (cli/store.ts: nothing is created). */
  const withStore = async <T>(o: StoreOpts, fn: (store: Store) => Promise<T>, existing?: string): Promise<T> => {
    const config = loadConfig(env, { dataDir: o.dataDir, databaseUrl: o.databaseUrl, driver: 'libvirt' }, o.config);
    const db = await openCommandStore(config, { existing });
    try {
      return await fn(db.store);
    } finally {
      await db.close();
    }
  };
  const common = (cmd: Command) =>
    cmd
      .option('--data-dir <dir>', 'state directory (default ./data)')
      .option('--database-url <url>', DATABASE_URL_HELP)
      .option('--config <file>', 'settings from a JSON file (keys as in src/config.ts; flags and env win)')
      .addOption(new Option('-f, --format <format>', 'output format').choices(['table', 'json']).default('table'));

  const flavor = program.command('flavor').description('flavors servers are built with (Nova’s: vCPUs, RAM, root disk)');
  common(flavor.command('create').description('register a flavor; prints its id'))
    .requiredOption('--name <name>', 'flavor name')
    .option('--id <id>', 'flavor id (default: a new UUID)')
    .requiredOption('--vcpus <n>', 'virtual CPUs')
    .requiredOption('--ram <MiB>', 'memory in MiB')
    .requiredOption('--disk <GiB>', 'root disk in GiB (0: the image’s own size)')
    .option('--ephemeral <GiB>', 'ephemeral disk in GiB (recorded, not made)', '0')
    .option('--swap <MiB>', 'swap in MiB (recorded, not made)', '0')
    .option('--private', 'not public (recorded; every project may use it here)')
    .option('--description <text>', 'description')
    .action(async (o: StoreOpts & FlavorOptions & { private?: boolean }) => {
      const record = newFlavor({ ...o, isPublic: !o.private });
      out(await withStore(o, (store) => addFlavor(store, record)));
    });
  common(flavor.command('list').description('list flavors')).action(async (o: StoreOpts) => {
    const flavors = await withStore(o, (store) => store.listFlavors(), 'whose flavors to list');
    out(render(o.format, { flavors }, flavors.map((f) => ({ id: f.id, name: f.name, vcpus: f.vcpus, ram_mib: f.ramMb, disk_gib: f.diskGb }))));
  });
  common(flavor.command('delete').description('delete a flavor (servers built with it keep running)'))
    .argument('<id>', 'flavor id')
    .action(async (id: string, o: StoreOpts) => {
      if (!(await withStore(o, (store) => store.deleteFlavor(id), 'whose flavor to delete'))) throw new Error(`no flavor with id ${id}`);
      out(id);
    });

  const image = program.command('image').description('images servers boot from (Glance’s: a disk image, or a kernel and ramdisk)');
  common(image.command('create').description('register an image; prints its id'))
    .requiredOption('--name <name>', 'image name')
    .option('--id <id>', 'image id (default: a new UUID)')
    .option('--disk <path>', 'a disk image, copied for each server')
    .addOption(new Option('--disk-format <fmt>', 'its format (default: detected)').choices(['qcow2', 'raw']))
    .option('--kernel <path>', 'a kernel to boot directly (with --ramdisk)')
    .option('--ramdisk <path>', 'its initramfs')
    .option('--cmdline <text>', 'the kernel command line')
    .option('--min-disk <GiB>', 'smallest root disk it needs', '0')
    .option('--min-ram <MiB>', 'least memory it needs', '0')
    .action(async (o: StoreOpts & ImageOptions) => {
      const record = newImage(o);
      out(await withStore(o, (store) => addImage(store, record)));
    });
  common(image.command('list').description('list images')).action(async (o: StoreOpts) => {
    const images = await withStore(o, (store) => store.listImages(), 'whose images to list');
    out(render(o.format, { images }, images.map((i) => ({ id: i.id, name: i.name, kind: i.kind, format: i.diskFormat ?? '', created: i.createdAt }))));
  });
  common(image.command('delete').description('delete an image (servers built from it keep their copy)'))
    .argument('<id>', 'image id')
    .action(async (id: string, o: StoreOpts) => {
      if (!(await withStore(o, (store) => store.deleteImage(id), 'whose image to delete'))) throw new Error(`no image with id ${id}`);
      out(id);
    });
}
