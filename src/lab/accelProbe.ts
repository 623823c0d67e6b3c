/**
 * The KVM probe's boot step and its once-per-lab cache (the decision is accel.ts's): the lab's
 * guest booted under KVM with the XML the lab then uses, and `<lab dir>/accel.json`.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ACCEL_ENV, decideAccel, devKvmStep, createVmStep, kvmModulesStep, qemuErrorLine, secs, type AccelChoice, type AccelMode, type AccelProbeSteps, type KvmBootOutcome } from './accel.js';
import { bootGuest, type GuestHost } from './domain.js';
import { run, safeRead } from './proc.js';

/** The name of the probe's domain in a lab. */
export const PROBE_GUEST = 'oe-accel-probe';

/**
 * Step 3: boot the lab's guest under KVM (`virsh create` of the XML the lab uses) and wait for
 * its ready line; stop early when the domain is gone (QEMU aborted). Destroys it either way.
 */
export async function bootUnderKvmStep(lab: GuestHost, deadlineMs: number): Promise<KvmBootOutcome> {
  const t0 = performance.now();
  let guest;
  try {
    guest = await bootGuest(lab, { name: PROBE_GUEST, accel: 'kvm', placeholderVda: false, waitReady: false });
  } catch (err) {
    return { ready: false, timedOut: false, why: `QEMU stopped: ${qemuErrorLine((err as Error).message)}` };
  }
  try {
    let nextStateCheck = 0;
    for (;;) {
      if (/^OE-READY\b/m.test(await guest.readLog())) return { ready: true, ms: performance.now() - t0 };
      const elapsed = performance.now() - t0;
      if (elapsed > deadlineMs) return { ready: false, timedOut: true, why: `no ready line within ${secs(deadlineMs)}` };
      if (elapsed >= nextStateCheck) {
        nextStateCheck = elapsed + 250;
        const st = await run('virsh', ['-c', lab.libvirtUri, 'domstate', guest.uuid], { timeoutMs: 15_000 });
        if (st.code !== 0 || !/running|paused/.test(st.stdout)) {
          const qemuLog = safeRead(join(lab.dir, 'libvirt', 'log', 'qemu', `${PROBE_GUEST}.log`));
          return { ready: false, timedOut: false, why: `QEMU stopped: ${qemuErrorLine(qemuLog || st.stderr || st.stdout)}` };
        }
      }
      await sleep(50);
    }
  } finally {
    await guest.destroy().catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Once per lab

/** What the cached decision is valid for: a change (KVM appears, another kernel) means a new probe. */
function hostKey(): string {
  return `dev-kvm=${existsSync('/dev/kvm') ? 'present' : 'absent'} kernel=${release()} modules=${kvmModulesStep().join(',')}`;
}

interface CachedChoice extends AccelChoice {
  hostKey: string;
}

/** The cache file of a lab dir. */
export const accelCacheFile = (labDir: string): string => join(labDir, 'accel.json');

/**
 * The accelerator of the lab in `lab.dir` under `mode`: forced modes at once; `auto` from the
 * lab's cache when it holds a decision for this host, else probed (steps default to the real
 * ones) and cached. Never throws (a probe that fails chooses TCG and says why).
 */
export async function labAccel(lab: GuestHost, mode: AccelMode, opts: { steps?: AccelProbeSteps; deadlineMs?: number; log?: (m: string) => void } = {}): Promise<AccelChoice> {
  const log = opts.log ?? (() => {});
  const file = accelCacheFile(lab.dir);
  const key = hostKey();
  if (mode !== 'auto') {
    const probed = cachedProbe(file, key);
    // Forcing KVM where this lab's probe saw guests not boot under it: say so (they will hang).
    if (mode === 'kvm' && probed?.accel === 'tcg' && probed.cause === 'kvm-guest-did-not-boot') {
      log(`warning: ${ACCEL_ENV}=kvm forces KVM, but this lab's probe found that guests do not boot under it here (${probed.reason}): guests will not come up`);
    }
    return decideAccel(mode, opts.steps ?? realSteps(lab));
  }
  const cached = cachedProbe(file, key);
  if (cached) return cached;
  const choice = await decideAccel('auto', opts.steps ?? realSteps(lab), opts.deadlineMs === undefined ? {} : { deadlineMs: opts.deadlineMs });
  log(`accelerator ${choice.accel} (${choice.reason}; probe took ${choice.probeMs} ms)`);
  try {
    writeFileSync(file, JSON.stringify({ ...choice, hostKey: key }, null, 2) + '\n');
  } catch {
    /* the lab dir went away: nothing to cache into */
  }
  return choice;
}

/** The probe's decision cached in `file` for this host (`key`), if any and readable. */
function cachedProbe(file: string, key: string): AccelChoice | undefined {
  try {
    const cached = JSON.parse(safeRead(file)) as CachedChoice;
    if (cached.hostKey === key && cached.mode === 'auto' && (cached.accel === 'kvm' || cached.accel === 'tcg')) {
      const choice: Partial<CachedChoice> = { ...cached };
      delete choice.hostKey;
      return choice as AccelChoice;
    }
  } catch {
    /* no cache yet, or unreadable: probe */
  }
  return undefined;
}

/** The real probe steps for a lab. */
export function realSteps(lab: GuestHost): AccelProbeSteps {
  return {
    devKvm: () => devKvmStep(),
    createVm: () => createVmStep(),
    bootUnderKvm: (deadlineMs) => bootUnderKvmStep(lab, deadlineMs),
    kvmModules: async () => kvmModulesStep(),
  };
}
