/**
 * Guest: one libvirt domain (Nova's nova/virt/libvirt/guest.py), over the remote client.
 * Keeps the parsed domain XML of the running domain so the hot path does not refetch it.
 */
import { parseDomainXml, type DomainInfo } from './domxml.js';
import { BLOCK_RESIZE_BYTES, DomainState, DomainXmlFlags, type RemoteClient } from './remote/client.js';
import { LibvirtError, VirErrorCode } from './remote/errors.js';
import type { RemoteDomain } from './remote/protocol.js';
import type { ServerState } from '../driver.js';

/**
 * How the driver reads the size the guest sees (see the driver's header for measurements).
 * - `query-block` (default, fastest): QMP `query-block` through virDomainQemuMonitorCommand,
 *   the disk picked by its libvirt alias / node name; falls back to `blockinfo` when the disk
 *   cannot be identified. libvirt marks the domain tainted ("custom-monitor") once.
 * - `blockinfo`: virDomainGetBlockInfo(disk).capacity — the documented API, one disk by target.
 */
export type LiveSizeMethod = 'blockinfo' | 'query-block';

/**
 * Maps a virDomainState to our ServerState: running or blocked is `active`, pmsuspended `suspended`; nostate,
 * shutdown (being shut down) and unknown values are `unknown`.
 */
export function toServerState(state: number): ServerState {
  switch (state) {
    case DomainState.RUNNING:
    case DomainState.BLOCKED:
      return 'active';
    case DomainState.PAUSED:
      return 'paused';
    case DomainState.SHUTOFF:
      return 'shutoff';
    case DomainState.CRASHED:
      return 'crashed';
    case DomainState.PMSUSPENDED:
      return 'suspended';
    default:
      // NOSTATE, SHUTDOWN (being shut down), and anything newer.
      return 'unknown';
  }
}

interface CachedXml {
  /** Domain id the XML belongs to: a restart gives a new id, and so a refetch. */
  id: number;
  at: number;
  info: DomainInfo;
}

/**
 * One libvirt domain (Nova's libvirt Guest), by UUID. Its methods throw the remote client's errors (LibvirtError,
 * LibvirtConnectionError, LibvirtTimeoutError); the driver maps them to the catalogue.
 */
export class Guest {
  /** When libvirtd last confirmed this domain by UUID (Host.lookup). */
  lookedUpAt = 0;
  private cached: CachedXml | undefined;

  constructor(
    private readonly client: RemoteClient,
    /** The domain UUID as text (our server id). */
    readonly uuid: string,
    public dom: RemoteDomain,
    private readonly cacheTtlMs: number,
  ) {}

  /** The domain's libvirt name (not its UUID). */
  get name(): string {
    return this.dom.name;
  }

  /**
   * One QEMU guest agent command through libvirtd (virDomainQemuAgentCommand): the agent's JSON
   * reply text, or null. `timeoutSeconds` is libvirtd's wait for the agent; the call gives up
   * `marginMs` after that (default 5 s). Throws the client's errors.
   */
  agentCommand(cmd: string, timeoutSeconds: number, marginMs?: number): Promise<string | null> {
    return this.client.qemuAgentCommand(this.dom, cmd, timeoutSeconds, 0, marginMs === undefined ? undefined : { timeoutMs: marginMs });
  }

  /** Replace the handle with a fresh lookup; drops cached XML if the domain restarted. */
  refreshHandle(dom: RemoteDomain): void {
    if (this.cached && this.cached.id !== dom.id) this.cached = undefined;
    this.dom = dom;
  }

  /** Drop the cached live XML, so the next `info()` reads it from libvirtd. */
  invalidate(): void {
    this.cached = undefined;
  }

  /** Parsed live domain XML; cached while the domain runs with the same id, for `cacheTtlMs`. */
  async info(opts: { fresh?: boolean } = {}): Promise<{ info: DomainInfo; fromCache: boolean }> {
    const c = this.cached;
    if (!opts.fresh && c && c.id === this.dom.id && this.dom.id !== -1 && Date.now() - c.at < this.cacheTtlMs) {
      return { info: c.info, fromCache: true };
    }
    const id = this.dom.id;
    const info = parseDomainXml(await this.client.getXmlDesc(this.dom, 0));
    this.cached = { id, at: Date.now(), info };
    return { info, fromCache: false };
  }

  /**
   * The persistent configuration (what the domain boots with next time), parsed; undefined for a
   * transient domain, which has none. Never cached: it changes only on attach/detach/define.
   */
  async persistentInfo(): Promise<DomainInfo | undefined> {
    if (!(await this.client.isPersistent(this.dom))) return undefined;
    return parseDomainXml(await this.client.getXmlDesc(this.dom, DomainXmlFlags.INACTIVE));
  }

  /** Whether the domain runs (has a QEMU process): the live definition exists only then. */
  isActive(): Promise<boolean> {
    return this.client.isActive(this.dom);
  }

  /** The domain's state (virDomainGetState) as a ServerState, with libvirt's raw state and reason numbers. */
  async state(): Promise<{ state: ServerState; raw: number; reason: number }> {
    const s = await this.client.getState(this.dom);
    return { state: toServerState(s.state), raw: s.state, reason: s.reason };
  }

  /** virDomainBlockResize in bytes. libvirt 9 shrinks without complaint: callers must check. */
  async blockResize(target: string, bytes: number): Promise<void> {
    await this.client.blockResize(this.dom, target, bytes, BLOCK_RESIZE_BYTES);
  }

  /** The size the guest sees for `target`, read live from QEMU. */
  async liveBytes(target: string, method: LiveSizeMethod, ident?: { alias?: string; sourceIndex?: number }): Promise<number> {
    if (method === 'query-block' && (ident?.alias !== undefined || ident?.sourceIndex !== undefined)) {
      let text: string | undefined;
      try {
        text = await this.client.qemuMonitorCommand(this.dom, '{"execute":"query-block"}');
      } catch (err) {
        // A domain without a running QEMU has no monitor; GetBlockInfo still answers from config.
        if (!(err instanceof LibvirtError && err.code === VirErrorCode.OPERATION_INVALID)) throw err;
      }
      const bytes = text === undefined ? undefined : findQueryBlockSize(text, ident);
      if (bytes !== undefined) return bytes;
      // Not identifiable (no alias yet, or a layout we do not know): the documented API decides,
      // and reports a missing disk in its own words.
    }
    return (await this.client.getBlockInfo(this.dom, target)).capacity;
  }

  /** virDomainAttachDeviceFlags; `flags` is DomainAffect.LIVE and/or DomainAffect.CONFIG. */
  async attachDevice(xml: string, flags: number): Promise<void> {
    try {
      await this.client.attachDeviceFlags(this.dom, xml, flags);
    } finally {
      this.invalidate();
    }
  }

  /** virDomainDetachDeviceFlags; `flags` is DomainAffect.LIVE and/or DomainAffect.CONFIG. */
  async detachDevice(xml: string, flags: number): Promise<void> {
    try {
      await this.client.detachDeviceFlags(this.dom, xml, flags);
    } finally {
      this.invalidate();
    }
  }
}

interface QueryBlockEntry {
  device?: string;
  qdev?: string;
  inserted?: { 'node-name'?: string; image?: { 'virtual-size'?: number } };
}

/**
 * Picks one disk's virtual size out of a `query-block` reply. libvirt's -blockdev layout leaves
 * `device` empty; the disk is named by its qdev path (`/machine/peripheral/<alias>/virtio-backend`
 * for virtio-blk, `<alias>` for scsi-hd) or by its format node (`libvirt-<index>-format`).
 */
export function findQueryBlockSize(text: string, ident: { alias?: string; sourceIndex?: number }): number | undefined {
  const parsed = JSON.parse(text) as { return?: QueryBlockEntry[] };
  const entries = parsed.return ?? [];
  const nodeName = ident.sourceIndex === undefined ? undefined : `libvirt-${ident.sourceIndex}-format`;
  for (const e of entries) {
    const qdevParts = (e.qdev ?? '').split('/');
    const byAlias =
      ident.alias !== undefined && (qdevParts.includes(ident.alias) || e.device === `drive-${ident.alias}`);
    const byNode = nodeName !== undefined && e.inserted?.['node-name'] === nodeName;
    if (byAlias || byNode) return e.inserted?.image?.['virtual-size'];
  }
  return undefined;
}
