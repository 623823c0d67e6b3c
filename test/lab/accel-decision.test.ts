/**
 * The accelerator decision (src/lab/accel.ts) with its steps injected: which accelerator each
 * cause leads to, which steps run (none past the first failure: /dev/kvm missing boots nothing),
 * the deadline handed to the boot step, the cache, and ONLINE_EXTEND_ACCEL's values.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ACCEL_MODES, KVM_BOOT_DEADLINE_MS, decideAccel, domainXml, labAccel, parseAccelMode, type AccelProbeSteps, type KvmBootOutcome } from '../../src/lab/index.js';
import { PVM_NOTE, kvmModulesNote, kvmModulesStep, qemuErrorLine } from '../../src/lab/accel.js';

/** Steps that answer as told and record which ran (and the boot's deadline). */
function scripted(a: { dev?: string; vm?: string; boot?: KvmBootOutcome | Error; modules?: readonly string[] | Error }) {
  const ran: string[] = [];
  let deadline: number | undefined;
  const steps: AccelProbeSteps = {
    devKvm: async () => (ran.push('devKvm'), a.dev),
    createVm: async () => (ran.push('createVm'), a.vm),
    bootUnderKvm: async (d) => {
      ran.push('boot');
      deadline = d;
      if (a.boot instanceof Error) throw a.boot;
      return a.boot ?? { ready: true, ms: 800 };
    },
    kvmModules: async () => {
      ran.push('modules');
      if (a.modules instanceof Error) throw a.modules;
      return a.modules ?? [];
    },
  };
  return { steps, ran, deadline: () => deadline };
}

describe('the accelerator decision', () => {
  it.each([
    { name: '/dev/kvm missing', a: { dev: '/dev/kvm missing' }, accel: 'tcg', cause: 'no-dev-kvm', reason: /^\/dev\/kvm missing$/, ran: ['devKvm'] },
    { name: 'KVM_CREATE_VM failing', a: { vm: 'ioctl(KVM_CREATE_VM) failed: 16 Device or resource busy' }, accel: 'tcg', cause: 'kvm-create-vm-failed', reason: /^KVM_CREATE_VM failed: ioctl/, ran: ['devKvm', 'createVm'] },
    { name: 'a guest silent past the deadline', a: { boot: { ready: false, timedOut: true, why: 'no ready line' } as const }, accel: 'tcg', cause: 'kvm-guest-did-not-boot', reason: /^guest did not boot under KVM within 10 s$/, ran: ['devKvm', 'createVm', 'boot', 'modules'] },
    { name: 'QEMU aborting under KVM', a: { boot: { ready: false, timedOut: false, why: 'QEMU stopped: failed to set MSR 0x10a to 0x69' } as const }, accel: 'tcg', cause: 'kvm-guest-did-not-boot', reason: /^guest did not boot under KVM: QEMU stopped: failed to set MSR 0x10a to 0x69$/, ran: ['devKvm', 'createVm', 'boot', 'modules'] },
    { name: 'a boot step that throws', a: { boot: new Error('libvirtd went away') }, accel: 'tcg', cause: 'kvm-guest-did-not-boot', reason: /libvirtd went away$/, ran: ['devKvm', 'createVm', 'boot', 'modules'] },
    { name: 'a PVM KVM aborting', a: { modules: ['kvm_pvm'], boot: { ready: false, timedOut: false, why: 'QEMU stopped: failed to set MSR 0x10a to 0x69' } as const }, accel: 'tcg', cause: 'kvm-guest-did-not-boot', reason: /^guest did not boot under KVM: QEMU stopped: failed to set MSR 0x10a to 0x69; \/dev\/kvm here is PVM \(module kvm_pvm.*Debian's kernel is not$/, ran: ['devKvm', 'createVm', 'boot', 'modules'] },
    { name: 'a PVM KVM silent', a: { modules: ['kvm', 'kvm_pvm'], boot: { ready: false, timedOut: true, why: 'no ready line' } as const }, accel: 'tcg', cause: 'kvm-guest-did-not-boot', reason: /^guest did not boot under KVM within 10 s; \/dev\/kvm here is PVM/, ran: ['devKvm', 'createVm', 'boot', 'modules'] },
    { name: 'a hardware KVM beside PVM failing', a: { modules: ['kvm_amd', 'kvm_pvm'], boot: { ready: false, timedOut: true, why: 'no ready line' } as const }, accel: 'tcg', cause: 'kvm-guest-did-not-boot', reason: /^guest did not boot under KVM within 10 s$/, ran: ['devKvm', 'createVm', 'boot', 'modules'] },
    { name: 'a module list that cannot be read', a: { modules: new Error('EACCES'), boot: { ready: false, timedOut: true, why: 'no ready line' } as const }, accel: 'tcg', cause: 'kvm-guest-did-not-boot', reason: /^guest did not boot under KVM within 10 s$/, ran: ['devKvm', 'createVm', 'boot', 'modules'] },
    { name: 'a PVM KVM that boots the guest', a: { modules: ['kvm_pvm'] }, accel: 'kvm', cause: 'kvm-boots', reason: /^probe guest booted under KVM in 0\.8 s$/, ran: ['devKvm', 'createVm', 'boot'] },
    { name: 'a guest that boots', a: {}, accel: 'kvm', cause: 'kvm-boots', reason: /^probe guest booted under KVM in 0\.8 s$/, ran: ['devKvm', 'createVm', 'boot'] },
  ])('chooses $accel for $name, says why, and runs no step past the first failure', async ({ a, accel, cause, reason, ran }) => {
    const s = scripted(a);
    const c = await decideAccel('auto', s.steps);
    expect(c).toMatchObject({ accel, cause, mode: 'auto', deadlineMs: KVM_BOOT_DEADLINE_MS });
    expect(c.reason).toMatch(reason);
    expect(s.ran).toEqual(ran);
    expect(s.deadline()).toBe(ran.includes('boot') ? KVM_BOOT_DEADLINE_MS : undefined);
    expect(Number.isNaN(Date.parse(c.decidedAt))).toBe(false);
  });

  it.each(['kvm', 'tcg'] as const)('takes a forced %s as it is, probing nothing', async (mode) => {
    const s = scripted({ dev: '/dev/kvm missing' });
    const c = await decideAccel(mode, s.steps);
    expect(c).toMatchObject({ accel: mode, cause: 'forced', reason: `forced by ONLINE_EXTEND_ACCEL=${mode}` });
    expect(s.ran).toEqual([]);
  });

  it('measures the time the probe took with the clock it is given', async () => {
    let t = 1000;
    const s = scripted({});
    const steps: AccelProbeSteps = { ...s.steps, bootUnderKvm: async (d) => ((t += 2500), s.steps.bootUnderKvm(d)) };
    const c = await decideAccel('auto', steps, { now: () => t, deadlineMs: 4000 });
    expect(c.probeMs).toBe(2500);
    expect(s.deadline()).toBe(4000);
  });
});

describe('the modules providing /dev/kvm', () => {
  let dir = '';
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  it.each([
    [[], []],
    [['kvm', 'kvm_pvm'], ['kvm_pvm']],
    [['kvm', 'kvm_intel', 'loop'], ['kvm_intel']],
    [['kvm_amd', 'kvm_pvm'], ['kvm_amd', 'kvm_pvm']],
  ])('are read from a /sys/module holding %j as %j', async (present, found) => {
    dir = mkdtempSync(join(tmpdir(), 'oe-sysmod-'));
    for (const m of present) mkdirSync(join(dir, m));
    expect(await kvmModulesStep(dir)).toEqual(found);
  });

  it('name PVM only when no hardware KVM module is loaded', () => {
    expect(kvmModulesNote(['kvm_pvm'])).toBe(PVM_NOTE);
    expect(kvmModulesNote(['kvm_intel', 'kvm_pvm'])).toBeUndefined();
    expect(kvmModulesNote([])).toBeUndefined();
  });
});

describe('the decision cached in the lab dir', () => {
  let dir = '';
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const lab = (d: string) => ({ dir: d, libvirtUri: 'qemu+unix:///system?socket=/nonexistent', kernel: '/k', initrd: '/i', cmdline: 'c' });

  it('probes once per lab dir and answers later calls from accel.json', async () => {
    dir = mkdtempSync(join(tmpdir(), 'oe-accel-'));
    const s = scripted({ vm: 'ioctl(KVM_CREATE_VM) failed' });
    const first = await labAccel(lab(dir), 'auto', { steps: s.steps });
    const again = await labAccel(lab(dir), 'auto', { steps: s.steps });
    expect(s.ran).toEqual(['devKvm', 'createVm']);
    expect(again).toEqual(first);
    expect(JSON.parse(readFileSync(join(dir, 'accel.json'), 'utf8'))).toMatchObject({ accel: 'tcg', cause: 'kvm-create-vm-failed' });
  });

  it('does not let a forced mode read or overwrite the cached probe', async () => {
    dir = mkdtempSync(join(tmpdir(), 'oe-accel-'));
    const s = scripted({ dev: '/dev/kvm missing' });
    await labAccel(lab(dir), 'auto', { steps: s.steps });
    expect((await labAccel(lab(dir), 'kvm', { steps: s.steps })).accel).toBe('kvm');
    expect((await labAccel(lab(dir), 'auto', { steps: s.steps })).cause).toBe('no-dev-kvm');
    expect(s.ran).toEqual(['devKvm']);
  });
  it.each([
    { probe: { boot: { ready: false, timedOut: false, why: 'QEMU stopped: failed to set MSR 0x10a to 0x69' } as const }, forced: 'kvm', warns: true },
    { probe: { boot: { ready: false, timedOut: false, why: 'QEMU stopped' } as const }, forced: 'tcg', warns: false },
    { probe: {}, forced: 'kvm', warns: false },
    { probe: { dev: '/dev/kvm missing' }, forced: 'kvm', warns: false },
  ] as const)('warns when $forced is forced after a probe that said $probe: $warns', async ({ probe, forced, warns }) => {
    dir = mkdtempSync(join(tmpdir(), 'oe-accel-'));
    await labAccel(lab(dir), 'auto', { steps: scripted(probe).steps });
    const lines: string[] = [];
    const c = await labAccel(lab(dir), forced, { steps: scripted(probe).steps, log: (m) => lines.push(m) });
    expect(c.accel).toBe(forced);
    expect(lines.some((l) => /^warning: ONLINE_EXTEND_ACCEL=kvm forces KVM, but this lab's probe found that guests do not boot under it here \(guest did not boot under KVM: .*\): guests will not come up$/.test(l))).toBe(warns);
  });
});

describe('ONLINE_EXTEND_ACCEL', () => {
  it.each([
    [undefined, 'auto'],
    ['', 'auto'],
    ['auto', 'auto'],
    ['KVM', 'kvm'],
    [' tcg ', 'tcg'],
  ])('reads %j as %s', (v, mode) => expect(parseAccelMode(v)).toBe(mode));

  it('refuses anything else, naming the variable and the values it takes', () => {
    expect(() => parseAccelMode('hvf')).toThrow(/ONLINE_EXTEND_ACCEL: expected one of auto, kvm, tcg, got "hvf"/);
    expect(ACCEL_MODES).toEqual(['auto', 'kvm', 'tcg']);
  });
});

describe('the guest domain under each accelerator', () => {
  const base = { name: 'g', uuid: '7c9e6679-7425-40de-944b-e07fc1f90ae7', kernel: '/k', initrd: '/i', cmdline: 'c', consoleLog: '/l', shellSocket: '/s' };
  it.each([
    [undefined, "<domain type='qemu'>", false],
    ['tcg', "<domain type='qemu'>", false],
    ['kvm', "<domain type='kvm'>", true],
  ] as const)('with accel %s is %s, host CPU %s', (accel, head, hostCpu) => {
    const xml = domainXml({ ...base, ...(accel ? { accel } : {}) });
    expect(xml.startsWith(head)).toBe(true);
    expect(xml.includes("<cpu mode='host-passthrough'/>")).toBe(hostCpu);
  });
});

describe("QEMU's error line", () => {
  it.each([
    [
      "error: Failed to create domain from /tmp/x/probe.xml\nerror: internal error: qemu unexpectedly closed the monitor: 2026-11-30T08:27:15.929824Z qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\nqemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.",
      'failed to set MSR 0x10a to 0x69',
    ],
    ['Could not access KVM kernel module: No such file or directory\nqemu-system-x86_64: failed to initialize kvm: No such file or directory', 'failed to initialize kvm: No such file or directory'],
    ["error: Failed to create domain from /tmp/x.xml\nerror: unsupported configuration: Domain requires KVM, but it is not available. Check that virtualization is enabled in the host BIOS", 'unsupported configuration: Domain requires KVM, but it is not available. Check that virtualization is enabled in the host BIOS'],
    ['error: cannot open /var/lib/x/y.img', 'cannot open …'],
  ])('of %j is %j, without paths', (text, line) => expect(qemuErrorLine(text)).toBe(line));
});
