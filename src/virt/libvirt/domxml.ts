/**
 * Domain XML: what the driver reads out of libvirt's domain description, and the `<disk>`
 * XML it builds for hot-plug.
 */
import { DEFAULT_ISCSI_PORTAL } from '../../host/iscsi.js';
import type { AttachSpec, DiskKind, DriverDisk } from '../driver.js';
import { escapeXml } from '../../util/xml.js';
import { child, childrenNamed, localName, namespaceOf, parseXml, type XmlElement } from './xml.js';

/**
 * The XML namespace of our domain metadata: `<oe:project xmlns:oe="…">PROJECT</oe:project>`.
 * Defined here only; the lab's domain XML (src/lab) and the test fixtures import it.
 */
export const METADATA_NS = 'https://online-extend.dev/xmlns/1';

/** The QEMU guest agent's virtio-serial channel, as Nova writes it for hw_qemu_guest_agent (libvirt picks the socket path). */
export const GUEST_AGENT_CHANNEL_XML =
  "<channel type='unix'><source mode='bind'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>";
export { DEFAULT_ISCSI_PORTAL };

/** One `<disk>` of the domain, with what the driver needs beyond DriverDisk. */
export interface DomainDisk {
  /** `<serial>`, the volume id; absent → not a volume. */
  serial?: string;
  /** `<target dev>`, e.g. `vdb`. */
  target: string;
  bus?: string;
  kind: DiskKind;
  /** `<disk device>`: disk, lun, cdrom, floppy. */
  device: string;
  format?: 'raw' | 'qcow2';
  /** The driver's other formats (vmdk, …), kept for messages. */
  driverType?: string;
  /** File path, block device path, or the network source name (`iqn/lun` for iSCSI). */
  source?: string;
  /** Network disks: protocol (iscsi, rbd, nbd, …). */
  protocol?: string;
  /** Network disks: first host as `host:port`. */
  portal?: string;
  readonly: boolean;
  /** `<alias name>` in the live XML, e.g. `virtio-disk1`. */
  alias?: string;
  /** `<source index>` in the live XML (QEMU node names are `libvirt-N-format`). */
  sourceIndex?: number;
  /** The `<disk>` element as libvirt wrote it (detach uses it). */
  xml: string;
  /** `<source><encryption format='luks'>`: QEMU decrypts it with the libvirt secret `secretUuid`. */
  encryption?: { format: string; secretUuid?: string };
}

/** What the driver reads from a domain's XML: its UUID, name, project (our `<metadata>` element, if any) and the disks it can handle. */
export interface DomainInfo {
  uuid: string;
  name: string;
  /** `<title>`: the server's display name for domains this service created (spawn.ts), whose `<name>` is `instance-<uuid>`. */
  title?: string;
  projectId?: string;
  /** vCPUs online at boot: `<vcpu current>` if set, else `<vcpu>`; absent when missing or not a positive integer. */
  vcpus?: number;
  /** `<memory>` in MiB (its `unit` applied, rounded down); absent when missing, malformed or under 1 MiB. */
  memoryMb?: number;
  disks: DomainDisk[];
}

const VOLUME_DEVICES = new Set(['disk', 'lun']);

/**
 * Parses libvirt's domain XML (virDomainGetXMLDesc). Disks of other types (dir, volume, nvme, ...) or without a target
 * are left out. Throws XmlParseError when the XML is malformed, a plain Error when its root is not `<domain>`.
 */
export function parseDomainXml(xml: string): DomainInfo {
  const root = parseXml(xml);
  if (root.name !== 'domain') throw new Error(`expected <domain>, got <${root.name}>`);
  const uuid = child(root, 'uuid')?.text.trim() ?? '';
  const name = child(root, 'name')?.text.trim() ?? '';
  const projectId = readProject(root);
  const title = child(root, 'title')?.text.trim();
  const disks = childrenNamed(child(root, 'devices'), 'disk').flatMap((d) => {
    const disk = parseDisk(d);
    return disk ? [disk] : [];
  });
  const vcpus = readVcpus(root);
  const memoryMb = readMemoryMb(root);
  return {
    uuid,
    name,
    ...(title ? { title } : {}),
    ...(projectId !== undefined ? { projectId } : {}),
    ...(vcpus !== undefined ? { vcpus } : {}),
    ...(memoryMb !== undefined ? { memoryMb } : {}),
    disks,
  };
}

/** A positive decimal integer, or undefined (libvirt writes plain digits; anything else is not trusted). */
function positiveInt(text: string | undefined): number | undefined {
  const t = text?.trim();
  if (!t || !/^\d+$/.test(t)) return undefined;
  const n = Number(t);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/**
 * `<vcpu current='N'>MAX</vcpu>`: MAX vCPUs can be plugged, N are online at boot (all of them
 * without `current`). The guest has N: that is what Nova's flavor `vcpus` means.
 */
function readVcpus(root: XmlElement): number | undefined {
  const el = child(root, 'vcpu');
  if (!el) return undefined;
  return el.attrs.current !== undefined ? positiveInt(el.attrs.current) : positiveInt(el.text);
}

/**
 * Bytes per libvirt memory unit, read as libvirt reads it (virScaleInteger: case-insensitive;
 * `b`/`bytes`; `k`, `KiB`: 1024; `KB`: 1000; likewise M, G, T, P, E); KiB without one. libvirt
 * writes its own XML in KiB; other units come from hand-written definitions.
 */
function memoryUnitBytes(unit: string | undefined): number | undefined {
  if (unit === undefined) return 1024;
  const u = unit.toLowerCase();
  if (u === 'b' || u === 'bytes') return 1;
  const m = /^([kmgtpe])(ib|b)?$/.exec(u);
  if (!m) return undefined;
  const power = 'kmgtpe'.indexOf(m[1]!) + 1;
  return m[2] === 'b' ? 1000 ** power : 1024 ** power;
}

/**
 * `<memory unit=…>`: the memory the guest boots with (Nova's flavor `ram`; `<currentMemory>` is
 * the balloon's target and `<maxMemory>` the hot-plug limit, neither what the guest was given).
 * In MiB, rounded down: never more than the guest has.
 */
function readMemoryMb(root: XmlElement): number | undefined {
  const el = child(root, 'memory');
  if (!el) return undefined;
  const amount = positiveInt(el.text);
  const unit = memoryUnitBytes(el.attrs.unit);
  if (amount === undefined || unit === undefined) return undefined;
  const mib = Math.floor((amount * unit) / 1024 ** 2);
  return mib > 0 ? mib : undefined;
}

function readProject(root: XmlElement): string | undefined {
  const metadata = child(root, 'metadata');
  if (!metadata) return undefined;
  for (const el of metadata.children) {
    if (localName(el.name) === 'project' && namespaceOf(el, [root, metadata]) === METADATA_NS) {
      const v = el.text.trim();
      if (v) return v;
    }
  }
  return undefined;
}

function parseDisk(d: XmlElement): DomainDisk | undefined {
  const target = child(d, 'target')?.attrs.dev;
  if (!target) return undefined;
  const type = d.attrs.type ?? 'file';
  const device = d.attrs.device ?? 'disk';
  const src = child(d, 'source');
  const driverType = child(d, 'driver')?.attrs.type;
  const serial = child(d, 'serial')?.text.trim();
  const alias = child(d, 'alias')?.attrs.name;
  const indexAttr = src?.attrs.index;
  let kind: DiskKind;
  let source: string | undefined;
  let protocol: string | undefined;
  let portal: string | undefined;
  switch (type) {
    case 'file':
      kind = 'file';
      source = src?.attrs.file;
      break;
    case 'block':
      kind = 'block';
      source = src?.attrs.dev;
      break;
    case 'network': {
      kind = 'network';
      protocol = src?.attrs.protocol;
      source = src?.attrs.name;
      const host = child(src, 'host');
      if (host?.attrs.name) {
        portal = host.attrs.port ? `${host.attrs.name}:${host.attrs.port}` : host.attrs.name;
      }
      break;
    }
    default:
      return undefined; // dir, volume, nvme, vhostuser: not something we attach
  }
  const disk: DomainDisk = {
    target,
    kind,
    device,
    readonly: child(d, 'readonly') !== undefined,
    xml: d.source,
  };
  if (serial) disk.serial = serial;
  const bus = child(d, 'target')?.attrs.bus;
  if (bus) disk.bus = bus;
  if (driverType) disk.driverType = driverType;
  if (driverType === 'raw' || driverType === 'qcow2') disk.format = driverType;
  if (source !== undefined) disk.source = source;
  if (protocol) disk.protocol = protocol;
  if (portal) disk.portal = portal;
  if (alias) disk.alias = alias;
  if (indexAttr !== undefined && /^\d+$/.test(indexAttr)) disk.sourceIndex = Number(indexAttr);
  // libvirt 9.0 writes it inside <source>; older definitions had it directly in <disk>.
  const enc = child(src, 'encryption') ?? child(d, 'encryption');
  if (enc?.attrs.format) {
    const secretUuid = child(enc, 'secret')?.attrs.uuid;
    disk.encryption = { format: enc.attrs.format, ...(secretUuid ? { secretUuid } : {}) };
  }
  return disk;
}

/** The attached volumes: disks with a serial. */
export function volumeDisks(info: DomainInfo): DomainDisk[] {
  return info.disks.filter((d) => d.serial !== undefined && VOLUME_DEVICES.has(d.device));
}

/** A volume's `<disk>` as the driver contract's DriverDisk (`volumeId` from `<serial>`, `device` from `<target dev>`). */
export function toDriverDisk(d: DomainDisk): DriverDisk {
  const out: DriverDisk = { volumeId: d.serial ?? '', device: d.target, kind: d.kind };
  if (d.kind === 'file' && d.format) out.format = d.format;
  if (d.source !== undefined) out.source = d.source;
  if (d.readonly) out.readonly = true;
  return out;
}

/** Device names `vda`…`vdzz`: 26 one-letter and 26×26 two-letter suffixes. */
export const MAX_DEVICE_NAMES = 26 * 27;

/**
 * The next free `vdX` name (vdb first: vda is conventionally the root disk), up to `vdzz`. Throws a plain Error
 * when all are taken (compute refuses an attach before that: TooManyDiskDevices, 403).
 */
export function nextFreeDevice(used: Iterable<string>, prefix = 'vd'): string {
  const taken = new Set(used);
  for (let i = 1; i < MAX_DEVICE_NAMES; i++) {
    const name = prefix + deviceSuffix(i);
    if (!taken.has(name)) return name;
  }
  throw new Error(`no free ${prefix}X device name`);
}

/** 0 → a, 25 → z, 26 → aa (the kernel's naming). */
export function deviceSuffix(i: number): string {
  let s = '';
  let n = i;
  do {
    s = String.fromCharCode(97 + (n % 26)) + s;
    n = Math.floor(n / 26) - 1;
  } while (n >= 0);
  return s;
}

function splitPortal(portal: string | undefined): { host: string; port: string } {
  const p = portal ?? DEFAULT_ISCSI_PORTAL;
  const m = /^\[?([^\]]+?)\]?(?::(\d+))?$/.exec(p);
  return { host: m?.[1] ?? p, port: m?.[2] ?? '3260' };
}

/** The `<disk>` XML for hot-plugging `spec` as `device` (virtio bus, serial = volume id). */
export function buildDiskXml(spec: AttachSpec, device: string, secretUuid?: string): string {
  const serial = `<serial>${escapeXml(spec.volumeId)}</serial>`;
  // QEMU-native LUKS (libvirt's engine='qemu' default for format='luks'): inside <source>, where
  // libvirt 9.0 keeps it. The secret holds the passphrase (secrets.ts).
  const enc = spec.encryption && secretUuid !== undefined ? encryptionXml(secretUuid) : '';
  const target = `<target dev='${escapeXml(device)}' bus='virtio'/>`;
  const format = spec.format ?? 'raw';
  switch (spec.kind) {
    case 'file':
      return (
        `<disk type='file' device='disk'><driver name='qemu' type='${escapeXml(format)}'/>` +
        `<source file='${escapeXml(spec.source)}'>${enc}</source>${target}${serial}</disk>`
      );
    case 'block':
      return (
        `<disk type='block' device='disk'><driver name='qemu' type='raw'/>` +
        `<source dev='${escapeXml(spec.source)}'>${enc}</source>${target}${serial}</disk>`
      );
    case 'network': {
      const { host, port } = splitPortal(spec.portal);
      return (
        `<disk type='network' device='disk'><driver name='qemu' type='raw'/>` +
        `<source protocol='iscsi' name='${escapeXml(spec.source)}'>` +
        `<host name='${escapeXml(host)}' port='${escapeXml(port)}'/>${enc}</source>${target}${serial}</disk>`
      );
    }
  }
}

/** The `<encryption>` element of a QEMU-native LUKS disk whose passphrase is the libvirt secret `secretUuid`. */
export function encryptionXml(secretUuid: string): string {
  return `<encryption format='luks'><secret type='passphrase' uuid='${escapeXml(secretUuid)}'/></encryption>`;
}
