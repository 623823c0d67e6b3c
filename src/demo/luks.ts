/**
 * The demo's encrypted-volume part (`online-extend demo` calls `demoLuks` once its guest runs):
 * a 1 GiB QEMU-native LUKS volume is created, attached, extended online to 2 GiB through the
 * volume API, and the guest's own report of the disk's size is printed before and after, with
 * the LUKS payload offset that explains the difference from the volume's size. Everything it
 * makes it removes again (through the APIs), also when a step fails.
 */
import type { GuestShell } from '../lab/index.js';
import type { ApiClient } from '../rpc/httpClient.js';
import { formatBytes } from '../cli/sizes.js';
import { GiB } from '../util/units.js';
import { waitForExtend, type ExtendProgressView } from './extendWait.js';

/** What demoLuks needs from the demo: its clients (the volume one at our latest microversion), project, running guest and printer. */
export interface DemoLuksContext {
  compute: ApiClient;
  volume: ApiClient;
  project: string;
  guest: GuestShell;
  out: (s: string) => void;
  /** The backend to encrypt on (default `file`): its encrypted volume type is `<backend>-luks`. */
  backend?: string;
}

/** Our view of a volume (`GET …/volumes/{id}/os-online-extend`), the fields shown here. */
interface LuksVolume extends ExtendProgressView {
  payload_offset: number | null;
  guest_size_bytes: number | null;
}

/**
 * Runs the LUKS part (see the file header). True when the guest saw exactly 2 GiB minus the
 * payload offset after the extend; throws (Error, or the APIs' ServiceErrors) when a step fails.
 */
export async function demoLuks(ctx: DemoLuksContext): Promise<boolean> {
  const { compute, volume, project, guest, out } = ctx;
  const backend = ctx.backend ?? 'file';
  const type = `${backend}-luks`;
  const show = async (id: string): Promise<LuksVolume> =>
    (await volume.request<{ volume: LuksVolume }>('GET', `/v3/${project}/volumes/${id}/os-online-extend`)).body.volume;

  out(`L1. [${type}] creating a 1 GiB LUKS-encrypted volume (qemu-img create -f luks, a random passphrase per volume)…`);
  const t0 = performance.now();
  const id = (await volume.request<{ volume: { id: string } }>('POST', `/v3/${project}/volumes`, { volume: { name: `demo-${type}`, size: 1, volume_type: type } })).body.volume.id;
  let attached = false;
  try {
    const made = await show(id);
    const offset = made.payload_offset;
    if (offset === null) throw new Error(`volume ${id} has no payload offset (status ${made.status})`);
    out(`    volume ${id} made in ${((performance.now() - t0) / 1000).toFixed(2)} s: ${made.size_bytes} bytes, LUKS payload offset ${offset} bytes (${formatBytes(offset)})`);

    out(`L2. [${type}] attaching it (a private, ephemeral libvirt secret; <encryption format='luks'>)…`);
    await compute.request('POST', `/v2/${project}/servers/${guest.uuid}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
    attached = true;
    const dev = await guest.deviceForSerial(id, 20_000);
    if (!dev) throw new Error(`the guest never showed volume ${id}`);
    const before = await guest.waitForSize(dev, GiB - offset, 20_000);
    out(`    the guest sees /dev/${dev} = ${before} bytes = 1 GiB − ${offset} (the volume minus the LUKS header)`);

    out(`L3. [${type}] extending it online to 2 GiB through the volume API…`);
    const t1 = performance.now();
    await volume.request('POST', `/v3/${project}/volumes/${id}/action`, { 'os-extend': { new_size: 2 } });
    const cur = await waitForExtend<LuksVolume>(volume, project, id);
    if (cur.status !== 'in-use') throw new Error(`extend ended ${cur.status}: ${cur.extend?.error ?? ''}`);
    const after = await guest.waitForSize(dev, 2 * GiB - offset, 20_000);
    out(
      `L4. [${type}] the guest itself reports /dev/${dev}: before ${before} bytes, after ${after} bytes (2 GiB − ${offset}), ` +
        `${((performance.now() - t1) / 1000).toFixed(2)} s after the API call; the volume is ${cur.size_bytes} bytes`,
    );
    return after === 2 * GiB - offset && cur.guest_size_bytes === after;
  } finally {
    if (attached) await compute.request('DELETE', `/v2/${project}/servers/${guest.uuid}/os-volume_attachments/${id}`).catch((err: unknown) => out(`    detach failed: ${(err as Error).message}`));
    await volume.request('DELETE', `/v3/${project}/volumes/${id}`).catch((err: unknown) => out(`    volume ${id} delete failed: ${(err as Error).message}`));
  }
}
