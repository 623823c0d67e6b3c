/**
 * Policy enforcement with oslo.policy-style rules:
 *   "role:admin", "role:admin or project_id:%(project_id)s", "rule:admin_api",
 *   "not role:reader", "(role:a or role:b) and user_id:%(user_id)s", "@" (always), "!" (never).
 * A check `KEY:VALUE` compares the caller's credential KEY with VALUE, where VALUE may be a
 * `%(name)s` reference into the target (the object acted on). `role:X` holds when X is one of
 * the caller's roles.
 */
import { readFileSync } from 'node:fs';

/** The caller as policy rules see it (oslo.policy's credentials): `user_id`, `project_id` and `role` checks read these. */
export interface Credentials {
  userId: string;
  projectId: string;
  roles: readonly string[];
}

/** The object acted on, whose fields `%(name)s` references in a rule read (e.g. `project_id`); a missing field fails the check. */
export type PolicyTarget = Record<string, string | undefined>;

type Check =
  | { t: 'true' }
  | { t: 'false' }
  | { t: 'and' | 'or'; of: Check[] }
  | { t: 'not'; of: Check }
  | { t: 'kv'; key: string; value: string };

/** The operations this service enforces, with their defaults (the spec: admin only). */
export const DEFAULT_POLICY: Readonly<Record<string, string>> = {
  admin_api: 'role:admin',
  'os_compute_api:os-online-extend-volume:rescan': 'rule:admin_api',
  'os_compute_api:os-online-extend-volume:get_blockdev': 'rule:admin_api',
  'os_compute_api:os-online-extend-volume:assist_extend': 'rule:admin_api',
  // Nova's defaults for reads: an admin, or a reader (or member) of the server's project
  // (PROJECT_READER_OR_ADMIN); the target's project_id is the server's owner, so an admin's
  // by-id reads cross projects and a member of another project is refused.
  context_is_admin: 'role:admin',
  project_reader_or_admin: 'rule:context_is_admin or (project_id:%(project_id)s and (role:reader or role:member))',
  'os_compute_api:servers:index': 'rule:project_reader_or_admin',
  'os_compute_api:servers:detail': 'rule:project_reader_or_admin',
  'os_compute_api:servers:show': 'rule:project_reader_or_admin',
  'os_compute_api:servers:index:get_all_tenants': 'rule:context_is_admin',
  'os_compute_api:servers:detail:get_all_tenants': 'rule:context_is_admin',
  'os_compute_api:os-extended-server-attributes': 'rule:context_is_admin',
  'os_compute_api:servers:show:host_status': 'rule:context_is_admin',
  'os_compute_api:os-volumes-attachments:index': 'rule:project_reader_or_admin',
  'os_compute_api:os-volumes-attachments:show': 'rule:project_reader_or_admin',
  // Upstream's defaults: a project's members create servers in it and delete its servers (Nova's
  // PROJECT_MEMBER / PROJECT_MEMBER_OR_ADMIN); flavors and images are readable by any caller.
  project_member_api: 'role:member and project_id:%(project_id)s',
  project_member_or_admin: 'rule:project_member_api or rule:admin_api',
  'os_compute_api:servers:create': 'rule:project_member_or_admin',
  'os_compute_api:servers:delete': 'rule:project_member_or_admin',
  'os_compute_api:flavors:index': '@',
  get_images: '@',
  get_image: '@',
  // Nova's PROJECT_MEMBER_OR_ADMIN: a project's members attach and detach volumes of its servers.
  'os_compute_api:os-volumes-attachments:create': 'rule:project_member_or_admin',
  'os_compute_api:os-volumes-attachments:delete': 'rule:project_member_or_admin',
  'os_compute_api:os-instance-actions:list': 'rule:project_reader_or_admin',
  'os_compute_api:os-instance-actions:show': 'rule:project_reader_or_admin',
  // Events before 2.51, and their tracebacks at any version: admins (Nova's PROJECT_ADMIN).
  'os_compute_api:os-instance-actions:events': 'rule:context_is_admin',
  // Our own extension: the instance actions with what Nova's view does not carry (finish time,
  // result, message, details); read as the instance actions are.
  'os_compute_api:os-instance-action-details:list': 'rule:project_reader_or_admin',
  'os_compute_api:os-instance-action-details:show': 'rule:project_reader_or_admin',
  // Current Nova's rule:service_or_admin: Cinder posts volume-extended with its service user.
  'os_compute_api:os-server-external-events:create': 'role:admin or role:service',
  // Compute's internal routes for the volume service (plug, unplug, check, list connections): the
  // service role only, not admins. A connection names a host path; only the volume service, which
  // made the volume, may ask compute to hand one to a guest (Nova takes connection_info from Cinder).
  'os_compute_api:os-volume-connections': 'role:service',
  // Nova's ADMIN: compute services (os-services) are listed and enabled or disabled by admins.
  'os_compute_api:os-services:list': 'rule:context_is_admin',
  'os_compute_api:os-services:update': 'rule:context_is_admin',
  // Cinder's defaults (admin or owner): a project's members create, extend (attached too, which
  // needs microversion 3.42), attach, detach and delete its volumes; its readers read them.
  'volume:create': 'rule:project_member_or_admin',
  'volume:get': 'rule:project_reader_or_admin',
  'volume:get_all': 'rule:project_reader_or_admin',
  'volume:delete': 'rule:project_member_or_admin',
  'volume:update': 'rule:project_member_or_admin',
  'volume:extend': 'rule:project_member_or_admin',
  'volume:extend_attached_volume': 'rule:project_member_or_admin',
  'volume:attach': 'rule:project_member_or_admin',
  'volume:detach': 'rule:project_member_or_admin',
};

function tokenize(rule: string): string[] {
  // A `%(name)s` reference is part of its check, not a parenthesis.
  return rule.match(/[^\s()]*%\(\w+\)s[^\s()]*|[()]|[^\s()]+/g) ?? [];
}

/**
 * Parses one oslo.policy-style rule (an empty rule always holds). Throws a plain Error on a syntax error: rules are
 * configuration, checked at start.
 */
export function parseRule(rule: string): Check {
  const tokens = tokenize(rule);
  if (tokens.length === 0) return { t: 'true' };
  let pos = 0;
  const peek = () => tokens[pos];
  const fail = (msg: string): never => {
    throw new Error(`invalid policy rule "${rule}": ${msg}`);
  };
  const parseOr = (): Check => {
    const of = [parseAnd()];
    while (peek()?.toLowerCase() === 'or') {
      pos++;
      of.push(parseAnd());
    }
    return of.length === 1 ? of[0]! : { t: 'or', of };
  };
  const parseAnd = (): Check => {
    const of = [parseNot()];
    while (peek()?.toLowerCase() === 'and') {
      pos++;
      of.push(parseNot());
    }
    return of.length === 1 ? of[0]! : { t: 'and', of };
  };
  const parseNot = (): Check => {
    if (peek()?.toLowerCase() === 'not') {
      pos++;
      return { t: 'not', of: parseNot() };
    }
    return parseAtom();
  };
  const parseAtom = (): Check => {
    const tok = tokens[pos++];
    if (tok === undefined) return fail('unexpected end');
    if (tok === '(') {
      const inner = parseOr();
      if (tokens[pos++] !== ')') fail('missing )');
      return inner;
    }
    if (tok === '@') return { t: 'true' };
    if (tok === '!') return { t: 'false' };
    const colon = tok.indexOf(':');
    if (colon <= 0) return fail(`"${tok}" is not KEY:VALUE`);
    return { t: 'kv', key: tok.slice(0, colon), value: tok.slice(colon + 1) };
  };
  const check = parseOr();
  if (pos !== tokens.length) fail(`unexpected "${tokens[pos]}"`);
  return check;
}

/**
 * Checks actions against oslo.policy-style rules: `DEFAULT_POLICY` with the operator's overrides. The constructor throws a
 * plain Error on a malformed rule or a `rule:` reference that is unknown or circular.
 */
export class PolicyEnforcer {
  private readonly rules = new Map<string, Check>();

  constructor(overrides: Record<string, string> = {}) {
    for (const [name, rule] of Object.entries({ ...DEFAULT_POLICY, ...overrides })) {
      if (typeof rule !== 'string') throw new Error(`policy ${name}: rule must be a string`);
      this.rules.set(name, parseRule(rule));
    }
    // Resolve every rule once so a dangling `rule:` reference fails at start, not per request.
    for (const name of this.rules.keys()) this.evaluate(this.rules.get(name)!, { userId: '', projectId: '', roles: [] }, {}, [name]);
  }

  /**
   * An enforcer with the overrides of a JSON policy file (`{"name": "rule"}`). Throws a plain Error if the file cannot be
   * read or parsed or a rule is invalid.
   */
  static fromFile(path: string): PolicyEnforcer {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new Error(`policy file ${path}: expected a JSON object of "name": "rule"`);
    }
    return new PolicyEnforcer(parsed as Record<string, string>);
  }

  /** Whether `creds` may do `action` on `target`; an action with no rule is refused (false). Never throws once constructed. */
  allows(action: string, creds: Credentials, target: PolicyTarget): boolean {
    const rule = this.rules.get(action);
    if (!rule) return false;
    return this.evaluate(rule, creds, target, [action]);
  }

  private evaluate(c: Check, creds: Credentials, target: PolicyTarget, stack: string[]): boolean {
    switch (c.t) {
      case 'true':
        return true;
      case 'false':
        return false;
      case 'and':
        return c.of.every((x) => this.evaluate(x, creds, target, stack));
      case 'or':
        return c.of.some((x) => this.evaluate(x, creds, target, stack));
      case 'not':
        return !this.evaluate(c.of, creds, target, stack);
      case 'kv':
        return this.kv(c.key, c.value, creds, target, stack);
    }
  }

  private kv(key: string, value: string, creds: Credentials, target: PolicyTarget, stack: string[]): boolean {
    if (key === 'rule') {
      const ref = this.rules.get(value);
      if (!ref) throw new Error(`policy rule "${stack[0]}" refers to unknown rule "${value}"`);
      if (stack.includes(value)) throw new Error(`policy rule "${value}" refers to itself`);
      return this.evaluate(ref, creds, target, [...stack, value]);
    }
    const ref = /^%\((\w+)\)s$/.exec(value);
    const expected = ref ? target[ref[1]!] : value;
    if (expected === undefined) return false;
    switch (key) {
      case 'role':
        return creds.roles.some((r) => r.toLowerCase() === expected.toLowerCase());
      case 'project_id':
        return creds.projectId === expected;
      case 'user_id':
        return creds.userId === expected;
      case 'is_admin':
        return creds.roles.includes('admin') === (expected.toLowerCase() === 'true');
      default:
        return false;
    }
  }
}
