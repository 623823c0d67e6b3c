/**
 * Issue C benchmark: the end-to-end online extend of an in-use volume on a real lab guest, from
 * the volume API call (`POST /v3/{p}/volumes/{id}/action` os-extend-bytes) to the guest's own
 * report of the new size (its `OE-SIZES` console line), against the bare primitives measured in
 * the same run on a twin volume attached to the same guest:
 *
 *   grow      block: truncate the loop's backing file      iscsi: IscsiBackend.extend (grow + LUN refresh + measure)
 *   rescan    block: `losetup -c /dev/loopN`                iscsi: nothing (QEMU's libiscsi reads the LUN size)
 *   resize    virDomainBlockResize(…, BYTES) on a persistent libvirt connection (the project's RemoteClient)
 *   guest     from the resize's return to the guest's report
 *
 * overhead = median(total) − median(grow + rescan + resize + guest). The guest polls its sizes
 * every 0.1 s (scripts/lab/guest-init.sh), which adds 0–100+ ms of noise to both sides; the
 * "host-side" figures leave the guest out: API call → QEMU resized (the extend_volume instance
 * action's finish) against grow + rescan + resize.
 *
 * Per-step times come from the audit records (ms timestamps, no extra polling load): the volume's
 * os-volume-actions (start = request accepted, finish = in-use) and the compute instance actions
 * of its compute request ids (rescan_volume and extend_volume are instance actions; the get_blockdev
 * polls between them are counted from the ids, reads not being audited).
 *
 *   node --import tsx bench/e2e.ts     (BENCH_E2E_RUNS=15, BENCH_E2E_BACKENDS=block,iscsi)
 */
import { execFile } from 'node:child_process';
import { watch } from 'node:fs';
import { truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { BLOCK_RESIZE_BYTES, RemoteClient } from '../src/virt/libvirt/remote/client.js';
import type { RemoteDomain } from '../src/virt/libvirt/remote/protocol.js';
import { BlockBackend, IscsiBackend } from '../src/volume/backends/index.js';
import { describeAccel, type GuestShell as Guest } from '../src/lab/index.js';
import { startLabService, type InstanceActionView, type LabService } from '../test/support/labService.js';

const run = promisify(execFile);
const MiB = 2 ** 20;
const START = 64 * MiB;
const PROJECT = 'benche2e';
/** Issue 12's target: the end-to-end overhead over the primitives, ms. */
export const TARGET_OVERHEAD_MS = 20;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const ms = (iso: string | null | undefined): number => {
  if (!iso) throw new Error('an action without a timestamp');
  return Date.parse(iso);
};
/** Wall clock in ms with sub-ms resolution, on the same epoch as Date.now() (audit timestamps). */
const wall = (): number => performance.timeOrigin + performance.now();

/**
 * When the guest's own report first shows `to` for `dev` (the OE-SIZES line Guest.waitForSize
 * reads), and when its kernel's `detected capacity change` line appeared (that one has no 0.1 s
 * reporter loop behind it). Driven by inotify on the console log (plus a 50 ms safety poll)
 * rather than a busy poll: the service runs in this process, and polling every few ms would
 * steal its event loop during the very extend being timed.
 */
function guestSees(g: Guest, dev: string, from: number, to: number, mark: number, timeoutMs = 20_000): Promise<{ report: number; kernel: number }> {
  const kre = new RegExp(`${dev}: detected capacity change from ${from / 512} to ${to / 512}\\b`);
  const sre = new RegExp(`^OE-SIZES.* ${dev}=${to}(?: |$)`, 'm');
  return new Promise((resolve, reject) => {
    let kernel: number | undefined;
    let busy = false;
    let again = false;
    let finished = false;
    const finish = (err: Error | undefined, r?: { report: number; kernel: number }): void => {
      if (finished) return;
      finished = true;
      watcher.close();
      clearInterval(poll);
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(r!);
    };
    const check = async (): Promise<void> => {
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      try {
        do {
          again = false;
          const tail = (await g.readLog()).slice(mark);
          const now = wall();
          if (kernel === undefined && kre.test(tail)) kernel = now;
          if (sre.test(tail)) return finish(undefined, { report: now, kernel: kernel ?? now });
        } while (again && !finished);
      } catch (err) {
        finish(err as Error);
      } finally {
        busy = false;
      }
    };
    const watcher = watch(g.consoleLog, () => void check());
    const poll = setInterval(() => void check(), 50);
    const timer = setTimeout(() => {
      void g.sizes().then(
        (sz) => finish(new Error(`guest did not report ${dev}=${to} within ${timeoutMs} ms; last seen ${dev}=${sz[dev]}`)),
        (err: unknown) => finish(err as Error),
      );
    }, timeoutMs);
    void check();
  });
}

/** 0–130 ms: the guest's size reporter runs every ~0.1 s; a random start keeps its phase from biasing one side. */
const jitter = (): Promise<void> => sleep(Math.random() * 130);

interface E2eRun {
  total: number;
  toResized: number;
  toKernel: number;
  steps: Record<string, number>;
  polls: number;
}
interface PrimRun {
  grow: number;
  rescan: number;
  resize: number;
  guest: number;
  guestKernel: number;
}

export interface BackendResult {
  backend: string;
  runs: number;
  total_ms: number;
  primitives_ms: number;
  overhead_ms: number;
  host_side_total_ms: number;
  host_side_primitives_ms: number;
  host_side_overhead_ms: number;
  kernel_total_ms: number;
  kernel_primitives_ms: number;
  kernel_overhead_ms: number;
  total_one_poll_ms: number;
  total_two_polls_ms: number;
  runs_with_two_polls: number;
  steps_ms: Record<string, number>;
  primitive_ms: Record<string, number>;
  wait_host_polls: number;
}

async function benchBackend(ls: LabService, client: RemoteClient, dom: RemoteDomain, backend: 'block' | 'iscsi', runs: number, log: (m: string) => void): Promise<BackendResult> {
  const g = ls.guest;
  // E: extended through the product. P: the same kind of volume, grown by the bare primitives.
  const mk = async (name: string): Promise<{ id: string; dev: string; target: string }> => {
    const v = await ls.createVolume({ name, size_bytes: START, volume_type: backend });
    await ls.attach(v.id);
    const shown = await ls.show(v.id);
    const dev = await g.deviceForSerial(v.id, 20_000);
    if (!dev) throw new Error(`the guest never showed ${v.id}`);
    await g.waitForSize(dev, START, 20_000);
    return { id: v.id, dev, target: shown.attachments[0]!.device.replace('/dev/', '') };
  };
  const E = await mk(`bench-${backend}-e2e`);
  const P = await mk(`bench-${backend}-prim`);
  const dir = join(ls.dataDir, 'volumes', backend);
  const block = new BlockBackend({ dir });
  const iscsi = new IscsiBackend({ dir, portal: ls.lab.tgtPortal, ...(ls.lab.tgtControlPort ? { controlPort: ls.lab.tgtControlPort } : {}) });
  const loop = backend === 'block' ? (await block.loopDevices(block.pathOf(P.id)))[0] : undefined;
  if (backend === 'block' && !loop) throw new Error('no loop device for the primitives volume');

  let eBytes = START;
  let pBytes = START;
  const e2e: E2eRun[] = [];
  const prim: PrimRun[] = [];

  const oneE2e = async (grow: number): Promise<E2eRun> => {
    const target = eBytes + grow;
    const mark = await g.logMark();
    await jitter();
    const t0 = wall();
    const res = await ls.extend(E.id, { 'os-extend-bytes': { new_bytes: target } });
    const { report: seen, kernel } = await guestSees(g, E.dev, eBytes, target, mark);
    const v = await ls.settle(E.id, 30_000, 5);
    if (v.status !== 'in-use' || v.size_bytes !== target) throw new Error(`extend ended ${v.status} at ${v.size_bytes}: ${JSON.stringify(v.extend)}`);
    eBytes = target;
    const act = (await ls.volumeActions(E.id)).find((a) => a.request_id === res.requestId);
    if (!act) throw new Error(`no volume action ${res.requestId}`);
    const byId = new Map((await ls.instanceActions()).map((a) => [a.request_id, a]));
    const calls = act.compute_request_ids.map((id) => byId.get(id)).filter((a): a is InstanceActionView => a !== undefined);
    // Reads (get_blockdev polls) are not instance actions: the host saw the size at the latest
    // when assist_extend started, which only happens once a poll reported it.
    const rescan = calls.find((a) => a.action === 'rescan_volume');
    const assist = calls.find((a) => a.action === 'extend_volume');
    if (!rescan || !assist) throw new Error(`missing compute actions: ${JSON.stringify(calls.map((c) => c.action))}`);
    const hostSaw = ms(assist.start_time);
    // The get_blockdev polls are the compute calls between the rescan and the resize.
    const ids = act.compute_request_ids;
    const polls = ids.slice(ids.indexOf(rescan.request_id) + 1, ids.indexOf(assist.request_id));
    const b = {
      accepted: ms(act.start_time), // the volume service has the request (its checks start)
      rescanSent: ms(rescan.start_time), // checks done, volume → extending, storage step done, rescan reached compute
      hostSaw,
      assistStart: ms(assist.start_time),
      resized: ms(assist.finish_time),
      inUse: ms(act.finish_time),
    };
    return {
      total: seen - t0,
      toResized: b.resized - t0,
      toKernel: kernel - t0,
      polls: polls.length,
      steps: {
        'accept (POST → the volume service has it)': b.accepted - t0,
        'checks+storage (get_blockdev/state, grow)': b.rescanSent - b.accepted,
        'rescan (compute, background)': ms(rescan.finish_time) - ms(rescan.start_time),
        'wait_host (rescan sent → host sees it)': b.hostSaw - b.rescanSent,
        'dispatch (host sees it → assist starts)': b.assistStart - b.hostSaw,
        'assist (extend_volume: QEMU resize + read back)': b.resized - b.assistStart,
        'confirm (resized → volume in-use)': b.inUse - b.resized,
        'guest (resized → guest reports it)': seen - b.resized,
      },
    };
  };

  const onePrim = async (grow: number): Promise<PrimRun> => {
    const target = pBytes + grow;
    const mark = await g.logMark();
    await jitter();
    const t0 = wall();
    if (backend === 'block') await truncate(block.pathOf(P.id), target);
    else {
      const got = await iscsi.extend(P.id, target);
      if (got !== target) throw new Error(`IscsiBackend.extend measured ${got}, not ${target}`);
    }
    const t1 = wall();
    if (loop) await run('losetup', ['-c', loop]);
    const t2 = wall();
    await client.blockResize(dom, P.target, target, BLOCK_RESIZE_BYTES);
    const t3 = wall();
    const t4 = await guestSees(g, P.dev, pBytes, target, mark);
    pBytes = target;
    return { grow: t1 - t0, rescan: t2 - t1, resize: t3 - t2, guest: t4.report - t3, guestKernel: t4.kernel - t3 };
  };

  // One warm-up of each (first QMP call on a disk, first tgtadm, JIT), not counted.
  await oneE2e(MiB);
  await onePrim(MiB);
  for (let i = 0; i < runs; i++) {
    // A fresh amount each run (never a no-op), the two kinds interleaved so they share conditions.
    const grow = (i + 2) * MiB + (i % 7) * 4096;
    const e = await oneE2e(grow);
    const p = await onePrim(grow);
    e2e.push(e);
    prim.push(p);
    log(
      `  ${backend} run ${i + 1}/${runs}: total ${e.total.toFixed(0)} ms (to resized ${e.toResized.toFixed(0)}, polls ${e.polls}) | ` +
        `primitives ${(p.grow + p.rescan + p.resize + p.guest).toFixed(0)} ms (grow ${p.grow.toFixed(1)}, rescan ${p.rescan.toFixed(1)}, resize ${p.resize.toFixed(1)}, guest ${p.guest.toFixed(0)}, kernel ${p.guestKernel.toFixed(0)})`,
    );
    if (process.env.BENCH_E2E_VERBOSE) log(`    steps ${JSON.stringify(Object.fromEntries(Object.entries(e.steps).map(([k, v]) => [k.trim().split(' ').slice(0, 2).join(' '), Math.round(v)])))}`);
  }

  for (const v of [E, P]) {
    await ls.detach(v.id);
    await ls.remove(v.id);
  }

  const steps: Record<string, number> = {};
  for (const k of Object.keys(e2e[0]!.steps)) steps[k] = median(e2e.map((r) => r.steps[k]!));
  const total = median(e2e.map((r) => r.total));
  const primitives = median(prim.map((p) => p.grow + p.rescan + p.resize + p.guest));
  const hostTotal = median(e2e.map((r) => r.toResized));
  const hostPrim = median(prim.map((p) => p.grow + p.rescan + p.resize));
  const kernelTotal = median(e2e.map((r) => r.toKernel));
  const kernelPrim = median(prim.map((p) => p.grow + p.rescan + p.resize + p.guestKernel));
  return {
    backend,
    runs,
    total_ms: total,
    primitives_ms: primitives,
    overhead_ms: total - primitives,
    host_side_total_ms: hostTotal,
    host_side_primitives_ms: hostPrim,
    host_side_overhead_ms: hostTotal - hostPrim,
    kernel_total_ms: kernelTotal,
    kernel_primitives_ms: kernelPrim,
    kernel_overhead_ms: kernelTotal - kernelPrim,
    total_one_poll_ms: median(e2e.filter((r) => r.polls <= 1).map((r) => r.total)),
    total_two_polls_ms: median(e2e.filter((r) => r.polls > 1).map((r) => r.total)),
    runs_with_two_polls: e2e.filter((r) => r.polls > 1).length,
    steps_ms: steps,
    primitive_ms: {
      grow: median(prim.map((p) => p.grow)),
      rescan: median(prim.map((p) => p.rescan)),
      resize: median(prim.map((p) => p.resize)),
      guest: median(prim.map((p) => p.guest)),
      'guest (kernel line)': median(prim.map((p) => p.guestKernel)),
    },
    wait_host_polls: median(e2e.map((r) => r.polls)),
  };
}

export async function runE2eBench(opts: { runs?: number; backends?: Array<'block' | 'iscsi'>; log?: (m: string) => void } = {}): Promise<Record<string, number>> {
  const runs = opts.runs ?? Number(process.env.BENCH_E2E_RUNS ?? 15);
  const backends = opts.backends ?? ((process.env.BENCH_E2E_BACKENDS ?? 'block,iscsi').split(',') as Array<'block' | 'iscsi'>);
  const log = opts.log ?? ((m: string) => console.log(m));
  const t0 = Date.now();
  // BENCH_E2E_LOG=debug: the service's own log (pino JSON on stdout, ms timestamps) for a closer look at one step.
  const ls = await startLabService({ project: PROJECT, guestName: `oe-e2e-bench-${process.pid}`, config: { logLevel: process.env.BENCH_E2E_LOG ?? 'silent' } });
  log(`lab, service and guest ready in ${Date.now() - t0} ms; accelerator ${describeAccel(ls.lab.accel)}`);
  const accel = ls.lab.accel.accel;
  const client = new RemoteClient({ uri: ls.lab.libvirtUri });
  const results: BackendResult[] = [];
  try {
    const dom = await client.lookupByUuid(ls.guest.uuid);
    for (const b of backends) results.push(await benchBackend(ls, client, dom, b, runs, log));
  } finally {
    await client.close().catch(() => undefined);
    const errs = await ls.close();
    if (errs.length) log(`cleanup: ${errs.join('; ')}`);
  }

  // The results are numbers: 1 = the guest ran under KVM, 0 = TCG.
  const out: Record<string, number> = { accel_kvm: accel === 'kvm' ? 1 : 0 };
  const f = (x: number): string => x.toFixed(1).padStart(7);
  for (const r of results) {
    log(`\nEnd-to-end online extend, ${r.backend} backend (${r.runs} runs, medians, ms; guest under ${accel.toUpperCase()})`);
    log(`  total: API call → the guest reports the new size   ${f(r.total_ms)}`);
    log(`  sum of primitives (grow+rescan+resize+guest)       ${f(r.primitives_ms)}`);
    log(`  our overhead = total − primitives                   ${f(r.overhead_ms)}   (target ≤ ${TARGET_OVERHEAD_MS})`);
    log(`  host side: API call → QEMU resized                  ${f(r.host_side_total_ms)}`);
    log(`  host side: grow + rescan + resize                   ${f(r.host_side_primitives_ms)}`);
    log(`  host-side overhead                                  ${f(r.host_side_overhead_ms)}`);
    log(`  to the guest kernel's capacity-change line: total ${f(r.kernel_total_ms)}, primitives ${f(r.kernel_primitives_ms)}, overhead ${f(r.kernel_overhead_ms)}`);
    log(`  per step (from the audit records):`);
    for (const [k, v] of Object.entries(r.steps_ms)) log(`    ${k.padEnd(48)} ${f(v)}`);
    log(`    get_blockdev polls in wait_host: median ${r.wait_host_polls}; ${r.runs_with_two_polls}/${r.runs} runs needed a 2nd poll`);
    log(`    total when 1 poll ${f(r.total_one_poll_ms)}, when ≥2 polls ${f(r.total_two_polls_ms)}`);
    log(`  primitives:`);
    for (const [k, v] of Object.entries(r.primitive_ms)) log(`    ${k.padEnd(48)} ${f(v)}`);
    for (const [k, v] of Object.entries(r)) if (typeof v === 'number') out[`${r.backend}_${k}`] = v;
    for (const [k, v] of Object.entries(r.primitive_ms)) out[`${r.backend}_primitive_${k.replace(/\W+/g, '_')}_ms`] = v;
  }
  return out;
}

/**
 * Whether each backend's overhead (total − primitives, to the guest's own report) is within the
 * target. The host-side and kernel-line figures are diagnostics, not judged: the kernel line is
 * missed in some runs (its time then falls back to the report's), which makes that figure swing
 * both ways (−38 / +32 ms in one run), and the host side leaves the guest out.
 */
export function e2eTargetsMet(r: Record<string, number>): boolean {
  const over = Object.entries(r).filter(([k]) => k.endsWith('_overhead_ms') && !k.includes('host_side') && !k.includes('kernel'));
  return over.length > 0 && over.every(([, v]) => v <= TARGET_OVERHEAD_MS);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.exit(e2eTargetsMet(await runE2eBench()) ? 0 : 1);
}
