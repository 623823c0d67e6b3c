/**
 * GuestShell: a shell over a running lab test guest's serial ports — its console log and a
 * plain `sh` — to read what the guest itself sees (see scripts/lab/guest-init.sh for the guest
 * side). Not src/virt/libvirt/guest.ts's libvirt guest (the driver's view of a domain).
 *
 * - ttyS0 is a file (`consoleLog`): kernel messages, `OE-READY`, and `OE-SIZES vda=<bytes> …`
 *   lines, one whenever any disk's size changes (and one at start);
 * - ttyS1 is a unix socket (`shellSocket`, QEMU is the server) with a plain `sh` behind it.
 */
import { open } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { run } from './proc.js';

/** What a GuestShell needs: the domain (libvirt URI, uuid, name) and its two serial ports' ends. */
export interface GuestShellInit {
  libvirtUri: string;
  uuid: string;
  name: string;
  consoleLog: string;
  shellSocket: string;
  /** A defined (persistent) domain: it can be powered off and started again; destroy() undefines it. */
  persistent?: boolean;
}

/** A command run in the guest's shell exited non-zero: its command line, status and output. */
export class GuestExecError extends Error {
  constructor(
    readonly cmd: string,
    readonly code: number,
    readonly output: string,
  ) {
    super(`guest command exited with ${code}: ${cmd}\n${output}`);
    this.name = 'GuestExecError';
  }
}

/** The guest did not report `device` at `expected` bytes in time; `lastSeen` is its last report (bytes). */
export class WaitForSizeTimeout extends Error {
  constructor(
    readonly device: string,
    readonly expected: number,
    readonly lastSeen: number | undefined,
    timeoutMs: number,
  ) {
    super(`guest did not report ${device}=${expected} within ${timeoutMs} ms; last seen ${device}=${lastSeen ?? 'absent'}`);
    this.name = 'WaitForSizeTimeout';
  }
}

const SIZES_RE = /^OE-SIZES((?: [A-Za-z0-9]+=\d+)*) *$/gm;

/** Parse the payload of an `OE-SIZES` line (` vda=1 vdb=2`). */
export function parseSizes(payload: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const kv of payload.trim().split(/\s+/)) {
    const m = /^([A-Za-z0-9]+)=(\d+)$/.exec(kv);
    if (m?.[1] && m[2]) out[m[1]] = Number(m[2]);
  }
  return out;
}

/**
 * A running lab guest seen from inside: its console (sizes it reports, kernel lines) and its
 * shell; also powers it off, starts and destroys it through virsh.
 */
export class GuestShell {
  readonly libvirtUri: string;
  readonly uuid: string;
  readonly name: string;
  readonly consoleLog: string;
  readonly shellSocket: string;
  readonly persistent: boolean;

  private log = '';
  private logBytes = 0;
  private sock: Socket | undefined;
  private rx = '';
  private rxWaiters: Array<() => void> = [];
  private queue: Promise<unknown> = Promise.resolve();
  private seq = 0;
  private readonly token = randomBytes(4).toString('hex');
  private destroyed = false;

  constructor(init: GuestShellInit) {
    this.libvirtUri = init.libvirtUri;
    this.uuid = init.uuid;
    this.name = init.name;
    this.consoleLog = init.consoleLog;
    this.shellSocket = init.shellSocket;
    this.persistent = init.persistent ?? false;
  }

  // ------------------------------------------------------------------------------------------
  // Console (ttyS0)

  /** Read what was appended to the console log since last time; returns the whole log (\r removed). */
  async readLog(): Promise<string> {
    let fh;
    try {
      fh = await open(this.consoleLog, 'r');
    } catch {
      return this.log;
    }
    try {
      const { size } = await fh.stat();
      if (size < this.logBytes) {
        // Truncated: a new boot wrote the file afresh.
        this.log = '';
        this.logBytes = 0;
      }
      if (size > this.logBytes) {
        const buf = Buffer.alloc(size - this.logBytes);
        const { bytesRead } = await fh.read(buf, 0, buf.length, this.logBytes);
        this.logBytes += bytesRead;
        this.log += buf.subarray(0, bytesRead).toString('latin1').replace(/\r/g, '');
      }
    } finally {
      await fh.close();
    }
    return this.log;
  }

  /** Current length of the (normalised) console log: pass as `from` to only match later output. */
  async logMark(): Promise<number> {
    return (await this.readLog()).length;
  }

  /** Resolve with the first match of `re` in the console log (from offset `from`). */
  async waitForLog(re: RegExp, timeoutMs = 30_000, from = 0): Promise<RegExpExecArray> {
    const flags = re.flags.replace('g', '').replace('y', '');
    const rx = new RegExp(re.source, flags);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const text = (await this.readLog()).slice(from);
      const m = rx.exec(text);
      if (m) return m;
      if (Date.now() > deadline) {
        throw new Error(`guest ${this.name}: ${re} not seen in ${this.consoleLog} within ${timeoutMs} ms; tail:\n${text.slice(-1500)}`);
      }
      await sleep(25);
    }
  }

  /** Wait for the init's ready marker and its first size report. Fails early on a kernel panic. */
  async waitReady(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const text = await this.readLog();
      if (/^OE-READY\b/m.test(text) && /^OE-SIZES/m.test(text)) return;
      if (/Kernel panic/.test(text)) throw new Error(`guest ${this.name} panicked:\n${text.slice(-3000)}`);
      if (Date.now() > deadline) {
        throw new Error(`guest ${this.name} not ready within ${timeoutMs} ms; console tail:\n${text.slice(-3000)}`);
      }
      await sleep(25);
    }
  }

  /** The latest size report: device → bytes the guest sees (e.g. `{ vda: 1073741824 }`). */
  async sizes(): Promise<Record<string, number>> {
    const text = await this.readLog();
    let last: string | undefined;
    for (const m of text.matchAll(SIZES_RE)) last = m[1];
    if (last === undefined) throw new Error(`guest ${this.name} has not reported sizes yet`);
    return parseSizes(last);
  }

  /** Resolve (with the size) once the guest's own report shows exactly `bytes` for `dev`. */
  async waitForSize(dev: string, bytes: number, timeoutMs = 30_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let lastSeen: number | undefined;
    for (;;) {
      try {
        lastSeen = (await this.sizes())[dev];
      } catch {
        lastSeen = undefined;
      }
      if (lastSeen === bytes) return bytes;
      if (Date.now() > deadline) throw new WaitForSizeTimeout(dev, bytes, lastSeen, timeoutMs);
      await sleep(20);
    }
  }

  /**
   * The guest's device name for the disk with this `<serial>` (e.g. `vdb`), or undefined. The
   * guest names disks in the order it finds them, so after hot-plugs with gaps its names can
   * differ from libvirt's `<target dev>`; the serial is the stable link (os-brick does the same).
   * virtio-blk: /sys/block/vdX/serial; SCSI: VPD page 0x80 after its 4-byte header.
   */
  async deviceForSerial(serial: string, timeoutMs = 10_000): Promise<string | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const out = await this.exec(
        'for d in /sys/block/vd* /sys/block/sd*; do [ -e "$d" ] || continue; ' +
          's=""; if [ -r "$d/serial" ]; then s=$(cat "$d/serial"); ' +
          'elif [ -r "$d/device/vpd_pg80" ]; then s=$(tail -c +5 "$d/device/vpd_pg80" | tr -d "\\000"); fi; ' +
          'echo "${d##*/} $s"; done',
        timeoutMs,
      );
      for (const line of out.split('\n')) {
        const [dev, ser] = line.trim().split(/\s+/, 2);
        // virtio-blk shows at most 20 bytes of the serial (VIRTIO_BLK_ID_BYTES): a UUID is cut.
        if (dev && ser && (ser === serial || (ser.length >= 20 && serial.startsWith(ser)))) return dev;
      }
      if (Date.now() > deadline) return undefined;
      await sleep(200);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Command shell (ttyS1)

  private onData = (d: Buffer): void => {
    this.rx += d.toString('latin1');
    const w = this.rxWaiters;
    this.rxWaiters = [];
    for (const f of w) f();
  };

  private waitRx(ms: number): Promise<void> {
    return new Promise((res) => {
      const t = setTimeout(res, ms);
      this.rxWaiters.push(() => {
        clearTimeout(t);
        res();
      });
    });
  }

  private async connect(deadline: number): Promise<Socket> {
    if (this.sock && !this.sock.destroyed) return this.sock;
    for (;;) {
      try {
        const s = await new Promise<Socket>((res, rej) => {
          const c = createConnection(this.shellSocket);
          c.once('connect', () => res(c));
          c.once('error', rej);
        });
        s.on('data', this.onData);
        s.on('error', () => {});
        s.on('close', () => {
          if (this.sock === s) this.sock = undefined;
        });
        this.sock = s;
        this.rx = '';
        break;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`guest ${this.name}: cannot connect to ${this.shellSocket}: ${String(err)}`);
        await sleep(100);
      }
    }
    // The guest's shell may not be listening on ttyS1 yet (input is dropped until it opens the
    // port): repeat a sync line until its echo comes back.
    const sock = this.sock;
    const marker = `OE-SYNC-${this.token}`;
    const re = new RegExp(`^${marker}$`, 'm');
    while (!re.test(this.rx)) {
      if (Date.now() > deadline) {
        sock.destroy();
        throw new Error(`guest ${this.name}: no shell on ttyS1 (got ${JSON.stringify(this.rx.slice(-200))})`);
      }
      sock.write(`\necho ${marker}\n`);
      await this.waitRx(50);
      sock.write('\n');
      await this.waitRx(150);
    }
    // Let any duplicate sync echoes arrive, then start clean.
    await sleep(50);
    this.rx = '';
    return sock;
  }

  /** Run `cmd` in the guest; resolves with its exit code and combined stdout/stderr. */
  execStatus(cmd: string, timeoutMs = 30_000): Promise<{ code: number; output: string }> {
    const p = this.queue.then(() => this.execNow(cmd, timeoutMs));
    this.queue = p.catch(() => {});
    return p;
  }

  /** Run `cmd` (a sh script) in the guest, stdin /dev/null; returns stdout+stderr, throws GuestExecError if it exits non-zero. */
  async exec(cmd: string, timeoutMs = 30_000): Promise<string> {
    const r = await this.execStatus(cmd, timeoutMs);
    if (r.code !== 0) throw new GuestExecError(cmd, r.code, r.output);
    return r.output;
  }

  private async execNow(cmd: string, timeoutMs: number): Promise<{ code: number; output: string }> {
    if (this.destroyed) throw new Error(`guest ${this.name} is destroyed`);
    const deadline = Date.now() + timeoutMs;
    const sock = await this.connect(deadline);
    const id = `${this.token}-${++this.seq}`;
    const begin = `OE-B-${id}\n`;
    const endRe = new RegExp(`OE-E-${id} (\\d+)\n`);
    // The command travels base64-encoded and runs from a file, so whatever it contains (quotes,
    // syntax errors, `exit`) cannot leave the serving shell waiting for more input.
    const b64 = Buffer.from(cmd).toString('base64');
    const f = `/tmp/.oe-cmd-${id}`;
    sock.write(`echo OE-B-${id}; echo ${b64} | base64 -d > ${f}; sh ${f} </dev/null 2>&1; echo "OE-E-${id} $?"; rm -f ${f}\n`);
    // QEMU's emulated 16550 (or its socket chardev) can leave the tail of what we sent in the
    // receive path until more input arrives: nudge with empty lines (harmless to sh) until the
    // shell has parsed the whole command, which it shows by printing the begin marker.
    let nudgeMs = 5;
    let nextNudge = Date.now() + nudgeMs;
    for (;;) {
      const b = this.rx.indexOf(begin);
      if (b < 0 && Date.now() >= nextNudge) {
        sock.write('\n');
        nudgeMs = Math.min(nudgeMs * 2, 100);
        nextNudge = Date.now() + nudgeMs;
      }
      if (b >= 0) {
        const rest = this.rx.slice(b + begin.length);
        const m = endRe.exec(rest);
        if (m) {
          this.rx = rest.slice(m.index + m[0].length);
          return { code: Number(m[1]), output: rest.slice(0, m.index) };
        }
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        // The command may still be running in the guest: drop this connection so later
        // commands do not read its output.
        sock.destroy();
        this.sock = undefined;
        throw new Error(`guest ${this.name}: command timed out after ${timeoutMs} ms: ${cmd}`);
      }
      await this.waitRx(Math.min(left, b < 0 ? Math.max(1, nextNudge - Date.now()) : 1000));
    }
  }

  // ------------------------------------------------------------------------------------------

  /**
   * Pull the plug (`virsh destroy`) of a persistent guest and keep it defined, to `start()` it
   * again: a shut-off server whose disks stay in its definition.
   */
  async powerOff(): Promise<void> {
    if (!this.persistent) throw new Error(`guest ${this.name} is transient: powering it off would remove it`);
    this.sock?.destroy();
    this.sock = undefined;
    const r = await run('virsh', ['-c', this.libvirtUri, 'destroy', this.uuid], { timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`virsh destroy ${this.name} failed: ${r.stderr.trim()}`);
  }

  /** Start a powered-off persistent guest (`virsh start`) and wait until it is ready again. */
  async start(readyTimeoutMs = 60_000): Promise<void> {
    if (this.destroyed) throw new Error(`guest ${this.name} is destroyed`);
    // The console log is rewritten by the new boot (append='off'): read it from its start.
    this.log = '';
    this.logBytes = 0;
    this.rx = '';
    const r = await run('virsh', ['-c', this.libvirtUri, 'start', this.uuid], { timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`virsh start ${this.name} failed: ${r.stderr.trim()}`);
    await this.waitReady(readyTimeoutMs);
  }

  /** Power the guest off (`virsh destroy`), and undefine it if persistent; a guest that is already gone is fine. */
  async destroy(): Promise<void> {
    this.destroyed = true;
    this.sock?.destroy();
    this.sock = undefined;
    // A failure is judged by looking at the domain again (virsh's words are not a contract):
    // gone, or not running, is what destroy wanted.
    const r = await run('virsh', ['-c', this.libvirtUri, 'destroy', this.uuid], { timeoutMs: 60_000 });
    if (r.code !== 0 && (await this.domainRuns()) === true) throw new Error(`virsh destroy ${this.name} failed: ${r.stderr.trim()}`);
    if (this.persistent) {
      const u = await run('virsh', ['-c', this.libvirtUri, 'undefine', this.uuid], { timeoutMs: 60_000 });
      if (u.code !== 0 && (await this.domainRuns()) !== undefined) throw new Error(`virsh undefine ${this.name} failed: ${u.stderr.trim()}`);
    }
  }

  /** True if the domain runs, false if it is defined but shut off, undefined if there is none. */
  private async domainRuns(): Promise<boolean | undefined> {
    const r = await run('virsh', ['-c', this.libvirtUri, 'domid', this.uuid], { timeoutMs: 30_000 });
    if (r.code !== 0) return undefined;
    // `domid` prints the numeric id of a running domain and `-` for one that is shut off.
    return /^\d+$/.test(r.stdout.trim());
  }
}
