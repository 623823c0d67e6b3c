/**
 * `online-extend volume extend --wait` (table output) against a real service (in-process, fake
 * driver, real HTTP, each extend step slowed so that every step is seen): the progress lines show
 * the volume's recorded size, never the host's size at the start as if it were the volume's, and
 * the last line is the size the extend measured, or the recorded size and the error of a failed one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errors } from '../../src/errors.js';
import type { FakeDriver } from '../../src/virt/fake/driver.js';
import { makeService, PROJECT, runCli, SERVER, type ServiceHarness } from '../support/service.js';

const MiB = 2 ** 20;
let h: ServiceHarness;
const fake = () => h.service.driver as FakeDriver;

beforeAll(async () => {
  h = await makeService({ config: { extendStepDelayMs: 300 } });
});
afterAll(async () => h.cleanup());

const cli = (args: string[]) => runCli(h, args);

async function attached(): Promise<string> {
  const id = (await h.volume.request<{ volume: { id: string } }>('POST', `/v3/${PROJECT}/volumes`, { volume: { size_bytes: 64 * MiB } })).body.volume.id;
  await h.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: id } });
  fake().setGuestFilesystem(SERVER, id, { type: 'ext4', mountpoint: '/data' });
  return id;
}

/** The lines `--wait` printed before the volume's table, without their elapsed seconds. */
function progress(stdout: string): string[] {
  const lines = stdout.split('\n');
  return lines.slice(0, lines.findIndex((l) => l.startsWith('id '))).map((l) => l.replace(/^\d+\.\d\ds {2}/, ''));
}

describe('online-extend volume extend --wait', () => {
  it('ends with the size the extend measured, and shows the recorded size at each step (the new one only once confirmed)', async () => {
    const id = await attached();
    const r = await cli(['volume', 'extend', id, '--size', '128MiB', '--grow-fs', '--wait']);
    expect(r.status, r.stderr).toBe(0);
    const lines = progress(r.stdout);
    const steps = lines.slice(0, -1);
    expect(steps.map((l) => /^step (\w+)/.exec(l)?.[1])).toEqual(['storage', 'rescan', 'wait_host', 'assist', 'confirm', 'grow_fs']);
    for (const l of steps) {
      const size = /^step (confirm|grow_fs)/.exec(l)?.[1] === 'grow_fs' ? '128MiB' : '64MiB';
      expect(l).toMatch(new RegExp(`  size ${size} / target 128MiB$`));
      // The host's reading is named as such, and only in the step that reads it.
      expect(l.includes('host')).toBe(l.startsWith('step wait_host'));
    }
    const measured = (await h.volume.request<{ volume: { size_bytes: number } }>('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`)).body.volume.size_bytes;
    expect(measured).toBe(await fake().getGuestBytes(SERVER, id));
    expect(lines.at(-1)).toMatch(/^in-use {2}size 128MiB, measured after the extend \(request req-[0-9a-f-]+\)$/);
    await h.compute.request('DELETE', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments/${id}`);
  });

  it('ends a failed extend with the recorded size and the error, and exit status 1', async () => {
    const id = await attached();
    fake().injectFault('extendAttached', errors.driverFailed('the guest refused the new size', { final: true }));
    const r = await cli(['volume', 'extend', id, '--size', '128MiB', '--wait']);
    expect(r.status, r.stdout).toBe(1);
    expect(progress(r.stdout).at(-1)).toMatch(/^error_extending {2}size 64MiB as recorded; the extend failed: .*the guest refused the new size.* \(request req-[0-9a-f-]+\)$/);
  });
});
