/**
 * QEMU-native LUKS volumes (Cinder's encrypted volume types, `qemu-img create -f luks`): what
 * every backend shares. A LUKS volume is a LUKS1 header (key slots and all) followed by the
 * encrypted payload, in the volume's storage itself: the file of a file volume, the backing file
 * of a loop device or an iSCSI LUN (so the header is on the block device the host sees). QEMU
 * decrypts it (libvirt `<encryption format='luks'>` with a libvirt secret); the guest sees the
 * PAYLOAD, i.e. the volume's size minus the header's payload offset.
 *
 * Sizes: a volume of `bytes` is exactly `bytes` on the storage (header + payload), as an
 * unencrypted one; its guest-visible size is `bytes - payloadOffset`. With QEMU 7.2's defaults
 * (aes-256-xts, 8 key slots × 4000 stripes) the payload offset is 2,068,480 bytes (4,040
 * sectors), measured from each header, never assumed.
 *
 * The passphrase is 32 random bytes per volume, as base64 text (so the PBKDF's iteration count protects nothing
 * a brute force could reach: it is kept low, `iter-time` 100 ms, which is also what every open
 * of the volume by QEMU costs). It reaches qemu-img on its stdin (`file=/dev/stdin`): never on a
 * command line, never in a file.
 */
import { errors } from '../../errors.js';
import { parseLuksPayloadOffset, readLuksPayloadOffset } from '../../host/luks.js';
import { fsFailed, growVolumeFile, removeFile } from './common.js';
import { commandFailed, execRaw } from './exec.js';
import type { EncryptionFormat, VolumeEncryption } from './backend.js';

/**
 * The LUKS header of the volume storage at `path` (a file or a block device; src/host/luks.ts):
 * its payload offset, or undefined when the storage does not start with a LUKS1 header or does not
 * exist. Throws BackendFailed (by errno) when it cannot be read.
 */
export async function readLuksHeader(path: string): Promise<VolumeEncryption | undefined> {
  try {
    const payloadOffset = await readLuksPayloadOffset(path);
    return payloadOffset === undefined ? undefined : { format: 'luks', payloadOffset };
  } catch (err) {
    throw fsFailed('read the encryption header of the volume', path, err);
  }
}

/** The payload offset of a LUKS1 header in `buf` (its first 108 bytes at least), or undefined if `buf` holds none. */
export function parseLuksHeader(buf: Buffer): VolumeEncryption | undefined {
  const payloadOffset = parseLuksPayloadOffset(buf);
  return payloadOffset === undefined ? undefined : { format: 'luks', payloadOffset };
}

/** qemu-img's PBKDF benchmark reads the thread's CPU time; on a coarse clock it may read 0 and refuse, by chance. */
const PBKDF_CLOCK_MISS = /Unable to get accurate CPU usage/;

/**
 * Write a LUKS volume of exactly `bytes` at `path` (a new file, e.g. createAtomically's temporary
 * one): the header by `qemu-img create -f luks` (payload 0), then the file grown (sparse) to
 * `bytes`, so the guest will see `bytes - payloadOffset`. The passphrase (text) goes to qemu-img
 * on its stdin. Returns the header's payload offset.
 * Throws InvalidInput (400) when `bytes` does not exceed the header, BackendFailed otherwise.
 */
export async function writeLuksVolume(path: string, bytes: number, passphrase: string, opts: { timeoutMs: number; volumeId?: string }): Promise<VolumeEncryption> {
  // The passphrase reaches qemu-img on its stdin: never on a command line other processes can
  // read, and never in a file a crash could leave behind (red team: a kill -9 during a create
  // left the key file next to the volume).
  const args = [
    'create', '-q', '-f', 'luks',
    '--object', 'secret,id=sec0,file=/dev/stdin,format=raw',
    '-o', 'key-secret=sec0,iter-time=100',
    path, '0',
  ];
  const what = 'write the LUKS header of the volume';
  for (let attempt = 1; ; attempt++) {
    // Node gives a child a socket, not a pipe, as stdin, and /dev/stdin cannot open a socket:
    // `cat` turns it into a pipe (the shell's arguments carry no secret).
    const r = await execRaw('sh', ['-c', 'cat | qemu-img "$@"', 'sh', ...args], { timeoutMs: opts.timeoutMs, what, input: passphrase });
    if (r.code === 0) break;
    await removeFile(path);
    if (attempt < 10 && PBKDF_CLOCK_MISS.test(r.stderr)) continue;
    throw commandFailed('qemu-img', args, r, { what });
  }
  const enc = await readLuksHeader(path);
  if (!enc) throw errors.backendFailed('cannot write the LUKS header of the volume: qemu-img wrote no LUKS header', { detail: path });
  if (bytes <= enc.payloadOffset) {
    throw errors.invalidInput(`An encrypted volume must be larger than its LUKS header (${enc.payloadOffset} bytes), got ${bytes} bytes.`);
  }
  await growVolumeFile(path, bytes, opts.volumeId);
  return enc;
}

/**
 * The raw file of a new volume at `path` (createAtomically's temporary file): sparse, or a LUKS
 * volume when `encryption` is given (writeLuksVolume). Errors as those.
 */
export async function makeRawVolume(
  path: string,
  bytes: number,
  opts: { encryption?: { format: EncryptionFormat; passphrase: string } | undefined; timeoutMs: number; volumeId: string },
  makeSparse: (path: string, bytes: number, volumeId: string) => Promise<void>,
): Promise<void> {
  if (opts.encryption) await writeLuksVolume(path, bytes, opts.encryption.passphrase, opts);
  else await makeSparse(path, bytes, opts.volumeId);
}

/**
 * For an idempotent create of an ENCRYPTED volume: the existing storage at `path` must carry a
 * LUKS header (else VolumeInvalidState, 409: it was created unencrypted). Answers the header, or
 * undefined when no encryption is asked for (an unencrypted volume's content is the guest's, a
 * header in it means nothing to us).
 */
export async function checkEncrypted(volumeId: string, path: string, want: { format: EncryptionFormat } | undefined): Promise<VolumeEncryption | undefined> {
  if (!want) return undefined;
  const enc = await readLuksHeader(path);
  if (!enc) throw errors.volumeInvalidState(volumeId, 'already created unencrypted', `create encrypted with ${want.format}`);
  return enc;
}
