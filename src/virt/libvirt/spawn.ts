/**
 * Creating and deleting servers on libvirt (Nova's libvirt spawn and destroy, reduced): a
 * persistent domain defined from the image and the flavor, started, and everything it owns kept
 * in one directory per server, `<instancesDir>/<server id>/` (Nova's instance directory):
 *
 * - `disk`: the root disk (`vda`). A disk image is copied there (a reflink where the filesystem
 *   can), never booted in place, and grown to the flavor's root disk; a kernel image gets an
 *   empty sparse raw disk of the flavor's size (none at 0 GiB).
 * - `console.log`: serial port 0 (the kernel's console), as Nova's `console.log`.
 * - `console.sock`: serial port 1, a unix socket QEMU listens on (a shell in the lab's guest), when
 *   its path fits a socket address.
 *
 * The domain carries the server's project in our metadata (domxml.ts METADATA_NS), which is how
 * the inventory knows whose it is after a restart. Deleting destroys the domain, undefines it and
 * removes the directory. Paths never reach an error's public message, only its `detail`.
 */
import { constants } from 'node:fs';
import { copyFile, mkdir, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errors } from '../../errors.js';
import { runCommand } from '../../host/exec.js';
import { escapeXml } from '../../util/xml.js';
import type { SpawnSpec } from '../driver.js';
import { fileDiskBytes } from '../image.js';
import { GUEST_AGENT_CHANNEL_XML, METADATA_NS } from './domxml.js';
import type { Host } from './host.js';
import { DomainState } from './remote/client.js';
import { LibvirtError, VirErrorCode } from './remote/errors.js';
import { uuidToBytes } from './remote/protocol.js';
import { hostFailed } from './storage.js';

const GIB = 1024 ** 3;
/** The longest path a unix socket address holds (sun_path less its terminating NUL). */
const MAX_SOCKET_PATH = 107;

/** The files of one server under the instances directory (see the module comment). */
export interface InstanceFiles {
  dir: string;
  disk: string;
  consoleLog: string;
  consoleSocket: string | undefined;
}

/** Where `serverId`'s files live under `instancesDir`; the id must be a UUID (it names a directory). */
export function instanceFiles(instancesDir: string, serverId: string): InstanceFiles {
  if (!uuidToBytes(serverId)) throw errors.invalidInput(`server id ${serverId} is not a UUID`);
  const dir = join(instancesDir, serverId.toLowerCase());
  const sock = join(dir, 'console.sock');
  return { dir, disk: join(dir, 'disk'), consoleLog: join(dir, 'console.log'), consoleSocket: sock.length <= MAX_SOCKET_PATH ? sock : undefined };
}

/** What `serverDomainXml` needs beyond the spec: the root disk (if any), the console files, the virt type. */
export interface ServerXmlOptions {
  spec: SpawnSpec;
  files: InstanceFiles;
  rootDisk: { format: 'raw' | 'qcow2' } | undefined;
  /** `qemu` (TCG, default) or `kvm`. */
  virtType: 'qemu' | 'kvm';
}

/** A server name as a domain `<title>`: libvirt refuses control characters (newlines) there. */
function titleOf(name: string): string {
  return [...name].map((c) => (c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f ? ' ' : c)).join('');
}

/**
 * The persistent domain of a server: flavor's vCPUs and RAM, the image's boot, root disk vda, two
 * serial ports, ACPI for hot-plug, and the QEMU guest agent's channel (growGuestFilesystem talks to it).
 */
export function serverDomainXml(o: ServerXmlOptions): string {
  const e = escapeXml;
  const { spec, files } = o;
  const boot =
    spec.image.kind === 'kernel'
      ? `    <kernel>${e(spec.image.kernelPath)}</kernel>\n    <initrd>${e(spec.image.ramdiskPath)}</initrd>\n    <cmdline>${e(spec.image.cmdline)}</cmdline>\n`
      : `    <boot dev='hd'/>\n`;
  const disk = o.rootDisk
    ? `    <disk type='file' device='disk'><driver name='qemu' type='${o.rootDisk.format}'/><source file='${e(files.disk)}'/><target dev='vda' bus='virtio'/></disk>\n`
    : '';
  const socket = files.consoleSocket
    ? `    <serial type='unix'><source mode='bind' path='${e(files.consoleSocket)}'/><target port='1'/></serial>\n`
    : '';
  return `<domain type='${o.virtType}'>
  <name>${e(`instance-${spec.id.toLowerCase()}`)}</name>
  <uuid>${e(spec.id.toLowerCase())}</uuid>
  <title>${e(titleOf(spec.name))}</title>
  <metadata>
    <oe:project xmlns:oe="${METADATA_NS}">${e(spec.projectId)}</oe:project>
  </metadata>
  <memory unit='MiB'>${spec.ramMb}</memory>
  <vcpu>${spec.vcpus}</vcpu>
${o.virtType === 'kvm' ? "  <cpu mode='host-passthrough'/>\n" : ''}  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
${boot}  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <controller type='usb' model='none'/>
${disk}    <serial type='file'><source path='${e(files.consoleLog)}' append='off'/><target port='0'/></serial>
${socket}    ${GUEST_AGENT_CHANNEL_XML}
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

/** Spawn and destroy on one libvirt host (see the module comment); libvirt errors go through `mapError`. */
export class ServerSpawner {
  constructor(
    private readonly host: Host,
    private readonly instancesDir: string,
    private readonly virtType: 'qemu' | 'kvm',
    private readonly mapError: (err: unknown, ctx: { serverId: string; action: string }) => Error,
  ) {}

  /** See VirtDriver.spawn. Resolves once the domain runs; a failure removes what was made. */
  async spawn(spec: SpawnSpec): Promise<void> {
    const files = instanceFiles(this.instancesDir, spec.id);
    const client = this.host.client;
    const taken = await client.lookupByUuid(spec.id).then(
      () => true,
      (err: unknown) => {
        if (err instanceof LibvirtError && err.code === VirErrorCode.NO_DOMAIN) return false;
        throw this.mapError(err, { serverId: spec.id, action: 'spawn' });
      },
    );
    if (taken) throw errors.instanceInvalidState(spec.id, 'defined', 'spawn');
    let defined = false;
    try {
      await mkdir(files.dir, { recursive: true, mode: 0o700 });
      const rootDisk = await this.makeRootDisk(spec, files);
      const xml = serverDomainXml({ spec, files, rootDisk, virtType: this.virtType });
      let dom;
      try {
        dom = await client.defineXml(xml);
        defined = true;
        await client.create(dom);
      } catch (err) {
        throw this.mapError(err, { serverId: spec.id, action: 'spawn' });
      }
      const st = await client.getState(dom).catch((err: unknown) => {
        throw this.mapError(err, { serverId: spec.id, action: 'spawn' });
      });
      if (st.state !== DomainState.RUNNING && st.state !== DomainState.BLOCKED) {
        throw errors.driverFailed(`instance ${spec.id} did not start (libvirt state ${st.state})`);
      }
    } catch (err) {
      await this.remove(spec.id, files, defined).catch(() => undefined);
      throw err;
    }
  }

  /** See VirtDriver.destroy: destroy, undefine, remove the directory; a missing domain is fine. */
  async destroy(serverId: string): Promise<void> {
    const files = instanceFiles(this.instancesDir, serverId);
    await this.remove(serverId, files, true);
  }

  private async remove(serverId: string, files: InstanceFiles, defined: boolean): Promise<void> {
    const client = this.host.client;
    if (defined) {
      try {
        const dom = await client.lookupByUuid(serverId);
        if (await client.isActive(dom)) await client.destroy(dom);
        await client.undefine(dom);
      } catch (err) {
        if (!(err instanceof LibvirtError && err.code === VirErrorCode.NO_DOMAIN)) throw this.mapError(err, { serverId, action: 'delete instance' });
      } finally {
        this.host.forget(serverId);
      }
    }
    try {
      await rm(files.dir, { recursive: true, force: true });
    } catch (err) {
      throw hostFailed("remove the instance's files", err, { detail: files.dir });
    }
  }

  /** The root disk (see the module comment), or undefined for a kernel image with no root disk. */
  private async makeRootDisk(spec: SpawnSpec, files: InstanceFiles): Promise<{ format: 'raw' | 'qcow2' } | undefined> {
    const want = spec.rootDiskGb * GIB;
    if (spec.image.kind === 'kernel') {
      if (want === 0) return undefined;
      try {
        await writeFile(files.disk, '', { mode: 0o600 });
        await truncate(files.disk, want);
      } catch (err) {
        throw hostFailed('create the root disk', err, { detail: files.disk });
      }
      return { format: 'raw' };
    }
    const { diskPath, diskFormat } = spec.image;
    try {
      // A reflink where the filesystem can (instant, shares blocks until written), else a copy.
      await copyFile(diskPath, files.disk, constants.COPYFILE_FICLONE);
    } catch (err) {
      throw hostFailed("copy the image's disk", err, { detail: `${diskPath} -> ${files.disk}` });
    }
    const has = await fileDiskBytes(files.disk, diskFormat).catch((err: unknown) => {
      throw hostFailed("read the image's disk size", err, { detail: files.disk });
    });
    if (want > has) {
      try {
        if (diskFormat === 'raw') await truncate(files.disk, want);
        else await runCommand('qemu-img', ['resize', '-q', '-f', 'qcow2', files.disk, String(want)], { timeoutMs: 60_000 });
      } catch (err) {
        throw hostFailed('grow the root disk to the flavor', err, { detail: files.disk });
      }
    }
    return { format: diskFormat };
  }
}
