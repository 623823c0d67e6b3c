/**
 * Errors of the libvirt remote client. The driver maps them to the service's error catalogue;
 * nothing outside src/virt/libvirt sees these.
 */
import type { RemoteErrorBody } from './protocol.js';

/** virErrorNumber values this code looks at (include/libvirt/virterror.h). */
export const VirErrorCode = {
  INTERNAL_ERROR: 1,
  NO_SUPPORT: 3,
  INVALID_ARG: 8,
  OPERATION_FAILED: 9,
  XML_ERROR: 27,
  SYSTEM_ERROR: 38,
  RPC: 39,
  NO_DOMAIN: 42,
  AUTH_FAILED: 45,
  OPERATION_INVALID: 55,
  CONFIG_UNSUPPORTED: 67,
  OPERATION_TIMEOUT: 68,
  OPERATION_UNSUPPORTED: 84,
  ACCESS_DENIED: 88,
  DEVICE_MISSING: 99,
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

/** The socket could not be reached, or the connection broke. Retrying may help. */
export class LibvirtConnectionError extends Error {
  readonly uri: string;
  readonly reason: string;

  constructor(uri: string, reason: string, opts: { cause?: unknown } = {}) {
    super(`cannot reach libvirt at ${uri}: ${reason}`, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'LibvirtConnectionError';
    this.uri = uri;
    this.reason = reason;
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
}

/** The server sent something this client cannot understand. */
export class LibvirtProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LibvirtProtocolError';
  }
}
