/**
 * The one error catalogue. Every error the service can answer with is built here, carries its
 * HTTP status, Nova's fault name and its classification, and is rendered by the single error
 * handler in api/.
 *
 * Final or uncertain (kubernetes-csi external-resizer's `IsFinalError`): an error is classified
 * where it is raised. An *uncertain* error (a timeout, a daemon that is down, a busy resource)
 * means the operation may still succeed, or may even be under way, so the caller keeps its state
 * and tries again with backoff. A *final* error means trying again with the same input gives the
 * same answer, so the caller records the cause and stops. Unknown failures are final, as in
 * external-resizer: retrying what nobody understood only hides the cause for longer.
 *
 * The classification travels across HTTP inside Nova's fault body (see `faultBody`), so a caller
 * on the other side of the wire gets the same ServiceError back (httpClient.ts) and never has to
 * branch on status codes or message text.
 *
 * Messages are public: they never contain host paths or command lines. What only an operator
 * should see goes in `detail`, which is logged and never sent.
 */
import { describeBytes } from './util/units.js';
import { ERRNO_CLASSES } from './util/errno.js';

/** Nova's fault names by status (nova/api/openstack/wsgi.py). */
const FAULT_NAMES: Record<number, string> = {
  400: 'badRequest',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'itemNotFound',
  405: 'badMethod',
  // No 406: Nova's and Cinder's fault maps lack it, so their 406 (a microversion out of range) is a computeFault.
  408: 'requestTimeout',
  409: 'conflictingRequest',
  413: 'overLimit',
  414: 'badRequest',
  415: 'badMediaType',
  429: 'overLimit',
  431: 'badRequest',
  501: 'HTTPNotImplemented',
  503: 'serviceUnavailable',
};

/** Nova's fault name for an HTTP status (the key of the fault body, e.g. 404 → `itemNotFound`); `computeFault` for any other. */
export function faultName(status: number): string {
  return FAULT_NAMES[status] ?? 'computeFault';
}

/** Every error code, with its HTTP status and whether it is final by default. */
export const CATALOGUE = {
  BadRequest: { status: 400, final: true },
  InvalidInput: { status: 400, final: true },
  ProjectMismatch: { status: 400, final: true },
  VolumeShrinkRefused: { status: 400, final: true },
  SizeLimitExceeded: { status: 400, final: true },
  MarkerNotFound: { status: 400, final: true },
  Unauthorized: { status: 401, final: true },
  Forbidden: { status: 403, final: true },
  NotFound: { status: 404, final: true },
  InstanceNotFound: { status: 404, final: true },
  VolumeNotAttached: { status: 404, final: true },
  VolumeNotFound: { status: 404, final: true },
  /** A volume whose record exists but whose storage is gone from its backend (removed by hand): nothing can act on it until an operator restores it or deletes the volume. */
  VolumeStorageMissing: { status: 500, final: true },
  MethodNotAllowed: { status: 405, final: true },
  /** The microversion asked for is outside what the API advertises (Nova's and Cinder's InvalidGlobalAPIVersion, 406). */
  VersionNotAcceptable: { status: 406, final: true },
  RequestTimeout: { status: 408, final: false },
  InstanceInvalidState: { status: 409, final: true },
  /** The instance is shut off: nothing live can be done, but its disks can grow offline. */
  InstanceStopped: { status: 409, final: true },
  InstanceBusy: { status: 409, final: false },
  HostSizeTooSmall: { status: 409, final: false },
  VolumeInvalidState: { status: 409, final: true },
  VolumeAttached: { status: 409, final: true },
  VolumeBusy: { status: 409, final: false },
  /**
   * Nova's InvalidVolume (400) on attach: the volume is already attached to this instance, or
   * (not multiattach) to another. Final: it holds until the volume is detached.
   */
  InvalidVolume: { status: 400, final: true },
  /** The device name asked for is taken on the instance (Nova's DevicePathInUse, 409). */
  DevicePathInUse: { status: 409, final: true },
  /** The instance has no free device name left (Nova's TooManyDiskDevices, 403). */
  TooManyDiskDevices: { status: 403, final: true },
  PayloadTooLarge: { status: 413, final: true },
  UriTooLong: { status: 414, final: true },
  HeadersTooLarge: { status: 431, final: true },
  ExtendVolumeNotSupported: { status: 501, final: true },
  VolumeServiceNotConfigured: { status: 501, final: true },
  /** The hypervisor driver cannot create servers (POST /servers). */
  CreateServerNotSupported: { status: 501, final: true },
  /** The hypervisor driver cannot grow a filesystem inside a guest (no guest agent support). */
  GuestFilesystemGrowNotSupported: { status: 501, final: true },
  DiskReadOnly: { status: 500, final: true },
  DriverFailed: { status: 500, final: true },
  HypervisorUnreachable: { status: 503, final: false },
  BackendFailed: { status: 500, final: true },
  ComputeUnreachable: { status: 503, final: false },
  /** Keystone (auth=keystone) could not say whether a token is valid: down, slow, failing, or refusing our service credentials. */
  IdentityUnreachable: { status: 503, final: false },
  ServiceUnavailable: { status: 503, final: false },
  /** The compute agent of the server's host is down (stale heartbeat, no consumer on its queue) or did not answer in time (G). */
  ComputeHostUnavailable: { status: 503, final: false },
  /** The shared database (PostgreSQL) cannot be reached, or closed the connection (restart, failover) (G). */
  DatabaseUnavailable: { status: 503, final: false },
  /** The message broker (RabbitMQ) cannot be reached (G). */
  MessagingUnavailable: { status: 503, final: false },
  InternalError: { status: 500, final: true },
} as const satisfies Record<string, { status: number; final: boolean }>;

/** A catalogue code (`CATALOGUE`'s keys), sent to clients as `error_code`. */
export type ErrorCode = keyof typeof CATALOGUE;

/** Whether `code` is a catalogue code (e.g. an `error_code` read back from a fault body). */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(CATALOGUE, code);
}

/** How a ServiceError is built beyond its code and message: its classification, public reason and operator-only detail. */
export interface ServiceErrorOptions {
  /** Override the code's default classification (e.g. a driver failure that was a timeout). */
  final?: boolean;
  /** @deprecated spelling of `final: !retryable`, kept for the call sites that think in retries. */
  retryable?: boolean;
  /** The reason given by the source (driver, backend), without host paths; sent to clients. */
  reason?: string;
  /** Operator-only detail (paths, commands, stderr): logged, never sent. */
  detail?: string;
  cause?: unknown;
  /** The request id of the remote call this error came back from, if any. */
  requestId?: string;
  /**
   * The remote API refused the call before acting on it (it refused this service's own
   * credential): uncertain for the caller, which retries, yet nothing happened there, so what the
   * caller reserved for the call can be released at once (`refusedUnacted`).
   */
  unacted?: boolean;
}

/**
 * The one error type the service answers with: a catalogue `code` with its HTTP `status`, `final` (final or uncertain),
 * a public `message` and `reason`, and an operator-only `detail`. Build it through `errors.*`.
 */
export class ServiceError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly final: boolean;
  readonly reason: string | undefined;
  readonly detail: string | undefined;
  readonly requestId: string | undefined;
  /** See ServiceErrorOptions.unacted. */
  readonly unacted: boolean;

  constructor(code: ErrorCode, message: string, opts: ServiceErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = code;
    this.code = code;
    this.status = CATALOGUE[code].status;
    this.final = opts.final ?? (opts.retryable === undefined ? CATALOGUE[code].final : !opts.retryable);
    this.reason = opts.reason;
    this.detail = opts.detail;
    this.requestId = opts.requestId;
    this.unacted = opts.unacted === true;
  }

  /** The operation may still succeed if tried again (an uncertain error). */
  get retryable(): boolean {
    return !this.final;
  }

  /** Nova's fault name for this error's status: the key of its fault body (see `faultName`). */
  get fault(): string {
    return faultName(this.status);
  }
}

/** Whether `err` is a ServiceError (anything else is unclassified: see `unexpectedError`). */
export function isServiceError(err: unknown): err is ServiceError {
  return err instanceof ServiceError;
}

/** True when trying again cannot help: a final ServiceError. Anything else is uncertain. */
export function isFinalError(err: unknown): boolean {
  return isServiceError(err) && err.final;
}

/**
 * True when the callee did nothing: it refused for good (a final error), or it refused the call
 * before acting on it (ServiceErrorOptions.unacted: uncertain, but nothing to look for there).
 * What a caller reserved for the call can then be released at once, without a reconciler.
 */
export function refusedUnacted(err: unknown): boolean {
  return isServiceError(err) && (err.final || err.unacted);
}

/**
 * SQLite result codes of failures that pass with time: a full disk, a busy or locked database, an
 * I/O error, an interrupted call. Operating-system errors are classified by util/errno.ts's table,
 * the one for every layer, so a failure is final or uncertain the same way wherever it is caught.
 */
const UNCERTAIN_SQLITE_CODES: ReadonlySet<string> = new Set(['SQLITE_FULL', 'SQLITE_BUSY', 'SQLITE_LOCKED', 'SQLITE_IOERR', 'SQLITE_INTERRUPT']);

/** Whether a system or SQLite code (extended SQLite codes by their base) names a failure that passes with time. */
function isUncertainSystemCode(base: string): boolean {
  if (base.startsWith('SQLITE_')) return UNCERTAIN_SQLITE_CODES.has(base);
  return Object.hasOwn(ERRNO_CLASSES, base) && !ERRNO_CLASSES[base]!.final;
}

/**
 * An error nobody classified (a bug, the store, the OS) as a catalogue error: InternalError,
 * uncertain when its errno or SQLite code says it passes with time (the prefix before `_` of an
 * extended SQLite code, e.g. SQLITE_IOERR_WRITE, counts), final otherwise. The original is kept
 * as the cause and in the detail; the message stays generic (it may hold paths).
 */
export function unexpectedError(err: unknown): ServiceError {
  if (isServiceError(err)) return err;
  if (isDatabaseConnectionError(err)) {
    return new ServiceError('DatabaseUnavailable', 'The database is unavailable; try again.', {
      cause: err,
      reason: 'the connection to the database failed',
      detail: `${String((err as { code?: unknown }).code ?? '')}: ${(err as Error).message}`,
    });
  }
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  const base = typeof code === 'string' ? code.replace(/^(SQLITE_[A-Z]+)_.*$/, '$1') : undefined;
  // A socket connect that failed (a peer restarting: ENOENT on a unix socket too) passes with time.
  const uncertain = (base !== undefined && isUncertainSystemCode(base)) || (err as { syscall?: unknown })?.syscall === 'connect';
  const reason = base !== undefined && Object.hasOwn(SYSTEM_REASONS, base) ? `${SYSTEM_REASONS[base]} (${String(code)})` : undefined;
  return errors.internal(uncertain ? `A temporary failure occurred${reason ? `: ${reason}` : ''}; try again.` : 'An unexpected error occurred.', {
    final: !uncertain,
    cause: err,
    ...(reason ? { reason } : {}),
    detail: `${typeof code === 'string' ? `${code}: ` : ''}${(err as Error)?.message ?? String(err)}`,
  });
}

/** Marks an error as a failed connect to the database (markDatabaseConnectFailure). */
const DATABASE_CONNECT_FAILURE: unique symbol = Symbol('online-extend.databaseConnectFailure');

/**
 * Marks `err` (returned as is) as a failed connect to the database: the store's client knows that a
 * plain socket error (ECONNREFUSED while PostgreSQL restarts) was its database's, which nothing
 * in the error itself says; unexpectedError then answers DatabaseUnavailable (503, uncertain).
 */
export function markDatabaseConnectFailure<T>(err: T): T {
  if (typeof err === 'object' && err !== null) Object.defineProperty(err, DATABASE_CONNECT_FAILURE, { value: true });
  return err;
}

/**
 * PostgreSQL's SQLSTATEs of a lost or refused connection (class 08; 57P01–57P03: the server is
 * shutting down, crashed or starting; 53300: too many connections) and the npm `pg` client's own
 * connection failures (which carry no SQLSTATE: a socket connect that failed, marked by the pool's
 * client with markDatabaseConnectFailure, or its messages).
 * All pass with time (a restart, a failover): uncertain, 503.
 */
function isDatabaseConnectionError(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  if ((err as { [DATABASE_CONNECT_FAILURE]?: unknown })[DATABASE_CONNECT_FAILURE] === true) return true;
  const e = err as { code?: unknown; message?: unknown; syscall?: unknown; severity?: unknown };
  const code = typeof e.code === 'string' ? e.code : '';
  // A pg DatabaseError has a severity and a five-character SQLSTATE.
  if (typeof e.severity === 'string' && /^(08...|57P0[123]|53300)$/.test(code)) return true;
  const message = typeof e.message === 'string' ? e.message : '';
  return /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Connection terminated unexpectedly)/.test(message);
}

/**
 * The reason of ComputeHostUnavailable when the broker had nobody to deliver a call to (the host's
 * agent is not running): the call certainly did not reach a host, so another may be tried.
 */
export const NO_AGENT_LISTENING = 'no compute agent is listening';

/** Public words for the uncertain system and SQLite codes (no paths: those stay in the detail). */
const SYSTEM_REASONS: Readonly<Record<string, string>> = {
  ENOSPC: "no space left on the service's disk",
  EDQUOT: "the service's disk quota is exhausted",
  EAGAIN: 'a resource is temporarily unavailable',
  EBUSY: 'a resource is busy',
  EINTR: 'a call was interrupted',
  ETIMEDOUT: 'a call timed out',
  ECONNRESET: 'a connection was reset',
  ECONNREFUSED: 'a connection was refused',
  EPIPE: 'a connection was closed',
  EMFILE: 'the service has too many open files',
  ENFILE: 'the system has too many open files',
  ENOMEM: 'out of memory',
  EIO: "an I/O error on the service's disk",
  SQLITE_FULL: "the service's database cannot grow (its disk is full)",
  SQLITE_BUSY: "the service's database is busy",
  SQLITE_LOCKED: "the service's database is locked",
  SQLITE_IOERR: "the service's database could not read or write its disk",
  SQLITE_INTERRUPT: "a database call was interrupted",
};

/**
 * Nova's fault body, `{"<faultName>": {"code": N, "message": "..."}}`, with three fields added
 * inside the fault object (clients that read `code` and `message` are unaffected):
 * `error_code` (the catalogue code), `final` (the classification) and, when the source gave one,
 * `reason` (the driver's or backend's own words, without host paths).
 */
export function faultBody(err: ServiceError): Record<string, { code: number; message: string; error_code: ErrorCode; final: boolean; reason?: string }> {
  return {
    [err.fault]: {
      code: err.status,
      message: printable(err.message),
      error_code: err.code,
      final: err.final,
      ...(err.reason === undefined ? {} : { reason: printable(err.reason) }),
    },
  };
}

/**
 * Messages echo what clients sent (ids, field names): control characters and the Unicode
 * format characters that reorder or hide text (bidi overrides, zero-width) are shown as `\uXXXX`,
 * so a message reads as what it is in a terminal or a log.
 */
function printable(text: string): string {
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Server states that end by themselves (Nova's building and migrating). */
const TRANSIENT_SERVER_STATES: ReadonlySet<string> = new Set(['building', 'migrating']);

/** Factories: the only way the code base builds an error. */
export const errors = {
  badRequest: (message: string) => new ServiceError('BadRequest', message),
  invalidInput: (message: string) => new ServiceError('InvalidInput', message),
  projectMismatch: (urlProject: string, tokenProject: string) =>
    new ServiceError('ProjectMismatch', `Malformed request URL: URL's project_id '${urlProject}' doesn't match Context's project_id '${tokenProject}'.`),
  /**
   * `subject` names what has the current size: `the guest sees` (compute) or `the volume has`
   * (storage, an unattached volume).
   */
  shrinkRefused: (volumeId: string, requested: number, current: number, subject: 'the guest sees' | 'the volume has' | 'the compute host sees' = 'the guest sees') =>
    new ServiceError(
      'VolumeShrinkRefused',
      `Refusing to shrink volume ${volumeId}: requested ${requested} bytes is below the ${current} bytes ${subject} now; shrinking destroys data.`,
    ),
  sizeLimitExceeded: (volumeId: string | undefined, requested: number, limit: number, what: string) =>
    new ServiceError(
      'SizeLimitExceeded',
      `Requested ${requested} bytes${volumeId ? ` for volume ${volumeId}` : ''} is above what ${what} can hold: at most ${describeBytes(limit)}.`,
    ),
  /** A list's `marker` names no item of that listing (Nova's MarkerNotFound, a 400 there too). */
  markerNotFound: (marker: string) => new ServiceError('MarkerNotFound', `Marker ${marker} could not be found.`),
  unauthorized: (message = 'The request you have made requires authentication.') => new ServiceError('Unauthorized', message),
  forbidden: (action: string) => new ServiceError('Forbidden', `Policy doesn't allow ${action} to be performed.`),
  notFound: (message = 'The resource could not be found.') => new ServiceError('NotFound', message),
  /** 400: a microversion that is not `MajorNum.MinorNum` (Nova's and Cinder's InvalidAPIVersionString); `version` as the client sent it. */
  invalidApiVersion: (version: string) =>
    new ServiceError('BadRequest', `API Version String ${version} is of invalid format. Must be of format MajorNum.MinorNum.`),
  /** 406: a microversion outside [min, max] (Nova's and Cinder's InvalidGlobalAPIVersion); versions as `X.Y`. */
  versionNotAcceptable: (requested: string, min: string, max: string) =>
    new ServiceError('VersionNotAcceptable', `Version ${requested} is not supported by the API. Minimum is ${min} and maximum is ${max}.`),
  methodNotAllowed: (method: string, path: string) => new ServiceError('MethodNotAllowed', `Method ${method} is not allowed on ${path}.`),
  instanceNotFound: (serverId: string) => new ServiceError('InstanceNotFound', `Instance ${serverId} could not be found.`),
  volumeNotAttached: (volumeId: string, serverId: string) =>
    new ServiceError('VolumeNotAttached', `Volume ${volumeId} is not attached to instance ${serverId}.`),
  volumeNotFound: (volumeId: string) => new ServiceError('VolumeNotFound', `Volume ${volumeId} could not be found.`),
  /**
   * 500, final: the volume exists but its storage is missing from `backend` (never its path: that is the operator's, in
   * `detail`, logged). `during: 'extend'`: it went missing while an extend ran, which stopped there (the volume keeps its
   * recorded size); otherwise the request was refused before anything changed.
   */
  volumeStorageMissing: (volumeId: string, backend: string, opts: { detail?: string; during?: 'extend' } = {}) =>
    new ServiceError(
      'VolumeStorageMissing',
      opts.during
        ? `The storage of volume ${volumeId} went missing from its ${backend} backend during the ${opts.during}, which stopped there; the volume keeps its recorded size. An operator must restore it, or delete the volume.`
        : `The storage of volume ${volumeId} is missing from its ${backend} backend; nothing was changed. An operator must restore it, or delete the volume.`,
      opts.detail === undefined ? {} : { detail: opts.detail },
    ),
  /** Nova's words exactly (DevicePathInUse); the instance goes to the operator's detail. */
  devicePathInUse: (device: string, serverId: string) =>
    new ServiceError('DevicePathInUse', `The supplied device path (/dev/${device}) is in use.`, { detail: `instance ${serverId}` }),
  /** Attach of a volume already attached to this instance (Nova's InvalidVolume, 400). */
  volumeAlreadyAttached: (volumeId: string) => new ServiceError('InvalidVolume', `Invalid volume: volume ${volumeId} already attached`),
  /** Attach of a volume (not multiattach) attached to other instances (Nova's InvalidVolume, 400). */
  volumeAttachedToInstances: (volumeId: string, serverIds: readonly string[]) =>
    new ServiceError('InvalidVolume', `Invalid volume: volume ${volumeId} is already attached to instances: ${serverIds.join(' ')}`),
  tooManyDiskDevices: (serverId: string) =>
    new ServiceError('TooManyDiskDevices', `Instance ${serverId} has no free disk device name left; detach a volume first.`),
  /** 409. A shut-off instance gets its own code (InstanceStopped): callers extend its disks offline. */
  instanceInvalidState: (serverId: string, state: string, action: string) =>
    new ServiceError(state === 'shutoff' ? 'InstanceStopped' : 'InstanceInvalidState', `Cannot '${action}' instance ${serverId} while it is in state ${state}.`, {
      // A server being built or migrated gets out of that state by itself: trying again can work.
      ...(TRANSIENT_SERVER_STATES.has(state) ? { final: false } : {}),
    }),
  /** 409: DELETE /servers on a domain this service did not create (found on the host): it is the operator's to remove. */
  instanceNotOurs: (serverId: string) =>
    new ServiceError('InstanceInvalidState', `Cannot 'delete' instance ${serverId}: it was not created through this API (a domain found on the host); remove it on the hypervisor.`),
  instanceBusy: (serverId: string, task: string, action: string) =>
    new ServiceError('InstanceBusy', `Cannot '${action}' instance ${serverId} while it is in task_state ${task}.`),
  /** 409, uncertain: the guest's filesystems are frozen (virDomainFSFreeze, a backup's snapshot): nothing in them can change until they are thawed. */
  instanceFilesystemsFrozen: (serverId: string, action: string) =>
    new ServiceError('InstanceBusy', `Cannot '${action}' on instance ${serverId} while its filesystems are frozen (fsfreeze); try again once they are thawed.`),
  /** 409, uncertain: DELETE /servers while an attached volume is attaching, detaching or extending (its detach would be refused); try again when it is done. */
  instanceVolumeBusy: (serverId: string, volumeId: string, status: string, action: string) =>
    new ServiceError('InstanceBusy', `Cannot '${action}' instance ${serverId} while its volume ${volumeId} is ${status}; try again when it is done.`),
  hostSizeTooSmall: (volumeId: string, requested: number, hostBytes: number | undefined) =>
    new ServiceError(
      'HostSizeTooSmall',
      `The compute host does not see ${requested} bytes for volume ${volumeId} yet` +
        (hostBytes === undefined ? '' : ` (it sees ${hostBytes})`) +
        '; rescan first and wait until get_blockdev reports the new size.',
    ),
  /**
   * 409, final: a resize of an encrypted (LUKS) disk asks for more than its guest can ever see on
   * the storage the host has now: the guest sees the host's bytes minus the header, and
   * assist_extend's `bytes` is the guest's size. Waiting does not help (get_blockdev already
   * reports the host's size), a smaller `bytes` does: unlike hostSizeTooSmall, final.
   */
  encryptedHostSizeTooSmall: (volumeId: string, requested: number, hostBytes: number, payloadOffset: number) =>
    new ServiceError(
      'HostSizeTooSmall',
      `Volume ${volumeId} is encrypted (LUKS): its guest sees the host's ${hostBytes} bytes minus the ${payloadOffset}-byte header, ` +
        `at most ${hostBytes - payloadOffset} bytes, not ${requested}; assist_extend's bytes is the size the guest sees (get_blockdev's, the storage's, minus the header).`,
      { final: true },
    ),
  /**
   * A resize to `requested` that the host's `hostBytes`, less an encrypted disk's `payloadOffset`,
   * cannot give the guest: uncertain while the host does not see `requested` yet (rescan and
   * wait: hostSizeTooSmall), final when it does and only the LUKS header is in the way.
   */
  hostSizeTooSmallFor: (volumeId: string, requested: number, hostBytes: number, payloadOffset: number) =>
    payloadOffset > 0 && requested <= hostBytes
      ? errors.encryptedHostSizeTooSmall(volumeId, requested, hostBytes, payloadOffset)
      : errors.hostSizeTooSmall(volumeId, requested, hostBytes - payloadOffset),
  volumeInvalidState: (volumeId: string, status: string, action: string) =>
    new ServiceError('VolumeInvalidState', `Cannot '${action}' volume ${volumeId} while its status is ${status}.`),
  volumeAttached: (volumeId: string, serverId: string, action: string) =>
    new ServiceError('VolumeAttached', `Cannot '${action}' volume ${volumeId}: it is attached to instance ${serverId}; detach it first.`),
  /** Another operation on the volume holds it; it ends by itself, so trying again later may work. */
  volumeBusy: (volumeId: string, status: string, action: string) =>
    new ServiceError('VolumeBusy', `Cannot '${action}' volume ${volumeId} while its status is ${status}; try again when it is done.`),
  payloadTooLarge: (limit: number) => new ServiceError('PayloadTooLarge', `Request body is larger than ${limit} bytes.`),
  uriTooLong: (limit: number) => new ServiceError('UriTooLong', `Request URL is longer than ${limit} characters.`),
  headersTooLarge: (limit: number) => new ServiceError('HeadersTooLarge', `Request headers are larger than ${limit} bytes.`),
  requestTimeout: () => new ServiceError('RequestTimeout', 'The request was not received in time.'),
  extendNotSupported: (driver: string) =>
    new ServiceError('ExtendVolumeNotSupported', `Volume extend is not supported by the ${driver} hypervisor driver.`),
  createServerNotSupported: (driver: string) =>
    new ServiceError('CreateServerNotSupported', `Creating servers is not supported by the ${driver} hypervisor driver.`),
  guestFsGrowNotSupported: (driver: string) =>
    new ServiceError('GuestFilesystemGrowNotSupported', `Growing a guest's filesystem is not supported by the ${driver} hypervisor driver.`),
  computeCannotExtend: (reason: string) =>
    new ServiceError('ExtendVolumeNotSupported', `The compute host cannot extend this attached volume: ${reason}`, { reason }),
  diskReadOnly: (volumeId: string, device: string, serverId: string) =>
    new ServiceError('DiskReadOnly', `Hypervisor driver failed: disk ${device} (volume ${volumeId}) of instance ${serverId} is read-only.`, {
      reason: `disk ${device} is read-only`,
    }),
  driverFailed: (reason: string, opts: Omit<ServiceErrorOptions, 'reason'> = {}) =>
    new ServiceError('DriverFailed', `Hypervisor driver failed: ${reason}`, { ...opts, reason }),
  hypervisorUnreachable: (uri: string, reason: string) =>
    new ServiceError('HypervisorUnreachable', `Cannot reach the hypervisor: ${reason}`, { reason, detail: `uri ${uri}` }),
  backendFailed: (reason: string, opts: Omit<ServiceErrorOptions, 'reason'> = {}) =>
    new ServiceError('BackendFailed', `Storage backend failed: ${reason}`, { ...opts, reason }),
  computeUnreachable: (reason: string, opts: Omit<ServiceErrorOptions, 'reason'> = {}) =>
    new ServiceError('ComputeUnreachable', `Compute API unreachable: ${reason}`, { ...opts, reason }),
  /** 503, uncertain: a token could not be validated because Keystone gave no usable answer (never a 401: the token may be fine). */
  identityUnreachable: (reason: string, opts: Omit<ServiceErrorOptions, 'reason'> = {}) =>
    new ServiceError('IdentityUnreachable', `Identity service (Keystone) unavailable: ${reason}; try again.`, { ...opts, reason }),
  serviceUnavailable: (message: string) => new ServiceError('ServiceUnavailable', message),
  /** 503, uncertain: the compute agent of `host` is down or did not answer; `reason` says which (no host path). */
  computeHostUnavailable: (host: string, reason: string) =>
    new ServiceError('ComputeHostUnavailable', `Compute host ${host} is unavailable: ${reason}; try again.`, { reason }),
  /** 503, uncertain: the message broker cannot be reached. */
  messagingUnavailable: (reason: string) => new ServiceError('MessagingUnavailable', `The message broker is unavailable: ${reason}; try again.`, { reason }),
  /** A compute service running without a volume service (`serve --no-volume-api`) asked to attach or detach. */
  volumeServiceNotConfigured: (action: 'attach' | 'detach') =>
    new ServiceError('VolumeServiceNotConfigured', `Cannot ${action} volumes: this compute service runs without a volume service (serve --no-volume-api).`),
  internal: (message = 'An unexpected error occurred.', opts: ServiceErrorOptions = {}) => new ServiceError('InternalError', message, opts),
};
