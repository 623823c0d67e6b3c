/**
 * A real RabbitMQ 3.10 for tests (Debian's rabbitmq-server, see shared/notes/scale-out.md): run
 * straight from its sbin (the /usr/sbin wrapper switches user), in a private temp dir (its own
 * HOME with a 0400 .erlang.cookie, mnesia, logs, config), on free 127.0.0.1 ports for AMQP,
 * Erlang distribution and its own epmd (ERL_EPMD_ADDRESS=127.0.0.1). A user and vhost of its own,
 * so the URL exercises credentials and a vhost. `stop()` ends the node by pid, kills its epmd and
 * `start()` runs it again on the same dir and ports (the "broker away for 10 s" fault); `remove()`
 * stops it and deletes the dir.
 *
 * Starting takes 6–10 s: start it once per test file, not per test.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SBIN = '/usr/lib/rabbitmq/lib/rabbitmq_server-3.10.8/sbin';
const SERVER = join(SBIN, 'rabbitmq-server');
const EPMD = '/usr/bin/epmd';

/** Why a real RabbitMQ cannot run here, or undefined when it can. */
export function rabbitmqMissing(): string | undefined {
  for (const f of [SERVER, EPMD]) if (!existsSync(f)) return `${f} not found (apt-get install --no-install-recommends rabbitmq-server)`;
  return undefined;
}

export interface RabbitHarness {
  /** oslo.messaging transport URL: `rabbit://USER:PASS@127.0.0.1:PORT/VHOST`. */
  url: string;
  port: number;
  dir: string;
  /** How long the last start took until AMQP accepted a connection, ms. */
  startMs: number;
  /** Run the node (again) on the same dir and ports; resolves once AMQP answers. */
  start(): Promise<void>;
  /** End the node (SIGTERM, SIGKILL after 10 s) and its epmd; the dir stays. */
  stop(): Promise<void>;
  /** stop() and remove the dir. */
  remove(): Promise<void>;
  /** Run `rabbitmqctl ARGS` against the node; throws with its output when it fails. */
  ctl(...args: string[]): string;
}

async function portFree(port: number): Promise<boolean> {
  const srv = createServer();
  return new Promise((resolve) => {
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A free port below 40 000 (RabbitMQ's defaults derive ports by adding 20 000: keep them low anyway). */
async function lowFreePort(taken: Set<number>): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const p = 20_000 + Math.floor(Math.random() * 20_000);
    if (!taken.has(p) && (await portFree(p))) {
      taken.add(p);
      return p;
    }
  }
  throw new Error('no free port found for RabbitMQ');
}

/** Whether a TCP connection to 127.0.0.1:port opens. */
function tcpOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect({ host: '127.0.0.1', port });
    s.setTimeout(1_000);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
    s.once('timeout', () => (s.destroy(), resolve(false)));
  });
}

/** Whether a TCP connection to host:port opens from where `wrap` runs commands (bash's /dev/tcp). */
function wrappedTcpOpen(wrap: NonNullable<RabbitOptions['wrap']>, host: string, port: number): boolean {
  const r = spawnSync(...wrap('/bin/bash', ['-c', `exec 3<>/dev/tcp/${host}/${port}`]), { stdio: 'ignore', timeout: 2_000 });
  return r.status === 0;
}

/** Whether `pid` still runs (a zombie answers kill -0: read its state instead). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Options of startRabbitMQ. */
export interface RabbitOptions {
  /**
   * Run every RabbitMQ command (the server, rabbitmqctl, epmd) through this, e.g.
   * `(c, a) => topo.wrap('ctl', c, a)`: the node then lives in that network namespace, and
   * whether AMQP answers is probed from inside it too (a connect from here could leave the machine).
   */
  wrap?: (cmd: string, args: string[]) => [string, string[]];
  /** AMQP listen address (default 127.0.0.1; `url` names it). Epmd and distribution stay on the loopback. */
  listen?: string;
}

/** Start a RabbitMQ node (see the module comment). */
export async function startRabbitMQ(opts: RabbitOptions = {}): Promise<RabbitHarness> {
  const listen = opts.listen ?? '127.0.0.1';
  const wrap = opts.wrap ?? ((cmd: string, args: string[]): [string, string[]] => [cmd, args]);
  const dir = mkdtempSync(join(tmpdir(), 'oe-rabbitmq-'));
  const taken = new Set<number>();
  const port = await lowFreePort(taken);
  const distPort = await lowFreePort(taken);
  const epmdPort = await lowFreePort(taken);
  const user = 'oe';
  const password = randomBytes(12).toString('hex');
  const vhost = 'online-extend';
  const home = join(dir, 'home');
  mkdirSync(home, { mode: 0o700 });
  writeFileSync(join(home, '.erlang.cookie'), randomBytes(16).toString('hex'), { mode: 0o400 });
  mkdirSync(join(dir, 'mnesia'));
  mkdirSync(join(dir, 'log'));
  const conf = join(dir, 'rabbitmq.conf');
  writeFileSync(
    conf,
    [
      `listeners.tcp.default = ${listen}:${port}`,
      `default_user = ${user}`,
      `default_pass = ${password}`,
      `default_vhost = ${vhost}`,
      'loopback_users = none',
      // The test machine's disk may be nearly full: a broker that blocks publishers would look like a bug of ours.
      'disk_free_limit.absolute = 1MB',
      '',
    ].join('\n'),
  );
  writeFileSync(join(dir, 'enabled_plugins'), '[].\n');
  writeFileSync(join(dir, 'rabbitmq-env.conf'), '');
  const nodename = `oe${process.pid}x${port}@localhost`;
  const env: NodeJS.ProcessEnv = {
    PATH: '/usr/bin:/bin:/usr/sbin:/sbin',
    HOME: home,
    LANG: 'C.UTF-8',
    RABBITMQ_NODENAME: nodename,
    RABBITMQ_NODE_IP_ADDRESS: listen,
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    ERL_EPMD_PORT: String(epmdPort),
    ERL_EPMD_ADDRESS: '127.0.0.1',
    RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: join(dir, 'log'),
    RABBITMQ_CONFIG_FILE: conf,
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'enabled_plugins'),
    RABBITMQ_CONF_ENV_FILE: join(dir, 'rabbitmq-env.conf'),
    RABBITMQ_PID_FILE: join(dir, 'rabbitmq.pid'),
  };
  let child: ChildProcess | undefined;

  const stop = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (c?.pid !== undefined && c.exitCode === null && c.signalCode === null) {
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(t);
      // The beam may have been a grandchild: wait for the pid file's process too.
      const pidFile = join(dir, 'rabbitmq.pid');
      const beam = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : NaN;
      if (Number.isInteger(beam) && beam > 1 && beam !== c.pid) {
        const until = Date.now() + 10_000;
        if (alive(beam)) process.kill(beam, 'SIGTERM');
        while (alive(beam) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
        if (alive(beam)) process.kill(beam, 'SIGKILL');
      }
    }
    // epmd outlives the node: end the one on our port.
    spawnSync(...wrap(EPMD, ['-port', String(epmdPort), '-kill']), { env: { ...env }, stdio: 'ignore', timeout: 5_000 });
  };

  const harness: RabbitHarness = {
    url: `rabbit://${user}:${password}@${listen}:${port}/${vhost}`,
    port,
    dir,
    startMs: 0,
    start: async () => {
      if (child) return;
      const t0 = performance.now();
      const log = openSync(join(dir, 'log', 'console.log'), 'a');
      const c = spawn(...wrap(SERVER, []), { cwd: dir, env, stdio: ['ignore', log, log] });
      closeSync(log);
      child = c;
      let exited = false;
      c.once('exit', () => (exited = true));
      const deadline = Date.now() + 60_000;
      for (;;) {
        if (exited) {
          child = undefined;
          throw new Error(`rabbitmq-server exited at start; see ${join(dir, 'log')}`);
        }
        if (opts.wrap ? wrappedTcpOpen(wrap, listen, port) : await tcpOpen(port)) break;
        if (Date.now() > deadline) throw new Error('rabbitmq did not open its AMQP port within 60 s');
        await new Promise((r) => setTimeout(r, 100));
      }
      harness.startMs = performance.now() - t0;
    },
    stop,
    ctl: (...args: string[]) => {
      const r = spawnSync(...wrap(join(SBIN, 'rabbitmqctl'), args), { env, encoding: 'utf8', timeout: 60_000 });
      if (r.status !== 0) throw new Error(`rabbitmqctl ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr || r.stdout}`);
      return r.stdout;
    },
    remove: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await harness.start();
  } catch (err) {
    await harness.remove();
    throw err;
  }
  return harness;
}
