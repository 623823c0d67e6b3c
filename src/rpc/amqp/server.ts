/**
 * The compute agent's RPC server (oslo.messaging's RPC server with Nova's compute manager as its
 * endpoint): consumes `compute.<host>` and the fanout casts, turns each message into a typed
 * action (protocol.ts `parseRpcAction`; an unknown method or bad arguments is answered with a
 * final InternalError), runs it on the ComputeManager, replies, then acks.
 *
 * The host's queue is not durable and exclusive to the agent's connection (so auto-deleted with
 * it): it exists exactly while an agent consumes it. A call to a host whose agent is down is
 * therefore unroutable and the broker hands it back to the caller at once (client.ts publishes
 * `mandatory`), instead of piling up for an agent that may come back after its callers gave up;
 * and a second agent for the same host is refused (RESOURCE_LOCKED), since the per-volume locks
 * the manager keeps only hold within one agent. Calls in a queue do not survive a broker restart:
 * their callers get MessagingUnavailable (uncertain) and try again.
 *
 * `prefetch` (64, Nova's executor_thread_pool_size) bounds the calls run at once; more wait in
 * the broker. A call whose deadline (header `x-deadline`) has passed is acked and dropped: its
 * caller has given up and answered uncertain, and must not find it done behind its back.
 * Acking after the reply means a call under way when the agent's channel breaks (but not its
 * connection) is delivered again (`redelivered`) and run again: every ComputeManager method is
 * idempotent or refuses a repeat (an extend to the size the guest has is a no-op).
 *
 * Survives broker restarts: on every reconnect of the shared connection the exchanges, queues and
 * consumers are declared again.
 */
import type { Logger } from 'pino';
import type { Channel, ConsumeMessage } from 'amqplib';
import { isServiceError, unexpectedError, type ServiceError } from '../../errors.js';
import type { ComputeManager } from '../../compute/manager.js';
import type { AmqpConnection } from './connection.js';
import { DEADLINE_HEADER, FANOUT_EXCHANGE, hostQueue, parseRpcAction, RPC_EXCHANGE, toWireError, validHost, type RpcAction, type RpcArgs, type RpcMethod, type RpcReply } from './protocol.js';

/** The ComputeManager methods the server calls (the manager itself in production). */
export type RpcManager = Pick<
  ComputeManager,
  'host' | 'driverName' | 'capabilities' | 'syncInventory' | 'syncServer' | 'rescan' | 'getHostBytes' | 'extendAttached' | 'extendToHostSize' | 'attachVolume' | 'detachVolume' | 'spawn' | 'destroy' | 'growGuestFilesystem'
>;

/** One handler per method: the typed table the server dispatches on. */
const HANDLERS: { [M in RpcMethod]: (m: RpcManager, a: RpcArgs<M>) => Promise<unknown> } = {
  capabilities: async (m) => ({ driver: m.driverName, capabilities: m.capabilities }),
  syncInventory: (m) => m.syncInventory(),
  syncServer: (m, a) => m.syncServer(a.serverId),
  rescan: (m, a) => m.rescan(a.serverId, a.volumeId),
  getHostBytes: (m, a) => m.getHostBytes(a.serverId, a.volumeId),
  extendAttached: (m, a) => m.extendAttached(a.serverId, a.volumeId, a.bytes),
  extendToHostSize: (m, a) => m.extendToHostSize(a.serverId, a.volumeId),
  attachVolume: (m, a) => m.attachVolume(a.serverId, a.spec),
  detachVolume: (m, a) => m.detachVolume(a.serverId, a.volumeId),
  spawn: (m, a) => m.spawn(a.spec),
  destroy: (m, a) => m.destroy(a.serverId),
  growGuestFilesystem: (m, a) => m.growGuestFilesystem(a.serverId, a.volumeId),
};

function dispatch(m: RpcManager, action: RpcAction): Promise<unknown> {
  return (HANDLERS[action.method] as (m: RpcManager, a: unknown) => Promise<unknown>)(m, action.args);
}

/** What ComputeRpcServer is built from. */
export interface ComputeRpcServerOptions {
  connection: AmqpConnection;
  manager: RpcManager;
  logger: Logger;
  /** Calls run at once (AMQP prefetch), default 64. */
  prefetch?: number;
}

/** Pause before the consumers are declared again after a failure while the connection is up, ms. */
const RETRY_MS = 1_000;

/** Thrown by `start` when another agent already consumes this host's queue. */
export class HostTakenError extends Error {}

/** See the module comment. */
export class ComputeRpcServer {
  private readonly conn: AmqpConnection;
  private readonly manager: RpcManager;
  private readonly host: string;
  private readonly log: Logger;
  private readonly prefetch: number;
  private ch: Channel | undefined;
  private settingUp = false;
  private closed = false;
  private started = false;
  private stopConnect: (() => void) | undefined;
  private firstSetUp: { resolve(): void; reject(err: Error): void } | undefined;
  private running = 0;
  private consumerTags: string[] = [];
  private idleWaiters: Array<() => void> = [];
  /** Calls answered and calls dropped for their deadline, since start (for logs and tests). */
  readonly counts = { answered: 0, failed: 0, expired: 0 };

  constructor(opts: ComputeRpcServerOptions) {
    if (!validHost(opts.manager.host)) throw new Error(`compute host name ${JSON.stringify(opts.manager.host)} cannot name an RPC queue (empty, over 200 bytes, or with * or #)`);
    this.conn = opts.connection;
    this.manager = opts.manager;
    this.host = opts.manager.host;
    this.log = opts.logger.child({ component: 'compute-rpc-server', host: this.host });
    this.prefetch = opts.prefetch ?? 64;
  }

  /**
   * Starts consuming; resolves once this host's queue is consumed. Waits for the broker if it is
   * away (logging), so an agent started before RabbitMQ comes up serves once it does. Rejects with
   * HostTakenError when another agent consumes `compute.<host>` (two agents must not serve one host).
   */
  start(): Promise<void> {
    if (this.started) throw new Error('ComputeRpcServer already started');
    this.started = true;
    const first = new Promise<void>((resolve, reject) => (this.firstSetUp = { resolve, reject }));
    this.stopConnect = this.conn.onConnect(() => void this.setUp());
    return first;
  }

  private async setUp(): Promise<void> {
    if (this.closed || this.settingUp || this.ch) return;
    this.settingUp = true;
    let ch: Channel | undefined;
    try {
      ch = await this.conn.channel();
      const mine = ch;
      mine.on('error', (err: Error) => this.log.warn({ err: err.message }, 'RPC server channel error'));
      mine.on('close', () => {
        if (this.ch !== mine) return;
        this.ch = undefined;
        if (!this.closed) this.log.warn({}, 'RPC server channel closed; consuming again when the broker is back');
        if (!this.closed && this.conn.connected) setTimeout(() => void this.setUp(), RETRY_MS).unref();
      });
      await mine.prefetch(this.prefetch);
      await mine.assertExchange(RPC_EXCHANGE, 'topic', { durable: false, autoDelete: false });
      await mine.assertExchange(FANOUT_EXCHANGE, 'fanout', { durable: false, autoDelete: false });
      const queue = hostQueue(this.host);
      await mine.assertQueue(queue, { durable: false, exclusive: true, autoDelete: true });
      await mine.bindQueue(queue, RPC_EXCHANGE, queue);
      const fanout = await mine.assertQueue('', { durable: false, exclusive: true, autoDelete: true });
      await mine.bindQueue(fanout.queue, FANOUT_EXCHANGE, '');
      this.ch = mine;
      this.consumerTags = [
        (await mine.consume(queue, (msg) => this.deliver(mine, msg), { noAck: false })).consumerTag,
        (await mine.consume(fanout.queue, (msg) => this.deliver(mine, msg), { noAck: false })).consumerTag,
      ];
      if (this.closed) {
        await mine.close().catch(() => undefined);
        return;
      }
      this.log.info({ queue }, 'consuming compute RPC');
      this.firstSetUp?.resolve();
      this.firstSetUp = undefined;
    } catch (err) {
      if (this.ch === ch) this.ch = undefined;
      await ch?.close().catch(() => undefined);
      const taken = /RESOURCE_LOCKED/.test((err as Error).message);
      if (taken && this.firstSetUp) {
        this.firstSetUp.reject(new HostTakenError(`another compute agent already serves host ${this.host} (its queue ${hostQueue(this.host)} is held by another connection)`));
        this.firstSetUp = undefined;
        await this.close();
        return;
      }
      this.log.warn({ err: (err as Error).message }, 'could not consume compute RPC; will retry');
      if (!this.closed && this.conn.connected) setTimeout(() => void this.setUp(), RETRY_MS).unref();
    } finally {
      this.settingUp = false;
    }
  }

  private deliver(ch: Channel, msg: ConsumeMessage | null): void {
    if (!msg) {
      // The broker cancelled the consumer (the queue was deleted): consume again.
      if (this.ch === ch) {
        this.ch = undefined;
        void ch.close().catch(() => undefined);
        if (!this.closed) setTimeout(() => void this.setUp(), RETRY_MS).unref();
      }
      return;
    }
    this.running++;
    void this.handle(ch, msg).finally(() => {
      this.running--;
      if (this.running === 0) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const w of waiters) w();
      }
    });
  }

  private async handle(ch: Channel, msg: ConsumeMessage): Promise<void> {
    const { correlationId, replyTo } = msg.properties as { correlationId?: string; replyTo?: string };
    const deadline = Number((msg.properties.headers as Record<string, unknown> | undefined)?.[DEADLINE_HEADER]);
    if (Number.isFinite(deadline) && Date.now() > deadline) {
      this.counts.expired++;
      this.log.warn({ correlationId, lateMs: Date.now() - deadline }, 'dropped an RPC call whose caller had given up');
      this.ack(ch, msg);
      return;
    }
    if (msg.fields.redelivered) this.log.warn({ correlationId }, 'RPC call delivered again (a channel broke before its ack): running it again');
    let reply: RpcReply;
    let action: RpcAction | undefined;
    try {
      let body: unknown;
      try {
        body = JSON.parse(msg.content.toString('utf8'));
      } catch {
        body = undefined;
      }
      action = parseRpcAction(this.host, body);
      const result = await dispatch(this.manager, action);
      reply = result === undefined ? { ok: true } : { ok: true, result };
      this.counts.answered++;
    } catch (err) {
      const e: ServiceError = unexpectedError(err);
      // The caller gets the public fields; what only an operator should see stays in this log.
      if (!isServiceError(err) || e.status >= 500) this.log.warn({ method: action?.method, correlationId, code: e.code, detail: e.detail, err }, 'RPC call failed');
      reply = { ok: false, error: toWireError(e) };
      this.counts.failed++;
    }
    if (replyTo) {
      try {
        ch.sendToQueue(replyTo, Buffer.from(JSON.stringify(reply)), { correlationId, contentType: 'application/json', deliveryMode: 1 });
      } catch (err) {
        this.log.warn({ correlationId, err: (err as Error).message }, 'could not send an RPC reply');
      }
    }
    this.ack(ch, msg);
  }

  private ack(ch: Channel, msg: ConsumeMessage): void {
    try {
      ch.ack(msg);
    } catch {
      // The channel is gone: the broker has already put the message back (or dropped it with the queue).
    }
  }

  /** Calls being run now. */
  get inFlight(): number {
    return this.running;
  }

  /**
   * Stops consuming, lets the calls under way finish and reply for up to `graceMs` (10 000), then
   * closes the channel. The connection stays (its owner closes it). Idempotent.
   */
  async close(graceMs = 10_000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopConnect?.();
    this.firstSetUp?.reject(new Error('ComputeRpcServer closed before it consumed'));
    this.firstSetUp = undefined;
    const ch = this.ch;
    this.ch = undefined;
    if (!ch) return;
    // No new deliveries; the channel stays open so the calls under way can reply and ack.
    for (const tag of this.consumerTags) await ch.cancel(tag).catch(() => undefined);
    if (this.running > 0) {
      await Promise.race([new Promise<void>((r) => this.idleWaiters.push(r)), new Promise<void>((r) => setTimeout(r, graceMs).unref())]);
    }
    await ch.close().catch(() => undefined);
  }
}
