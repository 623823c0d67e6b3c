/**
 * A scripted libvirtd: a unix-socket server speaking libvirt's remote protocol (the real framing
 * and XDR, src/virt/libvirt/remote) for the few procedures LibvirtDriver uses, over an in-memory
 * model of domains (Nova's nova/tests/fixtures/libvirt.py plays this part for Nova). It lets the
 * real driver code run without the lab: every classification and re-observation path, with
 * failures injected per procedure.
 *
 * Semantics kept from libvirt 9: a domain has a live definition only while active and a
 * persistent one only if defined; LIVE on an inactive domain and CONFIG on a transient one are
 * OPERATION_INVALID; GetXMLDesc(0) is the live definition of an active domain, else the
 * persistent one; GetBlockInfo answers from whichever is current; BlockResize needs a running
 * domain.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseDomainXml } from '../../../src/virt/libvirt/domxml.js';
import { DomainAffect, DomainState, DomainXmlFlags } from '../../../src/virt/libvirt/remote/client.js';
import { VirErrorCode } from '../../../src/virt/libvirt/remote/errors.js';
import {
  MessageFramer,
  MessageStatus,
  MessageType,
  PREFIX_BYTES,
  QEMU_PROGRAM,
  RemoteProc,
  bytesToUuid,
  decodeHeader,
  encodeMessage,
  readDomain,
  uuidToBytes,
  writeDomain,
  writeRemoteError,
} from '../../../src/virt/libvirt/remote/protocol.js';
import { escapeXml } from '../../../src/virt/libvirt/xml.js';
import { XdrReader, XdrWriter } from '../../../src/virt/libvirt/remote/xdr.js';

export interface ScriptedDisk {
  serial: string;
  target: string;
  type: 'file' | 'block' | 'network';
  /** File or device path; `iqn/lun` for network disks. */
  source: string;
  format?: 'raw' | 'qcow2';
  readonly?: boolean;
  /** What the guest sees (GetBlockInfo capacity). */
  capacity: number;
}

export interface ScriptedDomain {
  uuid: string;
  name: string;
  active: boolean;
  persistent: boolean;
  /** virDomainState; kept consistent with `active` by start()/stop(). */
  state: number;
  live: ScriptedDisk[];
  config: ScriptedDisk[];
  /** Extra elements of the domain XML before `<devices>` (e.g. `<vcpu>`, `<memory>`); none by default. */
  sizeXml?: string;
}

/** A failure to answer with, once, for a procedure; `before` may change the model first. */
export interface ScriptedFailure {
  code: number;
  message: string;
  before?: (d: ScriptedDomain) => void;
}

export interface ScriptedCall {
  proc: string;
  uuid?: string;
  flags?: number;
  disk?: string;
  bytes?: number;
}

const PROC_NAMES = new Map<number, string>(Object.entries(RemoteProc).map(([k, v]) => [v, k]));

function diskXml(d: ScriptedDisk): string {
  const src =
    d.type === 'file'
      ? `<source file='${escapeXml(d.source)}'/>`
      : d.type === 'block'
        ? `<source dev='${escapeXml(d.source)}'/>`
        : `<source protocol='iscsi' name='${escapeXml(d.source)}'><host name='127.0.0.1' port='3260'/></source>`;
  return (
    `<disk type='${d.type}' device='disk'><driver name='qemu' type='${d.format ?? 'raw'}'/>${src}` +
    `<target dev='${d.target}' bus='virtio'/>${d.readonly ? '<readonly/>' : ''}<serial>${escapeXml(d.serial)}</serial></disk>`
  );
}

function domainXml(d: ScriptedDomain, disks: ScriptedDisk[]): string {
  return `<domain type='qemu'><name>${escapeXml(d.name)}</name><uuid>${d.uuid}</uuid>${d.sizeXml ?? ''}<devices>${disks.map(diskXml).join('')}</devices></domain>`;
}

class Fault extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

export class ScriptedLibvirtd {
  readonly domains = new Map<string, ScriptedDomain>();
  readonly calls: ScriptedCall[] = [];
  /** One failure per procedure name (e.g. `DOMAIN_BLOCK_RESIZE`), used once. */
  readonly failures = new Map<string, ScriptedFailure>();
  /** Procedures that get no answer at all (to make the client time out). */
  readonly silent = new Set<string>();
  /**
   * Procedures whose next call is run only after the call that follows it on the connection, once
   * (as libvirtd's worker threads may give a domain's job to a later call first).
   */
  readonly deferredOnce = new Set<string>();
  dir = '';
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();

  get socket(): string {
    return join(this.dir, 'libvirt-sock');
  }

  get uri(): string {
    return `qemu+unix:///system?socket=${this.socket}`;
  }

  addDomain(d: Omit<ScriptedDomain, 'state'>): ScriptedDomain {
    const dom: ScriptedDomain = { ...d, state: d.active ? DomainState.RUNNING : DomainState.SHUTOFF };
    this.domains.set(dom.uuid, dom);
    return dom;
  }

  /** Power a domain off, as `virsh destroy` does: the live definition goes, the persistent one stays. */
  destroy(uuid: string): void {
    const d = this.mustGet(uuid);
    d.active = false;
    d.state = DomainState.SHUTOFF;
    d.live = [];
    if (!d.persistent) this.domains.delete(uuid);
  }

  /** Start a defined domain: its live definition is its persistent one. */
  start(uuid: string): void {
    const d = this.mustGet(uuid);
    d.active = true;
    d.state = DomainState.RUNNING;
    d.live = d.config.map((x) => ({ ...x }));
  }

  calledWith(proc: string): ScriptedCall[] {
    return this.calls.filter((c) => c.proc === proc);
  }

  async listen(): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), 'oe-scripted-libvirtd-'));
    this.server = net.createServer((s) => this.serve(s));
    await new Promise<void>((r) => this.server!.listen(this.socket, r));
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }

  private mustGet(uuid: string): ScriptedDomain {
    const d = this.domains.get(uuid);
    if (!d) throw new Error(`no scripted domain ${uuid}`);
    return d;
  }

  private serve(s: net.Socket): void {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    s.on('error', () => undefined);
    const framer = new MessageFramer();
    /** A call held back by `deferredOnce`, run after the next one. */
    let deferred: (() => void) | undefined;
    s.on('data', (chunk: Buffer) => {
      for (const m of framer.push(chunk)) {
        const h = decodeHeader(m);
        const reply = (body?: Buffer, status: number = MessageStatus.OK): void => {
          s.write(encodeMessage({ ...h, type: MessageType.REPLY, status }, body));
        };
        const r = new XdrReader(m, PREFIX_BYTES);
        const name = h.program === QEMU_PROGRAM ? 'QEMU_MONITOR_COMMAND' : (PROC_NAMES.get(h.procedure) ?? `PROC_${h.procedure}`);
        if (this.silent.has(name)) continue;
        const run = (): void => {
          try {
            const body = this.handle(name, r);
            reply(body);
          } catch (err) {
            const f = err instanceof Fault ? err : new Fault(VirErrorCode.INTERNAL_ERROR, (err as Error).message);
            const w = new XdrWriter();
            writeRemoteError(w, { code: f.code, domain: 10, message: f.message, level: 2, str1: null, str2: null, str3: null, int1: 0, int2: 0 });
            reply(w.bytes(), MessageStatus.ERROR);
          }
        };
        if (this.deferredOnce.delete(name)) {
          deferred = run;
          continue;
        }
        run();
        const held = deferred;
        deferred = undefined;
        held?.();
      }
    });
  }

  private domainOf(r: XdrReader): ScriptedDomain {
    const ref = readDomain(r);
    const d = this.domains.get(bytesToUuid(ref.uuid));
    if (!d) throw new Fault(VirErrorCode.NO_DOMAIN, `Domain not found: no domain with matching uuid '${bytesToUuid(ref.uuid)}'`);
    return d;
  }

  private ref(d: ScriptedDomain): Buffer {
    const w = new XdrWriter(96);
    writeDomain(w, { name: d.name, uuid: uuidToBytes(d.uuid)!, id: d.active ? 7 : -1 });
    return w.bytes();
  }

  private injected(name: string, d: ScriptedDomain | undefined): void {
    const f = this.failures.get(name);
    if (!f) return;
    this.failures.delete(name);
    if (d) f.before?.(d);
    throw new Fault(f.code, f.message);
  }

  private handle(name: string, r: XdrReader): Buffer | undefined {
    switch (name) {
      case 'CONNECT_OPEN':
      case 'CONNECT_CLOSE':
        return undefined;
      case 'DOMAIN_LOOKUP_BY_UUID': {
        const uuid = bytesToUuid(r.fixedOpaque(16));
        this.calls.push({ proc: name, uuid });
        const d = this.domains.get(uuid);
        if (!d) throw new Fault(VirErrorCode.NO_DOMAIN, `Domain not found: no domain with matching uuid '${uuid}'`);
        return this.ref(d);
      }
      case 'CONNECT_LIST_ALL_DOMAINS': {
        this.calls.push({ proc: name });
        const doms = [...this.domains.values()];
        const w = new XdrWriter();
        w.array(doms, (x, d) => writeDomain(x, { name: d.name, uuid: uuidToBytes(d.uuid)!, id: d.active ? 7 : -1 }));
        return w.uint(doms.length).bytes();
      }
      case 'DOMAIN_GET_XML_DESC': {
        const d = this.domainOf(r);
        const flags = r.uint();
        this.calls.push({ proc: name, uuid: d.uuid, flags });
        this.injected(name, d);
        const inactive = (flags & DomainXmlFlags.INACTIVE) !== 0 || !d.active;
        if (inactive && !d.persistent) throw new Fault(VirErrorCode.OPERATION_INVALID, 'domain is not persistent');
        return new XdrWriter().string(domainXml(d, inactive ? d.config : d.live)).bytes();
      }
      case 'DOMAIN_GET_STATE': {
        const d = this.domainOf(r);
        this.calls.push({ proc: name, uuid: d.uuid });
        this.injected(name, d);
        return new XdrWriter().int(d.state).int(1).bytes();
      }
      case 'DOMAIN_IS_ACTIVE':
      case 'DOMAIN_IS_PERSISTENT': {
        const d = this.domainOf(r);
        this.calls.push({ proc: name, uuid: d.uuid });
        return new XdrWriter().int(name === 'DOMAIN_IS_ACTIVE' ? Number(d.active) : Number(d.persistent)).bytes();
      }
      case 'DOMAIN_BLOCK_RESIZE': {
        const d = this.domainOf(r);
        const disk = r.string();
        const bytes = r.uhyper();
        const flags = r.uint();
        this.calls.push({ proc: name, uuid: d.uuid, disk, bytes, flags });
        this.injected(name, d);
        if (!d.active) throw new Fault(VirErrorCode.OPERATION_INVALID, 'Requested operation is not valid: domain is not running');
        const target = d.live.find((x) => x.target === disk);
        if (!target) throw new Fault(VirErrorCode.INVALID_ARG, `invalid argument: disk '${disk}' was not found in the domain config`);
        target.capacity = bytes;
        return undefined;
      }
      case 'DOMAIN_GET_BLOCK_INFO': {
        const d = this.domainOf(r);
        const disk = r.string();
        this.calls.push({ proc: name, uuid: d.uuid, disk });
        this.injected(name, d);
        const x = (d.active ? d.live : d.config).find((y) => y.target === disk);
        if (!x) throw new Fault(VirErrorCode.INVALID_ARG, `invalid argument: disk '${disk}' was not found in the domain config`);
        return new XdrWriter().uhyper(x.capacity).uhyper(x.capacity).uhyper(x.capacity).bytes();
      }
      case 'QEMU_MONITOR_COMMAND': {
        const d = this.domainOf(r);
        this.calls.push({ proc: name, uuid: d.uuid });
        throw new Fault(VirErrorCode.OPERATION_INVALID, 'monitor commands are not scripted');
      }
      case 'DOMAIN_ATTACH_DEVICE_FLAGS':
      case 'DOMAIN_DETACH_DEVICE_FLAGS': {
        const d = this.domainOf(r);
        const xml = r.string();
        const flags = r.uint();
        const parsed = parseDomainXml(`<domain><devices>${xml}</devices></domain>`).disks[0];
        if (!parsed) throw new Fault(VirErrorCode.XML_ERROR, 'no disk in the device XML');
        this.calls.push({ proc: name, uuid: d.uuid, flags, disk: parsed.target });
        this.injected(name, d);
        const live = (flags & DomainAffect.LIVE) !== 0;
        const config = (flags & DomainAffect.CONFIG) !== 0;
        if (live && !d.active) throw new Fault(VirErrorCode.OPERATION_INVALID, 'Requested operation is not valid: domain is not running');
        if (config && !d.persistent) throw new Fault(VirErrorCode.OPERATION_INVALID, 'Requested operation is not valid: cannot modify the persistent configuration of a transient domain');
        const defs = [...(live ? [d.live] : []), ...(config ? [d.config] : [])];
        if (name === 'DOMAIN_ATTACH_DEVICE_FLAGS') {
          if (defs.some((def) => def.some((x) => x.target === parsed.target))) throw new Fault(VirErrorCode.OPERATION_FAILED, `target ${parsed.target} already exists`);
          for (const def of defs) {
            def.push({
              serial: parsed.serial ?? '',
              target: parsed.target,
              type: parsed.kind,
              source: parsed.source ?? '',
              ...(parsed.format ? { format: parsed.format } : {}),
              capacity: 1024 ** 3,
            });
          }
        } else {
          if (defs.some((def) => !def.some((x) => x.target === parsed.target))) throw new Fault(VirErrorCode.DEVICE_MISSING, `no target device ${parsed.target}`);
          if (live) d.live = d.live.filter((x) => x.target !== parsed.target);
          if (config) d.config = d.config.filter((x) => x.target !== parsed.target);
        }
        return undefined;
      }
      default:
        throw new Fault(VirErrorCode.NO_SUPPORT, `procedure ${name} is not scripted`);
    }
  }
}
