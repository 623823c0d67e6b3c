/**
 * The transport of the libvirt remote-protocol client: one persistent connection to libvirtd's
 * unix socket, opened on demand (CONNECT_OPEN), framed messages (protocol.ts), many calls in
 * flight matched to replies by serial, a per-call timeout, keepalive pings answered, and events
 * and stream messages ignored. A broken connection fails the calls in flight with
 * LibvirtConnectionError; the next call reconnects.
 * NOTE: calls are never retried here: a call whose connection broke may or may not have run
 * on the server (a resize, an attach), so the caller decides.
 *
 * The procedures (what each call sends and reads) are in client.ts.
 */
import net from 'node:net';
import { currentTimings } from '../../../util/timing.js';
import { LibvirtConnectionError, LibvirtError, LibvirtProtocolError, LibvirtTimeoutError } from './errors.js';
import {
  KEEPALIVE_PROC_PING,
  KEEPALIVE_PROC_PONG,
  KEEPALIVE_PROGRAM,
  MessageFramer,
  MessageStatus,
  MessageType,
  PREFIX_BYTES,
  QEMU_PROGRAM,
  QemuProc,
  REMOTE_PROGRAM,
  REMOTE_PROTOCOL_VERSION,
  RemoteProc,
  decodeHeader,
  encodeMessage,
  readRemoteError,
} from './protocol.js';
import { parseLibvirtUri, type ParsedUri } from './uri.js';
import { classifyErrno } from '../../../util/errno.js';
import { XdrReader, XdrWriter } from './xdr.js';

/** The logger the client writes to (pino's shape). */
export interface Logger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/**
 * How to reach libvirtd: the URI (default `qemu:///system`; a bad one throws a plain Error at construction) and timeouts in ms
 * (calls 30 s, connecting 5 s by default).
 */
export interface RemoteClientOptions {
  /** `qemu:///system` or `qemu+unix:///system?socket=PATH`. */
  uri?: string;
  /** Default per-call timeout. */
  callTimeoutMs?: number;
  /** Timeout for reaching the socket and CONNECT_OPEN. */
  connectTimeoutMs?: number;
  logger?: Logger;
  /** Told every call's procedure name and duration (seconds), answered or failed (the metrics' libvirt latency). */
  observeCall?: CallObserver;
}

/** Receives each remote-protocol call's procedure name (e.g. `DOMAIN_BLOCK_RESIZE`) and duration in seconds. */
export type CallObserver = (procedure: string, seconds: number) => void;

/** Per-call options: `timeoutMs` overrides the connection's call timeout (ms); past it the call fails with LibvirtTimeoutError. */
export interface CallOptions {
  timeoutMs?: number;
}

interface Pending {
  procedure: string;
  resolve: (r: XdrReader) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

const PROC_NAMES = new Map<string, string>([
  ...Object.entries(RemoteProc).map(([k, v]) => [`${REMOTE_PROGRAM}:${v}`, k] as [string, string]),
  ...Object.entries(QemuProc).map(([k, v]) => [`${QEMU_PROGRAM}:${v}`, `QEMU_${k}`] as [string, string]),
]);

/**
 * One connection to libvirtd and the RPC calls over it (see the file header). `RemoteClient`
 * (client.ts) adds the procedures; use that.
 */
export class RemoteConnection {
  readonly uri: string;
  private readonly target: ParsedUri;
  private readonly callTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly log: Logger | undefined;

  private socket: net.Socket | undefined;
  private connecting: Promise<net.Socket> | undefined;
  private pending = new Map<number, Pending>();
  private serial = 0;
  private closed = false;
  private readonly observeCall: CallObserver | undefined;

  constructor(opts: RemoteClientOptions = {}) {
    this.uri = opts.uri ?? 'qemu:///system';
    this.target = parseLibvirtUri(this.uri);
    this.callTimeoutMs = opts.callTimeoutMs ?? 30_000;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 5_000;
    this.log = opts.logger;
    this.observeCall = opts.observeCall;
  }

  /** The unix socket path the URI names. */
  get socketPath(): string {
    return this.target.socketPath;
  }

  /** Whether a connection is open now. */
  get connected(): boolean {
    return this.socket !== undefined;
  }

  /** Open the connection now (calls do it on demand). Idempotent. */
  async connect(): Promise<void> {
    await this.ensureConnected();
  }

  /** Close the connection: CONNECT_CLOSE, then the socket. Later calls fail. */
  async close(): Promise<void> {
    if (this.closed) return;
    const sock = this.socket;
    if (sock) {
      try {
        await this.callOn(sock, REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, RemoteProc.CONNECT_CLOSE, undefined, 2_000);
      } catch {
        // Closing anyway.
      }
    } else if (this.connecting) {
      await this.connecting.catch(() => undefined);
    }
    this.closed = true;
    this.teardown(new LibvirtConnectionError(this.uri, 'the client was closed'));
  }

  // ------------------------------------------------------------------------------------------
  // Transport

  private ensureConnected(): Promise<net.Socket> {
    if (this.closed) return Promise.reject(new LibvirtConnectionError(this.uri, 'the client was closed'));
    if (this.socket) return Promise.resolve(this.socket);
    if (!this.connecting) {
      this.connecting = this.openSocket().finally(() => {
        this.connecting = undefined;
      });
    }
    return this.connecting;
  }

  private openSocket(): Promise<net.Socket> {
    return new Promise<net.Socket>((resolve, reject) => {
      const sock = net.createConnection({ path: this.target.socketPath });
      const framer = new MessageFramer();
      let settled = false;
      const fail = (reason: string, cause?: unknown, detail?: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const err = new LibvirtConnectionError(this.uri, reason, { cause, ...(detail === undefined ? {} : { detail }) });
        if (this.socket === sock) this.teardown(err);
        sock.destroy();
        reject(err);
      };
      const timer = setTimeout(
        () => fail(`libvirtd did not answer within ${this.connectTimeoutMs} ms`, undefined, `socket ${this.target.socketPath}`),
        this.connectTimeoutMs,
      );
      sock.on('error', (err: NodeJS.ErrnoException) => {
        const c = classifyErrno(err);
        const reason = `cannot connect to libvirtd's socket: ${c.reason}${c.errno ? ` (${c.errno})` : ''}`;
        if (!settled) fail(reason, err, `socket ${this.target.socketPath}: ${err.message}`);
        else this.onBroken(sock, `the connection to libvirtd failed${c.errno ? ` (${c.errno})` : ''}`, err.message);
      });
      sock.on('close', () => {
        if (!settled) fail('libvirtd closed the connection while it was being opened', undefined, `socket ${this.target.socketPath}`);
        else this.onBroken(sock, 'libvirtd closed the connection');
      });
      sock.on('data', (chunk: Buffer) => {
        let msgs: Buffer[];
        try {
          msgs = framer.push(chunk);
        } catch (err) {
          this.onBroken(sock, 'libvirtd sent a message this client cannot frame', (err as Error).message);
          return;
        }
        for (const m of msgs) this.onMessage(sock, m);
      });
      sock.once('connect', () => {
        sock.setNoDelay(true);
        const w = new XdrWriter(64);
        w.optional(this.target.name, (x, v) => x.string(v));
        w.uint(0);
        this.socket = sock;
        this.callOn(sock, REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, RemoteProc.CONNECT_OPEN, w.bytes(), this.connectTimeoutMs)
          .then(() => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            this.log?.debug({ uri: this.uri, socket: this.target.socketPath }, 'libvirt connection opened');
            this.updateRef();
            resolve(sock);
          })
          .catch((err: Error) => {
            if (this.socket === sock) this.socket = undefined;
            fail('libvirtd refused to open the connection', err, `CONNECT_OPEN ${this.target.name}: ${err.message}`);
          });
      });
    });
  }

  private onBroken(sock: net.Socket, reason: string, detail?: string): void {
    if (this.socket !== sock) {
      sock.destroy();
      return;
    }
    this.log?.warn({ uri: this.uri, reason, detail }, 'libvirt connection lost');
    this.teardown(new LibvirtConnectionError(this.uri, reason, detail === undefined ? {} : { detail }));
  }

  private teardown(err: Error): void {
    const sock = this.socket;
    this.socket = undefined;
    if (sock) sock.destroy();
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(err);
    }
  }

  /** Keep the process alive only while calls are in flight. */
  private updateRef(): void {
    if (!this.socket) return;
    if (this.pending.size > 0) this.socket.ref();
    else this.socket.unref();
  }

  private onMessage(sock: net.Socket, msg: Buffer): void {
    const h = decodeHeader(msg);
    if (h.program === KEEPALIVE_PROGRAM) {
      if (h.procedure === KEEPALIVE_PROC_PING) {
        sock.write(
          encodeMessage({ program: KEEPALIVE_PROGRAM, version: 1, procedure: KEEPALIVE_PROC_PONG, type: MessageType.MESSAGE, serial: 0, status: MessageStatus.OK }),
        );
      }
      return;
    }
    if (h.type !== MessageType.REPLY && h.type !== MessageType.REPLY_WITH_FDS) return; // events, streams
    const p = this.pending.get(h.serial);
    if (!p) return; // timed out earlier
    this.pending.delete(h.serial);
    clearTimeout(p.timer);
    this.updateRef();
    const r = new XdrReader(msg, PREFIX_BYTES);
    if (h.status === MessageStatus.OK) {
      p.resolve(r);
    } else if (h.status === MessageStatus.ERROR) {
      try {
        p.reject(new LibvirtError(readRemoteError(r), p.procedure));
      } catch (err) {
        p.reject(new LibvirtProtocolError(`undecodable error reply to ${p.procedure}: ${(err as Error).message}`));
      }
    } else {
      p.reject(new LibvirtProtocolError(`unexpected status ${h.status} in reply to ${p.procedure}`));
    }
  }

  private callOn(
    sock: net.Socket,
    program: number,
    version: number,
    procedure: number,
    args: Buffer | undefined,
    timeoutMs: number,
  ): Promise<XdrReader> {
    this.serial = (this.serial + 1) >>> 0;
    const serial = this.serial;
    const name = PROC_NAMES.get(`${program}:${procedure}`) ?? `${program.toString(16)}:${procedure}`;
    return new Promise<XdrReader>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(serial)) {
          this.updateRef();
          reject(new LibvirtTimeoutError(this.uri, name, timeoutMs));
        }
      }, timeoutMs);
      this.pending.set(serial, { procedure: name, resolve, reject, timer });
      this.updateRef();
      sock.write(encodeMessage({ program, version, procedure, type: MessageType.CALL, serial, status: MessageStatus.OK }, args));
    });
  }

  /** One RPC call; resolves with a reader positioned at the reply body. */
  async call(program: number, version: number, procedure: number, args?: Buffer, opts: CallOptions = {}): Promise<XdrReader> {
    // Every call of the client passes here: the one place its latency is measured, for the
    // metrics (observeCall) and as the current request's `libvirt` Server-Timing part (inside its
    // `driver` part), so a client sees how much of an answer libvirtd and QEMU took.
    const observe = this.observeCall;
    const timings = currentTimings();
    const start = observe || timings ? performance.now() : 0;
    try {
      // Connected (the common case): no promise to wait for.
      const sock = this.socket && !this.closed ? this.socket : await this.ensureConnected();
      return await this.callOn(sock, program, version, procedure, args, opts.timeoutMs ?? this.callTimeoutMs);
    } finally {
      if (observe || timings) {
        const ms = performance.now() - start;
        timings?.add('libvirt', ms);
        if (observe) observe(PROC_NAMES.get(`${program}:${procedure}`) ?? `${program.toString(16)}:${procedure}`, ms / 1000);
      }
    }
  }

  /** One call of the remote program (libvirt's public API). */
  protected remote(proc: number, args?: XdrWriter, opts?: CallOptions): Promise<XdrReader> {
    return this.call(REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, proc, args?.bytes(), opts);
  }
}
