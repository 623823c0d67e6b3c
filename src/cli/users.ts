/**
 * `online-extend user create|list|delete`: the embedded Keystone's users, in the data dir's
 * database (opened as `token create` opens it: checked, not locked, so it works while serve runs),
 * or in the shared database `--database-url` names (a deployment's `api` processes). `list` and
 * `delete` refuse a missing or empty database, creating nothing (cli/store.ts).
 *
 * Passwords are read from standard input only (`--password-stdin`), never from arguments or the
 * environment (both are visible to other users of the host: `ps`, /proc/PID/environ), and stored
 * only as a scrypt hash (identity/password.ts). One trailing newline is dropped, so
 * `echo "$PW" | online-extend user create … --password-stdin` works.
 *
 * An existing user is refused unless `--update` is given: then its password, project and roles
 * are replaced (its id stays) and every token it holds is revoked, as Keystone revokes tokens
 * when a password changes. `user delete` revokes them too. A serve running meanwhile stops
 * accepting those tokens within its cache window (2 s).
 */
import { Option, type Command } from 'commander';
import { readFileSync } from 'node:fs';
import { loadConfig, type Flags, type Config } from '../config.js';
import { DATABASE_URL_HELP, openCommandStore } from './store.js';
import type { ComputeStore } from '../db/store.js';
import { parseRoles, rolesInPolicy, STANDARD_ROLES } from '../auth/tokens.js';
import { isProjectId, isUserId, PROJECT_ID_RULE, USER_ID_RULE } from '../auth/ids.js';
import { checkPassword, hashPassword, MAX_PASSWORD_BYTES } from '../identity/password.js';
import { newUserId } from '../identity/keystone.js';
import { render, type Format } from './output.js';

/** Where `user create` reads the password: process.stdin, or a test's stream. */
export type PasswordInput = NodeJS.ReadableStream & { isTTY?: boolean };

/** Reads the password from `input` to its end: at most MAX_PASSWORD_BYTES (and a newline), one trailing newline dropped. Throws Error on a terminal, an empty or an over-long password. */
export async function readPassword(input: PasswordInput): Promise<string> {
  if (input.isTTY) {
    throw new Error('--password-stdin reads the password from a pipe, not a terminal (it would echo): e.g. printf %s "$PW" | online-extend user create … --password-stdin');
  }
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of input) {
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk));
    bytes += b.length;
    if (bytes > MAX_PASSWORD_BYTES + 2) throw new Error(`the password is longer than ${MAX_PASSWORD_BYTES} bytes`);
    chunks.push(b);
  }
  const password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
  checkPassword(password);
  return password;
}

/** Revokes every token of `userId`; returns how many. */
async function revokeTokens(store: Pick<ComputeStore, 'listTokens' | 'deleteToken'>, userId: string): Promise<number> {
  let n = 0;
  for (const t of await store.listTokens({ userId })) if (await store.deleteToken(t.hash)) n++;
  return n;
}

function policyRoles(config: Config): string[] {
  if (!config.policyFile) return [];
  const parsed = JSON.parse(readFileSync(config.policyFile, 'utf8')) as unknown;
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error(`policy file ${config.policyFile}: expected a JSON object of "name": "rule"`);
  return rolesInPolicy(parsed as Record<string, unknown>);
}

interface CommonOpts {
  dataDir?: string;
  databaseUrl?: string;
  config?: string;
  format: Format;
}

function common(cmd: Command): Command {
  return cmd
    .option('--data-dir <dir>', 'state directory (default ./data)')
    .option('--database-url <url>', DATABASE_URL_HELP)
    .option('--config <file>', 'settings from a JSON file (keys as in src/config.ts; flags and env win)')
    .addOption(new Option('-f, --format <format>', 'output format').choices(['table', 'json']).default('table'));
}

/** The service config a user command reads (the data dir, the policy file). */
function serviceConfig(env: NodeJS.ProcessEnv, o: CommonOpts & { policy?: string }): Config {
  const flags: Flags<Config> = { dataDir: o.dataDir, databaseUrl: o.databaseUrl, driver: 'libvirt', policyFile: o.policy };
  return loadConfig(env, flags, o.config);
}

/** Adds `user create|list|delete` to `program`; output goes to `out`, the password comes from `stdin`. */
export function registerUserCommands(program: Command, out: (s: string) => void, env: NodeJS.ProcessEnv, stdin: PasswordInput = process.stdin): void {
  const user = program.command('user').description("manage the embedded Keystone's users (password auth on the identity port)");

  common(user.command('create'))
    .description('add a user with a password (read from standard input) and roles in one project; --update replaces an existing one')
    .requiredOption('--project <id>', "the user's project (its name is its id; domain Default)")
    .requiredOption('--user <name>', 'user name (what --os-username names)')
    .requiredOption('--roles <roles>', `comma-separated roles: ${STANDARD_ROLES.join(', ')} or those a policy file names`)
    .option('--password-stdin', 'read the password from standard input (the only way to give one)')
    .option('--update', "replace an existing user's password, project and roles (its tokens are revoked)")
    .option('--policy <file>', 'policy overrides whose roles may be given too (env ONLINE_EXTEND_POLICY_FILE)')
    .action(async (o: CommonOpts & { project: string; user: string; roles: string; passwordStdin?: boolean; update?: boolean; policy?: string }) => {
      if (!o.passwordStdin) throw new Error('--password-stdin is required: the password is read from standard input, never from arguments or the environment');
      if (!isProjectId(o.project)) throw new Error(`invalid project id ${JSON.stringify(o.project)}: a project id is ${PROJECT_ID_RULE}`);
      if (!isUserId(o.user)) throw new Error(`invalid user name ${JSON.stringify(o.user)}: a user name is ${USER_ID_RULE}`);
      const config = serviceConfig(env, o);
      const roles = parseRoles(o.roles, policyRoles(config));
      const passwordHash = await hashPassword(await readPassword(stdin));
      const db = await openCommandStore(config);
      try {
        const users = db.users;
        const now = new Date().toISOString();
        const existing = await users.getUserByName(o.user);
        let id: string;
        let revoked = 0;
        if (existing) {
          if (!o.update) {
            throw new Error(`user ${JSON.stringify(o.user)} already exists (id ${existing.id}, project ${existing.projectId}): pass --update to replace its password, project and roles`);
          }
          id = existing.id;
          await users.updateUser({ id, projectId: o.project, roles, passwordHash, updatedAt: now });
          revoked = await revokeTokens(db.store, id);
        } else {
          id = newUserId();
          await users.createUser({ id, name: o.user, projectId: o.project, roles, passwordHash, createdAt: now, updatedAt: now });
        }
        const row = { id, name: o.user, project_id: o.project, roles: roles.join(','), ...(existing ? { updated: true, tokens_revoked: revoked } : {}) };
        out(render(o.format, { user: { ...row, roles } }, [row]));
      } finally {
        await db.close();
      }
    });

  common(user.command('list'))
    .description('list users (never their passwords)')
    .action(async (o: CommonOpts) => {
      const db = await openCommandStore(serviceConfig(env, o), { existing: 'whose users to list' });
      try {
        const list = await db.users.listUsers();
        const rows = list.map((u) => ({ id: u.id, name: u.name, project_id: u.projectId, roles: u.roles.join(','), created_at: u.createdAt }));
        out(render(o.format, { users: list.map((u) => ({ id: u.id, name: u.name, project_id: u.projectId, roles: u.roles, created_at: u.createdAt })) }, rows, ['id', 'name', 'project_id', 'roles', 'created_at']));
      } finally {
        await db.close();
      }
    });

  common(user.command('delete'))
    .description('remove a user and revoke its tokens')
    .requiredOption('--user <name>', 'user name')
    .action(async (o: CommonOpts & { user: string }) => {
      const db = await openCommandStore(serviceConfig(env, o), { existing: 'whose user to delete' });
      try {
        const users = db.users;
        const existing = await users.getUserByName(o.user);
        if (!existing) throw new Error(`no user ${JSON.stringify(o.user)}`);
        await users.deleteUser(existing.id);
        const revoked = await revokeTokens(db.store, existing.id);
        const row = { id: existing.id, name: existing.name, deleted: true, tokens_revoked: revoked };
        out(render(o.format, { user: row }, [row]));
      } finally {
        await db.close();
      }
    });
}
