/**
 * `--auth keystone`: incoming tokens are validated against a real Keystone (v3) as
 * keystonemiddleware's auth_token does it, and the volume service's token for the compute API is
 * a Keystone token of our service user.
 *
 * - The service token: `POST /v3/auth/tokens` with the service user's password, scoped to its
 *   project (both in the `default` domain). Renewed before it expires (a timer) and once when
 *   Keystone answers 401 to it (Keystone restarted with other keys, the token revoked).
 * - A user token: `GET /v3/auth/tokens?nocatalog` with `X-Auth-Token` (the service token) and
 *   `X-Subject-Token` (the user's). 200 → the caller (user id, project id, role names); 404 (or
 *   400) → invalid, expired or revoked: 401 with `WWW-Authenticate: Keystone uri="…"`.
 * - Every answer, valid and invalid, is cached for `cacheMs` (keystonemiddleware's
 *   token_cache_time, its invalid-token cache included), never past the token's `expires_at`:
 *   a revoked token keeps working for at most `cacheMs` after its last validation.
 * - The service user needs, on its project, the `service` role (Keystone lets it validate tokens;
 *   compute's connection routes want it) and, with the default policy, `admin` (the spec's
 *   admin-only routes the volume service calls: get_blockdev, assist_extend).
 * - Keystone down, slow (timeout) or failing (5xx), or refusing our own credentials: 503
 *   IdentityUnreachable (uncertain: try again), never a 401, never cached.
 * - Concurrent validations of one token share one request to Keystone.
 */
import type { Logger } from 'pino';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { errors, ServiceError } from '../errors.js';
import { hashToken, type AuthContext } from './tokens.js';
import { isProjectId } from './ids.js';

/** How a KeystoneAuthenticator reaches Keystone and caches; times in ms. */
export interface KeystoneOptions {
  /** Keystone's URL as configured (`…/v3` or its root); sent as the WWW-Authenticate `uri`. */
  url: string;
  /** The service user (a name, in the `default` domain) and its project (a name, in the `default` domain). */
  serviceUser: string;
  serviceProject: string;
  /** The service user's password. Kept in memory only; never logged. */
  password: string;
  /** How long a validation (valid or invalid) is trusted; 0: ask Keystone every time. */
  cacheMs: number;
  /** Bound of each call to Keystone (default 5000). */
  timeoutMs?: number;
  /** Most validations kept (default 10 000; the oldest go first). */
  maxCacheEntries?: number;
  /** The clock, epoch ms (tests move it). */
  now?: () => number;
  logger?: Logger;
}

/** A cached validation: the caller, or `invalid`, trusted until `until` (epoch ms). */
type Validation = { ctx: AuthContext; until: number } | { invalid: string; until: number };

/** Keystone's token body, the parts read here. */
interface KeystoneToken {
  expires_at?: string;
  user?: { id?: string };
  project?: { id?: string };
  roles?: { name?: string }[];
}

/** What a token must look like to be sent to Keystone in a header (Fernet tokens are ~200 URL-safe characters). */
const TOKEN_SHAPE = /^[\x21-\x7e]{1,8192}$/;

/**
 * Retry delays of a failed service-token renewal (then the last one, again and again): short, so
 * that once Keystone is back the volume service has a valid token again within seconds.
 */
const RENEW_RETRY_MS = [1_000, 2_000, 5_000];

/**
 * Least time between two service tokens asked for because an API refused the current one
 * (`renewRefusedServiceToken`): a refusal a new token does not cure (a policy that denies the
 * service) must not turn every call into a Keystone login. As ServiceToken.renew.
 */
const REFUSED_RENEW_MIN_MS = 10_000;

/**
 * Validates X-Auth-Token values against Keystone (the TokenAuthenticator's `authenticate`, for
 * auth=keystone) and keeps this service's own Keystone token (`serviceToken()`), for the volume
 * service's calls to compute. One per process: both APIs share its cache and its service token.
 */
export class KeystoneAuthenticator {
  /** The value of `WWW-Authenticate` on a 401 (keystonemiddleware's `Keystone uri="<www_authenticate_uri>"`). */
  readonly wwwAuthenticate: string;
  private readonly base: string;
  private readonly timeoutMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  private readonly cache = new Map<string, Validation>();
  private readonly pending = new Map<string, Promise<Validation>>();
  private service: { token: string; expiresAt: number; issuedAt: number } | undefined;
  private serviceFetch: Promise<string> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private failures = 0;
  /** The last failed service-token request: until its retry delay has passed, callers get its error without asking Keystone again. */
  private lastFailure: { at: number; err: unknown } | undefined;
  /** The service token Keystone last refused in a validation (401 or 403), until another one replaces it. */
  private refusedOwn: string | undefined;
  /** When a token was last asked for because an API refused ours (epoch ms). */
  private refusedRenewAt: number | undefined;
  private logger: Logger | undefined;
  /**
   * What `serviceToken()` gives while there is no valid service token: random per process, it
   * names nobody; `authenticate` answers it with 503 IdentityUnreachable (uncertain), so the volume
   * service's calls to compute wait for Keystone instead of failing for good on a 401.
   */
  private readonly noToken = `oe-keystone-pending-${randomBytes(16).toString('hex')}`;
  private stopped = false;

  constructor(private readonly opts: KeystoneOptions) {
    this.wwwAuthenticate = `Keystone uri="${opts.url}"`;
    const trimmed = opts.url.replace(/\/+$/, '');
    this.base = /\/v3$/.test(trimmed) ? trimmed : `${trimmed}/v3`;
    this.timeoutMs = opts.timeoutMs ?? 5_000;
    this.maxEntries = opts.maxCacheEntries ?? 10_000;
    this.now = opts.now ?? Date.now;
    this.logger = opts.logger;
    if (!(opts.cacheMs >= 0)) throw new Error(`keystone token cache time must be >= 0 ms, got ${opts.cacheMs}`);
  }

  /**
   * From the configuration: `keystoneUrl`, the service user and project, the password read once
   * from `keystoneServicePasswordFile` (one trailing newline dropped), `keystoneTokenCacheMs`.
   * Throws an Error naming the file (never its content) when it cannot be read or is empty.
   */
  static fromConfig(
    config: { keystoneUrl?: string | undefined; keystoneServiceUser: string; keystoneServiceProject: string; keystoneServicePasswordFile?: string | undefined; keystoneTokenCacheMs: number },
    logger?: Logger,
  ): KeystoneAuthenticator {
    if (!config.keystoneUrl || !config.keystoneServicePasswordFile) throw new Error('auth keystone needs keystoneUrl and keystoneServicePasswordFile');
    let password: string;
    try {
      password = readFileSync(config.keystoneServicePasswordFile, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new Error(`cannot read the Keystone service password file ${config.keystoneServicePasswordFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    if (password === '') throw new Error(`the Keystone service password file ${config.keystoneServicePasswordFile} is empty`);
    return new KeystoneAuthenticator({
      url: config.keystoneUrl,
      serviceUser: config.keystoneServiceUser,
      serviceProject: config.keystoneServiceProject,
      password,
      cacheMs: config.keystoneTokenCacheMs,
      ...(logger ? { logger } : {}),
    });
  }

  /**
   * The caller of `token` (the X-Auth-Token value), as Keystone says. Throws Unauthorized (401;
   * missing, malformed, invalid, expired, revoked, or not scoped to a project) or
   * IdentityUnreachable (503, uncertain: Keystone down, slow, failing, or refusing our service
   * credentials).
   */
  async authenticate(token: string | undefined): Promise<AuthContext> {
    if (!token) throw errors.unauthorized();
    if (token === this.noToken) throw this.unreachable('this service has no valid Keystone token yet');
    if (!TOKEN_SHAPE.test(token)) throw errors.unauthorized('The token is invalid or has expired.');
    const key = hashToken(token);
    let v = this.cached(key);
    if (!v) {
      // Not known: validated by Keystone (one request shared by concurrent callers).
      let p = this.pending.get(key);
      if (!p) {
        p = this.validate(token).finally(() => this.pending.delete(key));
        this.pending.set(key, p);
        p.then((fresh) => this.remember(key, fresh), () => undefined);
      }
      v = await p;
    }
    if ('invalid' in v) throw errors.unauthorized(v.invalid);
    if (v.ctx.expiresAt <= this.now()) throw errors.unauthorized('The token is invalid or has expired.');
    return v.ctx;
  }

  /**
   * The caller of `token` when Keystone's answer for it is cached and still valid now; undefined
   * when `authenticate` must decide (unknown, refused, or expired tokens). No I/O.
   */
  known(token: string | undefined): AuthContext | undefined {
    if (!token || token === this.noToken || !TOKEN_SHAPE.test(token)) return undefined;
    const v = this.cached(hashToken(token));
    return v && !('invalid' in v) && v.ctx.expiresAt > this.now() ? v.ctx : undefined;
  }

  /**
   * Get the first service token now (throws IdentityUnreachable if Keystone cannot give one) and
   * keep it renewed from now on (timers do not keep the process alive).
   */
  async start(): Promise<void> {
    this.stopped = false;
    await this.renewServiceToken();
  }

  /**
   * Like `start`, but a failure is logged and retried in the background: the service runs while
   * Keystone is away, answering 503 until it is back.
   */
  startInBackground(): Promise<void> {
    return this.start().catch((err: unknown) => {
      this.logger?.error({ err, keystoneUrl: this.opts.url }, 'cannot get a service token from Keystone; retrying');
      this.scheduleRetry();
    });
  }

  /** Log through `logger` from now on (the service's logger exists only once the configuration is checked). */
  useLogger(logger: Logger): void {
    this.logger = logger;
  }

  /** Stop renewing the service token. */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /**
   * The current service token: pass `() => keystone.serviceToken()` to an ApiClient. Before the
   * first one, or once it has expired without a renewal (Keystone away), a placeholder that this
   * authenticator answers with 503 IdentityUnreachable (see `noToken`).
   */
  serviceToken(): string {
    const s = this.service;
    return s && s.expiresAt > this.now() ? s.token : this.noToken;
  }

  /** Expiry of the current service token (epoch ms), if there is one. */
  get serviceTokenExpiresAt(): number | undefined {
    return this.service?.expiresAt;
  }

  private cached(key: string): Validation | undefined {
    const v = this.cache.get(key);
    if (v && v.until > this.now()) return v;
    if (v) this.cache.delete(key);
    return undefined;
  }

  private remember(key: string, v: Validation): void {
    if (this.opts.cacheMs <= 0 || v.until <= this.now()) return;
    this.cache.delete(key);
    while (this.cache.size >= this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, v);
  }

  /** Ask Keystone about `token` (once more, with a new service token, if it refuses ours). */
  private async validate(token: string): Promise<Validation> {
    let own = await this.ensureServiceToken();
    let res = await this.call('GET', '/auth/tokens?nocatalog', { 'x-auth-token': own, 'x-subject-token': token });
    if (res.status === 401 || res.status === 403) {
      // Our token refused (401: revoked or expired; 403: its user may not validate tokens, its
      // roles). Remembered: until a new one is had, validations fail at once instead of sending
      // Keystone a token it refused, once per API request; a new one at most every 10 s.
      this.refusedOwn = own;
      const fresh = await this.renewRefusedServiceToken(own);
      if (fresh === undefined) throw this.refusedOwnError();
      own = fresh;
      res = await this.call('GET', '/auth/tokens?nocatalog', { 'x-auth-token': own, 'x-subject-token': token });
      if (res.status === 401 || res.status === 403) this.refusedOwn = own;
    }
    const now = this.now();
    const until = now + this.opts.cacheMs;
    if (res.status === 404 || res.status === 400) return { invalid: 'The token is invalid or has expired.', until };
    if (res.status === 401 || res.status === 403) {
      throw this.unreachable(`Keystone refused this service's credentials (HTTP ${res.status}); the operator must check the service user and its roles`);
    }
    if (res.status !== 200) throw this.unreachable(`Keystone answered HTTP ${res.status}`);
    const body = (res.body as { token?: KeystoneToken } | undefined)?.token;
    const expiresAt = Date.parse(body?.expires_at ?? '');
    const userId = body?.user?.id;
    const projectId = body?.project?.id;
    if (!body || !userId || Number.isNaN(expiresAt)) throw this.unreachable('Keystone answered a token validation without a user or an expiry');
    if (expiresAt <= now) return { invalid: 'The token is invalid or has expired.', until };
    // Our APIs act in a project: a domain- or system-scoped or unscoped token has none to act in.
    if (!projectId || !isProjectId(projectId)) return { invalid: 'The token is not scoped to a project.', until: Math.min(until, expiresAt) };
    const roles = (body.roles ?? []).map((r) => r.name).filter((n): n is string => typeof n === 'string' && n !== '');
    return { ctx: { userId, projectId, roles, expiresAt }, until: Math.min(until, expiresAt) };
  }

  /** The service token, fetched first if there is none or it is about to expire. */
  private async ensureServiceToken(): Promise<string> {
    const s = this.service;
    if (s && s.token === this.refusedOwn) {
      const fresh = await this.renewRefusedServiceToken(s.token);
      if (fresh === undefined) throw this.refusedOwnError();
      return fresh;
    }
    if (s && s.expiresAt - this.now() > this.renewBeforeMs(s)) return s.token;
    return this.renewServiceToken();
  }

  private refusedOwnError(): ServiceError {
    return this.unreachable("Keystone refused this service's credentials; the operator must check the service user and its roles");
  }

  /**
   * A new service token because an API refused `refused` (ApiClientOptions.serviceCredential):
   * one request to Keystone shared by every caller that saw the same refusal; the current token at
   * once when it already changed; undefined (no new token) when one was asked for because of a
   * refusal less than REFUSED_RENEW_MIN_MS ago. Rejects with IdentityUnreachable (503) when
   * Keystone gives none.
   */
  renewRefusedServiceToken(refused: string): Promise<string | undefined> {
    if (this.service && this.service.token !== refused) return Promise.resolve(this.service.token);
    if (this.serviceFetch) return this.serviceFetch;
    const now = this.now();
    if (this.refusedRenewAt !== undefined && now - this.refusedRenewAt < REFUSED_RENEW_MIN_MS) return Promise.resolve(undefined);
    this.refusedRenewAt = now;
    return this.renewServiceToken(refused).then((fresh) => {
      // Refused for its roles (403) the old token is still valid at Keystone: revoked there, so a
      // lasting refusal does not leave a valid service token per renewal (best effort).
      if (fresh !== refused) {
        this.call('DELETE', '/auth/tokens', { 'x-auth-token': fresh, 'x-subject-token': refused }).catch((err: unknown) => {
          this.logger?.warn({ err }, 'revoking a refused service token at Keystone failed');
        });
      }
      return fresh;
    });
  }

  /**
   * A new service token (shared by concurrent callers). `stale`: the token found refused; when
   * another caller already replaced it, that replacement is returned without asking again. After a
   * failed request, callers get its error until its retry delay (RENEW_RETRY_MS) has passed, so a
   * Keystone that refuses the service user (deleted, disabled, wrong password) sees one login per
   * delay, not one per API request; `scheduled` (the renewal timer, which keeps that schedule) asks anyway.
   */
  private async renewServiceToken(stale?: string, scheduled = false): Promise<string> {
    if (stale !== undefined && this.service && this.service.token !== stale) return this.service.token;
    const failed = this.lastFailure;
    if (!scheduled && !this.serviceFetch && failed && this.now() - failed.at < this.retryDelayMs()) throw failed.err;
    this.serviceFetch ??= this.issueServiceToken().then(
      (token) => {
        this.serviceFetch = undefined;
        this.lastFailure = undefined;
        return token;
      },
      (err: unknown) => {
        this.serviceFetch = undefined;
        this.lastFailure = { at: this.now(), err };
        // The renewal timer tries again on its schedule (RENEW_RETRY_MS), whoever failed.
        if (!scheduled) this.scheduleRetry();
        throw err;
      },
    );
    return this.serviceFetch;
  }

  /** The delay before the next service-token request after `failures` failed ones in a row. */
  private retryDelayMs(): number {
    return RENEW_RETRY_MS[Math.min(Math.max(this.failures - 1, 0), RENEW_RETRY_MS.length - 1)]!;
  }

  private async issueServiceToken(): Promise<string> {
    const domain = { id: 'default' };
    const body = {
      auth: {
        identity: { methods: ['password'], password: { user: { name: this.opts.serviceUser, domain, password: this.opts.password } } },
        scope: { project: { name: this.opts.serviceProject, domain } },
      },
    };
    let res;
    try {
      res = await this.call('POST', '/auth/tokens?nocatalog', { 'content-type': 'application/json' }, JSON.stringify(body));
    } catch (err) {
      this.failures++;
      throw err;
    }
    const token = res.headers.get('x-subject-token');
    const expiresAt = Date.parse((res.body as { token?: KeystoneToken } | undefined)?.token?.expires_at ?? '');
    if (res.status !== 201 || !token || Number.isNaN(expiresAt)) {
      this.failures++;
      // The service user's name goes to the operator's log (detail), never to API clients.
      const why = res.status === 401 ? "Keystone refused this service's credentials" : `Keystone answered HTTP ${res.status} to this service's token request`;
      throw this.unreachable(why, undefined, `service user ${this.opts.serviceUser}, project ${this.opts.serviceProject}`);
    }
    this.failures = 0;
    const issuedAt = this.now();
    this.service = { token, expiresAt, issuedAt };
    this.logger?.info({ expiresAt: new Date(expiresAt).toISOString() }, 'got a service token from Keystone');
    this.scheduleRenewal();
    return token;
  }

  /** Renew once less than half the token's lifetime, or 5 minutes, is left (whichever is less). */
  private renewBeforeMs(s: { expiresAt: number; issuedAt: number }): number {
    return Math.min(300_000, (s.expiresAt - s.issuedAt) / 2);
  }

  private scheduleRenewal(): void {
    const s = this.service!;
    this.arm(s.expiresAt - this.renewBeforeMs(s) - this.now());
  }

  private scheduleRetry(): void {
    this.arm(this.retryDelayMs());
  }

  private arm(delayMs: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.renewServiceToken(undefined, true).catch((err: unknown) => {
        this.logger?.error({ err, keystoneUrl: this.opts.url }, 'service token renewal failed; retrying');
        this.scheduleRetry();
      });
    }, Math.min(Math.max(delayMs, 0), 2 ** 31 - 1));
    this.timer.unref();
  }

  /** One call to Keystone, bounded by `timeoutMs`; its JSON body if it has one. Throws IdentityUnreachable when no answer came. */
  private async call(method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; headers: Headers; body: unknown }> {
    try {
      const res = await fetch(`${this.base}${path}`, { method, headers: { accept: 'application/json', ...headers }, ...(body === undefined ? {} : { body }), signal: AbortSignal.timeout(this.timeoutMs) });
      const text = await res.text();
      let parsed: unknown;
      try {
        parsed = text === '' ? undefined : JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      return { status: res.status, headers: res.headers, body: parsed };
    } catch (err) {
      const e = err as Error;
      throw this.unreachable(e.name === 'TimeoutError' ? `no answer within ${this.timeoutMs} ms` : 'no answer (connection failed)', err);
    }
  }

  private unreachable(reason: string, cause?: unknown, more?: string): ServiceError {
    return errors.identityUnreachable(reason, { detail: `keystone ${this.base}${more ? `; ${more}` : ''}`, ...(cause === undefined ? {} : { cause }) });
  }
}
