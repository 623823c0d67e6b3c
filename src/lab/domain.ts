/** The test guest's libvirt domain: its XML, and booting it on the lab's libvirtd. */
import { randomUUID } from 'node:crypto';
import { mkdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { escapeXml } from '../util/xml.js';
import { GUEST_AGENT_CHANNEL_XML, METADATA_NS } from '../virt/libvirt/domxml.js';
import { GuestShell } from './guestShell.js';
import type { Accel } from './accel.js';
import { mustRun, run } from './proc.js';

/** What domainXml needs: names, the guest image, where its two serial ports go, extra devices. */
export interface DomainXmlOptions {
  name: string;
  uuid: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  consoleLog: string;
  shellSocket: string;
  /** Guest memory in MiB (default 256). */
  memoryMiB?: number;
  /** Extra `<disk>` (or other device) XML fragments, placed inside `<devices>`. */
  disks?: string[];
  /** Written as `<oe:project>` metadata in METADATA_NS (the driver reads a server's project from it). */
  projectId?: string;
  /** `tcg` (default): `<domain type='qemu'>`; `kvm`: `<domain type='kvm'>` with the host's CPU (host-passthrough). */
  accel?: Accel;
  /**
   * Give the guest the QEMU guest agent's virtio-serial channel `org.qemu.guest_agent.0`
   * (default true; the guest's /init starts qemu-ga on it). false: a guest without an agent.
   */
  guestAgent?: boolean;
}

/** The test guest's domain XML: TCG or KVM (`accel`), direct kernel boot, ACPI (for hot-plug), two serial ports. */
export function domainXml(o: DomainXmlOptions): string {
  const e = escapeXml;
  const metadata =
    o.projectId === undefined
      ? ''
      : `  <metadata>\n    <oe:project xmlns:oe="${METADATA_NS}">${e(o.projectId)}</oe:project>\n  </metadata>\n`;
  const disks = (o.disks ?? []).map((d) => `    ${d.trim()}\n`).join('');
  const kvm = o.accel === 'kvm';
  // Under KVM the guest gets the host's CPU, as `-cpu host` (the probe boots exactly this XML).
  const cpu = kvm ? "  <cpu mode='host-passthrough'/>\n" : '';
  return `<domain type='${kvm ? 'kvm' : 'qemu'}'>
  <name>${e(o.name)}</name>
  <uuid>${e(o.uuid)}</uuid>
${metadata}  <memory unit='MiB'>${o.memoryMiB ?? 256}</memory>
  <vcpu>1</vcpu>
${cpu}  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${e(o.kernel)}</kernel>
    <initrd>${e(o.initrd)}</initrd>
    <cmdline>${e(o.cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <serial type='file'>
      <source path='${e(o.consoleLog)}' append='off'/>
      <target port='0'/>
    </serial>
    <serial type='unix'>
      <source mode='bind' path='${e(o.shellSocket)}'/>
      <target port='1'/>
    </serial>
${disks}${o.guestAgent === false ? '' : `    ${GUEST_AGENT_CHANNEL_XML}\n`}    <memballoon model='none'/>
  </devices>
</domain>
`;
}

/** Size in bytes of the placeholder vda bootGuest adds (the guest reports it as `vda=1048576`). */
export const PLACEHOLDER_VDA_BYTES = 1024 * 1024;

/** Options of bootGuest. */
export interface BootGuestOptions {
  name: string;
  /** Extra `<disk>` XML fragments (e.g. `<disk type='file' device='disk'>…<target dev='vdb' bus='virtio'/>…</disk>`). */
  disks?: string[];
  memoryMiB?: number;
  projectId?: string;
  /**
   * Add a 1 MiB read-only `vda` (default true, unless a fragment already targets vda): the guest
   * names virtio disks in PCI order, so with vda present the guest's names match libvirt's
   * targets (vdb, vdc, …) as long as they are contiguous.
   */
  placeholderVda?: boolean;
  /** Wait until the guest is ready (default true). */
  waitReady?: boolean;
  readyTimeoutMs?: number;
  /**
   * Define the domain (`virsh define` + `start`) instead of creating a transient one: it can then
   * be shut off and started again with its disks, as a cloud's servers are.
   */
  persistent?: boolean;
  /** The accelerator (default: the lab's, `lab.accel`, else TCG). */
  accel?: Accel;
  /** The guest agent's channel (default true; see DomainXmlOptions.guestAgent). */
  guestAgent?: boolean;
}

/** Run virsh against the lab's libvirtd; resolves with stdout, throws on failure. */
export function virsh(lab: { libvirtUri: string }, args: string[], timeoutMs = 60_000): Promise<string> {
  return mustRun('virsh', ['-c', lab.libvirtUri, ...args], { timeoutMs });
}

/**
 * What bootGuest needs of a lab: its dir (guests' files go in `<dir>/guests`), libvirtd and guest
 * image, and the accelerator chosen for it (absent: TCG).
 */
export interface GuestHost {
  dir: string;
  libvirtUri: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  accel?: { accel: Accel };
}

/**
 * Start a domain of the test guest, transient (`virsh create`) or defined (`persistent`), and,
 * by default, wait until it is ready. Throws if it does not start or get ready (then it is destroyed).
 */
export async function bootGuest(lab: GuestHost, opts: BootGuestOptions): Promise<GuestShell> {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(opts.name)) throw new Error(`bad guest name: ${opts.name}`);
  const guestsDir = join(lab.dir, 'guests');
  mkdirSync(guestsDir, { recursive: true });
  const consoleLog = join(guestsDir, `${opts.name}.console.log`);
  const shellSocket = join(guestsDir, `${opts.name}.sock`);
  if (shellSocket.length > 107) throw new Error(`unix socket path too long: ${shellSocket}`);
  rmSync(consoleLog, { force: true });
  rmSync(shellSocket, { force: true });
  const disks = [...(opts.disks ?? [])];
  if (opts.placeholderVda !== false && !disks.some((d) => /dev=['"]vda['"]/.test(d))) {
    const vda = join(guestsDir, `${opts.name}.vda.raw`);
    writeFileSync(vda, Buffer.alloc(0));
    truncateSync(vda, PLACEHOLDER_VDA_BYTES);
    disks.unshift(
      `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${escapeXml(vda)}'/>` +
        `<target dev='vda' bus='virtio'/><readonly/></disk>`,
    );
  }
  const uuid = randomUUID();
  const xml = domainXml({
    name: opts.name,
    uuid,
    kernel: lab.kernel,
    initrd: lab.initrd,
    cmdline: lab.cmdline,
    consoleLog,
    shellSocket,
    memoryMiB: opts.memoryMiB,
    disks,
    projectId: opts.projectId,
    accel: opts.accel ?? lab.accel?.accel ?? 'tcg',
    guestAgent: opts.guestAgent,
  });
  const xmlFile = join(guestsDir, `${opts.name}.xml`);
  writeFileSync(xmlFile, xml);
  // A leftover domain of the same name (a crashed earlier run in this lab) is ours: replace it.
  await run('virsh', ['-c', lab.libvirtUri, 'destroy', opts.name], { timeoutMs: 60_000 });
  await run('virsh', ['-c', lab.libvirtUri, 'undefine', opts.name], { timeoutMs: 60_000 });
  if (opts.persistent) {
    await virsh(lab, ['define', xmlFile]);
    await virsh(lab, ['start', uuid]);
  } else {
    await virsh(lab, ['create', xmlFile]);
  }
  const guest = new GuestShell({ libvirtUri: lab.libvirtUri, uuid, name: opts.name, consoleLog, shellSocket, persistent: opts.persistent ?? false });
  if (opts.waitReady !== false) {
    try {
      await guest.waitReady(opts.readyTimeoutMs ?? 60_000);
    } catch (err) {
      await guest.destroy().catch(() => {});
      throw err;
    }
  }
  return guest;
}
