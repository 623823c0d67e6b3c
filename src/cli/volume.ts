/** `online-extend volume …`: the volume API's client commands. */
import { Option, type Command } from 'commander';
import { loadClientConfig, type ClientConfig } from '../config.js';
import { apiClient, listAll, projectOf } from './client.js';
import { render, type Format } from './output.js';
import { formatBytes, parseSize } from './sizes.js';
import { describeBytes } from '../util/units.js';

type Out = (s: string) => void;

interface VolumeOpts {
  url?: string;
  computeUrl?: string;
  token?: string;
  project?: string;
  format: Format;
}

/** Our own view of a volume (GET …/volumes/{id}/os-online-extend): exact bytes, backend and the extend in progress. */
export interface VolumeView {
  id: string;
  name: string;
  size: number;
  size_bytes: number;
  status: string;
  volume_type: string;
  attachments: Array<{ server_id: string; device: string }>;
  extend: { step: string; target_bytes: number; host_bytes: number | null; error: string | null } | null;
  /** What the latest extend did about the guest's filesystem (absent from an older service). */
  fs_growth?: { requested: boolean; grown: boolean | null; reason: string | null; device: string | null; fs_type: string | null; fs_bytes: number | null } | null;
}

/**
 * The `guest_fs` cell: the latest extend's guest filesystem growth in a few words ('' when it was
 * not asked for). The filesystem's size (`df -B1`'s total) is rarely a round number of MiB, so it
 * is given in bytes with the unit said, and rounded in the largest binary unit beside it:
 * `ext4 on /dev/vdb1, 133169152 bytes (127 MiB)`.
 */
export function fsCell(g: VolumeView['fs_growth']): string {
  if (!g?.requested) return '';
  if (g.grown === null) return 'pending';
  if (!g.grown) return `not grown: ${g.reason ?? '?'}`;
  const what = [g.fs_type ?? 'filesystem', g.device ? `on ${g.device}` : null].filter((x) => x).join(' ');
  return g.fs_bytes === null ? what : `${what}, ${describeBytes(g.fs_bytes)}`;
}

/**
 * One progress line of `volume extend --wait`: the step, the volume's recorded size (the size
 * before the extend until `confirm` records the measured one) and the target. The extend's
 * `host_bytes` is what the compute host saw when the extend began, updated only while `wait_host`
 * polls it (block and iSCSI volumes): shown there alone, as the last reading, never as the size
 * the volume has.
 */
function progressLine(v: VolumeView, e: NonNullable<VolumeView['extend']>): string {
  const host = e.step === 'wait_host' ? `  host last read ${e.host_bytes === null ? '?' : formatBytes(e.host_bytes)}` : '';
  return `step ${e.step}${host}  size ${formatBytes(v.size_bytes)} / target ${formatBytes(e.target_bytes)}`;
}

/** The last line of `volume extend --wait`: the status and the size the extend measured, or that it failed. */
function endLine(v: VolumeView, ok: boolean): string {
  if (!ok) return `${v.status}  size ${formatBytes(v.size_bytes)} as recorded; the extend failed: ${v.extend?.error ?? 'no error recorded'}`;
  return `${v.status}  size ${formatBytes(v.size_bytes)}, measured after the extend`;
}

/** One volume as a table row of `volume list|show|extend`. */
export const volumeRow = (v: VolumeView) => ({
  id: v.id,
  name: v.name,
  status: v.status,
  size: formatBytes(v.size_bytes),
  bytes: v.size_bytes,
  type: v.volume_type,
  attached_to: v.attachments.map((a) => `${a.server_id}:${a.device}`).join(','),
  // An error names its step already (`step rescan: …`, `timed out … at step wait_host`).
  extend: v.extend ? (v.extend.error ?? v.extend.step) : '',
  guest_fs: fsCell(v.fs_growth),
});

/**
 * Adds `volume create|list|show|attach|detach|extend|delete` to `program`; output goes to `out`.
 * Settings (URLs, token, project) come from `loadClientConfig(env, flags)`.
 */
export function registerVolumeCommands(program: Command, out: Out, env: NodeJS.ProcessEnv): void {
  const volume = program.command('volume').description('volumes (the volume API, Cinder’s role)');
  const common = (cmd: Command) =>
    cmd
      .option('--url <url>', 'volume API URL (env ONLINE_EXTEND_VOLUME_URL, default http://127.0.0.1:8776)')
      .option('--token <token>', 'auth token (env ONLINE_EXTEND_TOKEN)')
      .option('--project <id>', "project id, the token's (env ONLINE_EXTEND_PROJECT)")
      .addOption(new Option('-f, --format <format>', 'output format').choices(['table', 'json']).default('table'));
  // The settings of one command: its flags over the environment (config.ts), read once.
  const settings = new WeakMap<VolumeOpts, ClientConfig>();
  const config = (o: VolumeOpts) => {
    let c = settings.get(o);
    if (!c) settings.set(o, (c = loadClientConfig(env, { volumeUrl: o.url, url: o.computeUrl, token: o.token, project: o.project })));
    return c;
  };
  const client = (o: VolumeOpts, compute = false) => apiClient(config(o), compute ? 'compute' : 'volume');
  const project = (o: VolumeOpts) => projectOf(config(o));
  const get = async (o: VolumeOpts, id: string) =>
    (await client(o).request<{ volume: VolumeView }>('GET', `/v3/${project(o)}/volumes/${id}/os-online-extend`)).body.volume;
  const show = (o: VolumeOpts, v: VolumeView) => out(render(o.format, { volume: v }, [volumeRow(v)]));

  common(volume.command('create').description('create a volume'))
    .requiredOption('--size <size>', 'size, e.g. 1GiB')
    .option('--name <name>', 'name', '')
    .option('--type <backend>', 'backend: file, block or iscsi')
    .addOption(new Option('--image-format <fmt>', 'file backend format').choices(['raw', 'qcow2']))
    // The service judges the name (400 for one it does not have): it knows which it offers.
    .option('--encryption <format>', 'encrypt the volume: luks (QEMU-native LUKS; the guest sees the size minus the LUKS header)')
    .action(async (o: VolumeOpts & { size: string; name: string; type?: string; imageFormat?: string; encryption?: string }) => {
      const res = await client(o).request<{ volume: { id: string } }>('POST', `/v3/${project(o)}/volumes`, {
        volume: {
          name: o.name,
          size_bytes: parseSize(o.size),
          ...(o.type ? { volume_type: o.type } : {}),
          ...(o.imageFormat ? { format: o.imageFormat } : {}),
          ...(o.encryption ? { encryption: o.encryption } : {}),
        },
      });
      // Cinder's answer has the size in GiB only: show ours, with the exact bytes.
      show(o, await get(o, res.body.volume.id));
    });

  common(volume.command('list').description('list volumes')).action(async (o: VolumeOpts) => {
    const volumes = await listAll<VolumeView>(client(o), `/v3/${project(o)}/volumes/os-online-extend`, 'volumes');
    out(render(o.format, { volumes }, volumes.map(volumeRow)));
  });

  common(volume.command('show').description('show a volume and its recent actions').argument('<id>')).action(async (id: string, o: VolumeOpts) => {
    const v = await get(o, id);
    const actions = (await client(o).request<{ volumeActions: Array<Record<string, unknown>> }>('GET', `/v3/${project(o)}/volumes/${id}/os-volume-actions`)).body.volumeActions;
    if (o.format === 'json') return out(JSON.stringify({ volume: v, volumeActions: actions }, null, 2));
    out(render('table', v, [volumeRow(v)]));
    out('');
    out(render('table', actions, actions.map((a) => ({ request_id: a.request_id, action: a.action, result: a.result, start: a.start_time, message: a.message, compute_requests: (a.compute_request_ids as string[]).length }))));
  });

  common(volume.command('attach').description('attach a volume to a running server (through the compute API)').argument('<id>'))
    .requiredOption('--server <id>', 'server id')
    .option('--compute-url <url>', 'compute API URL (env ONLINE_EXTEND_URL, default http://127.0.0.1:8774)')
    .action(async (id: string, o: VolumeOpts & { server: string }) => {
      const res = await client(o, true).request<{ volumeAttachment: Record<string, unknown> }>('POST', `/v2/${project(o)}/servers/${o.server}/os-volume_attachments`, {
        volumeAttachment: { volumeId: id },
      });
      out(render(o.format, res.body, [res.body.volumeAttachment]));
    });

  common(volume.command('detach').description('detach a volume from its server').argument('<id>'))
    .option('--compute-url <url>', 'compute API URL')
    .action(async (id: string, o: VolumeOpts) => {
      const v = await get(o, id);
      const server = v.attachments[0]?.server_id;
      if (!server) throw new Error(`volume ${id} is not attached`);
      await client(o, true).request('DELETE', `/v2/${project(o)}/servers/${server}/os-volume_attachments/${id}`);
      show(o, await get(o, id));
    });

  // Both of --grow-fs and --no-grow-fs would otherwise be taken, the last winning: a script that
  // appends one to a command holding the other means something; it is refused instead.
  const growFsFlags = new Set<string>();
  const extend = common(volume.command('extend').description('grow a volume; in-use volumes grow online').argument('<id>'));
  extend.on('option:grow-fs', () => growFsFlags.add('--grow-fs')).on('option:no-grow-fs', () => growFsFlags.add('--no-grow-fs'));
  extend
    .requiredOption('--size <size>', 'new size, e.g. 2GiB')
    .option('--wait', 'wait until the extend has finished, showing progress')
    .option('--timeout <seconds>', 'give up waiting after this long', '900')
    .option('--grow-fs', 'also grow the partition and filesystem on the disk inside the guest (QEMU guest agent), whatever the volume metadata online_extend:grow_fs says')
    .option('--no-grow-fs', 'do not grow the guest filesystem, whatever the volume metadata says')
    .action(async (id: string, o: VolumeOpts & { size: string; wait?: boolean; timeout: string; growFs?: boolean }) => {
      if (growFsFlags.size > 1) {
        extend.error("error: options '--grow-fs' and '--no-grow-fs' cannot be used together: give one (or neither: the volume metadata online_extend:grow_fs decides)", {
          exitCode: 2,
          code: 'online-extend.conflictingOption',
        });
      }
      const bytes = parseSize(o.size);
      const c = client(o);
      // Without either flag the key is left out: the volume's metadata decides.
      const res = await c.request('POST', `/v3/${project(o)}/volumes/${id}/action`, {
        'os-extend-bytes': { new_bytes: bytes, ...(o.growFs === undefined ? {} : { 'online_extend:grow_fs': o.growFs }) },
      });
      if (!o.wait) return show(o, await get(o, id));
      const started = Date.now();
      let last = '';
      for (;;) {
        const v = await get(o, id);
        if (v.status !== 'extending') {
          const ok = v.status === 'in-use' || v.status === 'available';
          if (o.format === 'table') out(`${((Date.now() - started) / 1000).toFixed(2)}s  ${endLine(v, ok)} (request ${res.requestId})`);
          show(o, v);
          if (!ok) process.exitCode = 1;
          return;
        }
        const line = v.extend ? progressLine(v, v.extend) : 'extending';
        if (line !== last && o.format === 'table') out(`${((Date.now() - started) / 1000).toFixed(2)}s  ${line}`);
        last = line;
        if (Date.now() - started > Number(o.timeout) * 1000) throw new Error(`still extending after ${o.timeout}s (${line})`);
        await new Promise((r) => setTimeout(r, 20));
      }
    });

  common(volume.command('delete').description('delete a volume that is not attached (available, error or error_extending)').argument('<id>')).action(async (id: string, o: VolumeOpts) => {
    await client(o).request('DELETE', `/v3/${project(o)}/volumes/${id}`);
    out(o.format === 'json' ? JSON.stringify({ deleted: id }) : `deleted ${id}`);
  });
}
