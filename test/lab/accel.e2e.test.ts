/**
 * The KVM probe on this machine, for real: a lab decides its accelerator once (with a reason of
 * a known class, within a bound), caches it, and a guest defined with the chosen accelerator
 * boots. Which accelerator is the machine's business; the class of the reason must match what
 * the machine has (/dev/kvm absent → no-dev-kvm; present → booted, or one of the KVM failures).
 */
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { KVM_BOOT_DEADLINE_MS, bootGuest, labDown, labUp, virsh, type GuestShell, type LabInfo } from '../../src/lab/index.js';
import { e2eMissing } from '../support/e2e.js';
import { describeReal } from '../support/real.js';

/** virsh create, QEMU start-up and destroy around the boot deadline, on a loaded 2-core machine. */
const PROBE_BOUND_MS = KVM_BOOT_DEADLINE_MS + 20_000;

describeReal(e2eMissing())('the KVM probe on this machine', () => {
  let dir = '';
  let lab: LabInfo | undefined;
  let guest: GuestShell | undefined;
  const log = (m: string): void => console.log(`[accel] ${m}`);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'oe-accel-lab-'));
    lab = await labUp({ dir, install: false, accel: 'auto', log });
  }, 900_000);

  afterAll(async () => {
    await guest?.destroy().catch(() => {});
    if (dir) await labDown({ dir, log }).catch((e: unknown) => console.error('labDown failed', e));
  }, 120_000);

  it('answers kvm or tcg with a reason of the class this machine calls for, within a bound', () => {
    if (!lab) throw new Error('no lab');
    const a = lab.accel;
    console.log(`[accel] ${a.accel}: ${a.reason} (probe ${a.probeMs} ms)`);
    expect(a.mode).toBe('auto');
    expect(a.probeMs).toBeLessThanOrEqual(PROBE_BOUND_MS);
    if (!existsSync('/dev/kvm')) {
      expect(a).toMatchObject({ accel: 'tcg', cause: 'no-dev-kvm' });
      expect(a.probeMs).toBeLessThan(1000); // nothing booted
    } else if (a.accel === 'tcg') {
      expect(['kvm-create-vm-failed', 'kvm-guest-did-not-boot']).toContain(a.cause);
      expect(a.reason).toMatch(a.cause === 'kvm-create-vm-failed' ? /^KVM_CREATE_VM failed: \S/ : /^guest did not boot under KVM(?: within \d+ s|: \S)/);
      // A KVM provided by PVM alone (this project's machine since 2026-11-29) is named as the why.
      const pvmOnly = existsSync('/sys/module/kvm_pvm') && !existsSync('/sys/module/kvm_intel') && !existsSync('/sys/module/kvm_amd');
      if (a.cause === 'kvm-guest-did-not-boot') expect(a.reason.includes('/dev/kvm here is PVM')).toBe(pvmOnly);
    } else {
      expect(a).toMatchObject({ accel: 'kvm', cause: 'kvm-boots' });
    }
    expect(existsSync(join(dir, 'accel.json'))).toBe(true);
  });

  it('decides once per lab dir: labUp again answers from the cache, probing nothing', async () => {
    if (!lab) throw new Error('no lab');
    const again = await labUp({ dir, install: false, accel: 'auto' });
    expect(again.accel).toEqual(lab.accel);
  }, 60_000);

  it('boots a guest defined with the chosen accelerator', async () => {
    if (!lab) throw new Error('no lab');
    guest = await bootGuest(lab, { name: 'accel-e2e' });
    const xml = await virsh(lab, ['dumpxml', guest.uuid]);
    expect(xml).toContain(`<domain type='${lab.accel.accel === 'kvm' ? 'kvm' : 'qemu'}'`);
    expect(/<cpu mode='host-passthrough'/.test(xml)).toBe(lab.accel.accel === 'kvm');
    expect((await guest.sizes()).vda).toBe(1024 * 1024);
  }, 120_000);
});
