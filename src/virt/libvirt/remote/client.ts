/**
 * A libvirt remote-protocol client over libvirtd's unix socket, in plain TypeScript: the
 * procedures this project calls, each encoding its arguments and decoding its reply in XDR
 * (remote_protocol.x / qemu_protocol.x), over the connection of connection.ts (one persistent
 * connection, calls matched by serial, per-call timeouts, never retried).
 */
import { LibvirtError } from './errors.js';
import {
  QEMU_PROGRAM,
  QEMU_PROTOCOL_VERSION,
  QemuProc,
  RemoteProc,
  readDomain,
  readTypedParam,
  uuidToBytes,
  writeDomain,
  type RemoteDomain,
  type TypedParamValue,
} from './protocol.js';
import { XdrWriter } from './xdr.js';
import { RemoteConnection, type CallOptions } from './connection.js';

export type { CallOptions, Logger, RemoteClientOptions } from './connection.js';

/** virDomainState */
export const DomainState = {
  NOSTATE: 0,
  RUNNING: 1,
  BLOCKED: 2,
  PAUSED: 3,
  SHUTDOWN: 4,
  SHUTOFF: 5,
  CRASHED: 6,
  PMSUSPENDED: 7,
} as const;

/** virConnectListAllDomainsFlags (subset). */
export const ListDomainsFlags = { ACTIVE: 1, INACTIVE: 2 } as const;
/** virDomainModificationImpact */
export const DomainAffect = { CURRENT: 0, LIVE: 1, CONFIG: 2 } as const;
/** virDomainBlockResizeFlags */
export const BLOCK_RESIZE_BYTES = 1;
/** virDomainXMLFlags (subset). */
export const DomainXmlFlags = { SECURE: 1, INACTIVE: 2 } as const;
/** virDomainStatsTypes (subset). */
export const DomainStats = { STATE: 1, BLOCK: 32 } as const;

/** virDomainGetBlockInfo's answer, in bytes: `capacity` (guest-visible size), `allocation` (host bytes in use), `physical`. */
export interface BlockInfo {
  /** Bytes the guest sees. */
  capacity: number;
  allocation: number;
  /** Host-side size of the backing storage. */
  physical: number;
}

/** One domain of virConnectGetAllDomainStats: its handle and its typed parameters by name (e.g. `block.0.capacity`). */
export interface DomainStatsRecord {
  dom: RemoteDomain;
  params: Map<string, TypedParamValue>;
}

/** The libvirt remote client: the connection (connection.ts) plus one method per procedure. */
export class RemoteClient extends RemoteConnection {
  /** virConnectListAllDomains: every domain (ListDomainsFlags to filter), as handles. */
  async listAllDomains(flags = 0, opts?: CallOptions): Promise<RemoteDomain[]> {
    const r = await this.remote(RemoteProc.CONNECT_LIST_ALL_DOMAINS, new XdrWriter(16).int(1).uint(flags), opts);
    const doms = r.array(readDomain, 16384);
    r.uint();
    return doms;
  }

  /** Throws LibvirtError NO_DOMAIN when unknown. A malformed UUID is reported the same way. */
  async lookupByUuid(uuid: string, opts?: CallOptions): Promise<RemoteDomain> {
    const bytes = uuidToBytes(uuid);
    if (!bytes) {
      throw new LibvirtError(
        { code: 42, domain: 10, message: `Domain not found: no domain with matching uuid '${uuid}'`, level: 2, str1: null, str2: null, str3: null, int1: 0, int2: 0 },
        'DOMAIN_LOOKUP_BY_UUID',
      );
    }
    const r = await this.remote(RemoteProc.DOMAIN_LOOKUP_BY_UUID, new XdrWriter(32).fixedOpaque(bytes, 16), opts);
    return readDomain(r);
  }

  /** virDomainLookupByName. Throws LibvirtError NO_DOMAIN when unknown. */
  async lookupByName(name: string, opts?: CallOptions): Promise<RemoteDomain> {
    const r = await this.remote(RemoteProc.DOMAIN_LOOKUP_BY_NAME, new XdrWriter(64).string(name), opts);
    return readDomain(r);
  }

  /** virDomainGetXMLDesc: the domain XML (DomainXmlFlags.INACTIVE: the persistent definition). */
  async getXmlDesc(dom: RemoteDomain, flags = 0, opts?: CallOptions): Promise<string> {
    const w = new XdrWriter(96);
    writeDomain(w, dom);
    w.uint(flags);
    const r = await this.remote(RemoteProc.DOMAIN_GET_XML_DESC, w, opts);
    return r.string();
  }

  /** virDomainGetState: virDomainState and its reason code. */
  async getState(dom: RemoteDomain, opts?: CallOptions): Promise<{ state: number; reason: number }> {
    const w = new XdrWriter(96);
    writeDomain(w, dom);
    w.uint(0);
    const r = await this.remote(RemoteProc.DOMAIN_GET_STATE, w, opts);
    return { state: r.int(), reason: r.int() };
  }

  /** virDomainIsActive: whether the domain runs (has a QEMU). */
  async isActive(dom: RemoteDomain, opts?: CallOptions): Promise<boolean> {
    const w = new XdrWriter(96);
    writeDomain(w, dom);
    const r = await this.remote(RemoteProc.DOMAIN_IS_ACTIVE, w, opts);
    return r.int() !== 0;
  }

  /** virDomainIsPersistent: whether the domain has a persistent (defined) configuration. */
  async isPersistent(dom: RemoteDomain, opts?: CallOptions): Promise<boolean> {
    const w = new XdrWriter(96);
    writeDomain(w, dom);
    const r = await this.remote(RemoteProc.DOMAIN_IS_PERSISTENT, w, opts);
    return r.int() !== 0;
  }

  /** virDomainBlockResize; pass BLOCK_RESIZE_BYTES in flags for a size in bytes. */
  async blockResize(dom: RemoteDomain, disk: string, size: number, flags: number, opts?: CallOptions): Promise<void> {
    const w = new XdrWriter(128);
    writeDomain(w, dom);
    w.string(disk);
    w.uhyper(size);
    w.uint(flags);
    await this.remote(RemoteProc.DOMAIN_BLOCK_RESIZE, w, opts);
  }

  /** virDomainGetBlockInfo for one disk target, sizes in bytes. */
  async getBlockInfo(dom: RemoteDomain, disk: string, opts?: CallOptions): Promise<BlockInfo> {
    const w = new XdrWriter(128);
    writeDomain(w, dom);
    w.string(disk);
    w.uint(0);
    const r = await this.remote(RemoteProc.DOMAIN_GET_BLOCK_INFO, w, opts);
    const allocation = r.uhyper();
    const capacity = r.uhyper();
    const physical = r.uhyper();
    return { allocation, capacity, physical };
  }

  /** virDomainQemuMonitorCommand (QMP unless flags has HMP=1). Returns the raw JSON text. */
  async qemuMonitorCommand(dom: RemoteDomain, cmd: string, flags = 0, opts?: CallOptions): Promise<string> {
    const w = new XdrWriter(128);
    writeDomain(w, dom);
    w.string(cmd);
    w.uint(flags);
    const r = await this.call(QEMU_PROGRAM, QEMU_PROTOCOL_VERSION, QemuProc.DOMAIN_MONITOR_COMMAND, w.bytes(), opts);
    return r.string();
  }

  /**
   * virDomainQemuAgentCommand: send one QEMU guest agent command (JSON text, e.g.
   * `{"execute":"guest-ping"}`) through libvirtd, which syncs with the agent first. `timeoutSeconds`
   * is how long libvirtd waits for the agent (a positive number; libvirt's -2 block, -1 default
   * and 0 no-wait are not used here); the RPC call itself waits that long plus `opts.timeoutMs`
   * (default 5 s) for libvirtd. Resolves with the agent's JSON reply text (`{"return":…}`), or
   * null when libvirtd returned none. An agent that is absent, not connected or silent past the
   * timeout is LibvirtError AGENT_UNRESPONSIVE; a domain without the agent's channel is
   * ARGUMENT_UNSUPPORTED; an error the agent answered with is INTERNAL_ERROR.
   */
  async qemuAgentCommand(dom: RemoteDomain, cmd: string, timeoutSeconds: number, flags = 0, opts?: CallOptions): Promise<string | null> {
    if (!Number.isInteger(timeoutSeconds) || timeoutSeconds < 1) throw new RangeError(`agent timeout must be a positive whole number of seconds: ${timeoutSeconds}`);
    const w = new XdrWriter(256);
    writeDomain(w, dom);
    w.string(cmd);
    w.int(timeoutSeconds);
    w.uint(flags);
    const callOpts = { timeoutMs: timeoutSeconds * 1000 + (opts?.timeoutMs ?? 5_000) };
    const r = await this.call(QEMU_PROGRAM, QEMU_PROTOCOL_VERSION, QemuProc.DOMAIN_AGENT_COMMAND, w.bytes(), callOpts);
    return r.optional((x) => x.string());
  }

  /** virDomainAttachDeviceFlags (DomainAffect flags). */
  async attachDeviceFlags(dom: RemoteDomain, xml: string, flags: number, opts?: CallOptions): Promise<void> {
    const w = new XdrWriter(256);
    writeDomain(w, dom);
    w.string(xml);
    w.uint(flags);
    await this.remote(RemoteProc.DOMAIN_ATTACH_DEVICE_FLAGS, w, opts);
  }

  /** virDomainDetachDeviceFlags (DomainAffect flags); returns before the guest released the device. */
  async detachDeviceFlags(dom: RemoteDomain, xml: string, flags: number, opts?: CallOptions): Promise<void> {
    const w = new XdrWriter(256);
    writeDomain(w, dom);
    w.string(xml);
    w.uint(flags);
    await this.remote(RemoteProc.DOMAIN_DETACH_DEVICE_FLAGS, w, opts);
  }

  /** virDomainCreateXML: start a transient domain. */
  async createXml(xml: string, flags = 0, opts?: CallOptions): Promise<RemoteDomain> {
    const r = await this.remote(RemoteProc.DOMAIN_CREATE_XML, new XdrWriter(1024).string(xml).uint(flags), opts);
    return readDomain(r);
  }

  /** virDomainDefineXML: a persistent (shut off) domain. */
  async defineXml(xml: string, opts?: CallOptions): Promise<RemoteDomain> {
    const r = await this.remote(RemoteProc.DOMAIN_DEFINE_XML, new XdrWriter(1024).string(xml), opts);
    return readDomain(r);
  }

  /** virDomainCreate: start a defined domain. */
  async create(dom: RemoteDomain, opts?: CallOptions): Promise<void> {
    const w = new XdrWriter(96);
    writeDomain(w, dom);
    await this.remote(RemoteProc.DOMAIN_CREATE, w, opts);
  }

  /** virDomainUndefine: remove the persistent definition. */
  async undefine(dom: RemoteDomain, opts?: CallOptions): Promise<void> {
    const w = new XdrWriter(96);
    writeDomain(w, dom);
    await this.remote(RemoteProc.DOMAIN_UNDEFINE, w, opts);
  }

  /** virDomainDestroy: stop the domain at once. */
  async destroy(dom: RemoteDomain, opts?: CallOptions): Promise<void> {
    const w = new XdrWriter(96);
    writeDomain(w, dom);
    await this.remote(RemoteProc.DOMAIN_DESTROY, w, opts);
  }

  /** virDomainListGetStats (or virConnectGetAllDomainStats when `doms` is empty). */
  async getDomainStats(doms: RemoteDomain[], stats: number, flags = 0, opts?: CallOptions): Promise<DomainStatsRecord[]> {
    const w = new XdrWriter(128);
    w.array(doms, (x, d) => writeDomain(x, d));
    w.uint(stats);
    w.uint(flags);
    const r = await this.remote(RemoteProc.CONNECT_GET_ALL_DOMAIN_STATS, w, opts);
    return r.array((x) => {
      const dom = readDomain(x);
      const params = new Map(x.array(readTypedParam, 262144));
      return { dom, params };
    }, 16384);
  }
}
