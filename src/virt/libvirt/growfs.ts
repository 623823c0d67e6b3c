/**
 * Growing what sits on a volume's disk inside the guest, through the QEMU guest agent (agent.ts),
 * after the block device grew: the last partition when the disk is partitioned (as cloud-utils'
 * growpart does, with sfdisk, then partx so the kernel sees the partition's new size even while
 * it is mounted), then the filesystem: ext2/3/4 with resize2fs (online when mounted; e2fsck -f -p
 * first when not), XFS with xfs_growfs (mounted only: XFS grows only mounted).
 *
 * The guest is found out with one fixed probe script (no input in it: the volume id goes in as a
 * positional parameter) that lists the block devices from sysfs with their serials, partitions and
 * the mounts; every name used in a later command comes from that listing and is validated here.
 * Every command runs as an argv through guest-exec (no shell), with its exit code and stderr
 * checked and a deadline.
 *
 * Sizes are df's: a mounted filesystem's total is statfs f_blocks × f_frsize (`stat -f`); an
 * unmounted ext filesystem has no df total, so its size there is dumpe2fs's block count × block
 * size (the filesystem's own size, which df would show minus ext4's metadata overhead).
 */
import type { GuestFilesystemGrowth, GuestFsNotGrownReason } from '../driver.js';
import { AgentCommandFailed, AgentExecTimeout, AgentUnavailable, type AgentExecResult, type GuestAgent } from './agent.js';

/** virtio-blk carries at most 20 bytes of serial (VIRTIO_BLK_ID_BYTES): the guest sees the volume id cut there. */
export const VIRTIO_SERIAL_BYTES = 20;

/**
 * The probe: block devices with size (512-byte sectors) and serial, their partitions, magic bytes
 * of the volume's, the mounts (a device mounted by a link, /dev/disk/by-uuid/… or /dev/mapper/…,
 * resolved to its /dev name), and `stat -f` of the volume's mounted filesystems.
 */
export const PROBE_SCRIPT = `
mydevs=""
for d in /sys/block/*; do
  n=\${d##*/}
  case "$n" in loop*|ram*|zram*|sr*|fd*|dm-*|md*|nbd*) continue;; esac
  read -r size < "$d/size" || continue
  s=""
  [ -r "$d/serial" ] && read -r s < "$d/serial"
  if [ -z "$s" ] && [ -r "$d/device/vpd_pg80" ]; then s=$(tail -c +5 "$d/device/vpd_pg80" | tr -d '\\000'); fi
  echo "disk $n $size $s"
  mine=""
  if [ -n "$s" ]; then case "$1" in "$s"*) mine=1;; esac; fi
  [ -n "$mine" ] && mydevs="$mydevs $n" && echo "magic $n $(od -An -tx1 -j1080 -N2 "/dev/$n" 2>/dev/null) $(od -An -tx1 -N4 "/dev/$n" 2>/dev/null)"
  for p in "$d/$n"*; do
    [ -r "$p/partition" ] || continue
    read -r no < "$p/partition"; read -r st < "$p/start"; read -r sz < "$p/size"
    echo "part $n \${p##*/} $no $st $sz"
    [ -n "$mine" ] && mydevs="$mydevs \${p##*/}" && echo "magic \${p##*/} $(od -An -tx1 -j1080 -N2 "/dev/\${p##*/}" 2>/dev/null) $(od -An -tx1 -N4 "/dev/\${p##*/}" 2>/dev/null)"
  done
done
while read -r dev mnt fstype rest; do
  case "$dev" in /dev/*/*) dev=$(readlink -f "$dev" 2>/dev/null || echo "$dev");; esac
  echo "mount $dev $mnt $fstype"
  # The volume's mounted filesystems: their df total now (saves a command); escaped paths are left to a later stat.
  case " $mydevs " in *" \${dev#/dev/} "*)
    case "$mnt" in *\\\\*) ;; *) echo "statfs \${dev#/dev/} $(stat -f -c '%b %S' "$mnt" 2>/dev/null)";; esac;;
  esac
done < /proc/mounts
`;

/** A block device name as sysfs spells it (vdb, sdc, vdb1, nvme0n1p2); nothing else reaches a command. */
const DEVICE_NAME_RE = /^[a-z][a-z0-9]{0,31}$/;

/** One partition of the volume's disk, from sysfs (sectors of 512 bytes). */
export interface ProbedPartition {
  name: string;
  number: number;
  start: number;
  sectors: number;
}

/** What the probe found for the volume's disk: the disk, its partitions, the magic bytes, the mounts of the guest. */
export interface ProbedDisk {
  name: string;
  sectors: number;
  serial: string;
  partitions: ProbedPartition[];
  /** Device name → filesystem guessed from its superblock magic (ext at 1080, XFS at 0); absent: neither. */
  magic: Map<string, 'ext' | 'xfs'>;
  /** Device name → its mount (the first one /proc/mounts lists). */
  mounts: Map<string, { mountpoint: string; fsType: string }>;
  /** Device name → df total in bytes of its mounted filesystem (f_blocks × f_frsize), when the probe could read it. */
  statfs: Map<string, number>;
}

/**
 * Whether the serial the guest shows names the volume: equal, or (virtio-blk) the volume id cut
 * at 20 bytes. An empty serial names nothing.
 */
export function serialMatches(guestSerial: string, volumeId: string): boolean {
  if (guestSerial === '') return false;
  if (guestSerial === volumeId) return true;
  return guestSerial.length === VIRTIO_SERIAL_BYTES && volumeId.length > VIRTIO_SERIAL_BYTES && volumeId.startsWith(guestSerial);
}

/** /proc/mounts escapes space, tab, newline and backslash as octal (`\040`); undo that. */
export function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * Read the probe's output for `volumeId`: the disk whose serial names it (undefined when none;
 * two such disks is an error), with its partitions, magic bytes and mounts. Lines that do not
 * parse, and device names that are not plain sysfs names, are ignored.
 */
export function parseProbe(text: string, volumeId: string): ProbedDisk | undefined {
  const disks: Array<{ name: string; sectors: number; serial: string }> = [];
  const parts: Array<ProbedPartition & { disk: string }> = [];
  const magic = new Map<string, 'ext' | 'xfs'>();
  const mounts = new Map<string, { mountpoint: string; fsType: string }>();
  const statfs = new Map<string, number>();
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[0] === 'disk' && f.length >= 3 && DEVICE_NAME_RE.test(f[1]!) && /^\d+$/.test(f[2]!)) {
      disks.push({ name: f[1]!, sectors: Number(f[2]), serial: f.slice(3).join(' ') });
    } else if (f[0] === 'part' && f.length === 6 && DEVICE_NAME_RE.test(f[1]!) && DEVICE_NAME_RE.test(f[2]!) && f.slice(3).every((x) => /^\d+$/.test(x))) {
      parts.push({ disk: f[1]!, name: f[2]!, number: Number(f[3]), start: Number(f[4]), sectors: Number(f[5]) });
    } else if (f[0] === 'magic' && f.length >= 2 && DEVICE_NAME_RE.test(f[1]!)) {
      const hex = f.slice(2).join('');
      if (hex.startsWith('53ef')) magic.set(f[1]!, 'ext');
      else if (hex.slice(4, 12) === '58465342' || (hex.length === 8 && hex === '58465342')) magic.set(f[1]!, 'xfs');
    } else if (f[0] === 'statfs' && f.length === 4 && DEVICE_NAME_RE.test(f[1]!) && /^\d+$/.test(f[2]!) && /^\d+$/.test(f[3]!)) {
      if (!statfs.has(f[1]!)) statfs.set(f[1]!, Number(f[2]) * Number(f[3]));
    } else if (f[0] === 'mount' && f.length === 4 && f[1]!.startsWith('/dev/')) {
      const name = f[1]!.slice('/dev/'.length);
      const mountpoint = unescapeMountField(f[2]!);
      if (DEVICE_NAME_RE.test(name) && mountpoint.startsWith('/') && !mounts.has(name)) mounts.set(name, { mountpoint, fsType: f[3]! });
    }
  }
  const mine = disks.filter((d) => serialMatches(d.serial, volumeId));
  if (mine.length > 1) throw new Error(`two guest disks carry the serial of volume ${volumeId}: ${mine.map((d) => d.name).join(', ')}`);
  const d = mine[0];
  if (!d) return undefined;
  return {
    ...d,
    partitions: parts.filter((p) => p.disk === d.name).map(({ disk: _disk, ...p }) => p),
    magic,
    mounts,
    statfs,
  };
}

/** `stat -f -c '%b %S'`: total blocks × fundamental block size (f_frsize) = df -B1's total. Throws when it does not parse. */
export function parseStatFs(out: string): number {
  const m = /^\s*(\d+)\s+(\d+)\s*$/.exec(out);
  if (!m) throw new Error(`unexpected stat -f output: ${out.slice(0, 200)}`);
  return Number(m[1]) * Number(m[2]);
}

/** `dumpe2fs -h`: the filesystem's size (block count × block size) and ext2/3/4 from its features. Throws when it does not parse. */
export function parseDumpe2fs(out: string): { bytes: number; fsType: 'ext2' | 'ext3' | 'ext4' } {
  const count = /^Block count:\s+(\d+)/m.exec(out);
  const size = /^Block size:\s+(\d+)/m.exec(out);
  if (!count || !size) throw new Error(`unexpected dumpe2fs -h output: ${out.slice(0, 200)}`);
  const features = /^Filesystem features:\s+(.*)$/m.exec(out)?.[1]?.split(/\s+/) ?? [];
  const fsType = features.includes('extent') || features.includes('64bit') || features.includes('flex_bg') ? 'ext4' : features.includes('has_journal') ? 'ext3' : 'ext2';
  return { bytes: Number(count[1]) * Number(size[1]), fsType };
}

/** `sfdisk --dump`: the label type (dos, gpt, …); undefined when none is printed. */
export function parseSfdiskLabel(out: string): string | undefined {
  return /^label:\s*(\S+)/m.exec(out)?.[1];
}

/** Sectors (512 bytes) left after the last partition before the usable end: GPT keeps 33 at the end for its backup. */
export function freeSectorsAfter(diskSectors: number, last: ProbedPartition, label: string | undefined): number {
  const usableEnd = label === 'gpt' ? diskSectors - 33 : diskSectors;
  return usableEnd - (last.start + last.sectors);
}

/** Less free space than this after the last partition (1 MiB, the alignment partitioning tools use) is "already grown". */
export const MIN_PARTITION_GROWTH_SECTORS = 2048;

/** Options of growFilesystem: deadlines in ms, and a logger for the steps. */
export interface GrowFsOptions {
  /** How long guest-ping may take before the guest counts as having no agent (seconds, default 2). */
  pingTimeoutS?: number;
  /** Deadline of each guest command (default 120 s: resize2fs of a large filesystem under TCG is slow). */
  commandTimeoutMs?: number;
  log?: (obj: object, msg: string) => void;
}

/** A step failed in the guest: becomes {grown:false, reason, detail} with what was done so far. */
/** A DOS partition table's first logical partition number (5 onwards live inside the extended partition). */
const FIRST_LOGICAL_PARTITION = 5;

/**
 * The guest agent refuses commands while the guest's filesystems are frozen (libvirt's
 * domfsfreeze, a backup's snapshot): not an answer about the filesystem, a state that ends.
 * LibvirtDriver turns it into InstanceBusy (409, uncertain) so the workflow retries.
 */
export class GuestFilesystemsFrozen extends Error {
  constructor(readonly detail: string) {
    super(`the guest's filesystems are frozen: ${detail}`);
    this.name = 'GuestFilesystemsFrozen';
  }
}

class NotGrown extends Error {
  constructor(readonly reason: GuestFsNotGrownReason, readonly detail: string) {
    super(detail);
  }
}

const ext = (fs: string | undefined): boolean => fs === 'ext2' || fs === 'ext3' || fs === 'ext4';

/**
 * Grow the partition and filesystem on the disk carrying `volumeId` in the guest behind `agent`
 * (see the file header). Never throws for what the guest answers: no agent, no disk, nothing to
 * grow or a failed command come back as grown=false with a reason and an operator-only detail.
 * Throws only what reaching libvirtd throws (the client's connection and timeout errors).
 */
export async function growFilesystem(agent: GuestAgent, volumeId: string, opts: GrowFsOptions = {}): Promise<GuestFilesystemGrowth> {
  const out: GuestFilesystemGrowth = { grown: false, partitionGrown: false };
  const log = opts.log ?? (() => {});
  const timeoutMs = opts.commandTimeoutMs ?? 120_000;
  const run = async (what: string, path: string, args: string[], input?: string, okCodes: readonly number[] = [0]): Promise<AgentExecResult> => {
    const t0 = performance.now();
    let r: AgentExecResult;
    try {
      r = await agent.exec(path, args, { timeoutMs, ...(input !== undefined ? { input } : {}) });
    } catch (err) {
      // A guest whose filesystems are frozen (guest-fsfreeze-freeze, as a backup does) refuses
      // guest-exec until thawed: that passes by itself, so the caller retries (uncertain).
      if (err instanceof AgentCommandFailed && /frozen state/i.test(err.message)) throw new GuestFilesystemsFrozen(err.message);
      if (err instanceof AgentCommandFailed || err instanceof AgentExecTimeout) throw new NotGrown('grow_failed', `${what}: ${err.message}`);
      throw err;
    }
    log({ command: [path, ...args].join(' '), exitCode: r.exitCode, ms: Math.round(performance.now() - t0) }, 'guest command ran');
    if (!okCodes.includes(r.exitCode)) {
      throw new NotGrown('grow_failed', `${what}: ${[path, ...args].join(' ')} exited ${r.exitCode}${r.signal !== undefined ? ` (signal ${r.signal})` : ''}: ${(r.stderr || r.stdout).trim().slice(0, 2000)}`);
    }
    return r;
  };
  try {
    try {
      await agent.ping(opts.pingTimeoutS ?? 2);
    } catch (err) {
      if (err instanceof AgentUnavailable || err instanceof AgentCommandFailed) throw new NotGrown('no_guest_agent', err.message);
      throw err;
    }
    const probe = await run('list the guest block devices', 'sh', ['-c', PROBE_SCRIPT, 'sh', volumeId]);
    let disk: ProbedDisk | undefined;
    try {
      disk = parseProbe(probe.stdout, volumeId);
    } catch (err) {
      throw new NotGrown('disk_not_found', (err as Error).message);
    }
    if (!disk) throw new NotGrown('disk_not_found', `no guest disk has the serial of volume ${volumeId}`);
    const last = [...disk.partitions].sort((a, b) => a.start - b.start).at(-1);
    const dev = last?.name ?? disk.name;
    out.device = `/dev/${dev}`;
    const mount = disk.mounts.get(dev);
    const magic = disk.magic.get(dev);
    if (mount) {
      out.mountpoint = mount.mountpoint;
      out.fsType = mount.fsType;
    }
    if (!mount && !magic) {
      // Something other than ext or XFS, or nothing: blkid (when the guest has it) tells which.
      const b = await agent.exec('blkid', ['-p', '-o', 'value', '-s', 'TYPE', out.device], { timeoutMs }).catch(() => undefined);
      const type = b && b.exitCode === 0 ? b.stdout.trim() : '';
      if (type && /^[\w.-]+$/.test(type)) {
        out.fsType = type;
        throw new NotGrown('unsupported_filesystem', `${out.device} holds ${type}`);
      }
      throw new NotGrown('no_filesystem', `no filesystem on ${out.device}`);
    }
    if (mount && !ext(mount.fsType) && mount.fsType !== 'xfs') {
      throw new NotGrown('unsupported_filesystem', `${out.device} holds ${mount.fsType}`);
    }
    if (!mount && magic === 'xfs') {
      out.fsType = 'xfs';
      throw new NotGrown('not_mounted', `XFS on ${out.device} is not mounted (XFS grows only mounted)`);
    }
    const measure = async (): Promise<{ bytes: number; fsType?: string }> => {
      if (mount) return { bytes: parseStatFs((await run('measure the filesystem', 'stat', ['-f', '-c', '%b %S', mount.mountpoint])).stdout) };
      const d = parseDumpe2fs((await run('measure the filesystem', 'dumpe2fs', ['-h', out.device!])).stdout);
      return { bytes: d.bytes, fsType: d.fsType };
    };
    const probed = mount ? disk.statfs.get(dev) : undefined;
    const before = probed !== undefined ? { bytes: probed } : await measure();
    out.fsBytesBefore = before.bytes;
    if (before.fsType) out.fsType = before.fsType;

    if (last) {
      const dump = await run('read the partition table', 'sfdisk', ['--dump', `/dev/${disk.name}`]);
      const label = parseSfdiskLabel(dump.stdout);
      const free = freeSectorsAfter(disk.sectors, last, label);
      if (label === 'dos' && last.number >= FIRST_LOGICAL_PARTITION && free >= MIN_PARTITION_GROWTH_SECTORS) {
        // A logical partition lies inside the extended one, which would have to grow first:
        // sfdisk -N exits 0 and changes nothing (red team). Say so rather than "grown".
        throw new NotGrown('grow_failed', `${out.device} is a logical partition (inside an extended one): not grown`);
      }
      if (free >= MIN_PARTITION_GROWTH_SECTORS || label === 'gpt') {
        if (label === 'gpt') {
          // The backup GPT sits at the disk's old end; move it to the new end first, else the
          // new space lies past the table's last usable sector.
          await run('move the backup GPT to the end of the disk', 'sfdisk', ['--relocate', 'gpt-bak-std', `/dev/${disk.name}`]);
        }
        if (free >= MIN_PARTITION_GROWTH_SECTORS) {
          await run('grow the last partition', 'sfdisk', ['--no-reread', '--no-tell-kernel', '-N', String(last.number), `/dev/${disk.name}`], ', +\n');
          // BLKPG_RESIZE_PARTITION: the kernel takes the new size while the partition is in use.
          await run('tell the kernel the partition grew', 'partx', ['-u', '-n', String(last.number), `/dev/${disk.name}`]);
          // Believe the kernel, not the tools' exit codes: the partition's size in sectors now.
          const now = Number((await run('read the partition size', 'cat', [`/sys/block/${disk.name}/${last.name}/size`])).stdout.trim());
          if (!(now > last.sectors)) throw new NotGrown('grow_failed', `${out.device} still has ${now} sectors after sfdisk and partx (had ${last.sectors})`);
          out.partitionGrown = true;
        }
      }
    }

    if (ext(out.fsType) || (!mount && magic === 'ext')) {
      if (!mount) {
        // Offline resize2fs insists on a freshly checked filesystem; 1 = errors corrected.
        await run('check the filesystem', 'e2fsck', ['-f', '-p', out.device], undefined, [0, 1]);
      }
      await run('grow the filesystem', 'resize2fs', [out.device]);
    } else {
      await run('grow the filesystem', 'xfs_growfs', [mount!.mountpoint]);
    }
    out.fsBytes = (await measure()).bytes;
    out.grown = true;
    return out;
  } catch (err) {
    if (err instanceof NotGrown) {
      out.grown = false;
      out.reason = err.reason;
      out.detail = err.detail;
      return out;
    }
    if (err instanceof AgentUnavailable) {
      // The agent went away between commands.
      return { ...out, grown: false, reason: 'no_guest_agent', detail: err.message };
    }
    throw err;
  }
}
