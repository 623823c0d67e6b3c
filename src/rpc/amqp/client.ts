/**
 * ComputeRpc over RabbitMQ (Nova's compute/rpcapi.py on oslo.messaging): each call is published
 * to the topic exchange with routing key `compute.<host>` (protocol.ts), answered by that host's
 * agent (server.ts) through RabbitMQ's direct reply-to, matched by correlation id.
 *
 * Failing fast, never hanging:
 * - broker away (not connected, or the connection lost while a call waits) or blocking
 *   publishers (a memory or disk alarm): MessagingUnavailable (503, uncertain) at once; a call
 *   under way when the connection drops may have run, hence uncertain.
 * - no agent for the host: calls are published `mandatory`, and an agent's queue exists only while
 *   it consumes (server.ts), so the broker returns the call at once (basic.return):
 *   ComputeHostUnavailable (503, uncertain) "no compute agent is listening".
 * - no answer within `timeoutMs` (oslo.messaging's rpc_response_timeout, config rpcTimeoutMs):
 *   ComputeHostUnavailable "no answer within N ms" (uncertain: the agent may still act). The
 *   message's `expiration` and deadline header make a late agent drop it instead.
 * - the agent's answer is an error: the same ServiceError (code, message, final, reason) is thrown
 *   here, as httpClient.ts rebuilds one from an HTTP fault.
 *
 * No host known (`syncInventory()` without a host, `syncServer(undefined, id)`): a cast to every
 * agent on the fanout exchange, answered at once without waiting for the hosts (how many there
 * are is not known here). `syncServer(undefined, id)` so answers undefined: each agent that has
 * the server records it in the store, where the next request finds it; the periodic inventory
 * sync would find it too. ComputeAPI bounds such lookups (syncOnMiss), so a stream of made-up ids
 * costs each host at most that many driver lookups.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Channel, ConsumeMessage, Message } from 'amqplib';
import { errors, NO_AGENT_LISTENING, type ServiceError } from '../../errors.js';
import type { ComputeRpc } from '../../compute/rpc.js';
import type { ServerRecord } from '../../db/store.js';
import type { HostSizeExtend } from '../../compute/manager.js';
import type { AttachSpec, DriverCapabilities, DriverServer, GuestFilesystemGrowth, SpawnSpec } from '../../virt/driver.js';
import type { AmqpConnection } from './connection.js';
import { DEADLINE_HEADER, DIRECT_REPLY_TO, FANOUT_EXCHANGE, fromWireError, hostQueue, RPC_EXCHANGE, validHost, type RpcArgs, type RpcMethod, type RpcReply } from './protocol.js';

/** What AmqpComputeRpc is built from. */
export interface AmqpComputeRpcOptions {
  /** The process's connection (shared with any other AMQP user of the process). */
  connection: AmqpConnection;
  /** Deadline of one call, ms (config rpcTimeoutMs). */
  timeoutMs: number;
  logger: Logger;
}

interface Pending {
  host: string;
  method: RpcMethod;
  resolve(value: unknown): void;
  reject(err: ServiceError): void;
  timer: NodeJS.Timeout;
  /** When it was published (performance.now()). */
  sentAt: number;
}

/**
 * How often calls still waiting are checked for an agent that went away (ms): an agent killed
 * during a call takes its exclusive queue with it, and the call's answer will never come.
 */
const AGENT_PROBE_MS = 2_000;

/** Pause before a channel that failed is opened again while the connection is up, ms. */
const CHANNEL_RETRY_MS = 500;

/** See the module comment. `ready()` waits for the first channel; `close()` ends it (not the connection). */
export class AmqpComputeRpc implements ComputeRpc {
  private readonly conn: AmqpConnection;
  private readonly timeoutMs: number;
  private readonly log: Logger;
  /** The channel calls are published on and replies come back to; undefined while there is none. */
  private ch: Channel | undefined;
  private settingUp = false;
  private closed = false;
  private readonly pending = new Map<string, Pending>();
  private readonly stops: Array<() => void> = [];
  private readyWaiters: Array<() => void> = [];

  constructor(opts: AmqpComputeRpcOptions) {
    this.conn = opts.connection;
    this.timeoutMs = opts.timeoutMs;
    this.log = opts.logger.child({ component: 'compute-rpc-client' });
    this.stops.push(this.conn.onConnect(() => void this.setUp()));
    this.stops.push(this.conn.onDisconnect(() => this.lost('the connection to the message broker was lost before the answer came')));
    const probe = setInterval(() => void this.probeAgents(), AGENT_PROBE_MS);
    probe.unref();
    this.stops.push(() => clearInterval(probe));
  }

  /**
   * Calls waiting longer than AGENT_PROBE_MS: is their host's queue still there? An agent that
   * died (kill -9, a host crash) loses its exclusive queue at once, and a call it had taken will
   * never be answered: such calls fail now with ComputeHostUnavailable (uncertain: the agent may
   * have acted before it died), not at their deadline. An agent that is back before the probe
   * has a queue again: its lost calls still wait for their deadline.
   */
  private async probeAgents(): Promise<void> {
    if (this.closed || !this.ch || this.pending.size === 0) return;
    const now = performance.now();
    const hosts = new Set<string>();
    for (const p of this.pending.values()) if (now - p.sentAt >= AGENT_PROBE_MS) hosts.add(p.host);
    for (const host of hosts) {
      let ch: Channel | undefined;
      try {
        ch = await this.conn.channel();
        ch.on('error', () => undefined); // a missing queue closes the channel with 404: expected
        await ch.checkQueue(hostQueue(host));
      } catch (err) {
        if (!/NOT_FOUND|404/.test((err as Error).message)) continue; // the broker away: `lost` handles that
        for (const [id, p] of this.pending) {
          if (p.host !== host || p.sentAt > now) continue;
          clearTimeout(p.timer);
          this.pending.delete(id);
          p.reject(errors.computeHostUnavailable(host, 'its compute agent went away during the call'));
        }
      } finally {
        await ch?.close().catch(() => undefined);
      }
    }
  }

  /** Resolves once calls can be published (at once if they can); MessagingUnavailable after `timeoutMs`. */
  ready(timeoutMs: number): Promise<void> {
    if (this.ch) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.readyWaiters = this.readyWaiters.filter((w) => w !== done);
        reject(errors.messagingUnavailable(`the RPC client was not ready within ${timeoutMs} ms`));
      }, timeoutMs);
      this.readyWaiters.push(done);
    });
  }

  /** Calls waiting for an answer now. */
  get inFlight(): number {
    return this.pending.size;
  }

  private async setUp(): Promise<void> {
    if (this.closed || this.settingUp || this.ch) return;
    this.settingUp = true;
    let ch: Channel | undefined;
    try {
      ch = await this.conn.channel();
      const mine = ch;
      mine.on('error', (err: Error) => this.log.warn({ err: err.message }, 'RPC client channel error'));
      mine.on('close', () => {
        if (this.ch !== mine) return;
        this.ch = undefined;
        this.lost('the RPC channel closed before the answer came');
        if (!this.closed && this.conn.connected) setTimeout(() => void this.setUp(), CHANNEL_RETRY_MS).unref();
      });
      mine.on('return', (msg: Message) => this.returned(msg));
      // Publishing to an exchange that does not exist closes the channel: declare both, as the agents do.
      await mine.assertExchange(RPC_EXCHANGE, 'topic', { durable: false, autoDelete: false });
      await mine.assertExchange(FANOUT_EXCHANGE, 'fanout', { durable: false, autoDelete: false });
      await mine.consume(DIRECT_REPLY_TO, (msg) => this.answered(msg), { noAck: true });
      if (this.closed) {
        await mine.close().catch(() => undefined);
        return;
      }
      this.ch = mine;
      const waiters = this.readyWaiters;
      this.readyWaiters = [];
      for (const w of waiters) w();
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'could not open the RPC client channel; will retry');
      await ch?.close().catch(() => undefined);
      if (!this.closed && this.conn.connected) setTimeout(() => void this.setUp(), CHANNEL_RETRY_MS).unref();
    } finally {
      this.settingUp = false;
    }
  }

  /** Every call waiting for an answer fails: its reply can no longer arrive. */
  private lost(reason: string): void {
    this.ch = undefined;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(errors.messagingUnavailable(reason));
    }
  }

  private returned(msg: Message): void {
    const id = msg.properties.correlationId as string | undefined;
    const p = id === undefined ? undefined : this.pending.get(id);
    if (!p || id === undefined) return;
    clearTimeout(p.timer);
    this.pending.delete(id);
    p.reject(errors.computeHostUnavailable(p.host, NO_AGENT_LISTENING));
  }

  private answered(msg: ConsumeMessage | null): void {
    if (!msg) return;
    const id = msg.properties.correlationId as string | undefined;
    const p = id === undefined ? undefined : this.pending.get(id);
    // An answer to a call that already timed out (or another process's): nobody waits for it.
    if (!p || id === undefined) return;
    clearTimeout(p.timer);
    this.pending.delete(id);
    let reply: RpcReply;
    try {
      reply = JSON.parse(msg.content.toString('utf8')) as RpcReply;
    } catch {
      p.reject(errors.internal(`Compute host ${p.host} answered ${p.method} with something that is not JSON.`, { final: false }));
      return;
    }
    if (reply.ok) p.resolve(reply.result);
    else p.reject(fromWireError(reply.error));
  }

  /** One call to `host`'s agent: resolves with its result or rejects with a ServiceError (module comment). */
  private call<M extends RpcMethod, R>(host: string, method: M, args: RpcArgs<M>): Promise<R> {
    const ch = this.ch;
    if (!ch) return Promise.reject(errors.messagingUnavailable(this.closed ? 'the RPC client is closed' : 'not connected to the message broker'));
    if (this.conn.blocked !== undefined) return Promise.reject(errors.messagingUnavailable(`the message broker refuses messages for now (${this.conn.blocked})`));
    if (!validHost(host)) return Promise.reject(errors.computeHostUnavailable(host.slice(0, 100), 'no compute agent can serve this host name'));
    const id = randomUUID();
    const timeoutMs = this.timeoutMs;
    return new Promise<R>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(errors.computeHostUnavailable(host, `no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { host, method, resolve: resolve as (v: unknown) => void, reject, timer, sentAt: performance.now() });
      try {
        ch.publish(RPC_EXCHANGE, hostQueue(host), Buffer.from(JSON.stringify({ method, args })), {
          mandatory: true,
          replyTo: DIRECT_REPLY_TO,
          correlationId: id,
          // The broker drops the call if no agent took it in time (the caller has given up by then).
          expiration: String(timeoutMs),
          headers: { [DEADLINE_HEADER]: Date.now() + timeoutMs },
          contentType: 'application/json',
          deliveryMode: 1,
        });
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(errors.messagingUnavailable(`could not publish the call (${(err as Error).message})`));
      }
    });
  }

  /** A cast to every agent (fanout, no answer); resolves once published. MessagingUnavailable while disconnected. */
  private async castAll<M extends RpcMethod>(method: M, args: RpcArgs<M>): Promise<void> {
    const ch = this.ch;
    if (!ch) throw errors.messagingUnavailable(this.closed ? 'the RPC client is closed' : 'not connected to the message broker');
    if (this.conn.blocked !== undefined) throw errors.messagingUnavailable(`the message broker refuses messages for now (${this.conn.blocked})`);
    try {
      ch.publish(FANOUT_EXCHANGE, '', Buffer.from(JSON.stringify({ method, args })), {
        expiration: String(this.timeoutMs),
        headers: { [DEADLINE_HEADER]: Date.now() + this.timeoutMs },
        contentType: 'application/json',
        deliveryMode: 1,
      });
    } catch (err) {
      throw errors.messagingUnavailable(`could not publish the cast (${(err as Error).message})`);
    }
  }

  capabilities(host: string): Promise<{ driver: string; capabilities: DriverCapabilities }> {
    return this.call(host, 'capabilities', {});
  }
  /** With a host: a call to its agent. Without: a cast to every agent, resolved once published (module comment). */
  syncInventory(host?: string): Promise<void> {
    return host === undefined ? this.castAll('syncInventory', {}) : this.call(host, 'syncInventory', {});
  }
  /** With a host: a call to its agent. Without: a cast to every agent, answering undefined at once (module comment). */
  async syncServer(host: string | undefined, serverId: string): Promise<ServerRecord | undefined> {
    if (host !== undefined) return this.call(host, 'syncServer', { serverId });
    await this.castAll('syncServer', { serverId });
    return undefined;
  }
  rescan(host: string, serverId: string, volumeId: string): Promise<void> {
    return this.call(host, 'rescan', { serverId, volumeId });
  }
  getHostBytes(host: string, serverId: string, volumeId: string): Promise<number> {
    return this.call(host, 'getHostBytes', { serverId, volumeId });
  }
  extendAttached(host: string, serverId: string, volumeId: string, bytes: number): Promise<number> {
    return this.call(host, 'extendAttached', { serverId, volumeId, bytes });
  }
  extendToHostSize(host: string, serverId: string, volumeId: string): Promise<HostSizeExtend> {
    return this.call(host, 'extendToHostSize', { serverId, volumeId });
  }
  attachVolume(host: string, serverId: string, spec: AttachSpec): Promise<string> {
    return this.call(host, 'attachVolume', { serverId, spec });
  }
  detachVolume(host: string, serverId: string, volumeId: string): Promise<void> {
    return this.call(host, 'detachVolume', { serverId, volumeId });
  }
  spawn(host: string, spec: SpawnSpec): Promise<DriverServer> {
    return this.call(host, 'spawn', { spec });
  }
  destroy(host: string, serverId: string): Promise<void> {
    return this.call(host, 'destroy', { serverId });
  }
  growGuestFilesystem(host: string, serverId: string, volumeId: string): Promise<GuestFilesystemGrowth> {
    return this.call(host, 'growGuestFilesystem', { serverId, volumeId });
  }

  /** Stops: calls waiting fail with MessagingUnavailable, the channel closes. The connection stays (its owner closes it). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const stop of this.stops) stop();
    const ch = this.ch;
    this.lost('the RPC client is closed');
    await ch?.close().catch(() => undefined);
  }
}
