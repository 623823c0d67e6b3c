/**
 * A small client for our OpenStack-shaped APIs (Nova-style fault bodies), used by the CLI and by
 * the volume service to call compute. An error answer comes back as the same ServiceError the
 * server raised (code, status, final-or-uncertain, reason), so callers decide on the catalogue
 * code and the classification, never on status codes or message text.
 */
import { CATALOGUE, isErrorCode, ServiceError, type ErrorCode } from './errors.js';

/** A ServiceError that came back over HTTP, with the remote request id. */
export class ApiError extends ServiceError {}

export interface ApiClientOptions {
  url: string;
  /** The token, or a function giving the current one (service tokens rotate). */
  token: string | (() => string);
  timeoutMs?: number;
}

interface FaultFields {
  code?: unknown;
  message?: unknown;
  error_code?: unknown;
  final?: unknown;
  reason?: unknown;
}

/**
 * Rebuilds the ServiceError a fault body describes. A fault without our fields (another
 * OpenStack service, a proxy) is classified by its status as external-resizer does with gRPC
 * codes: 408, 429 and 5xx are uncertain, anything else final.
 */
export function errorFromFault(status: number, body: unknown, requestId: string | undefined): ApiError {
  const fault = body && typeof body === 'object' ? (Object.values(body as Record<string, FaultFields>)[0] ?? {}) : {};
  const message = typeof fault.message === 'string' ? fault.message : `HTTP ${status}`;
  const known = isErrorCode(fault.error_code) && CATALOGUE[fault.error_code].status === status ? fault.error_code : undefined;
  const code: ErrorCode = known ?? codeForStatus(status);
  const final = typeof fault.final === 'boolean' ? fault.final : !(status >= 500 || status === 408 || status === 429);
  return new ApiError(code, message, {
    final,
    ...(typeof fault.reason === 'string' ? { reason: fault.reason } : {}),
    ...(requestId ? { requestId } : {}),
  });
}

function codeForStatus(status: number): ErrorCode {
  for (const [code, entry] of Object.entries(CATALOGUE)) if (entry.status === status) return code as ErrorCode;
  return status >= 500 ? 'InternalError' : 'BadRequest';
}

export class ApiClient {
  private readonly base: string;
  constructor(private readonly opts: ApiClientOptions) {
    this.base = opts.url.replace(/\/+$/, '');
  }

  /** `opts.timeoutMs` bounds this one call (e.g. by a workflow's deadline); default the client's. */
  async request<T>(method: string, path: string, body?: unknown, opts: { timeoutMs?: number } = {}): Promise<{ status: number; body: T; requestId: string | undefined }> {
    let res: Response;
    const token = typeof this.opts.token === 'function' ? this.opts.token() : this.opts.token;
    const timeoutMs = Math.max(1, opts.timeoutMs ?? this.opts.timeoutMs ?? 120_000);
    try {
      res = await fetch(`${this.base}${path}`, {
        method,
        headers: {
          'x-auth-token': token,
          accept: 'application/json',
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      // Not answered: the call may or may not have happened, so this is uncertain. The message
      // names the call, not the address it went to (that goes in the detail).
      const e = err as Error;
      const why = e.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : 'no answer (connection failed)';
      throw new ApiError('ComputeUnreachable', `${method} ${path}: ${why}`, { cause: err, final: false, reason: why, detail: `${this.base}${path}: ${e.message}` });
    }
    const requestId = res.headers.get('x-openstack-request-id') ?? undefined;
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      throw new ApiError('ComputeUnreachable', `${method} ${path}: the answer was cut off`, { cause: err, final: false, detail: `${this.base}${path}: ${(err as Error).message}` });
    }
    let parsed: unknown;
    try {
      parsed = text ? (JSON.parse(text) as unknown) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!res.ok) throw errorFromFault(res.status, parsed, requestId);
    if (text && parsed === undefined) {
      throw new ApiError('InternalError', `${method} ${path}: the answer (HTTP ${res.status}) is not JSON`, { final: false, ...(requestId ? { requestId } : {}) });
    }
    return { status: res.status, body: parsed as T, requestId };
  }
}
