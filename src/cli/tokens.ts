/**
 * `online-extend token revoke TOKEN`: removes one token from the store `token create` writes to
 * (the data dir's database, or the shared one `--database-url` names), as the embedded Keystone's
 * `DELETE /v3/auth/tokens` does: that token only. Tokens made from it with the token method, and
 * the one it was made from, keep working until they expire (Keystone's rule: its DELETE revokes by
 * the token's own audit id, never its chain). A `serve` or `api` running on that database stops
 * accepting the token within its cache window (2 s); one that revokes through its own Keystone
 * endpoint does so at once.
 *
 * `TOKEN` may be `-`: then it is read from standard input (white space around it dropped), so it
 * need not appear in the command line (`ps`, /proc/PID/cmdline) while the command runs. A data
 * dir or SQLite database that does not exist is refused (nothing is created: cli/store.ts).
 */
import { Command, type ParseOptionsResult } from 'commander';
import { hashToken } from '../auth/tokens.js';
import type { ComputeStore, UserStore } from '../db/store.js';

/** Where `token revoke -` reads the token: process.stdin, or a test's stream. */
export type TokenInput = NodeJS.ReadableStream & { isTTY?: boolean };

/** The longest token read from standard input (ours are 46 characters; Keystone's Fernet tokens ~250). */
const MAX_TOKEN_BYTES = 8192;

/**
 * The token `arg` names: `arg` itself, or with `-` the whole of `input`; white space around it
 * dropped. Throws an Error (never quoting the token) when it is empty, holds white space (two
 * tokens), is too long, or is `-` on a terminal.
 */
export async function tokenArgument(arg: string, input: TokenInput): Promise<string> {
  let token = arg;
  if (arg === '-') {
    if (input.isTTY) throw new Error('token revoke - reads the token from a pipe, not a terminal: e.g. printf %s "$TOKEN" | online-extend token revoke -');
    const chunks: Buffer[] = [];
    let bytes = 0;
    for await (const chunk of input) {
      const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk));
      bytes += b.length;
      if (bytes > MAX_TOKEN_BYTES + 2) throw new Error(`the token on standard input is longer than ${MAX_TOKEN_BYTES} bytes`);
      chunks.push(b);
    }
    token = Buffer.concat(chunks).toString('utf8');
  }
  // A token has no white space: what a copy and paste adds around it goes; inside, it is two.
  token = token.trim();
  if (token === '') throw new Error('the token is empty: give the token to revoke (or - to read it from standard input)');
  if (/\s/.test(token)) throw new Error('that is more than one token (white space inside): give one token to revoke');
  return token;
}

/** What `tokenOperandsLast` needs to know of one of the command's options (commander's Option has these). */
export interface OptionShape {
  short?: string | undefined;
  long?: string | undefined;
  /** It takes a value (`--data-dir DIR`). */
  required: boolean;
  optional: boolean;
  argChoices?: string[] | undefined;
}

/** A long option's shape (lowercase words joined by hyphens, as every option of ours): known or not, it is an option. */
const LONG_OPTION = /^--[a-z][a-z0-9]*(-[a-z0-9]+)*(=[^]*)?$/;

/**
 * `args` (a command's arguments after its name) with every argument that is a token starting with
 * `-` moved after a `--`, so the parser takes it as the TOKEN operand, not an option: tokens are
 * base64url (ours `oe-…`, Keystone's Fernet), and one may start with `-`. An argument is an
 * option, left in place, when it is `-x` (one letter: known, or refused as unknown by the parser),
 * a long option's shape (`--data-dir`, `--data-dir=DIR`, `--help`, or an unknown `--dta-dir`,
 * which the parser refuses), or a known short option with its value attached (`-fjson`; with
 * choices, only one of them); the value after an option that takes one is skipped. Anything else
 * starting with `-` (and longer than `-`, standard input's name) is a token. Arguments after a
 * `--` already there are left alone. Without such a token, `args` itself is returned.
 */
export function tokenOperandsLast(args: readonly string[], options: readonly OptionShape[]): string[] {
  const kept: string[] = [];
  const tokens: string[] = [];
  let i = 0;
  for (; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') break;
    if (arg.length < 2 || !arg.startsWith('-')) {
      kept.push(arg);
      continue;
    }
    if (LONG_OPTION.test(arg) || arg.length === 2) {
      kept.push(arg);
      const option = options.find((o) => o.long === arg || o.short === arg);
      // Its value may itself start with "-" (a directory, say): never a token.
      if (option?.required && i + 1 < args.length) kept.push(args[++i]!);
      continue;
    }
    const short = options.find((o) => o.short === arg.slice(0, 2));
    if (!arg.startsWith('--') && short && (short.required || short.optional) && (short.argChoices === undefined || short.argChoices.includes(arg.slice(2)))) {
      kept.push(arg);
      continue;
    }
    tokens.push(arg);
  }
  if (tokens.length === 0) return [...args];
  const rest = args.slice(i + 1);
  return [...kept, '--', ...tokens, ...rest];
}

/**
 * A command whose operand is a token, which may start with `-` (`token revoke -x…`): its
 * arguments go through `tokenOperandsLast` before commander reads them, so such a token is never
 * taken for an option (nor needs a `--` before it), while its real options, `--help` and the
 * refusal of an unknown option work as on any command.
 */
export class TokenOperandCommand extends Command {
  override parseOptions(argv: string[]): ParseOptionsResult {
    return super.parseOptions(tokenOperandsLast(argv, this.options));
  }
}

/** What `revokeStoredToken` removed: whose token it was and until when it would have worked. */
export interface RevokedToken {
  userId: string;
  /**
   * The user's name as the embedded Keystone's token view gives it (`token.user.name`): the
   * user's, or for a token `token create` made for an id that names no user, that id. Null when
   * the token came from the identity API and its user is gone (deleted since: see `userGone`).
   */
  userName: string | null;
  /** True when the token came from the identity API (it has a Keystone record) and no user has its user id any more. */
  userGone: boolean;
  projectId: string;
  expiresAt: string;
}

/**
 * Removes `token` from `db.store` (with its Keystone record: it goes with the token) and says
 * whose it was, its user named from `db.users` (read before the removal: the Keystone record,
 * which tells an identity-API token from one `token create` made, goes with it). A token whose
 * user is gone is revoked all the same. `where` names the store in messages; `changed` says what
 * opening it changed (cli/store.ts openingChanges), so a refusal never claims "nothing changed"
 * after a mode was narrowed. Throws an Error saying why when the store holds no such token
 * (unknown or already revoked) or it has expired (then nothing is removed: expired tokens are
 * cleared by the service itself). Messages never quote the token.
 */
export async function revokeStoredToken(
  db: { store: Pick<ComputeStore, 'getToken' | 'deleteToken'>; users: Pick<UserStore, 'getUserById' | 'getTokenAuth'> },
  token: string,
  now: Date = new Date(),
  where = 'this database',
  changed?: string,
): Promise<RevokedToken> {
  const hash = hashToken(token);
  const record = await db.store.getToken(hash);
  const outcome = changed === undefined ? 'nothing changed' : `no token removed; ${changed}`;
  const unknown = () => new Error(`no such token in ${where}: unknown there or already revoked (${outcome}; is it the data dir or database of the service that issued it?)`);
  if (!record) throw unknown();
  if (Date.parse(record.expiresAt) <= now.getTime()) throw new Error(`the token expired at ${record.expiresAt}: nothing to revoke (${outcome})`);
  const user = await db.users.getUserById(record.userId);
  const fromIdentityApi = user === undefined && (await db.users.getTokenAuth(hash)) !== undefined;
  // Another revoke may have removed it since the read: the same answer as if it had come first.
  if (!(await db.store.deleteToken(hash))) throw unknown();
  return {
    userId: record.userId,
    userName: user?.name ?? (fromIdentityApi ? null : record.userId),
    userGone: fromIdentityApi,
    projectId: record.projectId,
    expiresAt: record.expiresAt,
  };
}
