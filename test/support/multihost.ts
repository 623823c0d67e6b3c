/**
 * Several hypervisor hosts on one machine, for issue G's multi-host tests: a private topology
 * (test/support/netns.ts: namespaces `ctl`, `h1`, `h2`, … on a bridge), and on each host a
 * private libvirtd running inside the host's network namespace plus a private mount namespace
 * (the lab's scripts/lab/start-libvirtd.sh under `ip netns exec`), its QEMUs with it, and by
 * default one real TCG lab guest with one raw file volume attached as `vdb`.
 *
 * What is shared, as in a cloud: the filesystem. Each libvirtd's unix socket is reachable by path
 * from every namespace (`qemu+unix:///system?socket=PATH`), so a host's compute agent runs inside
 * the host's namespace and connects by path; volumes live in ONE file pool, `<sharedDataDir>/volumes/file`
 * (the file backend's pool of a service whose `--data-dir` is `sharedDataDir`), which every host and
 * every `api` process sees. The guests' consoles are files: GuestShell reads them from anywhere.
 *
 * What is private per host: the network (its own address, reachable only from inside the topology)
 * and its libvirtd (it lists only its own domains).
 *
 * `close()` destroys the guests, stops each libvirtd by pid (and any QEMU it left), tears the
 * topology down (processes still inside a namespace are killed by pid and reported), detaches any
 * loop device backed by a file of the run dir, removes the run dir; it resolves with the problems
 * it found (empty: clean). Setup that fails half way closes what it had started.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  GUEST_CMDLINE,
  bootGuest,
  buildGuestImage,
  defaultCacheDir,
  labLoopDevices,
  pidAlive,
  run,
  startLibvirtd,
  stopLibvirtd,
  type GuestHost,
  type GuestImage,
  type GuestShell,
  type LabLibvirtd,
} from '../../src/lab/index.js';
import { createTopology, netnsIdentity, netnsOfPid, whyNoNetns, type NsMember, type Topology } from './netns.js';

/** The volume attached to a host's guest: a raw file in the shared pool, named as FileBackend names it. */
export interface HostVolume {
  /** Its id (a UUID; also the disk's `<serial>`). */
  id: string;
  /** `<filePoolDir>/<id>.raw`. */
  path: string;
  /** Size at boot, in bytes. */
  bytes: number;
  /** libvirt's target and the guest's device name. */
  target: 'vdb';
}

/** One simulated hypervisor host. */
export interface HypervisorHost extends NsMember {
  /** This host's private directory (its libvirtd's config, sockets, logs; its guests' consoles). */
  dir: string;
  /** Its libvirtd: pid (inside the host's network namespace), unix socket, URI. */
  libvirtd: LabLibvirtd;
  /** `qemu+unix:///system?socket=…`: what `compute-agent --libvirt-uri` takes. */
  libvirtUri: string;
  /** What bootGuest and labGuestCatalog take for this host. */
  lab: GuestHost;
  /** The host's booted guest (unless `guests: false`). */
  guest?: GuestShell;
  /** The guest's attached volume (unless `guests: false`). */
  volume?: HostVolume;
}

/** Options of startMultiHost. */
export interface MultiHostOptions {
  /** Host roles (default `['h1', 'h2']`); `ctl` is always there too. */
  hosts?: string[];
  /** Boot one guest per host, with one raw file volume as vdb (default true). */
  guests?: boolean;
  /** Guest memory in MiB (default 128: two TCG guests share 2 cores with everything else). */
  guestMemoryMiB?: number;
  /** Size of each guest's volume in bytes (default 64 MiB). */
  volumeBytes?: number;
  /** The lab cache (guest image, libvirt's QEMU capabilities); default the lab's. */
  cacheDir?: string;
  log?: (m: string) => void;
}

/** A running multi-host setup; see the module comment. */
export interface MultiHost {
  topo: Topology;
  /** The control namespace's member (RabbitMQ, PostgreSQL, the `api` processes and the test's clients run there). */
  ctl: NsMember;
  /** The run's temp dir (everything below is removed by close). */
  dir: string;
  /** A data dir whose file pool (`volumes/file`) is shared by every host and `api` process. */
  sharedDataDir: string;
  /** `<sharedDataDir>/volumes/file`. */
  filePoolDir: string;
  /** The guest image every host boots (kernel, initramfs, command line). */
  image: GuestImage & { cmdline: string };
  hosts: Record<string, HypervisorHost>;
  /** The host for `role`; throws if there is none. */
  host(role: string): HypervisorHost;
  /** Milliseconds taken by: `topology`, `image`, `libvirtd` (all hosts in parallel), `guests` (all in parallel), `total`. */
  timings: Record<string, number>;
  /** Stop everything; resolves with the problems found (empty: clean). Idempotent. */
  close(): Promise<string[]>;
}

/** Why this machine cannot run the multi-host harness, or undefined if it can. */
export async function whyNoMultiHost(): Promise<string | undefined> {
  const net = await whyNoNetns();
  if (net) return net;
  for (const [bin, args] of [
    ['libvirtd', ['--version']],
    ['virsh', ['--version']],
    ['qemu-system-x86_64', ['--version']],
    ['unshare', ['--version']],
  ] as const) {
    if ((await run(bin, [...args])).code !== 0) return `no ${bin} (the lab's packages: online-extend lab up installs them)`;
  }
  return undefined;
}

/**
 * Remove run dirs (`<tmp>/oe-mh-<pid>-*`) a killed earlier run left, when `<pid>` is gone and no
 * live process names the dir on its command line (an orphaned libvirtd or QEMU would).
 */
function sweepStaleRunDirs(log: (m: string) => void): void {
  const cmdlines: string[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      cmdlines.push(readFileSync(`/proc/${e}/cmdline`, 'utf8'));
    } catch {
      /* gone */
    }
  }
  for (const e of readdirSync(tmpdir())) {
    const m = /^oe-mh-(\d+)-/.exec(e);
    if (!m || Number(m[1]) === process.pid || pidAlive(Number(m[1]))) continue;
    const path = join(tmpdir(), e);
    if (cmdlines.some((c) => c.includes(`${path}/`))) {
      log(`stale run dir ${path} is still in use by a process: left alone`);
      continue;
    }
    rmSync(path, { recursive: true, force: true });
    log(`removed stale run dir ${path}`);
  }
}

/**
 * Start the topology, one private libvirtd per host (in parallel), and by default one guest per
 * host (in parallel). Throws if a part does not come up, after stopping what did.
 */
export async function startMultiHost(opts: MultiHostOptions = {}): Promise<MultiHost> {
  const log = opts.log ?? (() => {});
  const roles = opts.hosts ?? ['h1', 'h2'];
  if (roles.includes('ctl')) throw new Error('`ctl` is the control namespace, not a host');
  const cacheDir = opts.cacheDir ?? defaultCacheDir();
  sweepStaleRunDirs(log);
  const t0 = Date.now();
  const timings: Record<string, number> = {};
  const dir = mkdtempSync(join(tmpdir(), `oe-mh-${process.pid}-`));
  const sharedDataDir = join(dir, 'shared');
  const filePoolDir = join(sharedDataDir, 'volumes', 'file');
  mkdirSync(filePoolDir, { recursive: true });

  let topo: Topology | undefined;
  const hosts: Record<string, HypervisorHost> = {};
  const started: Array<{ dir: string; pid: number }> = [];
  let closed: Promise<string[]> | undefined;

  const close = (): Promise<string[]> => {
    closed ??= (async () => {
      const problems: string[] = [];
      // Hosts are independent: stop them in parallel (libvirtd takes ~1-2 s to go).
      await Promise.all(
        started.map(async (s) => {
          const h = Object.values(hosts).find((x) => x.libvirtd.pid === s.pid);
          await h?.guest?.destroy().catch((e: unknown) => problems.push(`guest ${h.guest?.name}: ${(e as Error).message}`));
          await stopLibvirtd(s.dir, s.pid, log).catch((e: unknown) => problems.push(`libvirtd ${s.pid}: ${(e as Error).message}`));
        }),
      );
      if (topo) problems.push(...(await topo.teardown()));
      for (const dev of await labLoopDevices(dir)) {
        problems.push(`loop device ${dev} was left attached`);
        await run('losetup', ['-d', dev]);
      }
      rmSync(dir, { recursive: true, force: true });
      return problems;
    })();
    return closed;
  };

  try {
    let t = Date.now();
    topo = await createTopology({ members: ['ctl', ...roles], log });
    timings.topology = Date.now() - t;
    const tp = topo;

    // The guest image (cached after the first build) and the libvirtds are independent.
    t = Date.now();
    const imageP = opts.guests === false ? Promise.resolve(undefined) : buildGuestImage(cacheDir, { log });
    // Awaited below, unless a libvirtd fails first: then its rejection must not go unhandled.
    imageP.catch(() => undefined);
    const daemons = await Promise.allSettled(
      roles.map(async (role) => {
        const hostDir = join(dir, role);
        mkdirSync(hostDir, { recursive: true });
        const ns = tp.ns(role);
        const libvirtd = await startLibvirtd(hostDir, cacheDir, (m) => log(`[${role}] ${m}`), { netns: ns });
        started.push({ dir: hostDir, pid: libvirtd.pid });
        // The daemon must really be in the host's namespace (its QEMUs inherit it).
        if (netnsOfPid(libvirtd.pid) !== netnsIdentity(ns)) throw new Error(`libvirtd ${libvirtd.pid} of ${role} is not in namespace ${ns}`);
        return { role, hostDir, libvirtd };
      }),
    );
    for (const d of daemons) if (d.status === 'rejected') throw d.reason;
    timings.libvirtd = Date.now() - t;
    const image = await imageP;
    timings.image = Date.now() - t;
    const img = image ?? { kernelVersion: '', kernel: '', initrd: '' };
    const imageInfo = { ...img, cmdline: GUEST_CMDLINE };
    for (const d of daemons) {
      if (d.status !== 'fulfilled') continue;
      const { role, hostDir, libvirtd } = d.value;
      hosts[role] = {
        ...tp.member(role),
        dir: hostDir,
        libvirtd,
        libvirtUri: libvirtd.uri,
        lab: { dir: hostDir, libvirtUri: libvirtd.uri, kernel: imageInfo.kernel, initrd: imageInfo.initrd, cmdline: imageInfo.cmdline },
      };
    }

    if (opts.guests !== false) {
      t = Date.now();
      const bytes = opts.volumeBytes ?? 64 * 1024 * 1024;
      const boots = await Promise.allSettled(
        roles.map(async (role) => {
          const h = hosts[role]!;
          const id = randomUUID();
          const path = join(filePoolDir, `${id}.raw`);
          writeFileSync(path, Buffer.alloc(0));
          truncateSync(path, bytes);
          h.volume = { id, path, bytes, target: 'vdb' };
          const tb = Date.now();
          h.guest = await bootGuest(h.lab, {
            name: `${tp.id}-${role}`,
            memoryMiB: opts.guestMemoryMiB ?? 128,
            disks: [
              `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${path}'/>` +
                `<target dev='vdb' bus='virtio'/><serial>${id}</serial></disk>`,
            ],
            readyTimeoutMs: 120_000,
          });
          log(`[${role}] guest ${h.guest.name} ready after ${Date.now() - tb} ms`);
        }),
      );
      for (const b of boots) if (b.status === 'rejected') throw b.reason;
      timings.guests = Date.now() - t;
    }
    timings.total = Date.now() - t0;
    log(`multi-host up: ${JSON.stringify(timings)}`);
    return {
      topo: tp,
      ctl: tp.member('ctl'),
      dir,
      sharedDataDir,
      filePoolDir,
      image: imageInfo,
      hosts,
      host(role) {
        const h = hosts[role];
        if (!h) throw new Error(`no host ${role}`);
        return h;
      },
      timings,
      close,
    };
  } catch (err) {
    const problems = await close();
    if (problems.length) log(`cleanup after a failed start: ${problems.join('; ')}`);
    throw err;
  }
}
