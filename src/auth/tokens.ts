/**
 * Opaque bearer tokens (X-Auth-Token), stored only as sha256 hashes with an expiry. Shaped so a
 * Keystone-v3-style `POST /v3/auth/tokens` could issue the same records later.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { errors } from '../errors.js';
import { isProjectId, isUserId, PROJECT_ID_RULE, USER_ID_RULE } from './ids.js';
import type { ComputeStore, TokenRecord } from '../db/store.js';
import { writePrivateFile } from '../util/privateFile.js';
import type { Credentials } from './policy.js';

/** The key a token is stored under: its sha256, hex (64 characters). The token itself is never stored. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/**
 * Keystone's default roles (admin, member, reader) and the role of service users. A token may
 * carry others when a policy file names them.
 */
export const STANDARD_ROLES: readonly string[] = ['admin', 'member', 'reader', 'service'];

/** What a policy check `role:X` can match, and what the store's comma-separated list can hold. */
const ROLE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** Throws if a role name could not be stored or matched by a policy rule. */
export function checkRoleNames(roles: readonly string[]): void {
  for (const r of roles) {
    if (!ROLE_NAME.test(r)) throw new Error(`invalid role name ${JSON.stringify(r)}: use letters, digits, '_', '.', '-' (at most 64)`);
  }
}

/** The roles a policy file's rules name (`role:X`), so tokens may carry them. */
export function rolesInPolicy(rules: Readonly<Record<string, unknown>>): string[] {
  const found = new Set<string>();
  for (const rule of Object.values(rules)) {
    if (typeof rule !== 'string') continue;
    for (const m of rule.matchAll(/(?:^|[\s(])role:([^\s()]+)/g)) if (ROLE_NAME.test(m[1]!)) found.add(m[1]!);
  }
  return [...found];
}

/**
 * Parses `--roles admin,member`: at least one role, each a valid name and either a standard role
 * (`STANDARD_ROLES`) or one of `known` (those a policy file names). Duplicates are dropped.
 * Throws an Error whose message says what is accepted.
 */
export function parseRoles(text: string, known: Iterable<string> = []): string[] {
  const roles = [...new Set(text.split(',').map((r) => r.trim()).filter(Boolean))];
  if (roles.length === 0) throw new Error(`--roles needs at least one role, e.g. --roles member (standard roles: ${STANDARD_ROLES.join(', ')})`);
  checkRoleNames(roles);
  const allowed = new Set([...STANDARD_ROLES, ...known]);
  const unknown = roles.filter((r) => !allowed.has(r));
  if (unknown.length > 0) {
    throw new Error(
      `unknown role${unknown.length > 1 ? 's' : ''} ${unknown.map((r) => JSON.stringify(r)).join(', ')}: ` +
        `use ${[...allowed].join(', ')}, or a role your --policy file names`,
    );
  }
  return roles;
}

/**
 * Issues a new opaque token (`oe-` and 32 random bytes, base64url) valid for `ttlMs` ms from `now` and stores its hash.
 * Returns the token (shown once) and the stored record. Throws a plain Error on an invalid role, project or user id or a non-positive lifetime.
 */
export async function issueToken(
  store: Pick<ComputeStore, 'putToken'>,
  opts: { userId: string; projectId: string; roles: string[]; ttlMs: number; now?: Date },
): Promise<{ token: string; record: TokenRecord }> {
  checkRoleNames(opts.roles);
  // A token for a project the API would refuse in every URL could never be used.
  if (!isProjectId(opts.projectId)) throw new Error(`invalid project id ${JSON.stringify(opts.projectId)}: a project id is ${PROJECT_ID_RULE}`);
  if (!isUserId(opts.userId)) throw new Error(`invalid user id ${JSON.stringify(opts.userId)}: a user id is ${USER_ID_RULE}`);
  if (!(opts.ttlMs > 0)) throw new Error(`token lifetime must be positive, got ${opts.ttlMs} ms`);
  const now = opts.now ?? new Date();
  const token = `oe-${randomBytes(32).toString('base64url')}`;
  const record: TokenRecord = {
    hash: hashToken(token),
    userId: opts.userId,
    projectId: opts.projectId,
    roles: opts.roles,
    createdAt: now.toISOString(),
    expiresAt: new Date(now.getTime() + opts.ttlMs).toISOString(),
  };
  await store.putToken(record);
  return { token, record };
}

/** Parses durations like `90s`, `30m`, `1h`, `7d`. */
export function parseDuration(text: string): number {
  const m = /^(\d+)\s*(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) throw new Error(`invalid duration "${text}" (use e.g. 30m, 1h, 7d)`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h' | 'd'];
  return Number(m[1]) * unit;
}

/** The identity the volume service calls the compute API with (as Cinder calls Nova). */
export const SERVICE_USER = 'online-extend-volume';
export const SERVICE_PROJECT = 'service';
export const SERVICE_ROLES: readonly string[] = ['admin', 'service'];

/**
 * The service user of one process among several on one database (the `api` role):
 * `online-extend-volume.<instance>`, so that one process's token rotation (which revokes its
 * user's other tokens) never revokes another's.
 */
export function serviceUserOf(instance: string): string {
  return `${SERVICE_USER}.${instance}`;
}

/** How `ServiceToken.open` keeps the volume service's token; times in ms. */
export interface ServiceTokenOptions {
  store: Pick<ComputeStore, 'putToken' | 'getToken' | 'listTokens' | 'deleteToken' | 'deleteExpiredTokens'>;
  /**
   * Where the current token is kept across restarts (JSON, written 0600). Absent: kept in memory
   * only (the `api` role: several processes share the data dir, each with its own token).
   */
  file?: string;
  /**
   * The user the tokens are issued to (default SERVICE_USER). `open` revokes this user's other
   * tokens, so processes that run side by side on one database each need their own (the `api`
   * role: SERVICE_USER plus a per-process suffix; serviceUserOf).
   */
  userId?: string;
  /** Lifetime of each token (default 24 h). */
  ttlMs?: number;
  /** Rotate once less than this is left (default: half the lifetime). */
  renewBeforeMs?: number;
  /** The clock (tests move it). */
  now?: () => Date;
  /** Called when a scheduled rotation fails (it is retried a minute later). */
  onError?: (err: unknown) => void;
}

interface TokenFile {
  token: string;
  expiresAt: string;
}

/**
 * The volume service's token for the compute API: short-lived, kept in a private file so a
 * restart reuses it, and rotated before it expires while the service runs.
 *
 * At most two service tokens are valid at once: the current one and, after a rotation while
 * running, the previous one until it expires (a call in flight may still carry it). Expired
 * tokens are removed from the store at every rotation.
 */
export class ServiceToken {
  static readonly DEFAULT_TTL_MS = 24 * 3_600_000;
  private static readonly RETRY_MS = 60_000;
  /** `renew`'s least time between two tokens issued because one was refused (ms). */
  private static readonly RENEW_MIN_MS = 10_000;
  private renewing: Promise<string | undefined> | undefined;
  private renewedAt: number | undefined;
  /** setTimeout's largest delay. */
  private static readonly MAX_DELAY_MS = 2 ** 31 - 1;

  private token = '';
  private record: TokenRecord | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly ttlMs: number;
  private readonly renewBeforeMs: number;
  private readonly now: () => Date;

  private constructor(private readonly opts: ServiceTokenOptions) {
    this.ttlMs = opts.ttlMs ?? ServiceToken.DEFAULT_TTL_MS;
    this.renewBeforeMs = opts.renewBeforeMs ?? Math.floor(this.ttlMs / 2);
    if (!(this.ttlMs > 0) || !(this.renewBeforeMs >= 0 && this.renewBeforeMs < this.ttlMs)) {
      throw new Error(`service token: need 0 <= renewBeforeMs < ttlMs, got ${this.renewBeforeMs} and ${this.ttlMs}`);
    }
    this.now = opts.now ?? (() => new Date());
    this.userId = opts.userId ?? SERVICE_USER;
  }

  /** The user this service token is issued to. */
  readonly userId: string;

  /**
   * Reuse the token in `file` if the store still holds it with more than `renewBeforeMs` left,
   * else issue a new one; then revoke every other token of the service user and remove expired
   * tokens. Call it only while holding the data dir (the lock): nobody else uses those tokens then.
   */
  static async open(opts: ServiceTokenOptions): Promise<ServiceToken> {
    const t = new ServiceToken(opts);
    const saved = t.readFile();
    const record = saved ? await opts.store.getToken(hashToken(saved.token)) : undefined;
    if (saved && record && record.userId === t.userId && !t.due(record)) {
      t.token = saved.token;
      t.record = record;
    } else {
      await t.issue();
    }
    for (const old of await opts.store.listTokens({ userId: t.userId })) {
      if (old.hash !== t.record!.hash) await opts.store.deleteToken(old.hash);
    }
    await opts.store.deleteExpiredTokens(t.now());
    return t;
  }

  /** The current token: pass `() => serviceToken.current()` to an ApiClient. */
  current(): string {
    return this.token;
  }

  /** Expiry of the current token (ISO 8601). */
  get expiresAt(): string {
    return this.record!.expiresAt;
  }

  /** Rotate if less than `renewBeforeMs` is left. True if it rotated. */
  async refresh(): Promise<boolean> {
    if (!this.due(this.record!)) return false;
    await this.issue();
    await this.opts.store.deleteExpiredTokens(this.now());
    return true;
  }

  /**
   * A new token now, because an API refused `refused` (revoked by an admin, or gone from the store):
   * answers the current token at once when it is already another one (renewed since), and issues at
   * most one token per `RENEW_MIN_MS` (a refusal that a new token does not cure, e.g. a policy that
   * denies the service, must not mint a token per call); undefined when it did not renew.
   */
  renew(refused: string): Promise<string | undefined> {
    if (this.token !== refused) return Promise.resolve(this.token);
    if (this.renewing) return this.renewing;
    if (this.renewedAt !== undefined && this.now().getTime() - this.renewedAt < ServiceToken.RENEW_MIN_MS) return Promise.resolve(undefined);
    this.renewedAt = this.now().getTime();
    // The refused token goes once the new one is in place: refused for a policy (403) it is still
    // valid, and a refusal that lasts would otherwise leave a valid service token per renewal.
    this.renewing = this.issue()
      .then(() => this.opts.store.deleteToken(hashToken(refused)))
      .then(() => this.token)
      .finally(() => (this.renewing = undefined));
    return this.renewing;
  }

  /** Rotate on time from now on (timers do not keep the process alive). */
  start(): void {
    this.schedule(Date.parse(this.record!.expiresAt) - this.renewBeforeMs - this.now().getTime());
  }

  /** Stop rotating (cancels the pending timer; the current token stays valid). */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(delayMs: number): void {
    this.stop();
    this.timer = setTimeout(() => {
      this.refresh().then(
        () => this.start(),
        (err: unknown) => {
          this.opts.onError?.(err);
          this.schedule(ServiceToken.RETRY_MS);
        },
      );
    }, Math.min(Math.max(delayMs, 0), ServiceToken.MAX_DELAY_MS));
    this.timer.unref();
  }

  private due(record: TokenRecord): boolean {
    return Date.parse(record.expiresAt) - this.now().getTime() <= this.renewBeforeMs;
  }

  private async issue(): Promise<void> {
    const { token, record } = await issueToken(this.opts.store, {
      userId: this.userId,
      projectId: SERVICE_PROJECT,
      roles: [...SERVICE_ROLES],
      ttlMs: this.ttlMs,
      now: this.now(),
    });
    // The file first: if the process dies now, the next start finds this token and revokes
    // nothing it needs.
    if (this.opts.file !== undefined) writePrivateFile(this.opts.file, `${JSON.stringify({ token, expiresAt: record.expiresAt } satisfies TokenFile)}\n`);
    this.token = token;
    this.record = record;
  }

  private readFile(): TokenFile | undefined {
    if (this.opts.file === undefined) return undefined;
    try {
      const f = JSON.parse(readFileSync(this.opts.file, 'utf8')) as Partial<TokenFile>;
      return typeof f.token === 'string' && f.token !== '' ? { token: f.token, expiresAt: String(f.expiresAt) } : undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || err instanceof SyntaxError) return undefined;
      throw err;
    }
  }
}

/** A valid token's caller: its credentials and its expiry (epoch ms). */
export interface AuthContext extends Credentials {
  expiresAt: number;
}

/**
 * What the APIs authenticate callers with (createServer's `auth`): TokenAuthenticator (this
 * service's tokens), NoAuthAuthenticator (Cinder's noauth), or a Keystone-backed one.
 */
export interface Authenticator {
  /** The caller of `token` (the X-Auth-Token value). Throws Unauthorized (401) when it is not accepted. */
  authenticate(token: string | undefined): Promise<AuthContext>;
  /**
   * The caller of `token` when it is already known valid now, with no I/O (a cache hit);
   * undefined when `authenticate` must decide (never a refusal: those come from `authenticate`).
   * The API's hot path asks this first so that a known token costs no promise.
   */
  known?(token: string | undefined): AuthContext | undefined;
  /** Drop whatever is cached about `token` (it was just revoked in this process). */
  forget?(token: string): void;
}

/**
 * Validates tokens against the store, with a small in-memory cache of valid ones so the hot path
 * does not hash-and-query on every request. A cached entry never outlives its token, and is read
 * again from the store once it is `revalidateMs` old (default 2 s): a token deleted from the store
 * (a rotated service token's predecessor removed, a revoked one) stops working within that window,
 * as with keystonemiddleware's token cache, whose window is minutes.
 */
export class TokenAuthenticator implements Authenticator {
  private readonly cache = new Map<string, AuthContext & { checkedAt: number }>();
  private static readonly MAX_CACHE = 10_000;
  private readonly revalidateMs: number;
  private readonly now: () => number;

  /**
   * `opts.revalidateMs`: how long a cached token is trusted before the store is read again (ms,
   * default 2000); `opts.now`: the clock, epoch ms (default Date.now; tests move it).
   */
  constructor(
    private readonly store: Pick<ComputeStore, 'getToken'>,
    opts: { revalidateMs?: number; now?: () => number } = {},
  ) {
    this.revalidateMs = opts.revalidateMs ?? 2_000;
    this.now = opts.now ?? Date.now;
  }

  /** The caller of `token` (the X-Auth-Token value). Throws Unauthorized (401) when it is missing, unknown, revoked or expired. */
  async authenticate(token: string | undefined): Promise<AuthContext> {
    if (!token) throw errors.unauthorized();
    const known = this.known(token);
    if (known) return known;
    const now = this.now();
    this.cache.delete(token);
    const record = await this.store.getToken(hashToken(token));
    const expiresAt = record ? Date.parse(record.expiresAt) : 0;
    if (!record || expiresAt <= now) throw errors.unauthorized('The token is invalid or has expired.');
    const ctx = { userId: record.userId, projectId: record.projectId, roles: record.roles, expiresAt, checkedAt: now };
    if (this.cache.size >= TokenAuthenticator.MAX_CACHE) this.cache.clear();
    this.cache.set(token, ctx);
    return ctx;
  }

  /** The cached caller of `token` while it is fresh (checked less than `revalidateMs` ago, not expired); undefined otherwise. */
  known(token: string | undefined): AuthContext | undefined {
    if (!token) return undefined;
    const cached = this.cache.get(token);
    if (cached === undefined) return undefined;
    const now = this.now();
    return cached.expiresAt > now && now - cached.checkedAt < this.revalidateMs ? cached : undefined;
  }

  /** Drop `token` from the cache: a token revoked in this process stops working at once, not within `revalidateMs`. */
  forget(token: string): void {
    this.cache.delete(token);
  }
}
