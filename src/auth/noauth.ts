/**
 * Cinder's noauth mode (cinder/api/middleware/auth.py NoAuthMiddleware), for labs only: the
 * X-Auth-Token value `USER:PROJECT` is trusted as it stands. As Cinder: the project is what
 * follows the first `:`, or the user when nothing does; the caller is an admin (Cinder's context
 * gets `is_admin=True`, which adds the `admin` role). A token this service issued itself (the
 * volume service's own, `token create`'s) is still read from the store with its stored roles,
 * so the volume service keeps its `service` role when it calls compute; such tokens never hold
 * a `:`, so a `USER:PROJECT` value is never looked up.
 */
import { errors } from '../errors.js';
import { isProjectId, isUserId } from './ids.js';
import type { AuthContext, Authenticator, TokenAuthenticator } from './tokens.js';

/** How long a noauth caller's context is valid: it is made per request, so "no expiry". */
const NEVER = Number.MAX_SAFE_INTEGER;

/** Cinder's noauth (see the module comment). */
export class NoAuthAuthenticator implements Authenticator {
  /** `stored`: the authenticator of this service's own tokens, tried first for values without a `:`. */
  constructor(private readonly stored: Pick<TokenAuthenticator, 'authenticate' | 'forget' | 'known'>) {}

  /** The caller named by `token`. Throws Unauthorized (401) when it is missing or names an invalid user or project id. */
  async authenticate(token: string | undefined): Promise<AuthContext> {
    if (!token) throw errors.unauthorized();
    if (!token.includes(':')) {
      try {
        return await this.stored.authenticate(token);
      } catch {
        // Not one of ours: a bare USER, whose project is the user (as Cinder).
      }
    }
    const colon = token.indexOf(':');
    const userId = colon < 0 ? token : token.slice(0, colon);
    const projectId = colon < 0 || colon === token.length - 1 ? userId : token.slice(colon + 1);
    if (!isUserId(userId) || !isProjectId(projectId)) {
      throw errors.unauthorized('noauth: X-Auth-Token must be USER:PROJECT (a valid user id and project id).');
    }
    return { userId, projectId, roles: ['admin'], expiresAt: NEVER };
  }

  /** A stored token of this service's own, known valid now (USER:PROJECT values are made per request by `authenticate`). */
  known(token: string | undefined): AuthContext | undefined {
    return token === undefined || token.includes(':') ? undefined : this.stored.known(token);
  }

  /** Forget a revoked stored token. */
  forget(token: string): void {
    this.stored.forget(token);
  }
}
