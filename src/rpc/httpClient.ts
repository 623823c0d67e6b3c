/**
 * The RPC boundary's one HTTP client for our OpenStack-shaped APIs (Nova-style fault bodies):
 * the volume service calls compute through it (computeClient.ts), compute calls the volume
 * service through it (volumeClient.ts), and the CLI uses it too. An error answer comes back as
 * the same ServiceError the server raised (code, status, final-or-uncertain, reason), so callers
 * decide on the catalogue code and the classification, never on status codes or message text.
 */
import { CATALOGUE, isErrorCode, ServiceError, type ErrorCode } from '../errors.js';
import { currentTimings, timed, withTimings } from '../util/timing.js';

/** A ServiceError that came back over HTTP, with the remote request id. */
export class ApiError extends ServiceError {}

/** How to reach one API. */
export interface ApiClientOptions {
  /**
   * Base URL, e.g. `http://127.0.0.1:8774`, or where to look it up at each call (a
   * ServiceCatalog entry: the endpoint of a service that starts listening after this client is made).
   */
  url: string | (() => string);
  /** The token, or a function giving the current one (service tokens rotate). */
  token: string | (() => string);
  /** Default bound of one call, in ms (120 000 if absent). */
  timeoutMs?: number;
  /**
   * The catalogue code of "no answer" (uncertain: the call may have happened). Default
   * ComputeUnreachable (the volume service calling compute); the compute side calling the volume
   * service uses ServiceUnavailable.
   */
  unreachableCode?: 'ComputeUnreachable' | 'ServiceUnavailable';
  /** Headers sent on every call, e.g. `OpenStack-API-Version: volume latest` (VOLUME_LATEST). */
  headers?: Record<string, string>;
  /**
   * Hands each call to an API served by this same process instead of sending it over a socket
   * (injectDispatch: the API's whole request pipeline, auth and audit included, without the
   * connection and the HTTP parsing). Absent: over HTTP to `url` with fetch.
   */
  dispatch?: ApiDispatch;
  /**
   * The token is this service's own, not a user's (the volume service's for compute): a 401, a
   * policy 403 or a 400 ProjectMismatch then means the API refused the service's credential
   * (revoked, rotated away, its roles changed), which no caller can fix and which must not reach a
   * user as their own refusal. `renew(refused)` gives a fresh token to
   * retry the call with, once; refused again (or not renewable), the call fails with an uncertain
   * `unreachableCode` error (503) whose reason says so, so a workflow retries rather than ends.
   */
  serviceCredential?: { renew?: (refused: string) => Promise<string | undefined> };
}

/** One call as an in-process dispatch gets it: `path` is the URL's path and query; `body` is JSON text. */
export interface DispatchRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string;
}

/** What an in-process dispatch answers: the status, a header by its lower-case name, and the body's text. */
export interface DispatchAnswer {
  status: number;
  header(name: string): string | undefined;
  text: string;
}

/** Sends one call to an API in this process (ApiClientOptions.dispatch); rejects only when no answer could be had. */
export type ApiDispatch = (req: DispatchRequest) => Promise<DispatchAnswer>;

/** The header our own clients send the volume API: its latest microversion (extending attached volumes needs 3.42). */
export const VOLUME_LATEST: Readonly<Record<string, string>> = { 'OpenStack-API-Version': 'volume latest' };

/** Per-call options of an RPC client: `timeoutMs` bounds the call (a workflow passes what is left of its deadline). */
export interface CallOptions {
  timeoutMs?: number;
}

/** What an RPC call answered, with the remote request id (for the caller's audit trail). */
export interface RemoteCall<T> {
  value: T;
  requestId: string | undefined;
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

/**
 * One API endpoint: `request` sends JSON with X-Auth-Token and answers the parsed body, or throws
 * the ServiceError the answer's fault describes (ApiError), or an uncertain `unreachableCode`
 * error when no answer came (timeout, refused connection, cut-off answer).
 */
export class ApiClient {
  constructor(private readonly opts: ApiClientOptions) {}

  private get base(): string {
    return (typeof this.opts.url === 'function' ? this.opts.url() : this.opts.url).replace(/\/+$/, '');
  }

  /** `opts.timeoutMs` bounds this one call (e.g. by a workflow's deadline); default the client's. */
  async request<T>(method: string, path: string, body?: unknown, opts: CallOptions & { token?: string } = {}): Promise<{ status: number; body: T; requestId: string | undefined }> {
    const token = opts.token ?? (typeof this.opts.token === 'function' ? this.opts.token() : this.opts.token);
    const timeoutMs = Math.max(1, opts.timeoutMs ?? this.opts.timeoutMs ?? 120_000);
    const json = body === undefined ? undefined : JSON.stringify(body);
    // In a request of our own APIs (the volume API's calls to compute), the call's time is that
    // request's `rpc` Server-Timing part.
    // (Current now, at the call, not after an await: util/timing.ts.)
    const timings = currentTimings();
    let answer = await timed('rpc', () => this.send(method, path, json, token, timeoutMs));
    const own = this.opts.serviceCredential;
    if (own && opts.token === undefined && credentialRefused(answer)) {
      // The service's own token was refused (revoked, expired in the store: 401) or is not allowed
      // (its roles changed: a policy 403, or a 400 ProjectMismatch when it lost the `service` role
      // that lets it act on the user's project). None is the user's doing: a new token, once (Keystone
      // gives a new token the user's current roles), then an uncertain error the caller retries
      // (an extend waits until an operator mends the service user), never a final 401/403.
      const fresh = await own.renew?.(token).catch(() => undefined);
      if (fresh !== undefined && fresh !== token) answer = await withTimings(timings, () => timed('rpc', () => this.send(method, path, json, fresh, timeoutMs)));
      const refused = credentialRefused(answer);
      if (refused) {
        const why = refused.status === 401
          ? "the API refused this service's own credential"
          : refused.code === 'ProjectMismatch'
            ? "the API does not take this service's own credential as a service's (its user needs the `service` role)"
            : `the API's policy does not allow this service's own credential (check the service user's roles and the API's policy: ${refused.message})`;
        throw new ApiError(this.opts.unreachableCode ?? 'ComputeUnreachable', `${method} ${path}: ${why}`, {
          final: false,
          // The API refused the credential before it acted: nothing happened there.
          unacted: true,
          reason: why,
          ...(answer.requestId ? { requestId: answer.requestId } : {}),
        });
      }
    }
    const { status, requestId, text } = answer;
    const ok = status >= 200 && status < 300;
    let parsed: unknown;
    try {
      parsed = text ? (JSON.parse(text) as unknown) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!ok) throw errorFromFault(status, parsed, requestId);
    if (text && parsed === undefined) {
      throw new ApiError('InternalError', `${method} ${path}: the answer (HTTP ${status}) is not JSON`, { final: false, ...(requestId ? { requestId } : {}) });
    }
    return { status, body: parsed as T, requestId };
  }

  /** One call over `dispatch` or HTTP; throws an uncertain `unreachableCode` error when no answer came. */
  private async send(method: string, path: string, json: string | undefined, token: string, timeoutMs: number): Promise<{ status: number; requestId: string | undefined; text: string }> {
    const unreachable = this.opts.unreachableCode ?? 'ComputeUnreachable';
    const base = this.base;
    const headers: Record<string, string> = {
      ...this.opts.headers,
      'x-auth-token': token,
      accept: 'application/json',
      ...(json === undefined ? {} : { 'content-type': 'application/json' }),
    };
    // Not answered: the call may or may not have happened, so this is uncertain. The message
    // names the call, not the address it went to (that goes in the detail).
    const noAnswer = (err: unknown, timedOut: boolean): ApiError => {
      const why = timedOut ? `no answer within ${timeoutMs} ms` : 'no answer (connection failed)';
      return new ApiError(unreachable, `${method} ${path}: ${why}`, { cause: err, final: false, reason: why, detail: `${base}${path}: ${(err as Error)?.message ?? String(err)}` });
    };
    if (this.opts.dispatch) {
      // The API called in-process times its own request: nothing of the caller's is current in it.
      const answer = await withTimings(undefined, () => dispatchWithin(this.opts.dispatch!, { method, path, headers, ...(json === undefined ? {} : { body: json }) }, timeoutMs)).catch((err: unknown) => {
        throw noAnswer(err, err instanceof DispatchTimeout);
      });
      return { status: answer.status, requestId: answer.header('x-openstack-request-id'), text: answer.text };
    }
    let res: Response;
    try {
      res = await fetch(`${base}${path}`, { method, headers, ...(json === undefined ? {} : { body: json }), signal: AbortSignal.timeout(timeoutMs) });
    } catch (err) {
      throw noAnswer(err, (err as Error)?.name === 'TimeoutError');
    }
    const requestId = res.headers.get('x-openstack-request-id') ?? undefined;
    try {
      return { status: res.status, requestId, text: await res.text() };
    } catch (err) {
      throw new ApiError(unreachable, `${method} ${path}: the answer was cut off`, { cause: err, final: false, detail: `${base}${path}: ${(err as Error).message}` });
    }
  }
}

/**
 * How an answer refuses a service's own credential, else undefined: a 401 (the token), a 403
 * `Forbidden` (the API's policy; a 403 with another code, such as TooManyDiskDevices, is about the
 * request), a 400 `ProjectMismatch` (the token is not a service's: only the `service` role acts on
 * another project's URL, and a service always calls on the user's project). `message`: the API's.
 */
function credentialRefused(answer: { status: number; text: string }): { status: number; code?: string; message: string } | undefined {
  if (answer.status === 401) return { status: 401, message: '' };
  if (answer.status !== 403 && answer.status !== 400) return undefined;
  let fault: FaultFields | undefined;
  try {
    fault = Object.values(JSON.parse(answer.text) as Record<string, FaultFields>)[0];
  } catch {
    return undefined;
  }
  const code = fault?.error_code;
  if ((answer.status === 403 && code === 'Forbidden') || (answer.status === 400 && code === 'ProjectMismatch')) {
    return { status: answer.status, code, message: typeof fault?.message === 'string' ? fault.message : `HTTP ${answer.status}` };
  }
  return undefined;
}

/** A dispatch that did not answer within its call's bound. */
class DispatchTimeout extends Error {}

/** `dispatch(req)`, or a DispatchTimeout after `timeoutMs` (the call itself runs on: an in-process handler cannot be cut off, as a server goes on after its client gave up). */
function dispatchWithin(dispatch: ApiDispatch, req: DispatchRequest, timeoutMs: number): Promise<DispatchAnswer> {
  return new Promise<DispatchAnswer>((resolve, reject) => {
    const timer = setTimeout(() => reject(new DispatchTimeout(`no answer within ${timeoutMs} ms`)), timeoutMs);
    timer.unref();
    Promise.resolve()
      .then(() => dispatch(req))
      .then(
        (a) => {
          clearTimeout(timer);
          resolve(a);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err as Error);
        },
      );
  });
}
