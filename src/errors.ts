/**
 * The one error catalogue. Every error the service can answer with is built here, carries its
 * HTTP status and Nova's fault name, and is rendered by the single error handler in api/.
 *
 * `retryable` follows external-resizer's final-vs-uncertain split: a retryable error means the
 * operation may still succeed if tried again (timeouts, a daemon that is down); a final one
 * means trying again with the same input gives the same answer.
 */

/** Nova's fault names by status (nova/api/openstack/wsgi.py), as the issue lists them. */
const FAULT_NAMES: Record<number, string> = {
  400: 'badRequest',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'itemNotFound',
  405: 'badMethod',
  409: 'conflictingRequest',
  413: 'overLimit',
  415: 'badMediaType',
  429: 'overLimit',
  501: 'HTTPNotImplemented',
  503: 'serviceUnavailable',
};

export function faultName(status: number): string {
  return FAULT_NAMES[status] ?? 'computeFault';
}

export type ErrorCode =
  | 'BadRequest'
  | 'InvalidInput'
  | 'VolumeShrinkRefused'
  | 'Unauthorized'
  | 'Forbidden'
  | 'NotFound'
  | 'InstanceNotFound'
  | 'VolumeNotAttached'
  | 'VolumeNotFound'
  | 'InstanceInvalidState'
  | 'InstanceBusy'
  | 'HostSizeTooSmall'
  | 'VolumeInvalidState'
  | 'PayloadTooLarge'
  | 'ExtendVolumeNotSupported'
  | 'DriverFailed'
  | 'HypervisorUnreachable'
  | 'BackendFailed'
  | 'ComputeUnreachable'
  | 'InternalError';

export class ServiceError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly retryable: boolean;

  constructor(code: ErrorCode, status: number, message: string, opts: { retryable?: boolean; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = code;
    this.code = code;
    this.status = status;
    this.retryable = opts.retryable ?? false;
  }

  get fault(): string {
    return faultName(this.status);
  }
}

export function isServiceError(err: unknown): err is ServiceError {
  return err instanceof ServiceError;
}

/** Factories: the only way the code base builds an error. */
export const errors = {
  badRequest: (message: string) => new ServiceError('BadRequest', 400, message),
  invalidInput: (message: string) => new ServiceError('InvalidInput', 400, message),
  shrinkRefused: (volumeId: string, requested: number, current: number) =>
    new ServiceError(
      'VolumeShrinkRefused',
      400,
      `Refusing to shrink volume ${volumeId}: requested ${requested} bytes is below the ${current} bytes the guest sees now; shrinking a live disk destroys data.`,
    ),
  unauthorized: (message = 'The request you have made requires authentication.') =>
    new ServiceError('Unauthorized', 401, message),
  forbidden: (action: string) =>
    new ServiceError('Forbidden', 403, `Policy doesn't allow ${action} to be performed.`),
  notFound: (message = 'The resource could not be found.') => new ServiceError('NotFound', 404, message),
  instanceNotFound: (serverId: string) =>
    new ServiceError('InstanceNotFound', 404, `Instance ${serverId} could not be found.`),
  volumeNotAttached: (volumeId: string, serverId: string) =>
    new ServiceError('VolumeNotAttached', 404, `Volume ${volumeId} is not attached to instance ${serverId}.`),
  volumeNotFound: (volumeId: string) => new ServiceError('VolumeNotFound', 404, `Volume ${volumeId} could not be found.`),
  instanceInvalidState: (serverId: string, state: string, action: string) =>
    new ServiceError(
      'InstanceInvalidState',
      409,
      `Cannot '${action}' instance ${serverId} while it is in state ${state}.`,
    ),
  instanceBusy: (serverId: string, task: string, action: string) =>
    new ServiceError('InstanceBusy', 409, `Cannot '${action}' instance ${serverId} while it is in task_state ${task}.`),
  hostSizeTooSmall: (volumeId: string, requested: number, hostBytes: number | undefined) =>
    new ServiceError(
      'HostSizeTooSmall',
      409,
      `The compute host does not see ${requested} bytes for volume ${volumeId} yet` +
        (hostBytes === undefined ? '' : ` (it sees ${hostBytes})`) +
        '; rescan first and wait until get_blockdev reports the new size.',
    ),
  volumeInvalidState: (volumeId: string, status: string, action: string) =>
    new ServiceError('VolumeInvalidState', 409, `Cannot '${action}' volume ${volumeId} while its status is ${status}.`),
  payloadTooLarge: (limit: number) => new ServiceError('PayloadTooLarge', 413, `Request body is larger than ${limit} bytes.`),
  extendNotSupported: (driver: string) =>
    new ServiceError('ExtendVolumeNotSupported', 501, `Volume extend is not supported by the ${driver} hypervisor driver.`),
  computeCannotExtend: (reason: string) =>
    new ServiceError('ExtendVolumeNotSupported', 501, `The compute host cannot extend this attached volume: ${reason}`),
  computeRefused: (volumeId: string, reason: string) =>
    new ServiceError('VolumeInvalidState', 409, `Compute refused to extend volume ${volumeId}: ${reason}`),
  driverFailed: (reason: string, opts: { retryable?: boolean; cause?: unknown } = {}) =>
    new ServiceError('DriverFailed', 500, `Hypervisor driver failed: ${reason}`, opts),
  hypervisorUnreachable: (uri: string, reason: string) =>
    new ServiceError('HypervisorUnreachable', 500, `Cannot reach the hypervisor at ${uri}: ${reason}`, { retryable: true }),
  backendFailed: (reason: string, opts: { retryable?: boolean; cause?: unknown } = {}) =>
    new ServiceError('BackendFailed', 500, `Storage backend failed: ${reason}`, opts),
  computeUnreachable: (reason: string) =>
    new ServiceError('ComputeUnreachable', 503, `Compute API unreachable: ${reason}`, { retryable: true }),
  internal: (message = 'An unexpected error occurred.') => new ServiceError('InternalError', 500, message),
};
