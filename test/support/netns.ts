/**
 * A private network topology for multi-host tests: simulated hosts in Linux network namespaces.
 *
 * One switch namespace holds a bridge; each member namespace (by default `ctl`, `h1`, `h2`) gets
 * one veth created straight into it (`ip -n SW link add p-M type veth peer name eth0 netns M`),
 * an address on a private /24 (`10.251.X.0/24`, X chosen so no route of the root namespace
 * covers it) and `lo` up. Nothing is created in the root namespace: no link, no address, no route.
 * Names are unique per run (`oe<pid><letter>-<member>`), so parallel runs do not clash.
 *
 * THE RULE: never address a namespace's IP from the root namespace. The root namespace has no
 * route for the private subnet except its default route, so such a packet would leave the
 * machine. Every client of a namespaced service runs inside a namespace (`runIn`, `spawnIn`), or
 * talks over a unix socket: `Topology.tunnel` gives the test a 127.0.0.1 port in the ROOT
 * namespace whose connections a helper inside `ctl` (test/support/netns-tunnel.mjs) carries on
 * to a namespace address over TCP (it checks it runs in `ctl` first).
 *
 * `teardown()` stops what was spawned here (by pid), kills by pid any process still inside one of
 * the namespaces (reported as leftovers), deletes the veths and namespaces it made and nothing
 * else. Idempotent; setup calls it itself when it fails half way.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createConnection, createServer, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { pidAlive, run, type RunResult } from '../../src/lab/index.js';

const TUNNEL_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'netns-tunnel.mjs');

/** One namespace of the topology: its role name, its real namespace name and its address. */
export interface NsMember {
  /** Role name given to createTopology (`ctl`, `h1`, …). */
  role: string;
  /** The namespace's name under /run/netns (`oe1234a-h1`). */
  ns: string;
  /** Its IPv4 address on the private subnet (e.g. `10.251.37.11`). */
  address: string;
}

/** Options of createTopology. */
export interface TopologyOptions {
  /** Member roles, in order (default `['ctl', 'h1', 'h2']`); the first gets host number .1, the others .11, .12, … */
  members?: string[];
  log?: (m: string) => void;
}

/** A process started inside a namespace by spawnIn. */
export interface NsProcess {
  /** The process's own pid (checked: `ip netns exec` has exec'd it, this is not the `ip` wrapper). */
  pid: number;
  ns: string;
  child: ChildProcess;
  /** Resolves when it exits, with its code or signal. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /**
   * The last 256 KiB of its stdout and stderr, interleaved (piped stdio is always drained, so a
   * chatty process never blocks on a full pipe).
   */
  output(): string;
  /** Resolve with the first match of `re` in output(); throws if it exits first or after `timeoutMs` (default 30 s). */
  waitForOutput(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  /** SIGTERM, then SIGKILL after `timeoutMs` (default 5 s); resolves once it is gone (/proc/PID/stat). */
  stop(timeoutMs?: number): Promise<void>;
}

/** A forwarded port: connections to `127.0.0.1:port` in the root namespace reach `target` from inside `via`. */
export interface Tunnel {
  /** `127.0.0.1:<port>` in the root namespace. */
  port: number;
  /** `http://127.0.0.1:<port>`: a base URL for ApiClient, fetch, the CLI. */
  url: string;
  target: { host: string; port: number };
  close(): Promise<void>;
}

/** A private topology; see the module comment. */
export interface Topology {
  /** Prefix of every name this topology made (`oe1234a`). */
  id: string;
  /** The private /24, e.g. `10.251.37.0/24`. */
  subnet: string;
  /** A private temp dir of this topology (the tunnel helpers' sockets); removed by teardown. */
  dir: string;
  /** The switch namespace (the bridge `br0` lives there; nothing else runs in it). */
  switchNs: string;
  /** Members by role. */
  members: Record<string, NsMember>;
  /** The member for `role`; throws if there is none. */
  member(role: string): NsMember;
  /** The namespace name of `role` (`ns('h1')` → `oe1234a-h1`). */
  ns(role: string): string;
  /** Run a command to completion inside role's namespace (`ip netns exec`); never throws. */
  runIn(role: string, cmd: string, args: string[], opts?: { timeoutMs?: number; env?: NodeJS.ProcessEnv }): Promise<RunResult>;
  /**
   * `[cmd, args]` that run `cmd args` inside role's namespace (`ip netns exec NS cmd args`), for
   * harnesses that spawn by themselves (pg_ctl, rabbitmq-server): the process execs in place, so
   * a pid they read (pid file, child.pid) is the real one.
   */
  wrap(role: string, cmd: string, args: string[]): [string, string[]];
  /** Start a long-lived process inside role's namespace; tracked and stopped by teardown if still running. */
  spawnIn(role: string, cmd: string, args: string[], opts?: SpawnOptions): Promise<NsProcess>;
  /** Pids of the live processes whose network namespace is role's (scan of /proc/<pid>/ns/net). */
  pidsIn(role: string): number[];
  /**
   * A 127.0.0.1 port in the root namespace whose connections are carried to `host:port` from
   * inside `via` (default the first member, `ctl`) by an in-namespace helper over a unix socket.
   * `host` must be on the private subnet or 127.x (the namespace's own loopback).
   */
  tunnel(host: string, port: number, via?: string): Promise<Tunnel>;
  /** Pids of the in-namespace tunnel helpers started so far (one per `via`). */
  helperPids(): number[];
  /**
   * Stop everything (see the module comment). Resolves with the problems found (leftover
   * processes killed, names that would not go away); an empty list is a clean teardown.
   */
  teardown(): Promise<string[]>;
}

let topologies = 0;

/** The namespace's identity (device and inode of its nsfs file), or undefined if there is none. */
export function netnsIdentity(name: string): string | undefined {
  try {
    const s = statSync(`/run/netns/${name}`);
    return `${s.dev}:${s.ino}`;
  } catch {
    return undefined;
  }
}

/** The network namespace identity of `pid` (`self` for this process), or undefined if unreadable. */
export function netnsOfPid(pid: number | 'self'): string | undefined {
  try {
    const s = statSync(`/proc/${pid}/ns/net`);
    return `${s.dev}:${s.ino}`;
  } catch {
    return undefined;
  }
}

/**
 * The /run/netns name of the network namespace `pid` runs in (default this process), or undefined
 * when it is in none of the named ones — the root namespace (PID 1's namespace link cannot be read
 * here, so "not in a named namespace" is how the root namespace is recognised). `ip netns identify`.
 */
export function netnsNameOf(pid: number | 'self' = 'self'): string | undefined {
  const mine = netnsOfPid(pid);
  if (mine === undefined) return undefined;
  let names: string[];
  try {
    names = readdirSync('/run/netns');
  } catch {
    return undefined;
  }
  return names.find((n) => netnsIdentity(n) === mine);
}

/** Names listed by `ip netns list` (the first word of each line). */
export async function listNetns(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list']);
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
}

/** Why this machine cannot build a topology (not root, no `ip`), or undefined if it can. */
export async function whyNoNetns(): Promise<string | undefined> {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  const r = await run('ip', ['-V']);
  if (r.code !== 0) return 'no `ip` (iproute2)';
  return undefined;
}

/** The IPv4 routes of the root namespace that are not the default one, as `a.b.c.d/n`. */
async function rootRoutes(): Promise<string[]> {
  const r = await run('ip', ['-4', '-j', 'route', 'show', 'table', 'all']);
  if (r.code !== 0) throw new Error(`ip route show failed: ${r.stderr}`);
  const out: string[] = [];
  for (const e of JSON.parse(r.stdout || '[]') as Array<{ dst?: string }>) {
    if (e.dst && e.dst !== 'default') out.push(e.dst.includes('/') ? e.dst : `${e.dst}/32`);
  }
  return out;
}

function ipv4(s: string): number {
  const p = s.split('.').map(Number);
  return (((p[0] ?? 0) << 24) | ((p[1] ?? 0) << 16) | ((p[2] ?? 0) << 8) | (p[3] ?? 0)) >>> 0;
}

function overlaps(a: string, b: string): boolean {
  const [aa, ab] = a.split('/');
  const [ba, bb] = b.split('/');
  const bits = Math.min(Number(ab), Number(bb));
  // (JavaScript shifts count modulo 32: 0xffffffff >>> 32 is not 0.)
  const mask = bits === 0 ? 0 : bits >= 32 ? 0xffffffff : (~(0xffffffff >>> bits)) >>> 0;
  return ((ipv4(aa ?? '') & mask) >>> 0) === ((ipv4(ba ?? '') & mask) >>> 0);
}

/** True if any route of the root namespace other than the default covers `address`. */
export async function rootHasRouteFor(address: string): Promise<boolean> {
  return (await rootRoutes()).some((r) => overlaps(r, `${address}/32`));
}

async function must(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args, { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (pidAlive(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

/** SIGTERM `pid`, SIGKILL after `timeoutMs`; true once it is gone (a zombie counts as gone). */
export async function stopPid(pid: number, timeoutMs = 5000): Promise<boolean> {
  if (!pidAlive(pid)) return true;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return true;
  }
  if (await waitGone(pid, timeoutMs)) return true;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return true;
  }
  return waitGone(pid, 3000);
}

/**
 * Remove what a killed earlier run left (a test worker killed by a timeout never tears down):
 * namespaces named `oe<pid><letter>-<role>` whose `<pid>` is no longer alive and that hold no
 * process, and those topologies' temp dirs. A namespace that still holds a process is left alone
 * (reported through `log`): its processes are not ours to kill. Resolves with the pids whose
 * leftovers were all removed.
 */
export async function sweepStaleTopologies(log: (m: string) => void = () => {}): Promise<number[]> {
  const byPid = new Map<number, string[]>();
  for (const n of await listNetns()) {
    const m = /^oe(\d+)[a-z]-[a-z][a-z0-9]{0,7}$/.exec(n);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || pidAlive(pid)) continue;
    byPid.set(pid, [...(byPid.get(pid) ?? []), n]);
  }
  const clean: number[] = [];
  for (const [pid, names] of byPid) {
    let all = true;
    for (const n of names) {
      const ident = netnsIdentity(n);
      const busy = readdirSync('/proc').some((e) => /^\d+$/.test(e) && netnsOfPid(Number(e)) === ident && pidAlive(Number(e)));
      if (busy) {
        all = false;
        log(`stale namespace ${n} (owner pid ${pid} gone) still holds processes: left alone`);
        continue;
      }
      await run('ip', ['netns', 'del', n]);
      log(`removed stale namespace ${n}`);
    }
    if (all) {
      for (const e of readdirSync(tmpdir())) if (new RegExp(`^oe${pid}[a-z]-`).test(e)) rmSync(join(tmpdir(), e), { recursive: true, force: true });
      clean.push(pid);
    }
  }
  return clean;
}

/**
 * Build a private topology (see the module comment): 0.3 s for three members. Throws if a step
 * fails, after removing what it had made.
 */
export async function createTopology(opts: TopologyOptions = {}): Promise<Topology> {
  const log = opts.log ?? (() => {});
  const roles = opts.members ?? ['ctl', 'h1', 'h2'];
  if (roles.length === 0 || roles.length > 80) throw new Error('a topology needs 1 to 80 members');
  for (const r of roles) if (!/^[a-z][a-z0-9]{0,7}$/.test(r)) throw new Error(`bad member role: ${r}`);
  if (new Set(roles).size !== roles.length) throw new Error('member roles must be distinct');
  if (topologies === 0) await sweepStaleTopologies(log);
  const letter = String.fromCharCode(97 + (topologies++ % 26));
  const id = `oe${process.pid}${letter}`;
  const switchNs = `${id}-sw`;

  // A /24 no route of the root namespace covers (the default route aside): the subnet is private
  // to this topology, and nothing in the root namespace may be mistaken for it.
  const routes = await rootRoutes();
  let third = -1;
  for (let i = 0; i < 240; i++) {
    const x = 16 + ((process.pid + topologies * 7 + i) % 240);
    if (!routes.some((r) => overlaps(r, `10.251.${x}.0/24`))) {
      third = x;
      break;
    }
  }
  if (third < 0) throw new Error('no free 10.251.X.0/24 subnet');
  const subnet = `10.251.${third}.0/24`;
  const members: Record<string, NsMember> = {};
  roles.forEach((role, i) => {
    members[role] = { role, ns: `${id}-${role}`, address: `10.251.${third}.${i === 0 ? 1 : 10 + i}` };
  });

  const made: string[] = [];
  const dir = mkdtempSync(join(tmpdir(), `${id}-`));
  const spawned = new Map<number, NsProcess>();
  const helpers = new Map<string, { proc: NsProcess; socket: string }>();
  const tunnels = new Set<Tunnel>();
  let tornDown = false;

  const member = (role: string): NsMember => {
    const m = members[role];
    if (!m) throw new Error(`no member ${role} in topology ${id}`);
    return m;
  };

  const pidsInNs = (name: string): number[] => {
    const ident = netnsIdentity(name);
    if (!ident) return [];
    const out: number[] = [];
    for (const e of readdirSync('/proc')) {
      if (!/^\d+$/.test(e)) continue;
      const pid = Number(e);
      if (pid === process.pid) continue;
      if (netnsOfPid(pid) === ident && pidAlive(pid)) out.push(pid);
    }
    return out;
  };

  const teardown = async (): Promise<string[]> => {
    const problems: string[] = [];
    tornDown = true;
    for (const t of [...tunnels]) await t.close();
    for (const p of spawned.values()) await p.stop(5000);
    spawned.clear();
    helpers.clear();
    // Whatever is still inside one of our namespaces was started there by this run (directly or
    // by a daemon we started): stop it by pid, and say so.
    for (const name of made) {
      for (const pid of pidsInNs(name)) {
        const cmd = safeCmdline(pid);
        problems.push(`process ${pid} (${cmd}) was still running in ${name}`);
        if (!(await stopPid(pid, 3000))) problems.push(`process ${pid} (${cmd}) in ${name} would not die`);
      }
    }
    // The switch's ports first (deleting one end of a veth deletes its peer), then the namespaces.
    if (made.includes(switchNs)) {
      for (const role of roles) await run('ip', ['-n', switchNs, 'link', 'del', `p-${role}`]);
    }
    for (const name of [...made].reverse()) {
      const r = await run('ip', ['netns', 'del', name]);
      if (r.code !== 0 && netnsIdentity(name)) problems.push(`ip netns del ${name} failed: ${r.stderr.trim()}`);
    }
    const left = (await listNetns()).filter((n) => made.includes(n));
    if (left.length) problems.push(`namespaces left: ${left.join(', ')}`);
    made.length = 0;
    rmSync(dir, { recursive: true, force: true });
    return problems;
  };

  const t0 = Date.now();
  try {
    await must('ip', ['netns', 'add', switchNs]);
    made.push(switchNs);
    await must('ip', ['-n', switchNs, 'link', 'add', 'br0', 'type', 'bridge']);
    await must('ip', ['-n', switchNs, 'link', 'set', 'br0', 'up']);
    await must('ip', ['-n', switchNs, 'link', 'set', 'lo', 'up']);
    for (const role of roles) {
      const m = member(role);
      await must('ip', ['netns', 'add', m.ns]);
      made.push(m.ns);
      await must('ip', ['-n', switchNs, 'link', 'add', `p-${role}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', m.ns]);
      await must('ip', ['-n', switchNs, 'link', 'set', `p-${role}`, 'master', 'br0', 'up']);
      await must('ip', ['-n', m.ns, 'addr', 'add', `${m.address}/24`, 'dev', 'eth0']);
      await must('ip', ['-n', m.ns, 'link', 'set', 'eth0', 'up']);
      await must('ip', ['-n', m.ns, 'link', 'set', 'lo', 'up']);
    }
  } catch (err) {
    const problems = await teardown();
    if (problems.length) log(`teardown after a failed setup: ${problems.join('; ')}`);
    throw err;
  }
  log(`topology ${id} (${subnet}: ${roles.map((r) => `${r}=${member(r).address}`).join(' ')}) up in ${Date.now() - t0} ms`);

  const spawnIn = async (role: string, cmd: string, args: string[], sopts: SpawnOptions = {}): Promise<NsProcess> => {
    if (tornDown) throw new Error(`topology ${id} is torn down`);
    const ns = member(role).ns;
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...sopts });
    const pid = child.pid;
    if (pid === undefined) {
      const err = await new Promise<Error>((res) => child.once('error', res));
      throw new Error(`cannot start ip netns exec ${ns} ${cmd}: ${err.message}`);
    }
    let tail = '';
    const keep = (d: Buffer): void => {
      tail += d.toString();
      if (tail.length > 262_144) tail = tail.slice(-262_144);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
      if (child.exitCode !== null || child.signalCode !== null) res({ code: child.exitCode, signal: child.signalCode });
      else child.once('exit', (code, signal) => res({ code, signal }));
    });
    const proc: NsProcess = {
      pid,
      ns,
      child,
      exited,
      output: () => tail,
      async waitForOutput(re, timeoutMs = 30_000) {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const m = re.exec(tail);
          if (m) return m;
          if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${cmd} in ${ns} exited (${child.exitCode ?? child.signalCode}) before printing ${re}: ${tail.slice(-2000)}`);
          if (Date.now() > deadline) throw new Error(`${cmd} in ${ns} did not print ${re} within ${timeoutMs} ms: ${tail.slice(-2000)}`);
          await sleep(20);
        }
      },
      async stop(timeoutMs = 5000) {
        spawned.delete(pid);
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        const done = await Promise.race([exited.then(() => true), sleep(timeoutMs).then(() => false)]);
        if (!done) {
          child.kill('SIGKILL');
          await exited;
        }
        await waitGone(pid, 3000);
      },
    };
    spawned.set(pid, proc);
    // `ip netns exec` execs the command (no fork), so the pid becomes the command once it has
    // switched namespaces; wait for that, so the pid handed out is the real process in `ns`.
    const ident = netnsIdentity(ns);
    const deadline = Date.now() + 5000;
    for (;;) {
      const exe = safeExe(pid);
      if (exe !== undefined && !/\/ip$/.test(exe) && netnsOfPid(pid) === ident) break;
      if (child.exitCode !== null || child.signalCode !== null || exe === undefined) {
        spawned.delete(pid);
        throw new Error(`ip netns exec ${ns} ${cmd} exited at once (${child.exitCode ?? child.signalCode})`);
      }
      if (Date.now() > deadline) {
        await proc.stop(1000);
        throw new Error(`ip netns exec ${ns} ${cmd}: pid ${pid} never became ${cmd}`);
      }
      await sleep(2);
    }
    return proc;
  };

  /** Helpers being started, by namespace: tunnels asked for at once (two api processes starting) share one start. */
  const starting = new Map<string, Promise<{ proc: NsProcess; socket: string }>>();
  const helper = async (via: string): Promise<{ proc: NsProcess; socket: string }> => {
    const have = helpers.get(via);
    if (have && pidAlive(have.proc.pid)) return have;
    const pending = starting.get(via);
    if (pending) return pending;
    const start = (async () => {
      const socket = join(dir, `${via}-tunnel.sock`);
      // A helper that died leaves its socket file: a new one could not listen on it.
      rmSync(socket, { force: true });
      const proc = await spawnIn(via, process.execPath, [TUNNEL_SCRIPT, socket, member(via).ns, subnet, '127.0.0.0/8']);
      await proc.waitForOutput(/^READY \d+$/m, 10_000);
      const h = { proc, socket };
      helpers.set(via, h);
      return h;
    })();
    starting.set(via, start);
    try {
      return await start;
    } finally {
      starting.delete(via);
    }
  };

  const tunnel = async (host: string, port: number, via: string = roles[0] ?? 'ctl'): Promise<Tunnel> => {
    if (!overlaps(subnet, `${host}/32`) && !/^127\./.test(host)) throw new Error(`tunnel target ${host} is not on ${subnet} nor loopback`);
    const { socket } = await helper(via);
    const sockets = new Set<Socket>();
    const server = createServer((local) => {
      local.setNoDelay(true);
      const remote = createConnection(socket);
      sockets.add(local).add(remote);
      const end = (): void => {
        local.destroy();
        remote.destroy();
        sockets.delete(local);
        sockets.delete(remote);
      };
      local.on('error', end).on('close', end);
      remote.on('error', end).on('close', end);
      remote.write(`${host} ${port}\n`);
      local.pipe(remote);
      remote.pipe(local);
    });
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(0, '127.0.0.1', () => res());
    });
    const addr = server.address();
    if (!addr || typeof addr === 'string') throw new Error('tunnel listener has no port');
    const t: Tunnel = {
      port: addr.port,
      url: `http://127.0.0.1:${addr.port}`,
      target: { host, port },
      async close() {
        tunnels.delete(t);
        // Clients keep idle connections open (fetch: 4 s): cut them, or close() waits for them.
        for (const s of sockets) s.destroy();
        await new Promise<void>((res) => server.close(() => res()));
      },
    };
    tunnels.add(t);
    return t;
  };

  return {
    id,
    dir,
    subnet,
    switchNs,
    members,
    member,
    ns: (role) => member(role).ns,
    runIn: (role, cmd, args, ropts = {}) => run('ip', ['netns', 'exec', member(role).ns, cmd, ...args], { timeoutMs: ropts.timeoutMs ?? 60_000, ...(ropts.env ? { env: ropts.env } : {}) }),
    wrap: (role, cmd, args) => ['ip', ['netns', 'exec', member(role).ns, cmd, ...args]],
    spawnIn,
    pidsIn: (role) => pidsInNs(member(role).ns),
    tunnel,
    helperPids: () => [...helpers.values()].map((h) => h.proc.pid),
    teardown,
  };
}

function safeExe(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return undefined;
  }
}

function safeCmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim().slice(0, 200);
  } catch {
    return '?';
  }
}
