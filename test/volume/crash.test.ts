/**
 * Crash test: the real `online-extend serve` process is killed with SIGKILL during each step of
 * an in-use extend, then started again on the same data directory. Every volume must end
 * `in-use` at the new size — in the record, on the storage, on the host and in the guest — since a kill
 * is not a final error: never stuck, never silently wrong.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { ApiClient, VOLUME_LATEST } from '../../src/rpc/httpClient.js';
import { fakeInventory, PROJECT, SERVER } from '../support/service.js';

const BIN = resolve(import.meta.dirname, '../../bin/online-extend.js');
const MiB = 2 ** 20;
const STEPS = ['storage', 'rescan', 'wait_host', 'assist', 'confirm'] as const;

interface Proc {
  child: ChildProcess;
  compute: ApiClient;
  volume: ApiClient;
}

let dir: string;
let token: string;
const children = new Set<ChildProcess>();

async function serve(extra: string[]): Promise<Proc> {
  const child = spawn(process.execPath, [BIN, 'serve', '--fake-inventory', join(dir, 'inv.json'), '--data-dir', join(dir, 'data'), '--port', '0', '--volume-port', '0', '--identity-port', '0', '--image-port', '0', '--sync-interval', '0', ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ONLINE_EXTEND_LOG_LEVEL: 'warn' },
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const urls: string[] = [];
  await new Promise<void>((res, rej) => {
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      const m = /API listening on (http:\/\/\S+)/.exec(line);
      if (m) urls.push(m[1]!);
      if (urls.length === 2) res();
    });
    child.once('exit', (code) => rej(new Error(`serve exited with ${code}`)));
  });
  return { child, compute: new ApiClient({ url: urls[0]!, token }), volume: new ApiClient({ url: urls[1]!, token, headers: VOLUME_LATEST }) };
}

type Vol = { id: string; status: string; size_bytes: number; extend: { step: string; error: string | null } | null };
const show = async (p: Proc, id: string) => (await p.volume.request<{ volume: Vol }>('GET', `/v3/${PROJECT}/volumes/${id}/os-online-extend`)).body.volume;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'oe-crash-'));
  writeFileSync(join(dir, 'inv.json'), JSON.stringify(fakeInventory()));
  token = execFileSync(process.execPath, [BIN, 'token', 'create', '--project', PROJECT, '--user', 'crash', '--roles', 'admin', '--data-dir', join(dir, 'data')], { encoding: 'utf8' }).trim();
});

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('kill -9 during each extend step, then restart', () => {
  for (const step of STEPS) {
    it(`recovers from a SIGKILL during step ${step}`, async () => {
      let p = await serve(['--extend-step-delay', '300']);
      const v = (await p.volume.request<{ volume: Vol }>('POST', `/v3/${PROJECT}/volumes`, { volume: { name: `crash-${step}`, size_bytes: 64 * MiB } })).body.volume;
      await p.compute.request('POST', `/v2/${PROJECT}/servers/${SERVER}/os-volume_attachments`, { volumeAttachment: { volumeId: v.id } });
      await p.volume.request('POST', `/v3/${PROJECT}/volumes/${v.id}/action`, { 'os-extend-bytes': { new_bytes: 128 * MiB } });
      const end = Date.now() + 15_000;
      while ((await show(p, v.id)).extend?.step !== step) {
        if (Date.now() > end) throw new Error(`never saw step ${step}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      p.child.kill('SIGKILL');
      await new Promise((r) => p.child.once('exit', r));

      p = await serve([]);
      const until = Date.now() + 15_000;
      let cur = await show(p, v.id);
      while (cur.status === 'extending' && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 20));
        cur = await show(p, v.id);
      }
      // No fault was injected, only a kill: nothing final happened, so the extend must finish.
      expect(cur, `step ${step}: ${cur.extend?.error}`).toMatchObject({ status: 'in-use', size_bytes: 128 * MiB, extend: null });
      const host = await p.compute.request<{ volume_blockdev: { bytes: number } }>('GET', `/v2/${PROJECT}/servers/${SERVER}/os-online_extend_volume/${v.id}`);
      expect(host.body.volume_blockdev.bytes).toBe(128 * MiB);
      expect(statSync(join(dir, 'data', 'volumes', 'file', `${v.id}.raw`)).size).toBe(128 * MiB);
      // The guest's own view, from the fake hypervisor's persisted state.
      const fake = JSON.parse(readFileSync(join(dir, 'data', 'fake-hypervisor.json'), 'utf8')) as { servers: Array<{ id: string; disks: Array<{ volumeId: string; guestBytes: number }> }> };
      expect(fake.servers.find((s) => s.id === SERVER)!.disks.find((d) => d.volumeId === v.id)!.guestBytes).toBe(128 * MiB);
      p.child.kill('SIGTERM');
      await new Promise((r) => p.child.once('exit', r));
    });
  }
});
