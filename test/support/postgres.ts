/**
 * A real PostgreSQL 15 for tests (Debian's `postgresql`): a private cluster in a temp dir
 * (initdb, trust auth, fsync off), listening on 127.0.0.1 on a free port and on a unix socket in
 * the same dir; one database per suite (`createDatabase`). `stop()` ends the postmaster by pid
 * (`pg_ctl stop -m fast`, then waits until /proc shows the pid gone or a zombie) and removes the
 * dir; `restart()` stops it and serves the same data dir on the same port again (the fault tests'
 * "PostgreSQL restarts").
 *
 * As root (this machine) the server runs as the `postgres` user (root may not run it): the dir
 * is chowned to it and every binary runs through `runuser -u postgres`.
 */
import { execFile } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, appendFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';

const run = promisify(execFile);

/** Where Debian puts PostgreSQL 15's server binaries. */
export const PG_BIN = '/usr/lib/postgresql/15/bin';

const asRoot = userInfo().uid === 0;

/** Why a real PostgreSQL cannot run here, or undefined when it can. */
export function postgresMissing(): string | undefined {
  for (const b of ['initdb', 'pg_ctl', 'postgres']) {
    if (!existsSync(join(PG_BIN, b))) return `${join(PG_BIN, b)} not found (apt-get install --no-install-recommends postgresql)`;
  }
  if (asRoot && !existsSync('/usr/sbin/runuser')) return 'runuser not found (root may not run postgres)';
  if (asRoot) {
    try {
      userUid('postgres');
    } catch {
      return 'no postgres user to run the server as';
    }
  }
  return undefined;
}

/** A running PostgreSQL cluster of a test. */
export interface PostgresHarness {
  /** The postmaster's pid (changes at `restart`). */
  pid: number;
  port: number;
  /** The unix socket directory. */
  socketDir: string;
  /** TCP URL of database `db` (as the superuser `postgres`, no password: trust). */
  url(db: string): string;
  /** Unix-socket URL of database `db` (`?host=DIR`). */
  socketUrl(db: string): string;
  /** Create database `name` (fresh, empty) and answer its URL. */
  createDatabase(name: string): Promise<string>;
  /** Stop the server and start it again on the same data dir and port (connections are cut). */
  restart(): Promise<void>;
  /** Stop the server (by pid, waited for) and remove the dir. Safe to call twice. */
  stop(): Promise<void>;
  /** Time to initdb and to start, ms. */
  timings: { initdbMs: number; startMs: number };
}

function userUid(name: string): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${name}:`));
  if (!line) throw new Error(`no user ${name}`);
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

/** Turns a command into the one that runs it elsewhere (e.g. `Topology.wrap(role, …)`: inside a network namespace). */
export type CommandWrapper = (cmd: string, args: string[]) => [string, string[]];

/** Options of startPostgres. */
export interface PostgresOptions {
  /** Run every server binary through this (the server then lives where the wrapper puts it). */
  wrap?: CommandWrapper;
  /** TCP listen address (default 127.0.0.1); `url()` names it. */
  listen?: string;
}

/** Run a PostgreSQL binary (as `postgres` when we are root); throws with its stderr on failure. */
async function pgBin(bin: string, args: string[], timeoutMs = 60_000, wrap?: CommandWrapper): Promise<void> {
  const direct: [string, string[]] = asRoot ? ['/usr/sbin/runuser', ['-u', 'postgres', '--', join(PG_BIN, bin), ...args]] : [join(PG_BIN, bin), args];
  const [file, argv] = wrap ? wrap(...direct) : direct;
  try {
    await run(file, argv, { timeout: timeoutMs, env: { PATH: '/usr/bin:/bin:/usr/sbin:/sbin', LANG: 'C.UTF-8' } });
  } catch (e) {
    const err = e as Error & { stderr?: string; stdout?: string };
    throw new Error(`${bin} ${args[0] ?? ''} failed: ${err.message}\n${err.stderr ?? ''}${err.stdout ?? ''}`);
  }
}

/** True while `pid` runs (a zombie counts as gone: PID 1 here reaps late). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (alive(pid)) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

/**
 * Start a fresh cluster; see the module comment. With `opts.wrap` (a network namespace) the
 * server listens on `opts.listen`, accepts trusted TCP connections from its own subnet
 * (`samenet`), and this process reaches it through its unix socket only (createDatabase).
 * Throws when initdb or start fails (the dir is removed then).
 */
export async function startPostgres(opts: PostgresOptions = {}): Promise<PostgresHarness> {
  const listen = opts.listen ?? '127.0.0.1';
  const dir = mkdtempSync(join(tmpdir(), 'oe-pg-'));
  const data = join(dir, 'data');
  const socketDir = join(dir, 'sock');
  const log = join(dir, 'postgres.log');
  const port = await freePort();
  let pid = 0;
  let stopped = false;
  try {
    if (asRoot) {
      const { uid, gid } = userUid('postgres');
      chownSync(dir, uid, gid);
    }
    // The socket dir must exist before start; made by the server's user.
    await (asRoot ? run('/usr/sbin/runuser', ['-u', 'postgres', '--', 'mkdir', '-m', '0700', socketDir]) : run('mkdir', ['-m', '0700', socketDir]));
    const t0 = Date.now();
    await pgBin('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync'], 120_000);
    const initdbMs = Date.now() - t0;
    appendFileSync(
      join(data, 'postgresql.conf'),
      [
        '',
        `listen_addresses = '${listen}'`,
        `port = ${port}`,
        `unix_socket_directories = '${socketDir}'`,
        'fsync = off',
        'synchronous_commit = off',
        'full_page_writes = off',
        'max_connections = 100',
        'shared_buffers = 32MB',
        '',
      ].join('\n'),
    );
    // Clients in the other namespaces of the topology (the compute agents) connect over TCP.
    if (opts.wrap) appendFileSync(join(data, 'pg_hba.conf'), '\nhost all all samenet trust\n');
    const start = async (): Promise<number> => {
      const t = Date.now();
      await pgBin('pg_ctl', ['start', '-D', data, '-l', log, '-w', '-t', '60'], 60_000, opts.wrap);
      pid = Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
      return Date.now() - t;
    };
    const startMs = await start();
    const stopServer = async (): Promise<void> => {
      if (!pid || !alive(pid)) return;
      try {
        await pgBin('pg_ctl', ['stop', '-D', data, '-m', 'fast', '-w', '-t', '30'], 60_000, opts.wrap);
      } catch {
        // pg_ctl could not stop it: end it by pid.
        if (alive(pid)) process.kill(pid, 'SIGQUIT');
      }
      if (!(await waitGone(pid, 10_000))) {
        process.kill(pid, 'SIGKILL');
        await waitGone(pid, 5_000);
      }
    };
    const url = (db: string) => `postgresql://postgres@${listen}:${port}/${encodeURIComponent(db)}`;
    const socketUrl = (db: string) => `postgresql://postgres@/${encodeURIComponent(db)}?host=${encodeURIComponent(socketDir)}&port=${port}`;
    const h: PostgresHarness = {
      get pid() {
        return pid;
      },
      port,
      socketDir,
      url,
      socketUrl,
      async createDatabase(name) {
        // Never the TCP address of a wrapped server: it may be in another network namespace.
        const c = new pg.Client({ connectionString: opts.wrap ? socketUrl('postgres') : url('postgres') });
        await c.connect();
        try {
          await c.query(`CREATE DATABASE ${c.escapeIdentifier(name)}`);
        } finally {
          await c.end();
        }
        return url(name);
      },
      async restart() {
        await stopServer();
        await start();
      },
      async stop() {
        if (stopped) return;
        stopped = true;
        await stopServer();
        rmSync(dir, { recursive: true, force: true });
      },
      timings: { initdbMs, startMs },
    };
    return h;
  } catch (e) {
    if (pid && alive(pid)) {
      process.kill(pid, 'SIGQUIT');
      await waitGone(pid, 10_000);
    }
    let tail = '';
    try {
      tail = readFileSync(log, 'utf8').slice(-2000);
    } catch {
      // no log yet
    }
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`${(e as Error).message}${tail ? `\npostgres.log:\n${tail}` : ''}`);
  }
}
