/**
 * `online-extend demo`: the whole story on a real guest. Sets up the lab (packages, guest image,
 * a private libvirtd and tgtd), starts the service (compute + volume APIs, embedded SQLite),
 * boots a guest, and for each backend creates a 1 GiB volume, attaches it, extends it online to
 * 2 GiB through the volume API, and prints what the guest itself reports before and after, with
 * the time each step took. Cleans up everything it started.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { startService, type RunningService } from './app.js';
import { SqliteStore } from './db/sqlite.js';
import { issueToken } from './auth/tokens.js';
import { ApiClient, VOLUME_LATEST } from './rpc/httpClient.js';
import { bootGuest, describeAccel, labDown, labServiceFlags, labUp, readLab, type GuestShell } from './lab/index.js';
import { formatBytes } from './cli/sizes.js';
import { GiB } from './util/units.js';
import { loadConfig } from './config.js';
import { demoGrowFs } from './demo/growFs.js';
import { demoLuks } from './demo/luks.js';
import { waitForExtend } from './demo/extendWait.js';

const PROJECT = 'demo';

/**
 * What `online-extend demo` runs: the backends to show (file, block, iscsi), whether to leave the lab up and to install
 * its Debian packages, and where to print.
 */
export interface DemoOptions {
  backends: string[];
  keepLab: boolean;
  install: boolean;
  out: (s: string) => void;
}

interface Timed {
  step: string;
  ms: number;
}

async function timed<T>(steps: Timed[], step: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const v = await fn();
  steps.push({ step, ms: performance.now() - t0 });
  return v;
}

/**
 * Runs the demo (see the file header) and prints each step and its time. True when the guest saw every volume at exactly
 * 2 GiB; throws (plain Error or ServiceError from the APIs) when a step fails. Cleans up what it started either way.
 */
export async function runDemo(opts: DemoOptions): Promise<boolean> {
  const { out } = opts;
  const steps: Timed[] = [];
  const labWasUp = readLab() !== undefined;
  const dataDir = mkdtempSync(join(tmpdir(), 'oe-demo-'));
  let service: RunningService | undefined;
  let guest: GuestShell | undefined;
  let ok = true;
  const created: string[] = [];
  let clients: { compute: ApiClient; volume: ApiClient } | undefined;
  try {
    out('1. setting up the lab (Debian packages, guest image, private libvirtd and tgtd)…');
    const lab = await timed(steps, 'lab up', () => labUp({ install: opts.install, log: (m) => out(`   ${m}`) }));
    out(`   libvirt ${lab.libvirtUri}, iSCSI portal ${lab.tgtPortal}`);
    out(`   accelerator: ${describeAccel(lab.accel)}; decided in ${lab.accel.probeMs} ms at ${lab.accel.decidedAt} (ONLINE_EXTEND_ACCEL=kvm|tcg|auto)`);

    out('2. starting the service (compute API + volume API, embedded SQLite)…');
    const config = loadConfig({}, labServiceFlags(lab, { dataDir, backends: opts.backends, projectId: PROJECT, logLevel: 'warn' }));
    service = await timed(steps, 'service start', () => startService(config));
    const store = new SqliteStore(join(dataDir, 'online-extend.sqlite'));
    const { token } = await issueToken(store, { userId: 'demo', projectId: PROJECT, roles: ['admin'], ttlMs: 3_600_000 });
    await store.close();
    const compute = new ApiClient({ url: service.computeUrl, token });
    const volume = new ApiClient({ url: service.volumeUrl!, token, headers: VOLUME_LATEST });
    clients = { compute, volume };
    out(`   compute ${service.computeUrl}, volume ${service.volumeUrl}`);

    out(`3. booting a guest under ${lab.accel.accel.toUpperCase()}…`);
    const name = `oe-demo-${randomUUID().slice(0, 8)}`;
    guest = await timed(steps, 'guest boot', () => bootGuest(lab, { name, projectId: PROJECT }));
    out(`   guest ${guest.name} (${guest.uuid}) ready`);

    for (const backend of opts.backends) {
      out(`4. [${backend}] creating a 1 GiB volume and attaching it…`);
      const v = (await timed(steps, `${backend}: create`, () =>
        volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: `demo-${backend}`, size: 1, volume_type: backend } }),
      )).body.volume;
      created.push(v.id);
      await timed(steps, `${backend}: attach`, () =>
        compute.request('POST', `/v2/${PROJECT}/servers/${guest!.uuid}/os-volume_attachments`, { volumeAttachment: { volumeId: v.id } }),
      );
      const dev = await guest.deviceForSerial(v.id, 20_000);
      if (!dev) throw new Error(`the guest never showed volume ${v.id}`);
      const before = await guest.waitForSize(dev, GiB, 20_000);
      out(`   the guest sees /dev/${dev} = ${before} bytes (${formatBytes(before)})`);

      out(`5. [${backend}] extending it online to 2 GiB through the volume API…`);
      const mark = await guest.logMark();
      const t0 = performance.now();
      await volume.request('POST', `/v3/${PROJECT}/volumes/${v.id}/action`, { 'os-extend': { new_size: 2 } });
      await waitForExtend(volume, PROJECT, v.id, { out, t0 });
      const apiDone = performance.now() - t0;
      const after = await guest.waitForSize(dev, 2 * GiB, 20_000);
      const guestDone = performance.now() - t0;
      steps.push({ step: `${backend}: extend (API → volume in-use)`, ms: apiDone }, { step: `${backend}: extend (API → guest reports it)`, ms: guestDone });
      const kernel = await guest.waitForLog(new RegExp(`${dev}: detected capacity change from \\d+ to \\d+`), 5_000, mark).catch(() => undefined);
      out(`6. [${backend}] the guest itself reports /dev/${dev}: before ${before} bytes, after ${after} bytes (${formatBytes(after)})`);
      if (kernel) out(`   guest kernel: "${kernel[0]}"`);
      if (after !== 2 * GiB) ok = false;

      await compute.request('DELETE', `/v2/${PROJECT}/servers/${guest.uuid}/os-volume_attachments/${v.id}`);
      await volume.request('DELETE', `/v3/${PROJECT}/volumes/${v.id}`);
      created.pop();
    }

    // The filesystem grown in the guest by the extend itself (src/demo/growFs.ts).
    if (!(await timed(steps, 'grow-fs: create, format, extend + grow', () => demoGrowFs({ guest: guest!, compute, volume, project: PROJECT, out })))) ok = false;
    if (!(await timed(steps, 'luks: create, attach, extend', () => demoLuks({ compute, volume, project: PROJECT, guest: guest!, out, backend: opts.backends.includes('block') ? 'block' : (opts.backends[0] ?? 'file') })))) ok = false;

    out('\nstep timings:');
    for (const s of steps) out(`  ${s.step.padEnd(44)} ${(s.ms / 1000).toFixed(3)} s`);
    out(
      ok
        ? '\nOK: every volume grew online; the guest saw exactly 2 GiB on each plain volume, 2 GiB minus the LUKS header on the encrypted one, and df showed its ext4 grown with its files unchanged.'
        : '\nFAILED: the guest did not report the new size.',
    );
    return ok;
  } finally {
    out('7. cleaning up…');
    // Volumes left by a failure hold loop devices and iSCSI targets: release them through the APIs.
    for (const id of created) {
      await clients?.compute.request('DELETE', `/v2/${PROJECT}/servers/${guest?.uuid}/os-volume_attachments/${id}`).catch(() => undefined);
      await clients?.volume.request('DELETE', `/v3/${PROJECT}/volumes/${id}`).catch((err: unknown) => out(`   volume ${id} delete failed: ${(err as Error).message}`));
    }
    await guest?.destroy().catch((err: unknown) => out(`   guest destroy failed: ${(err as Error).message}`));
    await service?.close().catch((err: unknown) => out(`   service stop failed: ${(err as Error).message}`));
    rmSync(dataDir, { recursive: true, force: true });
    if (!labWasUp && !opts.keepLab) await labDown({ log: (m) => out(`   ${m}`) });
  }
}
