/**
 * The process's one AMQP connection to RabbitMQ (oslo.messaging's transport), from an
 * OpenStack-style `transport_url` (`rabbit://USER:PASSWORD@HOST:PORT/VHOST`).
 *
 * It reconnects by itself (amqplib's connection recovery: exponential backoff with jitter,
 * `reconnectMaxMs` at most between attempts) and never gives up. The RPC client and server built
 * on it (client.ts, server.ts) re-create their channels on every `connect`; while the broker is
 * away, `channel()` fails at once with MessagingUnavailable (503, uncertain), so no call waits
 * for a broker that is not there. `blocked` says when the broker refuses messages for now (a
 * resource alarm), so the client refuses calls at once then too. TCP_NODELAY is set (without it each RPC round trip waits
 * ~40 ms for Nagle's algorithm, measured in shared/notes/scale-out.md) and AMQP heartbeats make
 * a broker that vanished without closing the socket noticed within about two heartbeats.
 *
 * The password is never logged: logs and messages name the broker by `redacted`.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { connect, type Channel, type ChannelModel, type Options, type RecoveringChannelModel } from 'amqplib';
import { errors } from '../../errors.js';

/** A parsed `transport_url`. */
export interface TransportUrl {
  hostname: string;
  port: number;
  username: string;
  password: string;
  /** The virtual host, `/` when the URL gives none (oslo.messaging's default). */
  vhost: string;
  /** The URL with the password replaced by `***`: the only form that may be logged. */
  redacted: string;
}

/** AMQP's default port. */
const AMQP_PORT = 5672;

/**
 * Parses oslo.messaging's `rabbit://USER:PASSWORD@HOST:PORT/VHOST` (user, password and vhost
 * percent-decoded; port 5672 and vhost `/` by default). One broker only, no query options (TLS
 * and the like are not supported: refused rather than ignored). Throws Error naming what is
 * wrong, never containing the password.
 */
export function parseTransportUrl(url: string): TransportUrl {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase();
  if (scheme !== 'rabbit') throw new Error(`transport URL: expected rabbit://USER:PASSWORD@HOST:PORT/VHOST, got scheme ${scheme ?? '(none)'}`);
  const rest = url.slice(url.indexOf('//') + 2);
  // oslo.messaging's list of brokers: `rabbit://u:p@h1:5672,u:p@h2:5672/vhost`.
  if (rest.split(/[/?#]/)[0]!.includes(',')) throw new Error('transport URL: several brokers are not supported; give one rabbit://USER:PASSWORD@HOST:PORT/VHOST');
  let parsed: URL;
  try {
    parsed = new URL(`amqp://${rest}`);
  } catch {
    throw new Error('transport URL: not a valid rabbit://USER:PASSWORD@HOST:PORT/VHOST');
  }
  if (parsed.search || parsed.hash) throw new Error('transport URL: query options are not supported (TLS and other options: not implemented)');
  const hostname = parsed.hostname.replace(/^\[|\]$/g, '');
  if (!hostname) throw new Error('transport URL: no broker host');
  const port = parsed.port ? Number(parsed.port) : AMQP_PORT;
  const username = decodeURIComponent(parsed.username);
  const password = decodeURIComponent(parsed.password);
  const path = parsed.pathname.replace(/^\//, '');
  const vhost = path === '' ? '/' : decodeURIComponent(path);
  const auth = username || password ? `${parsed.username}${password ? ':***' : ''}@` : '';
  return { hostname, port, username, password, vhost, redacted: `rabbit://${auth}${parsed.host}/${path}` };
}

/** How the connection behaves; defaults in parentheses. */
export interface AmqpConnectionOptions {
  logger: Logger;
  /** AMQP heartbeat in seconds (10; oslo.messaging's heartbeat_timeout_threshold is 60, a third of it per beat would be 20). */
  heartbeatS?: number;
  /** First reconnect delay, ms (100). */
  reconnectInitialMs?: number;
  /** Longest delay between reconnect attempts, ms (2 000: a broker back after 10 s is found within 2 s). */
  reconnectMaxMs?: number;
  /** The name shown in RabbitMQ's connection list (`online-extend`). */
  name?: string;
}

type ConnectListener = (model: ChannelModel) => void;

/** See the module comment. Build with `AmqpConnection.open`, share one per process, `close()` at the end. */
export class AmqpConnection {
  readonly broker: string;
  private model: ChannelModel | undefined;
  private closed = false;
  private blockedBy: string | undefined;
  private readonly events = new EventEmitter();
  private readonly log: Logger;

  private constructor(
    private readonly recovering: RecoveringChannelModel,
    broker: string,
    log: Logger,
  ) {
    this.broker = broker;
    this.log = log;
    this.events.setMaxListeners(0);
    let failures = 0;
    recovering.on('connect', (model: ChannelModel) => {
      if (this.closed) return;
      this.model = model;
      this.blockedBy = undefined;
      failures = 0;
      // A channel error on the connection's own bookkeeping must not crash the process.
      model.on('error', (err: Error) => this.log.warn({ err: err.message, broker: this.broker }, 'AMQP connection error'));
      this.log.info({ broker: this.broker }, 'connected to the message broker');
      this.events.emit('connect', model);
    });
    recovering.on('blocked', (reason: string) => {
      this.blockedBy = reason;
      this.log.warn({ broker: this.broker, reason }, 'the message broker blocks publishing (resource alarm)');
    });
    recovering.on('unblocked', () => {
      this.blockedBy = undefined;
      this.log.info({ broker: this.broker }, 'the message broker accepts messages again');
    });
    recovering.on('disconnect', (err: Error) => {
      this.model = undefined;
      this.blockedBy = undefined;
      if (this.closed) return;
      this.log.warn({ broker: this.broker, err: err.message }, 'lost the message broker; reconnecting');
      this.events.emit('disconnect', err);
    });
    recovering.on('reconnect-scheduled', (info: { attempt: number; delay: number; error: Error }) => {
      failures++;
      // Every attempt at debug; a warning now and then, so a broker down for hours does not flood the log.
      const level = failures === 1 || failures % 30 === 0 ? 'warn' : 'debug';
      this.log[level]({ broker: this.broker, attempt: info.attempt, delayMs: info.delay, err: info.error.message }, 'message broker unreachable; will retry');
    });
    // Errors are reported through 'disconnect' and 'reconnect-scheduled'; an unhandled 'error' would end the process.
    recovering.on('error', (err: Error) => this.log.debug({ err: err.message, broker: this.broker }, 'AMQP error'));
    recovering.on('reconnect-failed', (err: Error) => this.log.error({ err: err.message, broker: this.broker }, 'gave up reconnecting to the message broker'));
  }

  /**
   * Starts connecting to `transportUrl` in the background and answers at once (the broker may
   * be away at start: callers fail fast until it is there; `waitConnected` waits for it).
   * Throws Error for a URL `parseTransportUrl` refuses.
   */
  static async open(transportUrl: string, opts: AmqpConnectionOptions): Promise<AmqpConnection> {
    const t = parseTransportUrl(transportUrl);
    const target: Options.Connect = {
      protocol: 'amqp',
      hostname: t.hostname,
      port: t.port,
      username: t.username,
      password: t.password,
      // amqplib percent-decodes the vhost it is given (as from a URL's path).
      vhost: encodeURIComponent(t.vhost),
      heartbeat: opts.heartbeatS ?? 10,
    };
    const recovering = await connect(target, {
      noDelay: true,
      // Bounds the TCP connect and the AMQP handshake of one attempt.
      timeout: 5_000,
      clientProperties: { connection_name: opts.name ?? 'online-extend' },
      recovery: {
        initialDelay: opts.reconnectInitialMs ?? 100,
        maxDelay: opts.reconnectMaxMs ?? 2_000,
        factor: 2,
        jitter: 0.2,
        maxRetries: Infinity,
        waitForConnect: false,
      },
    });
    return new AmqpConnection(recovering, t.redacted, opts.logger.child({ component: 'amqp' }));
  }

  /** Whether the connection is up now. */
  get connected(): boolean {
    return this.model !== undefined;
  }

  /**
   * Why the broker blocks this connection's publishing now (RabbitMQ's connection.blocked, sent
   * on a memory or disk alarm), or undefined. A message published meanwhile waits in the socket
   * until the alarm clears, so callers refuse at once instead.
   */
  get blocked(): string | undefined {
    return this.blockedBy;
  }

  /**
   * Resolves once connected (at once if it is); rejects with MessagingUnavailable after
   * `timeoutMs` or when the connection is closed.
   */
  waitConnected(timeoutMs: number): Promise<void> {
    if (this.model) return Promise.resolve();
    if (this.closed) return Promise.reject(errors.messagingUnavailable('the connection is closed'));
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.events.off('connect', done);
        resolve();
      };
      const timer = setTimeout(() => {
        this.events.off('connect', done);
        reject(errors.messagingUnavailable(`not connected within ${timeoutMs} ms`));
      }, timeoutMs);
      this.events.on('connect', done);
    });
  }

  /**
   * Calls `fn` with the connection now if it is up, and again on every reconnect: where a user
   * (re)creates its channels. Answers a function that stops the calls.
   */
  onConnect(fn: ConnectListener): () => void {
    this.events.on('connect', fn);
    if (this.model) fn(this.model);
    return () => this.events.off('connect', fn);
  }

  /** Calls `fn` whenever the connection is lost. Answers a function that stops the calls. */
  onDisconnect(fn: (err: Error) => void): () => void {
    this.events.on('disconnect', fn);
    return () => this.events.off('disconnect', fn);
  }

  /** A new channel on the current connection; MessagingUnavailable (503, uncertain) at once while disconnected. */
  async channel(): Promise<Channel> {
    const model = this.model;
    if (!model) throw errors.messagingUnavailable('not connected to the message broker');
    try {
      return await model.createChannel();
    } catch (err) {
      throw errors.messagingUnavailable(`could not open a channel (${(err as Error).message})`);
    }
  }

  /** Closes the connection and stops reconnecting. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.model = undefined;
    this.events.removeAllListeners();
    await this.recovering.close().catch(() => undefined);
  }
}
