/**
 * The capacity of an iSCSI LUN as an initiator reads it: libiscsi's `iscsi-readcapacity16`
 * (READ CAPACITY(16), ~7 ms, no kernel initiator needed). The one parser of its output, used by
 * the iSCSI backend (getBytes, extend) and the libvirt driver (the host size of a network disk).
 *
 * Which number is the size: READ CAPACITY(16) returns the LAST logical block address and the
 * block length, so the LUN holds (last LBA + 1) × block length bytes. libiscsi prints both, and
 * their product as `Total size:`; with `-s` it prints only that product. Measured here
 * (libiscsi-bin 1.19, tgt 1.0.85; fixtures in test/host/fixtures/): a 100 MiB file →
 * `RETURNED LOGICAL BLOCK ADDRESS:204799`, `LOGICAL BLOCK LENGTH IN BYTES:512`,
 * `Total size:104857600`; `-s` → `104857600`. The LBA alone (what a "first number" parse of the
 * full output reads) is one block short and in blocks, not bytes.
 */
import { runCommand } from './exec.js';

/** The portal QEMU and libvirt assume when a disk names none. */
export const DEFAULT_ISCSI_PORTAL = '127.0.0.1:3260';

/** The output of iscsi-readcapacity16 did not contain a size. `output` is what it printed. */
export class UnexpectedReadCapacityOutput extends Error {
  constructor(readonly output: string) {
    super('unexpected iscsi-readcapacity16 output');
    this.name = 'UnexpectedReadCapacityOutput';
  }
}

const field = (text: string, name: string): bigint | undefined => {
  const m = new RegExp(`^${name}:\\s*(\\d+)\\s*$`, 'm').exec(text);
  return m?.[1] === undefined ? undefined : BigInt(m[1]);
};

/**
 * The LUN's size in bytes from `iscsi-readcapacity16` output, with or without `-s`:
 * (last LBA + 1) × block length, checked against `Total size` when both are there; or the lone
 * number `-s` prints. Throws UnexpectedReadCapacityOutput for anything else (or a size beyond
 * Number.MAX_SAFE_INTEGER).
 */
export function parseReadCapacity16(output: string): number {
  const text = output.trim();
  let bytes: bigint | undefined;
  if (/^\d+$/.test(text)) {
    bytes = BigInt(text);
  } else {
    const lba = field(text, 'RETURNED LOGICAL BLOCK ADDRESS');
    const blockLength = field(text, 'LOGICAL BLOCK LENGTH IN BYTES');
    const total = field(text, 'Total size');
    if (lba !== undefined && blockLength !== undefined) {
      bytes = (lba + 1n) * blockLength;
      if (total !== undefined && total !== bytes) throw new UnexpectedReadCapacityOutput(output);
    }
  }
  if (bytes === undefined || bytes > BigInt(Number.MAX_SAFE_INTEGER)) throw new UnexpectedReadCapacityOutput(output);
  return Number(bytes);
}

/** `iscsi://PORTAL/IQN/LUN`, libiscsi's URL of a LUN. `source` is `IQN/LUN`, as in domain XML. */
export function iscsiUrl(portal: string | undefined, source: string): string {
  return `iscsi://${portal ?? DEFAULT_ISCSI_PORTAL}/${source}`;
}

/** The arguments of `iscsi-readcapacity16` for the size of `IQN/LUN` on `portal`. */
export function readCapacityArgs(portal: string | undefined, source: string): string[] {
  return ['-s', iscsiUrl(portal, source)];
}

/** Runs a program and resolves with its stdout (src/host/exec.ts's runCommand, or a test's). */
export type ReadCapacityRunner = (file: string, args: string[], opts?: { timeoutMs?: number }) => Promise<string>;

/**
 * The capacity in bytes an initiator reads now for LUN `source` (`IQN/LUN`) on `portal`.
 * Rejects with CommandFailed (src/host/exec.ts; the tool exits 10 for every login or SCSI
 * failure, with its reason on stderr) or UnexpectedReadCapacityOutput.
 */
export async function readLunCapacity(portal: string | undefined, source: string, opts: { timeoutMs?: number; run?: ReadCapacityRunner } = {}): Promise<number> {
  const run = opts.run ?? runCommand;
  return parseReadCapacity16(await run('iscsi-readcapacity16', readCapacityArgs(portal, source), { timeoutMs: opts.timeoutMs ?? 10_000 }));
}
