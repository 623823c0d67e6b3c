/**
 * The guest agent wrapper (agent.ts) and what growfs.ts reads from the guest: libvirt's errors
 * read as "no agent" or "command failed", guest-exec's base64 output decoded, and the probe,
 * stat -f, dumpe2fs and sfdisk outputs parsed (the real guest runs in test/e2e/guest-fs.e2e.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { AgentCommandFailed, AgentExecTimeout, AgentUnavailable, GuestAgent } from '../../src/virt/libvirt/agent.js';
import { FakeDriver } from '../../src/virt/fake/driver.js';
import {
  freeSectorsAfter,
  growFilesystem,
  parseDumpe2fs,
  parseProbe,
  parseSfdiskLabel,
  parseStatFs,
  serialMatches,
  unescapeMountField,
} from '../../src/virt/libvirt/growfs.js';
import { LibvirtError, LibvirtTimeoutError, VirErrorCode } from '../../src/virt/libvirt/remote/errors.js';

const libvirtError = (code: number, message: string): LibvirtError =>
  new LibvirtError({ code, domain: 10, message, level: 2, str1: null, str2: null, str3: null, int1: 0, int2: 0 }, 'QEMU_DOMAIN_AGENT_COMMAND');

/** An agent channel answering from a script: each call gets the next reply (text or error). */
function scripted(replies: Array<string | Error>): { agent: GuestAgent; sent: Array<{ cmd: unknown; timeout: number; marginMs?: number }> } {
  const sent: Array<{ cmd: unknown; timeout: number; marginMs?: number }> = [];
  const agent = new GuestAgent({
    agentCommand: (cmd, timeout, marginMs) => {
      sent.push({ cmd: JSON.parse(cmd), timeout, ...(marginMs !== undefined ? { marginMs } : {}) });
      const r = replies.shift();
      if (r === undefined) return Promise.reject(new Error('no reply scripted'));
      return r instanceof Error ? Promise.reject(r) : Promise.resolve(r);
    },
  });
  return { agent, sent };
}

describe('GuestAgent', () => {
  it.each([
    ['agent not connected', VirErrorCode.AGENT_UNRESPONSIVE, 'Guest agent is not responding: QEMU guest agent is not connected', AgentUnavailable],
    ['agent silent past the timeout', VirErrorCode.AGENT_UNRESPONSIVE, 'Guest agent is not responding: Guest agent not available for now', AgentUnavailable],
    ['no agent channel in the domain', VirErrorCode.ARGUMENT_UNSUPPORTED, 'argument unsupported: QEMU guest agent is not configured', AgentUnavailable],
    ['agent out of sync', VirErrorCode.AGENT_UNSYNCED, 'guest agent replied with wrong id to guest-sync', AgentUnavailable],
    ['domain not running', VirErrorCode.OPERATION_INVALID, 'Requested operation is not valid: domain is not running', AgentUnavailable],
    ['command refused by the agent', VirErrorCode.INTERNAL_ERROR, "internal error: unable to execute QEMU agent command 'guest-exec': Failed to execute child process", AgentCommandFailed],
  ] as const)('reads libvirt error %s (code %i) as %O', async (_what, code, message, kind) => {
    const { agent } = scripted([libvirtError(code, message)]);
    const err = await agent.ping().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(kind);
    expect((err as Error).message).toContain(message);
  });

  it('lets other libvirt errors through unchanged (the driver classifies them)', async () => {
    const e = libvirtError(VirErrorCode.NO_DOMAIN, 'Domain not found');
    const { agent } = scripted([e]);
    await expect(agent.ping()).rejects.toBe(e);
  });

  it.each([
    ['not JSON', 'nope'],
    ['JSON without a return value', '{"error":{"class":"GenericError"}}'],
  ])('refuses a reply that is %s', async (_what, reply) => {
    const { agent } = scripted([reply]);
    await expect(agent.command('guest-info')).rejects.toBeInstanceOf(AgentCommandFailed);
  });

  it('sends guest-ping with the given timeout in seconds, and gives libvirtd only half a second more', async () => {
    const { agent, sent } = scripted(['{"return":{}}']);
    await agent.ping(3);
    expect(sent).toEqual([{ cmd: { execute: 'guest-ping' }, timeout: 3, marginMs: 500 }]);
  });

  it('reads a guest-ping libvirtd did not answer in time as no agent (a hung agent keeps libvirtd in its 5 s sync)', async () => {
    const { agent } = scripted([new LibvirtTimeoutError('qemu:///system', 'QEMU_DOMAIN_AGENT_COMMAND', 2500)]);
    await expect(agent.ping(2)).rejects.toBeInstanceOf(AgentUnavailable);
  });

  it('runs a program with guest-exec (argv, base64 stdin, output captured) and polls guest-exec-status until it exits', async () => {
    const b64 = (s: string): string => Buffer.from(s).toString('base64');
    const { agent, sent } = scripted([
      '{"return":{"pid":42}}',
      '{"return":{"exited":false}}',
      `{"return":{"exited":true,"exitcode":2,"out-data":"${b64('héllo\n')}","err-data":"${b64('bad\n')}"}}`,
    ]);
    const r = await agent.exec('resize2fs', ['/dev/vdb'], { input: ', +\n' });
    expect(r).toEqual({ exitCode: 2, stdout: 'héllo\n', stderr: 'bad\n' });
    expect(sent.map((s) => s.cmd)).toEqual([
      { execute: 'guest-exec', arguments: { path: 'resize2fs', arg: ['/dev/vdb'], 'capture-output': true, 'input-data': b64(', +\n') } },
      { execute: 'guest-exec-status', arguments: { pid: 42 } },
      { execute: 'guest-exec-status', arguments: { pid: 42 } },
    ]);
  });

  it('reports a signal that ended the program with exit code -1', async () => {
    const { agent } = scripted(['{"return":{"pid":7}}', '{"return":{"exited":true,"signal":9}}']);
    expect(await agent.exec('sleep', ['100'])).toEqual({ exitCode: -1, signal: 9, stdout: '', stderr: '' });
  });

  it('gives up on a program still running at its deadline with AgentExecTimeout', async () => {
    const { agent } = scripted(['{"return":{"pid":7}}', ...Array.from({ length: 50 }, () => '{"return":{"exited":false}}')]);
    const err = await agent.exec('sleep', ['100'], { timeoutMs: 30 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentExecTimeout);
    expect(err).toMatchObject({ path: 'sleep', timeoutMs: 30 });
  });
});

describe('what growfs reads from the guest', () => {
  const VOL = '3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b';

  it.each([
    ['the whole id (virtio-scsi, VPD page 0x80)', VOL, true],
    ['the id cut at 20 bytes (virtio-blk)', VOL.slice(0, 20), true],
    ['a shorter prefix', VOL.slice(0, 19), false],
    ['another id', '00000000-5b7d-4e8f-9', false],
    ['no serial', '', false],
  ])('a guest serial that is %s names the volume: %s', (_what, serial, named) => {
    expect(serialMatches(serial, VOL)).toBe(named);
  });

  const probe = [
    'disk vda 2048 ',
    `disk vdb 327680 ${VOL.slice(0, 20)}`,
    'magic vdb 00 00 00 00 00 00',
    'part vdb vdb1 1 2048 32768',
    'magic vdb1 53 ef 00 00 00 00',
    'part vdb vdb2 2 34816 96256',
    'magic vdb2 53 ef 00 00 00 00',
    'disk vdc 131072 another-volume',
    'disk sda 131072 ../../etc; rm -rf /',
    'part vdc ../x 1 2048 100',
    'mount rootfs / rootfs rw 0 0',
    'mount /dev/vdb2 /mnt/my\\040data ext4',
    'mount /dev/vdb2 /mnt/second ext4',
    'statfs vdb2 147915 1024',
    'statfs vdb2 1 1',
    'statfs vdb1 ',
    'mount proc /proc proc',
  ].join('\n');

  it("finds the volume's disk by serial, with its partitions, superblock magic and mounts (octal escapes undone)", () => {
    const d = parseProbe(probe, VOL);
    expect(d).toMatchObject({
      name: 'vdb',
      sectors: 327680,
      partitions: [
        { name: 'vdb1', number: 1, start: 2048, sectors: 32768 },
        { name: 'vdb2', number: 2, start: 34816, sectors: 96256 },
      ],
    });
    expect(d!.magic.get('vdb2')).toBe('ext');
    expect(d!.magic.has('vdb')).toBe(false);
    expect(d!.mounts.get('vdb2')).toEqual({ mountpoint: '/mnt/my data', fsType: 'ext4' });
    // df's total of the mounted filesystem, when stat -f answered (the first line wins, as for mounts).
    expect([...d!.statfs]).toEqual([['vdb2', 147915 * 1024]]);
  });

  it('finds no disk for a volume no serial names, and refuses two disks with its serial', () => {
    expect(parseProbe(probe, '11111111-2222-3333-4444-555555555555')).toBeUndefined();
    expect(() => parseProbe(`${probe}\ndisk vdd 2048 ${VOL}`, VOL)).toThrow(/two guest disks/);
  });

  it('reads XFS from its magic at offset 0', () => {
    const d = parseProbe(`disk vdb 819200 ${VOL}\nmagic vdb 00 00 58 46 53 42`, VOL);
    expect(d!.magic.get('vdb')).toBe('xfs');
  });

  it.each([
    ['my\\040data', 'my data'],
    ['tab\\011and\\134back', 'tab\tand\\back'],
    ['plain', 'plain'],
  ])('unescapes the /proc/mounts field %s', (raw, text) => {
    expect(unescapeMountField(raw)).toBe(text);
  });

  it('multiplies stat -f total blocks by the fundamental block size, as df -B1 does', () => {
    expect(parseStatFs('147915 1024\n')).toBe(147915 * 1024);
    expect(() => parseStatFs('stat: cannot read')).toThrow(/unexpected/);
  });

  it.each([
    ['has_journal ext_attr resize_inode dir_index filetype extent 64bit flex_bg sparse_super large_file huge_file dir_nlink extra_isize metadata_csum', 'ext4'],
    ['has_journal ext_attr resize_inode dir_index filetype sparse_super large_file', 'ext3'],
    ['ext_attr resize_inode dir_index filetype sparse_super', 'ext2'],
  ])('reads dumpe2fs -h features %s as %s, size = block count × block size', (features, fsType) => {
    const out = `dumpe2fs 1.47.0 (5-Feb-2023)\nFilesystem volume name:   <none>\nFilesystem features:      ${features}\nBlock count:              65536\nBlock size:               1024\n`;
    expect(parseDumpe2fs(out)).toEqual({ bytes: 65536 * 1024, fsType });
  });

  it('reads the label of an sfdisk dump, and counts the free sectors after the last partition (GPT keeps 33 for its backup)', () => {
    expect(parseSfdiskLabel('label: gpt\nlabel-id: X\ndevice: /dev/vdb\n')).toBe('gpt');
    expect(parseSfdiskLabel('')).toBeUndefined();
    const last = { name: 'vdb1', number: 1, start: 2048, sectors: 129024 };
    expect(freeSectorsAfter(262144, last, 'dos')).toBe(262144 - 131072);
    expect(freeSectorsAfter(262144, last, 'gpt')).toBe(262144 - 131072 - 33);
  });
});

/**
 * What growFilesystem answers for a guest it cannot reach through the agent, beside the fake's
 * answer for a guest without one: the same fields, `partitionGrown` false in both (the fake used
 * to leave it out, stored as null). The contract suite checks the shut-off server on both drivers.
 */
describe('an answer without a guest agent, libvirt and fake alike', () => {
  const VOL = '3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b';
  const SERVER = '9b1d2c3e-0000-4000-8000-000000000001';
  const fake = new FakeDriver({
    servers: [{ id: SERVER, name: 'vm', state: 'active', disks: [{ volumeId: VOL, device: 'vdb', kind: 'block', backingBytes: 2 ** 30, hostBytes: 2 ** 30, guestBytes: 2 ** 30 }] }],
  });
  fake.setGuestFilesystem(SERVER, VOL, { type: 'ext4', mountpoint: '/data', partitioned: true });
  fake.setGuestAgent(SERVER, false);
  /** The fields both drivers answer (detail is each driver's own operator text). */
  const shared = ({ detail: _detail, ...rest }: Awaited<ReturnType<typeof growFilesystem>>) => rest;

  it.each([
    ['agent not connected', VirErrorCode.AGENT_UNRESPONSIVE, 'Guest agent is not responding: QEMU guest agent is not connected'],
    ['no agent channel in the domain', VirErrorCode.ARGUMENT_UNSUPPORTED, 'argument unsupported: QEMU guest agent is not configured'],
    ['domain not running', VirErrorCode.OPERATION_INVALID, 'Requested operation is not valid: domain is not running'],
  ] as const)('is the same for %s: not grown (no_guest_agent), partitionGrown false', async (_what, code, message) => {
    const { agent } = scripted([libvirtError(code, message)]);
    const libvirt = shared(await growFilesystem(agent, VOL));
    expect(libvirt).toEqual({ grown: false, reason: 'no_guest_agent', partitionGrown: false });
    expect(shared(await fake.growGuestFilesystem(SERVER, VOL))).toEqual(libvirt);
  });
});
