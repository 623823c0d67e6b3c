import { describe, expect, it } from 'vitest';
import { exec, execRaw } from '../../src/volume/backends/exec.js';
import { parseTargets } from '../../src/volume/backends/tgt.js';

describe('backend exec helper', () => {
  it('returns stdout of a successful command', async () => {
    expect(await exec('echo', ['hello'])).toBe('hello\n');
  });

  it('reports a failed command as a final BackendFailed naming the command, status and stderr', async () => {
    const err = await exec('sh', ['-c', 'echo boom >&2; exit 3']).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'BackendFailed', status: 500, retryable: false });
    expect((err as Error).message).toContain("sh -c 'echo boom >&2; exit 3'");
    expect((err as Error).message).toContain('status 3: boom');
  });

  it('reports a timeout as a retryable BackendFailed', async () => {
    const t = Date.now();
    const err = await exec('sleep', ['5'], { timeoutMs: 100 }).catch((e: unknown) => e);
    expect(Date.now() - t).toBeLessThan(2000);
    expect(err).toMatchObject({ code: 'BackendFailed', retryable: true });
    expect((err as Error).message).toContain('sleep 5` timed out after 100 ms');
  });

  it('reports a missing program as BackendFailed', async () => {
    await expect(execRaw('no-such-program-oe', [])).rejects.toMatchObject({ code: 'BackendFailed', retryable: false });
  });
});

describe('parseTargets (tgtadm --op show)', () => {
  const sample = `Target 1: iqn.2026-11.dev.online-extend:vol-a
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            Size: 0 MB, Block size: 1
            Backing store path: None
        LUN: 1
            Type: disk
            Size: 3000 MB, Block size: 512
            Backing store type: rdwr
            Backing store path: /pool/vol-a.raw
            Backing store flags: 
    Account information:
    ACL information:
        ALL
Target 3: iqn.2026-11.dev.online-extend:vol-b
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            Backing store path: None
    Account information:
    ACL information:
`;

  it('reads tids, IQNs, LUN backing files and ACLs', () => {
    expect(parseTargets(sample)).toEqual([
      {
        tid: 1,
        iqn: 'iqn.2026-11.dev.online-extend:vol-a',
        luns: [
          { lun: 0, sizeText: '0 MB' },
          { lun: 1, sizeText: '3000 MB', backingPath: '/pool/vol-a.raw' },
        ],
        acls: ['ALL'],
      },
      { tid: 3, iqn: 'iqn.2026-11.dev.online-extend:vol-b', luns: [{ lun: 0, sizeText: '' }], acls: [] },
    ]);
  });
});
