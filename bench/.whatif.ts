// Temporary what-if (not committed): the API with the manager pre-read removed, and with the
// driver's state check run alongside its live read, vs the python safe sequence.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { bootGuest } from '../src/lab/index.js';
import { buildDiskXml } from '../src/virt/libvirt/domxml.js';
import { errors } from '../src/errors.js';
import { acquireLab, median, paths, startApi } from '../test/support/e2e.js';

const MiB = 1024 * 1024, TENANT = 'whatif';
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const env = await acquireLab();
const vol = randomUUID();
const disk = join(env.work, 'w.raw'); writeFileSync(disk, ''); truncateSync(disk, 64 * MiB);
const g = await bootGuest(env.lab, { name: 'whatif', projectId: TENANT, disks: [buildDiskXml({ volumeId: vol, kind: 'file', format: 'raw', source: disk }, 'vdb')] });
const api = await startApi(env.lab, { tenant: TENANT, dbDir: env.work });
const py = spawn('/usr/bin/python3', ['bench/py_libvirt.py'], { stdio: ['pipe', 'pipe', 'inherit'] });
const lines: string[] = []; let w: ((l: string) => void) | undefined;
createInterface({ input: py.stdout! }).on('line', (l) => { if (w) { const f = w; w = undefined; f(l); } else lines.push(l); });
const pycmd = async (c: object) => { py.stdin!.write(JSON.stringify(c) + '\n'); const l = lines.shift() ?? await new Promise<string>((r) => (w = r)); return JSON.parse(l); };
let cur = (await pycmd({ op: 'open', uri: env.lab.libvirtUri, uuid: g.uuid, disk: 'vdb' })).bytes as number;
const mgr = api.built.manager as unknown as Record<string, unknown>;
const drv = api.driver as unknown as Record<string, any>;
const origMgr = mgr.extendAttached; const origLocked = drv.extendLocked;
const noPreRead = function (this: any, s: string, v: string, b: number) { return this.volumeLocks.run(v, () => this.driver.extendAttached(s, v, b)); };
const parallelState = async function (this: any, serverId: string, volumeId: string, bytes: number) {
  const { guest, disk } = await this.resolve(serverId, volumeId);
  const [st, current] = await Promise.all([guest.state(), this.liveBytes(guest, disk)]);
  if (st.state !== 'active' && st.state !== 'paused') throw errors.instanceInvalidState(serverId, st.state, 'x');
  if (bytes < current) throw errors.shrinkRefused(volumeId, bytes, current);
  if (bytes === current) return current;
  await guest.blockResize(disk.target, bytes);
  return this.liveBytes(guest, disk);
};
const modes: Record<string, () => void> = {
  api_now: () => { mgr.extendAttached = origMgr; drv.extendLocked = origLocked; },
  api_noPreRead: () => { mgr.extendAttached = noPreRead; drv.extendLocked = origLocked; },
  api_noPreRead_parState: () => { mgr.extendAttached = noPreRead; drv.extendLocked = parallelState; },
};
const S: Record<string, number[]> = {};
const path = paths.volume(TENANT, g.uuid, vol);
let k = 0;
for (let i = 0; i < 28; i++) {
  const names = [...Object.keys(modes), 'py_safe'];
  for (let j = 0; j < names.length; j++) {
    const m = names[(i + j) % names.length]!;
    const bytes = cur + MiB + 512 * (1 + (k++ % 13));
    let ms: number;
    if (m === 'py_safe') { const r = await pycmd({ op: 'safe', bytes }); ms = r.ms; }
    else { modes[m]!(); const t0 = nowMs(); const r = await api.call('POST', path, { onlineExtendVolume: { bytes } }); ms = nowMs() - t0; if (r.status !== 200) throw new Error(JSON.stringify(r.body)); }
    cur = bytes; await g.waitForSize('vdb', bytes, 10000); await sleep(100);
    if (i >= 3) (S[m] ??= []).push(ms);
  }
}
for (const [m, xs] of Object.entries(S)) console.log(m.padEnd(26), median(xs).toFixed(2), 'ms  ratio vs py_safe', (median(xs) / median(S.py_safe!)).toFixed(2));
py.stdin!.end(JSON.stringify({ op: 'quit' }) + '\n');
await api.close(); await g.destroy(); await env.release();
