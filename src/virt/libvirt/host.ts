/**
 * Host: the connection to one libvirtd (Nova's nova/virt/libvirt/host.py). Hands out Guest
 * wrappers and keeps them (with their cached XML) between calls.
 */
import { Guest } from './guest.js';
import { RemoteClient, type Logger } from './remote/client.js';
import { bytesToUuid } from './remote/protocol.js';
import type { CallObserver } from './remote/connection.js';

/** How to reach libvirtd: the URI (see remote/uri.ts) and timeouts in ms (calls default 30 s, connecting 5 s, XML cache 5 s). */
export interface HostOptions {
  uri: string;
  logger?: Logger;
  /** Told each remote-protocol call's procedure and duration (RemoteClientOptions.observeCall). */
  observeCall?: CallObserver;
  callTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** How long parsed domain XML is trusted without a refetch. */
  xmlCacheTtlMs?: number;
}

/** How long a looked-up domain handle is used without asking libvirtd again. */
const LOOKUP_TTL_MS = 60_000;

/**
 * The connection to one libvirtd (Nova's libvirt Host): hands out Guest wrappers by UUID and keeps them between calls.
 * Throws the remote client's errors (LibvirtError and its kin); the driver maps them to the catalogue.
 */
export class Host {
  readonly client: RemoteClient;
  private readonly guests = new Map<string, Guest>();
  private readonly cacheTtlMs: number;

  constructor(opts: HostOptions) {
    this.client = new RemoteClient({
      uri: opts.uri,
      ...(opts.logger ? { logger: opts.logger } : {}),
      ...(opts.observeCall ? { observeCall: opts.observeCall } : {}),
      ...(opts.callTimeoutMs !== undefined ? { callTimeoutMs: opts.callTimeoutMs } : {}),
      ...(opts.connectTimeoutMs !== undefined ? { connectTimeoutMs: opts.connectTimeoutMs } : {}),
    });
    this.cacheTtlMs = opts.xmlCacheTtlMs ?? 5_000;
  }

  /** The libvirt URI this host connects to. */
  get uri(): string {
    return this.client.uri;
  }

  /**
   * The guest with this UUID, looked up now (one round trip, which also tells a restarted domain
   * by its new id). Throws LibvirtError NO_DOMAIN when there is none. `fresh`: ask libvirtd
   * even if a recent lookup is known.
   */
  async lookup(uuid: string, opts: { fresh?: boolean } = {}): Promise<Guest> {
    const key = uuid.toLowerCase();
    const known = this.guests.get(key);
    // libvirtd resolves every domain call by UUID, so a handle stays usable; re-looking it up on
    // every call would only add a round trip. A recent lookup is trusted for LOOKUP_TTL_MS.
    if (!opts.fresh && known && Date.now() - known.lookedUpAt < LOOKUP_TTL_MS) return known;
    try {
      const dom = await this.client.lookupByUuid(key);
      let guest = this.guests.get(key);
      if (guest) guest.refreshHandle(dom);
      else {
        guest = new Guest(this.client, key, dom, this.cacheTtlMs);
        this.guests.set(key, guest);
      }
      guest.lookedUpAt = Date.now();
      return guest;
    } catch (err) {
      this.guests.delete(key);
      throw err;
    }
  }

  /** Every domain, running or not. */
  async listGuests(): Promise<Guest[]> {
    const doms = await this.client.listAllDomains(0);
    const seen = new Set<string>();
    const out = doms.map((dom) => {
      const uuid = bytesToUuid(dom.uuid);
      seen.add(uuid);
      let guest = this.guests.get(uuid);
      if (guest) guest.refreshHandle(dom);
      else {
        guest = new Guest(this.client, uuid, dom, this.cacheTtlMs);
        this.guests.set(uuid, guest);
      }
      return guest;
    });
    for (const k of [...this.guests.keys()]) if (!seen.has(k)) this.guests.delete(k);
    return out;
  }

  /** Drop the kept Guest for `uuid` (its handle and cached XML), so the next `lookup` asks libvirtd. */
  forget(uuid: string): void {
    this.guests.delete(uuid.toLowerCase());
  }

  /** Drop every Guest and close the connection to libvirtd. */
  async close(): Promise<void> {
    this.guests.clear();
    await this.client.close();
  }
}
