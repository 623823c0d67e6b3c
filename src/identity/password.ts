/**
 * Password hashing for the embedded Keystone's users: scrypt (Node's crypto, OpenSSL's), stored
 * as `scrypt$N=<cost>,r=<block size>,p=<parallelism>$<salt, base64>$<key, base64>` so the
 * parameters can be raised later without breaking stored hashes (each hash carries its own).
 * The default parameters are OWASP's scrypt row N=2^15, r=8, p=3 (32 MiB, about 0.25 s here);
 * Keystone itself uses bcrypt with 12 rounds, a similar cost.
 */
import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';

/** scrypt's cost parameters. */
export interface ScryptParams {
  /** CPU/memory cost, a power of two. */
  N: number;
  /** Block size. */
  r: number;
  /** Parallelism. */
  p: number;
}

/** What new hashes use (see the module comment). */
export const DEFAULT_SCRYPT: Readonly<ScryptParams> = { N: 2 ** 15, r: 8, p: 3 };

/** Keystone's `[identity] max_password_length` default: longer passwords are refused. */
export const MAX_PASSWORD_BYTES = 4096;

const KEY_BYTES = 32;
const SALT_BYTES = 16;
/** Bounds on stored parameters, so a damaged or hostile row cannot make verification take minutes or gigabytes. */
const MAX_N = 2 ** 20;
const MAX_R = 32;
const MAX_P = 16;

function scrypt(password: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  // OpenSSL needs about 128·N·r bytes; Node refuses above maxmem (32 MiB by default).
  const options: ScryptOptions = { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r + 1024 * 1024 };
  return new Promise((resolve, reject) => scryptCb(password.normalize('NFC'), salt, KEY_BYTES, options, (err, key) => (err ? reject(err) : resolve(key))));
}

/** Throws a plain Error when `password` is empty or longer than MAX_PASSWORD_BYTES (UTF-8). */
export function checkPassword(password: string): void {
  if (password.length === 0) throw new Error('the password is empty');
  if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES) throw new Error(`the password is longer than ${MAX_PASSWORD_BYTES} bytes`);
}

/** The stored form of `password` with a fresh random salt (see the module comment). Throws as `checkPassword`. */
export async function hashPassword(password: string, params: ScryptParams = DEFAULT_SCRYPT): Promise<string> {
  checkPassword(password);
  const salt = randomBytes(SALT_BYTES);
  const key = await scrypt(password, salt, params);
  return `scrypt$N=${params.N},r=${params.r},p=${params.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

function parse(stored: string): { params: ScryptParams; salt: Buffer; key: Buffer } | undefined {
  const m = /^scrypt\$N=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(stored);
  if (!m) return undefined;
  const [N, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (!(N >= 2 && N <= MAX_N && (N & (N - 1)) === 0 && r >= 1 && r <= MAX_R && p >= 1 && p <= MAX_P)) return undefined;
  const key = Buffer.from(m[5]!, 'base64');
  if (key.length !== KEY_BYTES) return undefined;
  return { params: { N, r, p }, salt: Buffer.from(m[4]!, 'base64'), key };
}

/** A hash of no password, checked against when the user does not exist: an unknown user costs the same time as a wrong password. */
let decoy: Promise<string> | undefined;

/**
 * Whether `password` matches `stored` (a `hashPassword` result), compared in constant time.
 * `stored` undefined (no such user) runs the same work against a decoy and answers false, so
 * the time taken does not tell whether the user exists. A malformed `stored` is false.
 */
export async function verifyPassword(password: string, stored: string | undefined): Promise<boolean> {
  decoy ??= hashPassword(randomBytes(16).toString('hex'));
  const parsed = parse(stored ?? (await decoy));
  if (!parsed || Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES) return false;
  const key = await scrypt(password, parsed.salt, parsed.params);
  return timingSafeEqual(key, parsed.key) && stored !== undefined;
}
