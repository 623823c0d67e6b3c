/**
 * `POST /v3/auth/tokens` bodies, read as Keystone 22 reads them (keystone/api/auth.py,
 * keystone/auth/schema.py), reduced to what the embedded Keystone does: one method, `password`
 * or `token`, and a project scope. Anything else is refused with a message that says what is
 * accepted, never silently ignored.
 */
import { errors } from '../errors.js';

/** Keystone's default domain: every user and project here is in it. */
export const DEFAULT_DOMAIN = { id: 'default', name: 'Default' } as const;

/** Who authenticates: a user by id, or by name in a domain, with a password; or an existing token. */
export type AuthIdentity =
  | { method: 'password'; user: { id: string } | { name: string }; password: string }
  | { method: 'token'; token: string };

/** What `parseAuthRequest` returns: the identity and the project to scope to (by id or name: a project's name is its id). */
export interface AuthRequest {
  identity: AuthIdentity;
  projectId: string;
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function field(obj: Json, key: string, where: string): Json {
  const v = obj[key];
  if (!isObject(v)) throw errors.badRequest(`Invalid input for field '${where}${key}': expected an object.`);
  return v;
}

function text(obj: Json, key: string, where: string): string {
  const v = obj[key];
  if (typeof v !== 'string' || v.length === 0) throw errors.badRequest(`Invalid input for field '${where}${key}': expected a non-empty string.`);
  if (v.length > 4096) throw errors.badRequest(`Invalid input for field '${where}${key}': longer than 4096 characters.`);
  return v;
}

/**
 * Whether `domain` (`{"id"}` or `{"name"}`) is the default domain. Throws BadRequest when it is
 * neither shape; answers false for another domain (which holds no users or projects here).
 */
function isDefaultDomain(domain: Json, where: string): boolean {
  if (typeof domain.id === 'string') return domain.id === DEFAULT_DOMAIN.id;
  if (typeof domain.name === 'string') return domain.name === DEFAULT_DOMAIN.name;
  throw errors.badRequest(`Invalid input for field '${where}domain': expected an "id" or a "name".`);
}

/**
 * Reads a `POST /v3/auth/tokens` body. Throws BadRequest (400) for a malformed body, an unscoped
 * or non-project scope, and Unauthorized (401) for an unsupported method or a user or project in
 * another domain (nothing lives there: the same answer as wrong credentials).
 */
export function parseAuthRequest(body: unknown): AuthRequest {
  if (!isObject(body)) throw errors.badRequest("Invalid input: expected a JSON object with an 'auth' object.");
  const auth = field(body, 'auth', '');
  const identity = field(auth, 'identity', 'auth.');
  const methods = identity.methods;
  if (!Array.isArray(methods) || methods.length === 0 || !methods.every((m) => typeof m === 'string')) {
    throw errors.badRequest("Invalid input for field 'auth.identity.methods': expected a non-empty list of method names.");
  }
  if (methods.length !== 1 || (methods[0] !== 'password' && methods[0] !== 'token')) {
    throw errors.unauthorized('Attempted to authenticate with an unsupported method: this Keystone accepts one method, "password" or "token".');
  }
  let parsed: AuthIdentity;
  if (methods[0] === 'password') {
    const user = field(field(identity, 'password', 'auth.identity.'), 'user', 'auth.identity.password.');
    const where = 'auth.identity.password.user.';
    const password = text(user, 'password', where);
    if (typeof user.id === 'string') parsed = { method: 'password', user: { id: text(user, 'id', where) }, password };
    else {
      const name = text(user, 'name', where);
      if (!isObject(user.domain)) throw errors.badRequest(`Invalid input for field '${where}domain': a user given by name needs its domain ("id": "default" or "name": "Default").`);
      if (!isDefaultDomain(user.domain, where)) throw errors.unauthorized();
      parsed = { method: 'password', user: { name }, password };
    }
  } else {
    parsed = { method: 'token', token: text(field(identity, 'token', 'auth.identity.'), 'id', 'auth.identity.token.') };
  }
  const scope = auth.scope;
  if (scope === undefined || scope === null) {
    throw errors.badRequest(
      'Unscoped tokens are not issued here: add "scope": {"project": {"id": P}} or {"project": {"name": P, "domain": {"name": "Default"}}} (a project\'s name is its id).',
    );
  }
  if (!isObject(scope) || !isObject(scope.project)) {
    throw errors.badRequest('Only project scope is supported here: "scope": {"project": {"id": P}} or {"project": {"name": P, "domain": {"name": "Default"}}}.');
  }
  const project = scope.project;
  const where = 'auth.scope.project.';
  if (typeof project.id === 'string') return { identity: parsed, projectId: text(project, 'id', where) };
  const name = text(project, 'name', where);
  if (!isObject(project.domain)) throw errors.badRequest(`Invalid input for field '${where}domain': a project given by name needs its domain ("id": "default" or "name": "Default").`);
  if (!isDefaultDomain(project.domain, where)) throw errors.unauthorized();
  return { identity: parsed, projectId: name };
}
