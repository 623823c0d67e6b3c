/**
 * Errors of the libvirt remote client. The driver maps them to the service's error catalogue;
 * nothing outside src/virt/libvirt sees these.
 */
import type { RemoteErrorBody } from './protocol.js';

/**
 * virErrorNumber values this code classifies (include/libvirt/virterror.h of libvirt 9.0; the
 * numbers are ABI and never change). The driver's LIBVIRT_ERRORS table says what each means.
 */
export const VirErrorCode = {
  INTERNAL_ERROR: 1,
  NO_MEMORY: 2,
  NO_SUPPORT: 3,
  NO_CONNECT: 5,
  INVALID_CONN: 6,
  INVALID_DOMAIN: 7,
  INVALID_ARG: 8,
  OPERATION_FAILED: 9,
  XML_ERROR: 27,
  OPERATION_DENIED: 29,
  SYSTEM_ERROR: 38,
  RPC: 39,
  NO_DOMAIN: 42,
  AUTH_FAILED: 45,
  OPERATION_INVALID: 55,
  CONFIG_UNSUPPORTED: 67,
  OPERATION_TIMEOUT: 68,
  ARGUMENT_UNSUPPORTED: 74,
  OPERATION_ABORTED: 78,
  BLOCK_COPY_ACTIVE: 83,
  OPERATION_UNSUPPORTED: 84,
  AGENT_UNRESPONSIVE: 86,
  RESOURCE_BUSY: 87,
  ACCESS_DENIED: 88,
  AGENT_UNSYNCED: 97,
  DEVICE_MISSING: 99,
  NO_SECRET: 66,
} as const;

/** virErrorDomain values this code looks at. */
export const VirErrorDomain = {
  RPC: 7,
  QEMU: 10,
  REMOTE: 13,
  DOMAIN: 20,
} as const;

/** An error libvirtd answered with (a `remote_error`): libvirt's own code, domain and message. */
export class LibvirtError extends Error {
  readonly code: number;
  readonly domain: number;
  readonly level: number;
  readonly procedure: string;

  constructor(body: RemoteErrorBody, procedure: string) {
    super(body.message ?? `libvirt error code ${body.code}`);
    this.name = 'LibvirtError';
    this.code = body.code;
    this.domain = body.domain;
    this.level = body.level;
    this.procedure = procedure;
  }
}

/**
 * The socket could not be reached, or the connection broke. Retrying may help. `reason` is
 * public (no socket path: the driver sends it to clients); `detail` and the message, which name
 * the URI and socket, are for logs.
 */
export class LibvirtConnectionError extends Error {
  readonly uri: string;
  readonly reason: string;
  readonly detail: string | undefined;

  constructor(uri: string, reason: string, opts: { cause?: unknown; detail?: string } = {}) {
    super(`cannot reach libvirt at ${uri}: ${reason}${opts.detail ? ` (${opts.detail})` : ''}`, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'LibvirtConnectionError';
    this.uri = uri;
    this.reason = reason;
    this.detail = opts.detail;
  }
}

/** A call got no reply within its timeout. The operation may still complete on the server. */
export class LibvirtTimeoutError extends Error {
  readonly uri: string;
  readonly procedure: string;
  readonly timeoutMs: number;

  constructor(uri: string, procedure: string, timeoutMs: number) {
    super(`libvirt call ${procedure} on ${uri} got no reply within ${timeoutMs} ms`);
    this.name = 'LibvirtTimeoutError';
    this.uri = uri;
    this.procedure = procedure;
    this.timeoutMs = timeoutMs;
  }

  /** The message without the URI (which names the socket path): safe to send. */
  get reason(): string {
    return `libvirtd did not answer ${this.procedure} within ${this.timeoutMs} ms`;
  }
}

/** The server sent something this client cannot understand. */
export class LibvirtProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LibvirtProtocolError';
  }
}
