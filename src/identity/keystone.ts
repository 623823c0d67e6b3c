/**
 * The embedded Keystone v3's logic, without HTTP (identity/app.ts serves it): password and token
 * authentication into project-scoped tokens, token validation and revocation, and the token body
 * as Keystone 22 renders it (keystone/common/render_token.py).
 *
 * Tokens are the service's own (auth/tokens.ts issueToken): the compute and volume APIs accept
 * them as they accept `token create`'s, from the one token store. A token made here also gets a
 * TokenAuthRecord (its methods and audit ids), which goes with it when it is revoked or expires.
 *
 * Revocation follows Keystone's rules (keystone/token/provider.py, keystone/revoke/): a DELETE
 * revokes that one token, never its chain; a token made with the token method carries
 * `[own audit id, the chain's first token's]` and expires with its parent, but outlives the
 * parent's revocation. What Keystone revokes by user id (a user deleted, disabled, or given a new
 * password) is `user delete` and `user create --update` here (cli/users.ts): every token of the
 * user, those made from tokens included.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { errors } from '../errors.js';
import { hashToken, issueToken } from '../auth/tokens.js';
import { isProjectId } from '../auth/ids.js';
import type { ComputeStore, TokenAuthRecord, TokenRecord, UserStore } from '../db/store.js';
import { buildCatalog, stableId, type CatalogEntry, type EndpointSource } from './catalog.js';
import { DEFAULT_DOMAIN, parseAuthRequest } from './request.js';
import { verifyPassword } from './password.js';

/** Keystone's token body (`{"token": …}`), with the catalog unless asked without. */
export interface KeystoneToken {
  methods: string[];
  user: { domain: { id: string; name: string }; id: string; name: string; password_expires_at: null };
  audit_ids: string[];
  expires_at: string;
  issued_at: string;
  project: { domain: { id: string; name: string }; id: string; name: string };
  is_domain: false;
  roles: Array<{ id: string; name: string }>;
  catalog?: CatalogEntry[];
}

/** What the embedded Keystone is built from. */
export interface IdentityServiceOptions {
  store: Pick<ComputeStore, 'putToken' | 'getToken' | 'deleteToken'>;
  users: UserStore;
  /** Where each API listens (src/rpc's ServiceCatalog), read when a token is rendered. */
  endpoints: EndpointSource;
  /** Lifetime of a token made with a password (Keystone's `[token] expiration`), ms. */
  tokenTtlMs: number;
  /** Called with each token revoked here, so in-process token caches forget it at once. */
  onRevoke?: (token: string) => void;
  /** How many password checks (scrypt, ~0.25 s and 32 MiB each) run at once; more wait (default 2). */
  kdfConcurrency?: number;
  /** How many may wait; beyond that, 503 (default 64). */
  kdfQueue?: number;
  /**
   * How many of one client's (one remote address's) may wait (default 8): a client flooding
   * logins fills its own share, not the whole queue, so other clients' logins still get in.
   */
  kdfQueuePerClient?: number;
  /** The clock (tests move it). */
  now?: () => Date;
}

/** Keystone's time format, `YYYY-MM-DDTHH:MM:SS.ffffffZ` (microseconds; ours are whole milliseconds). */
export function keystoneTime(iso: string): string {
  return new Date(iso).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

/** An audit id as Keystone makes them: 16 random bytes, base64url without padding (22 characters). */
function newAuditId(): string {
  return randomBytes(16).toString('base64url');
}

/** The audit id of a token made elsewhere (`token create`, the service token): derived from its hash, so stable. */
function derivedAuditId(hash: string): string {
  return createHash('sha256').update(`audit:${hash}`).digest().subarray(0, 16).toString('base64url');
}

/** 401 for credentials that are right but hold no role in `projectId` (named only when it is a valid project id: messages echo no arbitrary input). */
function noAccess(userId: string, projectId: string) {
  return errors.unauthorized(isProjectId(projectId) ? `User ${userId} has no access to project ${projectId}.` : undefined);
}

/** A bounded number of concurrent password checks, so a flood of logins cannot take every core and all memory. */
class KdfGate {
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  /** Waiting checks per client, for the per-client share of the queue. */
  private readonly waitingBy = new Map<string, number>();
  constructor(
    private readonly concurrency: number,
    private readonly queue: number,
    private readonly queuePerClient: number,
  ) {}

  async run<T>(work: () => Promise<T>, client: string): Promise<T> {
    if (this.running >= this.concurrency) {
      const mine = this.waitingBy.get(client) ?? 0;
      if (this.waiting.length >= this.queue || mine >= this.queuePerClient) throw errors.serviceUnavailable('Too many authentication requests at once; try again shortly.');
      this.waitingBy.set(client, mine + 1);
      try {
        await new Promise<void>((resolve) => this.waiting.push(resolve));
      } finally {
        const left = (this.waitingBy.get(client) ?? 1) - 1;
        if (left > 0) this.waitingBy.set(client, left);
        else this.waitingBy.delete(client);
      }
    } else this.running++;
    try {
      return await work();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}

/** The embedded Keystone (see the module comment). Methods throw catalogue errors (ServiceError), rendered by identity/app.ts. */
export class IdentityService {
  private readonly now: () => Date;
  private readonly gate: KdfGate;

  constructor(private readonly opts: IdentityServiceOptions) {
    if (!(opts.tokenTtlMs > 0)) throw new Error(`identity token lifetime must be positive, got ${opts.tokenTtlMs} ms`);
    this.now = opts.now ?? (() => new Date());
    this.gate = new KdfGate(opts.kdfConcurrency ?? 2, opts.kdfQueue ?? 64, opts.kdfQueuePerClient ?? 8);
  }

  /**
   * `POST /v3/auth/tokens`: checks the credentials in `body` and issues a project-scoped token.
   * Returns the token (for `X-Subject-Token`) and its body. Throws BadRequest (malformed,
   * unscoped), Unauthorized (wrong password, unknown user, invalid token, no access to the
   * project: one message for the credentials, so it never tells whether a user exists),
   * ServiceUnavailable (too many password checks waiting, or too many of `opts.client`'s: its
   * remote address).
   */
  async authenticate(body: unknown, opts: { catalog: boolean; client?: string }): Promise<{ token: string; body: { token: KeystoneToken } }> {
    const req = parseAuthRequest(body);
    const now = this.now();
    let userId: string;
    let roles: string[];
    let projectId: string;
    let expiresMs: number;
    let auth: Omit<TokenAuthRecord, 'hash'>;
    if (req.identity.method === 'password') {
      const who = req.identity.user;
      const user = 'id' in who ? await this.opts.users.getUserById(who.id) : await this.opts.users.getUserByName(who.name);
      const password = req.identity.password;
      const ok = await this.gate.run(() => verifyPassword(password, user?.passwordHash), opts.client ?? '');
      if (!user || !ok) throw errors.unauthorized();
      if (req.projectId !== user.projectId) throw noAccess(user.id, req.projectId);
      ({ id: userId, roles, projectId } = user);
      expiresMs = now.getTime() + this.opts.tokenTtlMs;
      auth = { methods: ['password'], auditIds: [newAuditId()] };
    } else {
      const parentHash = hashToken(req.identity.token);
      const parent = await this.opts.store.getToken(parentHash);
      if (!parent || Date.parse(parent.expiresAt) <= now.getTime()) throw errors.unauthorized('The token is invalid or has expired.');
      // A user of this Keystone gets its current project and roles; a token made elsewhere
      // (`token create`) keeps its own, and only its own project.
      const user = await this.opts.users.getUserById(parent.userId);
      const allowed = user ? { projectId: user.projectId, roles: user.roles } : { projectId: parent.projectId, roles: parent.roles };
      if (req.projectId !== allowed.projectId) throw noAccess(parent.userId, req.projectId);
      ({ projectId, roles } = allowed);
      userId = parent.userId;
      // As Keystone: a token made from a token expires with it.
      expiresMs = Date.parse(parent.expiresAt);
      // Keystone's audit chain (keystone/auth/plugins/token.py): the second audit id is the
      // chain's, the first token's, whichever link the parent is: the parent's last audit id.
      const parentAuth = await this.opts.users.getTokenAuth(parentHash);
      auth = { methods: ['token'], auditIds: [newAuditId(), parentAuth?.auditIds.at(-1) ?? derivedAuditId(parentHash)] };
    }
    const { token, record } = await issueToken(this.opts.store, { userId, projectId, roles, ttlMs: expiresMs - now.getTime(), now });
    await this.opts.users.putTokenAuth({ hash: record.hash, ...auth });
    return { token, body: { token: await this.render(record, { hash: record.hash, ...auth }, opts.catalog) } };
  }

  /**
   * The projects this Keystone knows: those its users have roles in (a project's name is its id;
   * there is no project table). Sorted.
   */
  async projectIds(): Promise<string[]> {
    return [...new Set((await this.opts.users.listUsers()).map((u) => u.projectId))].sort();
  }

  /** The stored, unexpired token `token`, or undefined (unknown, revoked or expired). */
  async lookup(token: string | undefined): Promise<TokenRecord | undefined> {
    if (!token) return undefined;
    const record = await this.opts.store.getToken(hashToken(token));
    return record && Date.parse(record.expiresAt) > this.now().getTime() ? record : undefined;
  }

  /**
   * `GET /v3/auth/tokens`: the body of `subject` as `POST` rendered it (roles as stored in the
   * token). Throws NotFound (404) when it is unknown, revoked or expired.
   */
  async validate(subject: string | undefined, opts: { catalog: boolean }): Promise<{ token: KeystoneToken }> {
    const record = await this.lookup(subject);
    if (!record) throw errors.notFound('Could not find token.');
    return { token: await this.render(record, await this.opts.users.getTokenAuth(record.hash), opts.catalog) };
  }

  /**
   * `DELETE /v3/auth/tokens`: revokes `subject` and only it, as Keystone does (its DELETE calls
   * `revoke_token` without `revoke_chain`: one revocation event by the token's own audit id). The
   * tokens made from it with the token method, and the token it was made from, keep working until
   * they expire. Throws NotFound (404) when it is unknown, revoked or expired.
   */
  async revoke(subject: string | undefined): Promise<void> {
    const record = await this.lookup(subject);
    if (!record || !(await this.opts.store.deleteToken(record.hash))) throw errors.notFound('Could not find token.');
    this.opts.onRevoke?.(subject!);
  }

  private async render(record: TokenRecord, auth: TokenAuthRecord | undefined, catalog: boolean): Promise<KeystoneToken> {
    const user = await this.opts.users.getUserById(record.userId);
    return {
      methods: auth?.methods ?? ['token'],
      user: { domain: { ...DEFAULT_DOMAIN }, id: record.userId, name: user?.name ?? record.userId, password_expires_at: null },
      audit_ids: auth?.auditIds ?? [derivedAuditId(record.hash)],
      expires_at: keystoneTime(record.expiresAt),
      issued_at: keystoneTime(record.createdAt),
      project: { domain: { ...DEFAULT_DOMAIN }, id: record.projectId, name: record.projectId },
      is_domain: false,
      roles: record.roles.map((name) => ({ id: stableId(`role:${name}`), name })),
      ...(catalog ? { catalog: buildCatalog(this.opts.endpoints, record.projectId) } : {}),
    };
  }
}

/** A new user id, as Keystone makes them (a uuid4's 32 hex digits). */
export function newUserId(): string {
  return randomUUID().replaceAll('-', '');
}
