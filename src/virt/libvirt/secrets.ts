/**
 * libvirt secrets for encrypted volumes (virSecretDefineXML, virSecretSetValue,
 * virSecretLookupByUUID, virSecretUndefine over our remote-protocol client).
 *
 * One secret per encrypted volume, as Nova's libvirt driver makes them:
 * - usage type `volume`, usage id `online-extend/<volume id>` (unique per volume, whatever the
 *   disk's source);
 * - `ephemeral='yes'` (never written to libvirtd's disk) and `private='yes'` (no client reads the
 *   value back);
 * - its UUID derived from the volume id (a name-based UUID, SHA-1 as RFC 4122 v5 in our own
 *   namespace), so attach defines the same secret again idempotently and detach finds it without
 *   anything recorded.
 * The value is the volume's passphrase (UTF-8 text); it goes over libvirtd's unix socket only.
 * Secrets are ephemeral: after a libvirtd restart a RUNNING guest keeps its disks (QEMU holds the
 * key), but a disk plugged in again (or a shut-off server started) needs the attach to define the
 * secret again.
 */
import { createHash } from 'node:crypto';
import { escapeXml } from '../../util/xml.js';
import { LibvirtError, VirErrorCode } from './remote/errors.js';
import type { RemoteClient } from './remote/client.js';
import { REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, RemoteProc, UUID_BYTES, uuidToBytes } from './remote/protocol.js';
import { XdrWriter, type XdrReader } from './remote/xdr.js';

/** remote_nonnull_secret: the UUID (16 bytes), the usage type (virSecretUsageType) and its id. */
export interface RemoteSecret {
  uuid: Buffer;
  usageType: number;
  usageId: string;
}

/** virSecretUsageType VIR_SECRET_USAGE_TYPE_VOLUME. */
export const SECRET_USAGE_VOLUME = 1;

/** The name-based UUIDs' namespace (a fixed random UUID of ours). */
const NAMESPACE = uuidToBytes('3f0f6a52-8f5e-4d39-9d7a-6b1f0c0e2a41')!;

/** The UUID of the libvirt secret of encrypted volume `volumeId` (see the module comment). */
export function secretUuidOf(volumeId: string): string {
  const h = createHash('sha1').update(NAMESPACE).update(`luks:${volumeId}`).digest().subarray(0, 16);
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/** The secret's XML (see the module comment). */
export function secretXml(volumeId: string): string {
  return (
    `<secret ephemeral='yes' private='yes'><uuid>${secretUuidOf(volumeId)}</uuid>` +
    `<description>online-extend volume ${escapeXml(volumeId)}</description>` +
    `<usage type='volume'><volume>online-extend/${escapeXml(volumeId)}</volume></usage></secret>`
  );
}

function writeSecret(w: XdrWriter, s: RemoteSecret): void {
  w.fixedOpaque(s.uuid, UUID_BYTES);
  w.int(s.usageType);
  w.string(s.usageId);
}

function readSecret(r: XdrReader): RemoteSecret {
  return { uuid: r.fixedOpaque(UUID_BYTES), usageType: r.int(), usageId: r.string() };
}

function remote(client: RemoteClient, proc: number, w: XdrWriter): Promise<XdrReader> {
  return client.call(REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, proc, w.bytes());
}

/** virSecretDefineXML (flags 0): defines, or redefines, the secret. */
export async function defineSecret(client: RemoteClient, xml: string): Promise<RemoteSecret> {
  const r = await remote(client, RemoteProc.SECRET_DEFINE_XML, new XdrWriter(512).string(xml).uint(0));
  return readSecret(r);
}

/** virSecretSetValue (flags 0). */
export async function setSecretValue(client: RemoteClient, secret: RemoteSecret, value: Buffer): Promise<void> {
  const w = new XdrWriter(256);
  writeSecret(w, secret);
  w.opaque(value);
  w.uint(0);
  await remote(client, RemoteProc.SECRET_SET_VALUE, w);
}

/** virSecretLookupByUUID; undefined when libvirtd has no such secret (VIR_ERR_NO_SECRET). */
export async function lookupSecret(client: RemoteClient, uuid: string): Promise<RemoteSecret | undefined> {
  const bytes = uuidToBytes(uuid);
  if (!bytes) return undefined;
  try {
    return readSecret(await remote(client, RemoteProc.SECRET_LOOKUP_BY_UUID, new XdrWriter(32).fixedOpaque(bytes, UUID_BYTES)));
  } catch (err) {
    if (err instanceof LibvirtError && err.code === VirErrorCode.NO_SECRET) return undefined;
    throw err;
  }
}

/** virSecretUndefine; a secret already gone is fine. */
export async function undefineSecret(client: RemoteClient, uuid: string): Promise<void> {
  const secret = await lookupSecret(client, uuid);
  if (!secret) return;
  const w = new XdrWriter(96);
  writeSecret(w, secret);
  try {
    await remote(client, RemoteProc.SECRET_UNDEFINE, w);
  } catch (err) {
    if (err instanceof LibvirtError && err.code === VirErrorCode.NO_SECRET) return;
    throw err;
  }
}

/**
 * Define the secret of encrypted volume `volumeId` and give it `passphrase`; answers its UUID
 * (what the disk's `<encryption>` names). Idempotent.
 */
export async function ensureVolumeSecret(client: RemoteClient, volumeId: string, passphrase: string): Promise<string> {
  const secret = await defineSecret(client, secretXml(volumeId));
  await setSecretValue(client, secret, Buffer.from(passphrase, 'utf8'));
  return secretUuidOf(volumeId);
}

