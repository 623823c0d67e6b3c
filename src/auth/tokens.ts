/**
 * Opaque bearer tokens (X-Auth-Token), stored only as sha256 hashes with an expiry. Shaped so a
 * Keystone-v3-style `POST /v3/auth/tokens` could issue the same records later.
 */
import { createHash, randomBytes } from 'node:crypto';
import { errors } from '../errors.js';
import type { ComputeStore, TokenRecord } from '../db/store.js';
import type { Credentials } from './policy.js';

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export async function issueToken(
  store: Pick<ComputeStore, 'putToken'>,
  opts: { userId: string; projectId: string; roles: string[]; ttlMs: number; now?: Date },
): Promise<{ token: string; record: TokenRecord }> {
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

export interface AuthContext extends Credentials {
  expiresAt: number;
}

/**
 * Validates tokens against the store, with a small in-memory cache of valid ones so the hot path
 * does not hash-and-query on every request. A cached entry never outlives its token.
 */
export class TokenAuthenticator {
  private readonly cache = new Map<string, AuthContext>();
  private static readonly MAX_CACHE = 10_000;

  constructor(private readonly store: Pick<ComputeStore, 'getToken'>) {}

  async authenticate(token: string | undefined): Promise<AuthContext> {
    if (!token) throw errors.unauthorized();
    const now = Date.now();
    const cached = this.cache.get(token);
    if (cached && cached.expiresAt > now) return cached;
    if (cached) this.cache.delete(token);
    const record = await this.store.getToken(hashToken(token));
    const expiresAt = record ? Date.parse(record.expiresAt) : 0;
    if (!record || expiresAt <= now) throw errors.unauthorized('The token is invalid or has expired.');
    const ctx: AuthContext = { userId: record.userId, projectId: record.projectId, roles: record.roles, expiresAt };
    if (this.cache.size >= TokenAuthenticator.MAX_CACHE) this.cache.clear();
    this.cache.set(token, ctx);
    return ctx;
  }
}
