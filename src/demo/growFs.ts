/**
 * The demo's filesystem part: a volume formatted ext4 inside the running guest, mounted, files
 * written; extended online through the volume API; then the filesystem grown inside the guest
 * through the QEMU guest agent. What it prints is the guest's own word, read through its serial
 * console (not through the agent): `df -B1` before and after, and the files' checksums.
 *
 * demo.ts calls `demoGrowFs` once, after its guest is up, with the API clients it already has.
 * The grow is asked in the extend itself (`os-extend`'s `online_extend:grow_fs`): the volume
 * service's workflow runs its `grow_fs` step after the guest saw the new size and records what it
 * did, which this part reads back from `GET …/volumes/{id}/os-online-extend` (`fs_growth`).
 */
import type { GuestShell } from '../lab/index.js';
import type { ApiClient } from '../rpc/httpClient.js';
import { waitForExtend, type ExtendProgressView } from './extendWait.js';

/** What demoGrowFs needs: the guest, the two API clients and project, how to grow the guest filesystem, where to print. */
export interface GrowFsDemoContext {
  guest: GuestShell;
  compute: ApiClient;
  volume: ApiClient;
  project: string;
  /** Volume type (backend) of the demo volume (default `file`). */
  volumeType?: string;
  out: (s: string) => void;
}

const GiB = 1024 ** 3;
const MNT = '/mnt/oe-demo';

/** df -B1's line for the mount point (header dropped) and its total in bytes. */
async function df(guest: GuestShell): Promise<{ line: string; total: number }> {
  const line = (await guest.exec(`df -B1 ${MNT}`)).trim().split('\n').at(-1) ?? '';
  const total = Number(line.trim().split(/\s+/)[1]);
  if (!Number.isSafeInteger(total)) throw new Error(`no df total in: ${line}`);
  return { line, total };
}

async function checksums(guest: GuestShell): Promise<string> {
  return (await guest.exec(`echo 3 > /proc/sys/vm/drop_caches; cd ${MNT} && md5sum random.bin pattern.txt`)).trim();
}

/** What the volume records of its latest extend's filesystem grow (our os-online-extend view). */
interface FsGrowthView {
  requested: boolean;
  grown: boolean | null;
  reason: string | null;
  device: string | null;
  fs_type: string | null;
  fs_bytes_before: number | null;
  fs_bytes: number | null;
}

interface ExtendView extends ExtendProgressView {
  fs_growth: FsGrowthView | null;
}

/**
 * Runs the part (see the file header). True when the guest's df shows the filesystem grew by at
 * least 90% of the added GiB and the checksums are unchanged. Detaches and deletes its volume.
 * Throws (plain Error or the APIs' errors) when a step fails.
 */
export async function demoGrowFs(ctx: GrowFsDemoContext): Promise<boolean> {
  const { guest, compute, volume, project, out } = ctx;
  out('G1. [grow-fs] a 1 GiB volume with ext4 on it, mounted in the guest, files written…');
  const v = (await volume.request<{ volume: { id: string } }>('POST', `/v3/${project}/volumes`, {
    volume: { name: 'demo-grow-fs', size: 1, volume_type: ctx.volumeType ?? 'file' },
  })).body.volume;
  let attached = false;
  try {
    await compute.request('POST', `/v2/${project}/servers/${guest.uuid}/os-volume_attachments`, { volumeAttachment: { volumeId: v.id } });
    attached = true;
    const dev = await guest.deviceForSerial(v.id, 20_000);
    if (!dev) throw new Error(`the guest never showed volume ${v.id}`);
    await guest.waitForSize(dev, GiB, 20_000);
    await guest.exec(
      `mkdir -p ${MNT} && mkfs.ext4 -q -F /dev/${dev} && mount -t ext4 /dev/${dev} ${MNT} && ` +
        `dd if=/dev/urandom of=${MNT}/random.bin bs=1M count=8 2>/dev/null && yes OE-DEMO | head -c 4000000 > ${MNT}/pattern.txt && sync`,
      120_000,
    );
    const sumsBefore = await checksums(guest);
    const before = await df(guest);
    out(`   guest: df -B1 ${MNT}\n     ${before.line}`);
    out(`   guest: md5sum\n     ${sumsBefore.replace(/\n/g, '\n     ')}`);

    out('G2. [grow-fs] extending it online to 2 GiB through the volume API with {"online_extend:grow_fs": true}…');
    const t0 = performance.now();
    await volume.request('POST', `/v3/${project}/volumes/${v.id}/action`, { 'os-extend': { new_size: 2, 'online_extend:grow_fs': true } });
    const done = await waitForExtend<ExtendView>(volume, project, v.id, { out, t0 });
    if (done.status !== 'in-use') throw new Error(`extend ended in status ${done.status}`);
    const t1 = performance.now();
    const r = done.fs_growth;
    out(`   extend and filesystem grow ${((t1 - t0) / 1000).toFixed(2)} s; the volume records: ` +
      `${r?.grown ? `grown ${r.fs_type} on ${r.device}, ${r.fs_bytes_before} → ${r.fs_bytes} bytes` : `not grown (${r?.reason ?? 'nothing recorded'})`}`);
    await guest.waitForSize(dev, 2 * GiB, 20_000);
    const after = await df(guest);
    const sumsAfter = await checksums(guest);
    out(`   guest: df -B1 ${MNT}\n     ${after.line}`);
    out(`   guest: md5sum\n     ${sumsAfter.replace(/\n/g, '\n     ')}`);
    const ok = r?.grown === true && after.total - before.total >= 0.9 * GiB && sumsAfter === sumsBefore && r.fs_bytes === after.total;
    out(ok ? '   OK: df in the guest shows the grown filesystem, the files are unchanged.' : '   FAILED: the filesystem did not grow as the guest reports it.');
    return ok;
  } finally {
    await guest.exec(`umount ${MNT}`).catch(() => undefined);
    if (attached) await compute.request('DELETE', `/v2/${project}/servers/${guest.uuid}/os-volume_attachments/${v.id}`).catch(() => undefined);
    // The detach completes asynchronously; the delete is refused until it has.
    for (let i = 0; i < 100; i++) {
      const del = await volume.request('DELETE', `/v3/${project}/volumes/${v.id}`).then(() => true, () => false);
      if (del) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
