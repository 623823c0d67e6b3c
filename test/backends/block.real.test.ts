import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BlockBackend } from '../../src/volume/backends/block.js';
import { readLuksHeader } from '../../src/volume/backends/luks.js';
import { newPassphrase } from '../../src/volume/encryption.js';
import { exec } from '../../src/volume/backends/exec.js';
import { describeReal } from '../support/real.js';
import { describeBackendContract, newVolumeId } from './backend.contract.js';

function loopUnavailable(): string | undefined {
  try {
    execFileSync('losetup', ['-f'], { stdio: 'pipe', timeout: 5000 });
    return undefined;
  } catch (err) {
    return `losetup not available (${(err as Error).message.split('\n')[0]})`;
  }
}

/** Detach every loop device whose backing file lies in `dir` (even when a test failed midway). */
async function detachLoopsUnder(dir: string): Promise<void> {
  const out = await exec('losetup', ['-l', '-n', '--raw', '-O', 'NAME,BACK-FILE']);
  for (const line of out.split('\n')) {
    const [dev, back] = line.split(' ', 2);
    if (dev && back && back.startsWith(`${dir}/`)) {
      await exec('losetup', ['-d', dev]).catch(() => undefined);
    }
  }
}

async function makeHarness() {
  const dir = await mkdtemp(join(tmpdir(), 'oe-block-'));
  return {
    dir,
    backend: new BlockBackend({ dir }),
    reopen: () => new BlockBackend({ dir }),
    teardown: async () => {
      await detachLoopsUnder(dir);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

const reason = loopUnavailable();
const describeLoop = describeReal(reason);

describeLoop('block backend (loop devices)', () => {
  describeBackendContract('block', makeHarness);

  let h: Awaited<ReturnType<typeof makeHarness>>;
  beforeAll(async () => {
    h = await makeHarness();
  });
  afterAll(async () => {
    await h?.teardown();
  });

  const sizeOf = async (dev: string) => Number((await exec('blockdev', ['--getsize64', dev])).trim());

  it('grows only the storage: the loop device sees it after the host rescan (losetup -c)', async () => {
    const id = newVolumeId();
    const { connection } = await h.backend.create(id, 8 * 1024 * 1024);
    expect(await sizeOf(connection.source)).toBe(8 * 1024 * 1024);
    expect(await h.backend.extend(id, 24 * 1024 * 1024)).toBe(24 * 1024 * 1024);
    expect(await sizeOf(connection.source)).toBe(8 * 1024 * 1024);
    await exec('losetup', ['-c', connection.source]);
    expect(await sizeOf(connection.source)).toBe(24 * 1024 * 1024);
    await h.backend.delete(id);
  });

  it('puts an encrypted volume\'s LUKS header on the block device the host sees; the payload grows with the device after a rescan', async () => {
    const id = newVolumeId();
    const made = await h.backend.create(id, 8 * 1024 * 1024, { encryption: { format: 'luks', passphrase: newPassphrase() } });
    const dev = made.connection.source;
    const info = (): { format: string; 'virtual-size': number; 'format-specific': { data: { 'payload-offset': number } } } =>
      JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', dev], { encoding: 'utf8' })) as ReturnType<typeof info>;
    expect(info().format).toBe('luks');
    expect(made.encryption).toEqual({ format: 'luks', payloadOffset: info()['format-specific'].data['payload-offset'] });
    expect(await readLuksHeader(dev)).toEqual(made.encryption);
    expect(info()['virtual-size']).toBe(8 * 1024 * 1024 - made.encryption!.payloadOffset);
    await h.backend.extend(id, 24 * 1024 * 1024);
    await exec('losetup', ['-c', dev]);
    expect(info()['virtual-size']).toBe(24 * 1024 * 1024 - made.encryption!.payloadOffset);
    await h.backend.delete(id);
  });

  it('finds its loop device again and re-attaches one that is gone (reboot, crash)', async () => {
    const id = newVolumeId();
    const v = await h.backend.create(id, 4 * 1024 * 1024);
    expect(await h.reopen().connection(id)).toEqual(v.connection);
    await exec('losetup', ['-d', v.connection.source]);
    const again = await h.reopen().connection(id);
    expect(again.source).toMatch(/^\/dev\/loop\d+$/);
    expect(await h.backend.loopDevices(join(h.dir, `${id}.raw`))).toEqual([again.source]);
    await h.backend.delete(id);
    expect(await h.backend.loopDevices(join(h.dir, `${id}.raw`)).catch(() => [])).toEqual([]);
  });

  it('resumes a create that crashed after making the file: attaches the loop device', async () => {
    const id = newVolumeId();
    execFileSync('truncate', ['-s', String(2 * 1024 * 1024), join(h.dir, `${id}.raw`)]);
    const v = await h.backend.create(id, 2 * 1024 * 1024);
    expect(v.connection.source).toMatch(/^\/dev\/loop\d+$/);
    expect(await sizeOf(v.connection.source)).toBe(2 * 1024 * 1024);
    await h.backend.delete(id);
  });

  it('deletes the loop device with the volume and leaves other loop devices alone', async () => {
    const id = newVolumeId();
    const v = await h.backend.create(id, 2 * 1024 * 1024);
    await h.backend.delete(id);
    const all = await exec('losetup', ['-l', '-n', '--raw', '-O', 'NAME,BACK-FILE']);
    expect(all).not.toContain(`${id}.raw`);
    expect(all.split('\n').some((l) => l.startsWith(`${v.connection.source} ${h.dir}`))).toBe(false);
  });
});
