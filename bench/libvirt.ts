/**
 * Issue B benchmark: growing a disk of a running guest, one resize at a time, five ways, all in
 * one run, interleaved (each step runs every method once, in a rotating order, so machine noise
 * hits all alike). Every call grows the disk by a fresh amount: always a real resize.
 *
 *   (a) POST assist_extend through our HTTP API: HTTP, auth, policy, DB + audit, lock, LibvirtDriver
 *   (b) Nova's own call: python3-libvirt dom.blockResize(disk, bytes, BLOCK_RESIZE_BYTES),
 *       persistent connection (bench/py_libvirt.py, timed inside Python)
 *   (c) the same safe sequence as our driver in python3-libvirt: QMP query-block through
 *       libvirt_qemu.qemuMonitorCommand, refuse a shrink, blockResize, read back
 *   (d) `virsh -c URI blockresize DOM vdb SIZEB`, a process per call
 *   (e) QMP block_resize on a plain QEMU (no libvirt), from Node over its unix socket
 *
 * (a)–(d) act on the same raw file disk (vdb) of one lab guest; (e) on a disk of a second, plain
 * QEMU running the same guest kernel. After each call the bench waits until the guest itself
 * reports the new size (which also checks every resize), outside the timed part.
 *
 * A second pass with timers around the layers (not part of the figures above) shows where (a)'s
 * time goes.
 *
 *   node --import tsx bench/libvirt.ts         (BENCH_LIBVIRT_STEPS=25 by default, min 20)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createWriteStream, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { createConnection, type Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { bootGuest, describeAccel, type Accel, type GuestShell as Guest } from '../src/lab/index.js';
import { buildDiskXml } from '../src/virt/libvirt/domxml.js';
import { acquireLab, e2eMissing, median, paths, startApi, type E2eApi, type E2eLab } from '../test/support/e2e.js';

const MiB = 1024 * 1024;
const TENANT = 'bench0project000000000000000000000';
const STEPS = Math.max(20, Number(process.env.BENCH_LIBVIRT_STEPS ?? 25));
const PROFILE_STEPS = Number(process.env.BENCH_LIBVIRT_PROFILE_STEPS ?? 20);
const WARMUP = 3;
/** Pause after each call once the guest reported the new size, so its console output settles. */
const SETTLE_MS = Number(process.env.BENCH_LIBVIRT_SETTLE_MS ?? 100);
const PY = '/usr/bin/python3';

type Method = 'a' | 'b' | 'c' | 'd' | 'e' | 'f';
const METHODS: Method[] = (process.env.BENCH_LIBVIRT_METHODS ?? 'abcdef').split('') as Method[];
const LABELS: Record<Method, string> = {
  a: 'POST assist_extend (HTTP API, whole stack)',
  f: '(a) through node:http (its client CPU in)',
  b: "Nova's call: python3-libvirt blockResize",
  c: 'python3-libvirt, our safe sequence',
  d: 'virsh blockresize (process per call)',
  e: 'QMP block_resize, plain QEMU',
};

/** The p-th percentile; NaN for a method not run (BENCH_LIBVIRT_METHODS). */
const pct = (xs: number[] | undefined, p: number): number => {
  const s = [...(xs ?? [])].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : NaN;
};
const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;

// ---------------------------------------------------------------------------------------------
// Line-oriented child helpers

class LineChannel {
  private readonly lines: string[] = [];
  private waiter: ((l: string) => void) | undefined;
  private closedWith: Error | undefined;

  constructor(rl: Interface, what: string) {
    rl.on('line', (l) => {
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w(l);
      } else this.lines.push(l);
    });
    rl.on('close', () => {
      this.closedWith = new Error(`${what} closed its output`);
    });
  }

  next(timeoutMs = 30_000): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    if (this.closedWith) return Promise.reject(this.closedWith);
    return new Promise((res, rej) => {
      const t = setTimeout(() => {
        this.waiter = undefined;
        rej(new Error('timed out waiting for a line'));
      }, timeoutMs);
      this.waiter = (line) => {
        clearTimeout(t);
        res(line);
      };
    });
  }
}

/** bench/py_libvirt.py on /usr/bin/python3. */
class PyLibvirt {
  private readonly chan: LineChannel;
  private constructor(private readonly child: ChildProcess) {
    this.chan = new LineChannel(createInterface({ input: child.stdout! }), 'py_libvirt.py');
  }

  static start(): PyLibvirt {
    const script = fileURLToPath(new URL('./py_libvirt.py', import.meta.url));
    const child = spawn(PY, [script], { stdio: ['pipe', 'pipe', 'inherit'] });
    return new PyLibvirt(child);
  }

  async cmd(c: Record<string, unknown>): Promise<Record<string, unknown>> {
    this.child.stdin!.write(`${JSON.stringify(c)}\n`);
    const out = JSON.parse(await this.chan.next()) as Record<string, unknown>;
    if (out.ok !== true) throw new Error(`py_libvirt ${String(c.op)}: ${String(out.error)}`);
    return out;
  }

  async quit(): Promise<void> {
    if (this.child.exitCode !== null) return;
    this.child.stdin!.end(`${JSON.stringify({ op: 'quit' })}\n`);
    await Promise.race([new Promise((r) => this.child.once('exit', r)), sleep(3000)]);
    if (this.child.exitCode === null && this.child.pid) process.kill(this.child.pid, 'SIGKILL');
  }
}

/** bench/http_client.ts in its own process: times (a) on its side, as Python times (b) and (c). */
class HttpClientProc {
  private readonly chan: LineChannel;
  private constructor(private readonly child: ChildProcess) {
    this.chan = new LineChannel(createInterface({ input: child.stdout! }), 'http_client.ts');
  }

  static async start(target: { url: string; token: string; path: string }): Promise<HttpClientProc> {
    const script = fileURLToPath(new URL('./http_client.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['pipe', 'pipe', 'inherit'] });
    const c = new HttpClientProc(child);
    await c.cmd(target);
    return c;
  }

  async cmd(c: Record<string, unknown>): Promise<Record<string, unknown>> {
    this.child.stdin!.write(`${JSON.stringify(c)}\n`);
    const out = JSON.parse(await this.chan.next()) as Record<string, unknown>;
    if (out.ok !== true) throw new Error(`http_client: ${String(out.status)} ${String(out.error)}`);
    return out;
  }

  async quit(): Promise<void> {
    if (this.child.exitCode !== null) return;
    this.child.stdin!.end(`${JSON.stringify({ quit: true })}\n`);
    await Promise.race([new Promise((r) => this.child.once('exit', r)), sleep(3000)]);
    if (this.child.exitCode === null && this.child.pid) process.kill(this.child.pid, 'SIGKILL');
  }
}

/** A plain QEMU (no libvirt) running the lab guest with one raw disk, and its QMP socket. */
class PlainQemu {
  private sock: Socket | undefined;
  private chan: LineChannel | undefined;

  private constructor(
    readonly child: ChildProcess,
    readonly qmpPath: string,
    readonly consoleLog: string,
  ) {}

  static start(opts: { kernel: string; initrd: string; disk: string; dir: string; accel: Accel }): PlainQemu {
    const qmpPath = join(opts.dir, 'qmp.sock');
    const consoleLog = join(opts.dir, 'plain-qemu.console.log');
    const args = [
      // The lab's accelerator, as its libvirt guest has it (host CPU under KVM).
      ...(opts.accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg']), '-m', '256', '-nodefaults', '-no-user-config', '-display', 'none',
      '-qmp', `unix:${qmpPath},server=on,wait=off`,
      '-serial', `file:${consoleLog}`,
      '-kernel', opts.kernel, '-initrd', opts.initrd, '-append', 'console=ttyS0 panic=-1 quiet',
      '-blockdev', `driver=file,filename=${opts.disk},node-name=d0-storage`,
      '-blockdev', 'driver=raw,file=d0-storage,node-name=d0-format',
      '-device', 'virtio-blk-pci,drive=d0-format,id=d0',
    ];
    const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'inherit'] });
    return new PlainQemu(child, qmpPath, consoleLog);
  }

  async connect(timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        this.sock = await new Promise<Socket>((res, rej) => {
          const c = createConnection(this.qmpPath);
          c.once('connect', () => res(c));
          c.once('error', rej);
        });
        break;
      } catch (err) {
        if (this.child.exitCode !== null) throw new Error(`qemu exited with ${this.child.exitCode}`);
        if (Date.now() > deadline) throw err;
        await sleep(50);
      }
    }
    this.chan = new LineChannel(createInterface({ input: this.sock }), 'QMP');
    const greeting = JSON.parse(await this.chan.next()) as { QMP?: unknown };
    if (!greeting.QMP) throw new Error('no QMP greeting');
    await this.execute('qmp_capabilities');
  }

  /** One QMP command; resolves with its `return` (events in between are skipped). */
  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (!this.sock || !this.chan) throw new Error('not connected');
    this.sock.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    for (;;) {
      const msg = JSON.parse(await this.chan.next()) as { return?: unknown; error?: { desc?: string }; event?: string };
      if (msg.event !== undefined) continue;
      if (msg.error) throw new Error(`QMP ${command}: ${msg.error.desc ?? JSON.stringify(msg.error)}`);
      return msg.return;
    }
  }

  async waitConsole(re: RegExp, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let text = '';
      try {
        text = readFileSync(this.consoleLog, 'latin1');
      } catch {
        /* not yet */
      }
      if (re.test(text)) return;
      if (Date.now() > deadline) throw new Error(`plain QEMU guest: ${re} not seen within ${timeoutMs} ms; tail: ${text.slice(-500)}`);
      await sleep(20);
    }
  }

  async stop(): Promise<void> {
    this.sock?.destroy();
    const pid = this.child.pid;
    if (!pid || this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    process.kill(pid, 'SIGTERM');
    await Promise.race([exited, sleep(5000)]);
    if (this.child.exitCode === null && this.child.signalCode === null) {
      process.kill(pid, 'SIGKILL');
      await Promise.race([exited, sleep(2000)]);
    }
  }
}

function runTimed(cmd: string, args: string[]): Promise<{ ms: number; code: number | null; stderr: string }> {
  return new Promise((res, rej) => {
    const t0 = nowMs();
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', rej);
    child.once('close', (code) => res({ ms: nowMs() - t0, code, stderr }));
  });
}

/** A lean keep-alive HTTP client (fetch/undici costs ~1 ms a request of client-side CPU here). */
/**
 * The compute API as it runs in production: its own process (`online-extend serve`), so the
 * bench's own work (guest console, python pipes) never shares its event loop.
 */
async function startApiProcess(libvirtUri: string, tenant: string, dir: string): Promise<{ url: string; token: string; child: ChildProcess }> {
  const bin = fileURLToPath(new URL('../bin/online-extend.js', import.meta.url));
  const dataDir = join(dir, 'api-process');
  const token = await new Promise<string>((res, rej) => {
    const c = spawn(process.execPath, [bin, 'token', 'create', '--project', tenant, '--user', 'bench', '--roles', 'admin', '--data-dir', dataDir], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.once('exit', (code) => (code === 0 ? res(out.trim()) : rej(new Error(`token create exited ${code}`))));
  });
  const child = spawn(
    process.execPath,
    // --server-timing-detail: (a)'s answers carry the per-layer parts the report prints; they cost
    // microseconds of CPU a request (bench/api.ts), nothing at the milliseconds measured here.
    [bin, 'serve', '--driver', 'libvirt', '--libvirt-uri', libvirtUri, '--port', '0', '--image-port', '0', '--no-volume-api', '--data-dir', dataDir, '--default-project', tenant, '--sync-interval', '0', '--server-timing-detail'],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ONLINE_EXTEND_LOG_LEVEL: process.env.BENCH_LIBVIRT_API_LOG ? 'info' : 'warn' } },
  );
  // BENCH_LIBVIRT_API_LOG=FILE keeps the API process's log (its per-resize timings) for inspection.
  if (process.env.BENCH_LIBVIRT_API_LOG) child.stdout!.pipe(createWriteStream(process.env.BENCH_LIBVIRT_API_LOG));
  const url = await new Promise<string>((res, rej) => {
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      const m = /compute API listening on (http:\/\/\S+)/.exec(line);
      if (m) res(m[1]!);
    });
    child.once('exit', (code) => rej(new Error(`serve exited ${code}`)));
  });
  return { url, token, child };
}

/** Mean latency in ms by libvirt procedure, from the API process's GET /metrics (online_extend_libvirt_call_duration_seconds). */
async function scrapeLibvirtMeans(base: string): Promise<Record<string, number>> {
  const res = await fetch(`${base}/metrics`).catch(() => undefined);
  if (!res?.ok) return {};
  const sums = new Map<string, number>();
  const counts = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    const m = /^online_extend_libvirt_call_duration_seconds_(sum|count)\{procedure="([A-Z_]+)"\} ([0-9.e+-]+)$/.exec(line);
    if (m) (m[1] === 'sum' ? sums : counts).set(m[2]!, Number(m[3]));
  }
  const out: Record<string, number> = {};
  for (const [proc, sum] of sums) if (counts.get(proc)) out[proc] = (1000 * sum) / counts.get(proc)!;
  return out;
}

function httpClient(base: string, token: string) {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const u = new URL(base);
  return {
    call(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      return new Promise((res, rej) => {
        const req = request(
          {
            agent,
            host: u.hostname,
            port: u.port,
            method,
            path,
            headers: {
              'x-auth-token': token,
              ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
            },
          },
          (r) => {
            const chunks: Buffer[] = [];
            r.on('data', (c: Buffer) => chunks.push(c));
            r.on('end', () => {
              const text = Buffer.concat(chunks).toString();
              res({ status: r.statusCode ?? 0, body: text ? (JSON.parse(text) as unknown) : undefined });
            });
            r.on('error', rej);
          },
        );
        req.on('error', rej);
        req.end(payload);
      });
    },
    close: () => agent.destroy(),
  };
}

// ---------------------------------------------------------------------------------------------
// Layer timers for the profile pass

type Profile = Record<string, number[]>;

/** Replace `obj[key]` (an async method) with a timed wrapper; returns the undo function. */
function timeMethod(obj: object, key: string, name: string, sink: (name: string, ms: number, start: number, end: number) => void, sync = false): () => void {
  const target = obj as Record<string, unknown>;
  const orig = target[key] as (...a: unknown[]) => unknown;
  if (typeof orig !== 'function') throw new Error(`no method ${key} to time`);
  const had = Object.prototype.hasOwnProperty.call(target, key);
  const done = (t0: number): void => {
    const t1 = nowMs();
    sink(name, t1 - t0, t0, t1);
  };
  // `sync`: a method that answers without a promise (Authenticator.known) stays synchronous.
  target[key] = sync
    ? function (this: unknown, ...a: unknown[]) {
        const t0 = nowMs();
        try {
          return orig.apply(this, a);
        } finally {
          done(t0);
        }
      }
    : async function (this: unknown, ...a: unknown[]) {
        const t0 = nowMs();
        try {
          return await orig.apply(this, a);
        } finally {
          done(t0);
        }
      };
  return () => {
    if (had) target[key] = orig;
    else delete target[key];
  };
}

// ---------------------------------------------------------------------------------------------

export async function runLibvirtBench(opts: { log?: (m: string) => void } = {}): Promise<Record<string, number>> {
  const log = opts.log ?? ((m: string) => console.error(`[bench:libvirt] ${m}`));
  const missing = e2eMissing();
  if (missing) throw new Error(`libvirt bench cannot run here: ${missing}`);

  let env: E2eLab | undefined;
  let guest: Guest | undefined;
  let api: E2eApi | undefined;
  let py: PyLibvirt | undefined;
  let plain: PlainQemu | undefined;
  let closeHttp: (() => void) | undefined;
  let apiProcess: { child: ChildProcess; url: string; token: string } | undefined;
  let aProc: HttpClientProc | undefined;
  try {
    env = await acquireLab(log);
    const { lab, work } = env;
    log(`accelerator: ${describeAccel(lab.accel)}`);
    const volumeId = randomUUID();
    const disk = join(work, `${volumeId}.raw`);
    writeFileSync(disk, '');
    truncateSync(disk, 64 * MiB);
    const name = `oe-bench-${process.pid}`;
    guest = await bootGuest(lab, {
      name,
      projectId: TENANT,
      disks: [buildDiskXml({ volumeId, kind: 'file', format: 'raw', source: disk }, 'vdb')],
    });
    log(`guest ${name} ready`);

    api = await startApi(lab, { tenant: TENANT, dbDir: work });
    py = PyLibvirt.start();
    const opened = await py.cmd({ op: 'open', uri: lab.libvirtUri, uuid: guest.uuid, disk: 'vdb' });
    let cur = opened.bytes as number;

    const plainDisk = join(work, 'plain.raw');
    writeFileSync(plainDisk, '');
    truncateSync(plainDisk, 64 * MiB);
    plain = PlainQemu.start({ kernel: lab.kernel, initrd: lab.initrd, disk: plainDisk, dir: work, accel: lab.accel.accel });
    await plain.connect();
    await plain.waitConsole(/^OE-READY/m, 90_000);
    let curE = 64 * MiB;
    log('plain QEMU guest ready');

    const g = guest;
    const a = api;
    const p = py;
    const q = plain;
    const volPath = paths.volume(TENANT, g.uuid, volumeId);
    apiProcess = await startApiProcess(lab.libvirtUri, TENANT, work);
    const http = httpClient(apiProcess.url, apiProcess.token);
    // (a) is measured against the API in its own process; the profile pass below needs timers
    // inside the stack, so it uses the same stack in this process.
    let aClient = http;
    let profiling = false;
    aProc = await HttpClientProc.start({ url: apiProcess.url, token: apiProcess.token, path: volPath });
    closeHttp = http.close;
    let step = 0;
    /** A fresh, larger size every call (1 MiB plus a varying number of sectors). */
    /** Client-side send/receive times of the last (a) call (for the profile's HTTP split). */
    const lastA = { send: 0, recv: 0 };
    const grow = (from: number): number => from + MiB + 512 * (1 + (step++ % 13));

    /**
     * (a) and (f): one POST assist_extend from the client process, timed there, as (b) and (c)
     * are timed inside Python: on the wire for (a), through node:http for (f). Answers the call's
     * time and the server's own account (Server-Timing: its total, its parts) and what the client
     * waited beyond it (socket, HTTP parsing, event loop, sending), under keys `${m}_…`.
     */
    const viaClientProcess = async (client: HttpClientProc, m: 'a' | 'f'): Promise<{ ms: number; extra: Record<string, number> }> => {
      const bytes = grow(cur);
      const t0 = nowMs();
      const r = await client.cmd({ bytes, client: m === 'a' ? 'wire' : 'node' });
      const rt = nowMs() - t0;
      if (r.bytes !== bytes) throw new Error(`assist_extend answered ${String(r.bytes)} for ${bytes}`);
      cur = bytes;
      await g.waitForSize('vdb', bytes, 10_000);
      const timing = (r.timing ?? {}) as Record<string, number>;
      const st: Record<string, number> = {};
      for (const [k, v] of Object.entries(timing)) st[`${m}_st_${k}`] = v;
      if (timing.total !== undefined) st[`${m}_outside_server`] = (r.ms as number) - timing.total;
      return { ms: r.ms as number, extra: { [`${m}_roundtrip`]: rt, ...st } };
    };

    const call: Record<Method, () => Promise<{ ms: number; extra?: Record<string, number> }>> = {
      a: async () => {
        if (aProc && !profiling) return viaClientProcess(aProc, 'a');
        const bytes = grow(cur);
        const t0 = nowMs();
        const r = await aClient.call('POST', volPath, { onlineExtendVolume: { bytes } });
        const ms = nowMs() - t0;
        lastA.send = t0;
        lastA.recv = t0 + ms;
        const got = (r.body as { volume_blockdev?: { bytes?: number } } | undefined)?.volume_blockdev?.bytes;
        if (r.status !== 200 || got !== bytes) throw new Error(`assist_extend: ${r.status} ${JSON.stringify(r.body)}`);
        cur = bytes;
        await g.waitForSize('vdb', bytes, 10_000);
        return { ms };
      },
      f: async () => viaClientProcess(aProc!, 'f'),
      b: async () => {
        const bytes = grow(cur);
        const t0 = nowMs();
        const r = await p.cmd({ op: 'nova', bytes });
        const rt = nowMs() - t0;
        cur = bytes;
        await g.waitForSize('vdb', bytes, 10_000);
        return { ms: r.ms as number, extra: { b_roundtrip: rt } };
      },
      c: async () => {
        const bytes = grow(cur);
        const t0 = nowMs();
        const r = await p.cmd({ op: 'safe', bytes });
        const rt = nowMs() - t0;
        if (r.after !== bytes) throw new Error(`safe sequence read ${String(r.after)} after ${bytes}`);
        cur = bytes;
        await g.waitForSize('vdb', bytes, 10_000);
        return {
          ms: r.ms as number,
          extra: { c_roundtrip: rt, c_read: r.read_ms as number, c_resize: r.resize_ms as number, c_readback: r.readback_ms as number },
        };
      },
      d: async () => {
        const bytes = grow(cur);
        const r = await runTimed('virsh', ['-c', lab.libvirtUri, 'blockresize', name, 'vdb', `${bytes}B`]);
        if (r.code !== 0) throw new Error(`virsh blockresize: ${r.stderr}`);
        cur = bytes;
        await g.waitForSize('vdb', bytes, 10_000);
        return { ms: r.ms };
      },
      e: async () => {
        const bytes = grow(curE);
        const t0 = nowMs();
        await q.execute('block_resize', { 'node-name': 'd0-format', size: bytes });
        const ms = nowMs() - t0;
        curE = bytes;
        await q.waitConsole(new RegExp(`^OE-SIZES.* vda=${bytes}\\b`, 'm'), 10_000);
        return { ms };
      },
    };

    const samples: Record<string, number[]> = {};
    const put = (k: string, v: number): void => void (samples[k] ??= []).push(v);

    log(`warm-up (${WARMUP} rounds), then ${STEPS} interleaved steps of ${METHODS.length} methods`);
    for (let i = 0; i < WARMUP; i++) for (const m of METHODS) await call[m]();
    for (let i = 0; i < STEPS; i++) {
      const order = METHODS.map((_, j) => METHODS[(i + j) % METHODS.length]!);
      for (const m of order) {
        const r = await call[m]();
        put(m, r.ms);
        for (const [k, v] of Object.entries(r.extra ?? {})) put(k, v);
        await sleep(SETTLE_MS);
      }
    }

    // Profile pass: (a) only, with timers around each layer (separate from the figures above).
    const prof: Profile = {};
    let seq: string[] = [];
    const edges = { authStart: 0, extendEnd: 0 };
    const sink = (n: string, ms: number, start: number, end: number): void => {
      (prof[n] ??= []).push(ms);
      seq.push(n);
      if (n === 'auth') edges.authStart = start;
      if (n === 'assistExtend') edges.extendEnd = end;
    };
    const client = a.driver.host.client;
    const undo = [
      timeMethod(a.built.auth, 'authenticate', 'auth', sink),
      // A token the authenticator has cached is checked with `known`, synchronously (no authenticate call).
      timeMethod(a.built.auth, 'known', 'auth', sink, true),
      timeMethod(a.built.compute, 'getServer', 'getServer', sink),
      timeMethod(a.built.compute, 'assistExtend', 'assistExtend', sink),
      timeMethod(a.store, 'startAction', 'db.startAction', sink),
      timeMethod(a.store, 'finishAction', 'db.finishAction', sink),
      timeMethod(a.built.manager, 'extendAttached', 'manager.extendAttached', sink),
      timeMethod(a.driver, 'getGuestBytes', 'driver.getGuestBytes', sink),
      timeMethod(a.driver, 'extendAttached', 'driver.extendAttached', sink),
      timeMethod(client, 'lookupByUuid', 'virt.lookupByUuid', sink),
      timeMethod(client, 'getState', 'virt.getState', sink),
      timeMethod(client, 'getXmlDesc', 'virt.getXmlDesc', sink),
      timeMethod(client, 'qemuMonitorCommand', 'virt.queryBlock', sink),
      timeMethod(client, 'blockResize', 'virt.blockResize', sink),
      timeMethod(client, 'getBlockInfo', 'virt.getBlockInfo', sink),
    ];
    const perStep: Array<Record<string, number>> = [];
    const sequences = new Map<string, number>();
    const inProcess = httpClient(a.url, a.token);
    aClient = inProcess;
    profiling = true;
    try {
      for (let i = 0; i < PROFILE_STEPS; i++) {
        for (const k of Object.keys(prof)) prof[k] = [];
        seq = [];
        const r = await call.a();
        const one: Record<string, number> = {
          total: r.ms,
          'http.in': edges.authStart - lastA.send,
          'http.out': lastA.recv - edges.extendEnd,
        };
        for (const [k, v] of Object.entries(prof)) {
          one[k] = v.reduce((s, x) => s + x, 0);
          one[`${k}#n`] = v.length;
          // The query-block reads, in order (the live read, then the read-back).
          if (k === 'virt.queryBlock') v.forEach((x, j) => (one[`virt.queryBlock[${j}]`] = x));
        }
        perStep.push(one);
        const key = seq.filter((n) => n.startsWith('virt.')).join(' ');
        sequences.set(key, (sequences.get(key) ?? 0) + 1);
        await sleep(SETTLE_MS);
      }
    } finally {
      for (const u of undo) u();
      inProcess.close();
      aClient = http;
    }

    // The HTTP hop alone, as (a) meets it: GET server show from (a)'s client process to the API
    // process, each after the same pause as between (a)'s calls (both processes idle, as before
    // every (a)), so its time outside the server's own account is (a)'s without the hypervisor.
    const idle: number[] = [];
    const idleOutside: number[] = [];
    for (let i = 0; i < PROFILE_STEPS && aProc; i++) {
      await sleep(SETTLE_MS);
      const r = await aProc.cmd({ get: `/v2/${TENANT}/servers/${g.uuid}` });
      const timing = (r.timing ?? {}) as Record<string, number>;
      idle.push(r.ms as number);
      if (timing.total !== undefined) idleOutside.push((r.ms as number) - timing.total);
    }

    // Baseline of our HTTP stack without the hypervisor: GET server show (HTTP, auth, policy, store).
    const show: number[] = [];
    for (let i = 0; i < PROFILE_STEPS; i++) {
      const t0 = nowMs();
      const r = await http.call('GET', `/v2/${TENANT}/servers/${g.uuid}`);
      show.push(nowMs() - t0);
      if (r.status !== 200) throw new Error(`server show: ${r.status}`);
    }

    // The API process's own libvirt call latency by procedure (its /metrics histogram: sum/count,
    // so means), over the whole run (warm-up included), against Python's means of the same calls.
    const libvirtMeans = await scrapeLibvirtMeans(apiProcess.url);
    const mean = (xs: number[] | undefined): number => (xs?.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

    const med: Record<string, number> = {};
    for (const [k, v] of Object.entries(samples)) med[k] = median(v);
    if (process.env.BENCH_LIBVIRT_SAMPLES) writeFileSync(process.env.BENCH_LIBVIRT_SAMPLES, JSON.stringify(samples));
    const out: Record<string, number> = {
      steps: STEPS,
      // The results are numbers: 1 = the guests ran under KVM, 0 = TCG.
      accel_kvm: env.lab.accel.accel === 'kvm' ? 1 : 0,
      a_ms: med.a!,
      b_ms: med.b!,
      c_ms: med.c!,
      d_ms: med.d!,
      e_ms: med.e!,
      f_ms: med.f!,
      a_p90_ms: pct(samples.a!, 90),
      b_p90_ms: pct(samples.b!, 90),
      c_p90_ms: pct(samples.c!, 90),
      d_p90_ms: pct(samples.d!, 90),
      e_p90_ms: pct(samples.e!, 90),
      f_p90_ms: pct(samples.f, 90),
      a_over_b: med.a! / med.b!,
      a_over_c: med.a! / med.c!,
      a_over_d: med.a! / med.d!,
      a_over_e: med.a! / med.e!,
      f_over_c: med.f! / med.c!,
      b_roundtrip_ms: med.b_roundtrip!,
      c_roundtrip_ms: med.c_roundtrip!,
      c_read_ms: med.c_read!,
      c_resize_ms: med.c_resize!,
      c_readback_ms: med.c_readback!,
      http_server_show_ms: median(show),
      http_server_show_after_idle_ms: median(idle),
      http_server_show_after_idle_outside_ms: median(idleOutside),
    };
    for (const [proc, ms] of Object.entries(libvirtMeans)) out[`a_libvirt_mean_${proc}_ms`] = ms;
    out.c_read_mean_ms = mean(samples.c_read);
    out.c_resize_mean_ms = mean(samples.c_resize);
    out.c_readback_mean_ms = mean(samples.c_readback);
    // (a)'s Server-Timing, medians over the timed steps: what the API process spent in each part.
    for (const k of Object.keys(med)) if (/^[af]_st_/.test(k) || k === 'a_outside_server' || k === 'f_outside_server') out[`${k}_ms`] = med[k]!;
    // Profile medians.
    const keys = new Set(perStep.flatMap((s) => Object.keys(s)));
    for (const k of keys) {
      const xs = perStep.map((s) => s[k]).filter((x): x is number => x !== undefined);
      if (xs.length) out[`profile.${k}`] = median(xs);
    }
    const derived = perStep.map((s) => {
      const inHandler = (s.auth ?? 0) + (s.getServer ?? 0) + (s.assistExtend ?? 0);
      const driver = (s['driver.getGuestBytes'] ?? 0) + (s['driver.extendAttached'] ?? 0);
      const virt = ['lookupByUuid', 'getState', 'getXmlDesc', 'queryBlock', 'blockResize', 'getBlockInfo'].reduce((t, n) => t + (s[`virt.${n}`] ?? 0), 0);
      return {
        http: s.total! - inHandler,
        audit: (s['db.startAction'] ?? 0) + (s['db.finishAction'] ?? 0),
        lock: (s['manager.extendAttached'] ?? 0) - driver,
        driverOwn: driver - virt,
        virt,
      };
    });
    for (const k of ['http', 'audit', 'lock', 'driverOwn', 'virt'] as const) out[`profile.derived.${k}`] = median(derived.map((d) => d[k]));
    for (const [s, n] of sequences) log(`profile: ${n}/${PROFILE_STEPS} calls made libvirt calls: ${s}`);
    return out;
  } finally {
    closeHttp?.();
    await aProc?.quit().catch(() => undefined);
    await py?.quit().catch(() => undefined);
    await plain?.stop().catch((e: unknown) => log(`stopping plain QEMU: ${String(e)}`));
    await api?.close().catch(() => undefined);
    if (apiProcess?.child.exitCode === null) {
      const exited = new Promise((r) => apiProcess!.child.once('exit', r));
      apiProcess.child.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
    }
    await guest?.destroy().catch((e: unknown) => log(`destroying guest: ${String(e)}`));
    await env?.release().catch((e: unknown) => log(`releasing the lab: ${String(e)}`));
  }
}

/** Issue 12's target for (a) against python3-libvirt's safe sequence (c); issue B's against virsh (d). */
export const A_OVER_C_TARGET = 1.15;
export const A_OVER_D_TARGET = 0.2;

/** Whether the run met both ratios. */
export function libvirtTargetsMet(r: Record<string, number>): boolean {
  return r.a_over_c! <= A_OVER_C_TARGET && r.a_over_d! <= A_OVER_D_TARGET;
}

export function printLibvirtBench(r: Record<string, number>): void {
  const f = (x: number | undefined, d = 2): string => (x === undefined || Number.isNaN(x) ? 'n/a' : x.toFixed(d));
  console.log(`libvirt benchmark (one running ${r.accel_kvm === 1 ? 'KVM' : 'TCG'} guest, raw file disk; ${r.steps} interleaved steps per method; medians, p90)`);
  for (const m of METHODS) console.log(`  (${m}) ${LABELS[m].padEnd(44)} ${f(r[`${m}_ms`]).padStart(7)} ms   p90 ${f(r[`${m}_p90_ms`])} ms`);
  console.log(`  ratios: a/b ${f(r.a_over_b)}   a/c ${f(r.a_over_c)} (target <= ${A_OVER_C_TARGET})   a/d ${f(r.a_over_d)} (target <= ${A_OVER_D_TARGET})   a/e ${f(r.a_over_e)}`);
  console.log(
    `  (a) is timed on the wire (request bytes out, answer complete in), as (c) is timed around python3-libvirt's C client; ` +
      `(f), the same call through node:http: f/c ${f(r.f_over_c)}, its server total ${f(r.f_st_total_ms)} ms, outside it ${f(r.f_outside_server_ms)} ms`,
  );
  console.log(
    `  (c) parts: read ${f(r.c_read_ms)}  resize ${f(r.c_resize_ms)}  read-back ${f(r.c_readback_ms)} ms;` +
      ` node<->python pipe round trip adds: b ${f(r.b_roundtrip_ms! - r.b_ms!)} c ${f(r.c_roundtrip_ms! - r.c_ms!)} ms`,
  );
  console.log(`  our HTTP stack alone (GET server show: HTTP, auth, policy, store): ${f(r.http_server_show_ms)} ms back to back; ${f(r.http_server_show_after_idle_ms)} ms from (a)'s client after (a)'s pause, ${f(r.http_server_show_after_idle_outside_ms)} ms of it outside the server`);
  // Server-Timing of (a) as the API process (\`serve\`) reported it on each timed call.
  const st = Object.keys(r).filter((k) => k.startsWith('a_st_') && k !== 'a_st_total_ms');
  if (r.a_st_total_ms !== undefined) {
    console.log(
      `  (a) Server-Timing (medians, ms): server total ${f(r.a_st_total_ms)}; outside it (socket, parse, event loop, send) ${f(r.a_outside_server_ms)};` +
        ` parts ${st.map((k) => `${k.slice(5, -3)} ${f(r[k])}`).join(', ')}`,
    );
  }
  // The like-for-like comparison with (c): (a)'s time in the driver (its libvirt calls as they
  // ran, overlaps counted once), against (c)'s three calls; the rest of (a) is HTTP and the API.
  if (r.a_st_driver_ms !== undefined) {
    console.log(`  (a) driver (wall, Server-Timing) ${f(r.a_st_driver_ms)} ms vs (c) ${f(r.c_ms)} ms: ${f(r.a_st_driver_ms / r.c_ms!)}×; (a) beyond its driver ${f(r.a_ms! - r.a_st_driver_ms)} ms`);
  }
  const means = Object.keys(r).filter((k) => k.startsWith('a_libvirt_mean_'));
  if (means.length) {
    console.log(`  (a) libvirt calls in the API process, means (ms): ${means.map((k) => `${k.slice(15, -3)} ${f(r[k])}`).join(', ')}`);
    console.log(`  (c) the same calls in python3-libvirt, means (ms): read ${f(r.c_read_mean_ms)}, resize ${f(r.c_resize_mean_ms)}, read-back ${f(r.c_readback_mean_ms)}`);
  }
  console.log('  (a) profile pass (medians per call, ms):');
  const rows: Array<[string, string]> = [
    ['total (client-side, node:http keep-alive)', 'profile.total'],
    ['HTTP + Fastify + schema (total - handler)', 'profile.derived.http'],
    ['  request: client send -> auth starts', 'profile.http.in'],
    ['  response: assistExtend done -> client has it', 'profile.http.out'],
    ['auth (token lookup)', 'profile.auth'],
    ['getServer (store)', 'profile.getServer'],
    ['assistExtend (ComputeAPI, all below)', 'profile.assistExtend'],
    ['  audit: startAction + finishAction', 'profile.derived.audit'],
    ['  manager.extendAttached (lock + driver)', 'profile.manager.extendAttached'],
    ['    lock wait', 'profile.derived.lock'],
    ['    driver.getGuestBytes (manager pre-read)', 'profile.driver.getGuestBytes'],
    ['    driver.extendAttached', 'profile.driver.extendAttached'],
    ['    driver CPU outside libvirt calls (< 0: overlap)', 'profile.derived.driverOwn'],
    ['    libvirt calls, summed (state ‖ read, resize ‖ read-back overlap)', 'profile.derived.virt'],
    ['      lookupByUuid (sum)', 'profile.virt.lookupByUuid'],
    ['      getState', 'profile.virt.getState'],
    ['      query-block [0] live read (manager, under the lock)', 'profile.virt.queryBlock[0]'],
    ['      blockResize', 'profile.virt.blockResize'],
    ['      query-block [1] read-back (sent with the resize)', 'profile.virt.queryBlock[1]'],
  ];
  for (const [label, k] of rows) console.log(`    ${label.padEnd(46)} ${f(r[k]).padStart(7)}   ${r[`${k}#n`] !== undefined ? `(${r[`${k}#n`]} calls)` : ''}`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await runLibvirtBench();
  printLibvirtBench(r);
  const ok = libvirtTargetsMet(r);
  console.log(ok ? 'targets met' : 'TARGETS NOT MET');
  process.exit(ok ? 0 : 1);
}
