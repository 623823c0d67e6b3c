import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import type { ServiceError } from '../../src/errors.js';
import { exec, execRaw } from '../../src/volume/backends/exec.js';
import { TGTADM_UNREACHABLE, Tgt } from '../../src/volume/backends/tgt.js';
import { describeReal } from '../support/real.js';

describe('the backends\' exec adapter (host runner → BackendFailed)', () => {
  it('returns stdout of a successful command', async () => {
    expect(await exec('echo', ['hello'])).toBe('hello\n');
  });

  it('reports a failed command as a final BackendFailed: the operation and status in public, the command line and stderr in detail', async () => {
    const err = (await exec('sh', ['-c', 'echo boom >&2; exit 3'], { what: 'test the helper' }).catch((e: unknown) => e)) as ServiceError;
    expect(err).toMatchObject({ code: 'BackendFailed', status: 500, final: true });
    expect(err.message).toBe('Storage backend failed: cannot test the helper: sh exited with status 3');
    expect(err.reason).toBe('cannot test the helper: sh exited with status 3');
    expect(err.detail).toContain("sh -c 'echo boom >&2; exit 3'");
    expect(err.detail).toContain('status 3: boom');
  });

  it('never puts the arguments (paths) of a command in the public message', async () => {
    const path = '/tmp/secret-dir/vol-1.raw';
    const err = (await exec('sh', ['-c', 'exit 1', path]).catch((e: unknown) => e)) as ServiceError;
    expect(err.message).not.toContain('/tmp');
    expect(err.reason).not.toContain('/tmp');
    expect(err.detail).toContain(path);
  });

  it('treats an exit the caller declares transient as uncertain', async () => {
    const err = (await exec('sh', ['-c', 'exit 107'], { transient: (r) => r.code === 107 }).catch((e: unknown) => e)) as ServiceError;
    expect(err).toMatchObject({ code: 'BackendFailed', final: false });
    const other = (await exec('sh', ['-c', 'exit 22'], { transient: (r) => r.code === 107 }).catch((e: unknown) => e)) as ServiceError;
    expect(other).toMatchObject({ code: 'BackendFailed', final: true });
  });

  it('reports a timeout as an uncertain BackendFailed', async () => {
    const t = Date.now();
    const err = (await exec('sleep', ['5'], { timeoutMs: 100 }).catch((e: unknown) => e)) as ServiceError;
    expect(Date.now() - t).toBeLessThan(2000);
    expect(err).toMatchObject({ code: 'BackendFailed', final: false });
    expect(err.message).toContain('sleep timed out after 100 ms');
    expect(err.detail).toContain('sleep 5');
  });

  it('reports a missing program as a final BackendFailed by its errno', async () => {
    const err = (await execRaw('no-such-program-oe', ['/some/path']).catch((e: unknown) => e)) as ServiceError;
    expect(err).toMatchObject({ code: 'BackendFailed', final: true });
    expect(err.message).toContain('(ENOENT)');
    expect(err.message).not.toContain('/some/path');
  });
});

const tgtadmMissing = spawnSync('sh', ['-c', 'command -v tgtadm']).status === 0 ? undefined : 'tgtadm is not installed (apt-get install tgt)';

describeReal(tgtadmMissing)('tgtadm exit status', () => {
  it('is 107 when tgtd cannot be reached, which the backend classifies as uncertain', async () => {
    // A control port nobody serves: tgtadm exits ENOTCONN whatever the request.
    const tgt = new Tgt({ controlPort: 3999 });
    const r = await tgt.raw(['--op', 'show', '--mode', 'target']).catch(() => undefined);
    if (r === undefined) return expect.fail('tgtadm could not run');
    expect(r.code).toBe(TGTADM_UNREACHABLE);
    expect(Tgt.unreachable(r)).toBe(true);
    const err = (await tgt.show().catch((e: unknown) => e)) as ServiceError;
    expect(err).toMatchObject({ code: 'BackendFailed', final: false });
  });
});
