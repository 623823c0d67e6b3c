/** A small client for our OpenStack-shaped APIs (Nova-style fault bodies), used by the CLI and by the volume service to call compute. */
import { errors, ServiceError } from './errors.js';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly requestId: string | undefined,
  ) {
    super(message);
  }
}

export interface ApiClientOptions {
  url: string;
  token: string;
  timeoutMs?: number;
}

export class ApiClient {
  private readonly base: string;
  constructor(private readonly opts: ApiClientOptions) {
    this.base = opts.url.replace(/\/+$/, '');
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T; requestId: string | undefined }> {
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, {
        method,
        headers: {
          'x-auth-token': this.opts.token,
          accept: 'application/json',
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(this.opts.timeoutMs ?? 120_000),
      });
    } catch (err) {
      throw errors.computeUnreachable(`${method} ${this.base}${path}: ${(err as Error).message}`);
    }
    const requestId = res.headers.get('x-openstack-request-id') ?? undefined;
    const text = await res.text();
    const parsed = text ? (JSON.parse(text) as unknown) : undefined;
    if (!res.ok) {
      const fault = parsed && typeof parsed === 'object' ? Object.values(parsed as Record<string, { message?: string }>)[0] : undefined;
      throw new ApiError(res.status, fault?.message ?? `HTTP ${res.status}`, requestId);
    }
    return { status: res.status, body: parsed as T, requestId };
  }
}

/** 5xx, 429 and unreachable are worth retrying; other 4xx are final. */
export function isRetryable(err: unknown): boolean {
  if (err instanceof ApiError) return err.status >= 500 || err.status === 429;
  if (err instanceof ServiceError) return err.retryable;
  return true;
}
