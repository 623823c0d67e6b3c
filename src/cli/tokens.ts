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
 * dir or SQLite database that does not exist is refused (nothing is created).
 */
import { existsSync, statSync } from 'node:fs';
import { hashToken } from '../auth/tokens.js';
import { dbPath } from '../db/dataDirLayout.js';
import type { ComputeStore } from '../db/store.js';

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

/**
 * The database file `token revoke` would open (the data dir's, or a `sqlite:///` URL's), when it
 * does not exist: revoking in a fresh, empty database would create it and answer "unknown" for a
 * token that still works on the real one. Undefined when it exists or the URL is PostgreSQL's.
 */
export function missingTokenDatabase(config: { dataDir: string; databaseUrl?: string | undefined }): string | undefined {
  const path = tokenDatabaseFile(config);
  if (path === undefined) return undefined;
  // An empty file is no database either: opening it would write a fresh schema into it.
  return existsSync(path) && statSync(path).size > 0 ? undefined : path;
}

/** The SQLite file `config` names (the data dir's, or a `sqlite:` URL's path); undefined for PostgreSQL. */
function tokenDatabaseFile(config: { dataDir: string; databaseUrl?: string | undefined }): string | undefined {
  const url = config.databaseUrl;
  if (url !== undefined && !/^sqlite:/i.test(url)) return undefined;
  return url === undefined ? dbPath(config.dataDir) : decodeURIComponent(new URL(url).pathname);
}

/** Where `token revoke` looks, for its messages: the SQLite file, or "the PostgreSQL database" (never a URL: it may hold a password). */
export function tokenDatabaseName(config: { dataDir: string; databaseUrl?: string | undefined }): string {
  return tokenDatabaseFile(config) ?? 'the PostgreSQL database';
}

/** What `revokeStoredToken` removed: whose token it was and until when it would have worked. */
export interface RevokedToken {
  userId: string;
  projectId: string;
  expiresAt: string;
}

/**
 * Removes `token` from `store` (with its Keystone record: it goes with the token); `where` names
 * the store in messages. Throws an Error saying why when the store holds no such token (unknown or already revoked) or it has expired
 * (then nothing is removed: expired tokens are cleared by the service itself). Messages never
 * quote the token.
 */
export async function revokeStoredToken(
  store: Pick<ComputeStore, 'getToken' | 'deleteToken'>,
  token: string,
  now: Date = new Date(),
  where = 'this database',
): Promise<RevokedToken> {
  const hash = hashToken(token);
  const record = await store.getToken(hash);
  const unknown = () => new Error(`no such token in ${where}: unknown there or already revoked (nothing changed; is it the data dir or database of the service that issued it?)`);
  if (!record) throw unknown();
  if (Date.parse(record.expiresAt) <= now.getTime()) throw new Error(`the token expired at ${record.expiresAt}: nothing to revoke (nothing changed)`);
  // Another revoke may have removed it since the read: the same answer as if it had come first.
  if (!(await store.deleteToken(hash))) throw unknown();
  return { userId: record.userId, projectId: record.projectId, expiresAt: record.expiresAt };
}
