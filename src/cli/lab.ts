/**
 * `online-extend lab up|down|register|install-clients|install-scale`: the test lab (src/lab) from the command line. The lab is
 * loaded only when one of these commands runs, so the rest of the CLI never loads test infrastructure.
 */
import type { Command } from 'commander';
import { loadConfig } from '../config.js';
import { openDataDir } from '../db/dataDir.js';
import type { Store } from '../db/store.js';
import { addFlavor, addImage, newFlavor, newImage } from './catalog.js';

/** The lab's guest files (a LabInfo has them): named here so the CLI loads no lab module until a command needs one. */
export interface LabGuestFiles {
  kernel: string;
  initrd: string;
  cmdline: string;
}

/**
 * Register the lab's guest in `store` as an image and a flavor (src/lab labGuestCatalog), both
 * under the id `lab-guest`, so `POST /servers {"imageRef":"lab-guest","flavorRef":"lab-guest"}`
 * boots it. Idempotent: an image of that id is replaced (the lab's guest image may have been
 * rebuilt at other paths), a flavor of that id is kept. Answers the two ids.
 */
export async function registerLabGuest(store: Store, lab: LabGuestFiles): Promise<{ image: string; flavor: string }> {
  const { labGuestCatalog } = await import('../lab/index.js');
  const spec = labGuestCatalog(lab);
  await store.deleteImage(spec.image.id);
  const image = await addImage(store, newImage(spec.image));
  const flavor = (await store.getFlavor(spec.flavor.id)) ? spec.flavor.id : await addFlavor(store, newFlavor(spec.flavor));
  return { image, flavor };
}

/** Adds `lab up`, `lab down` and `lab register` to `program`; `out` receives their stdout lines. */
export function registerLabCommands(program: Command, out: (s: string) => void, env: NodeJS.ProcessEnv = {}): void {
  const lab = program
    .command('lab')
    .description('a private libvirtd, tgtd and test guest for tests, the benchmark and the demo (needs root)');

  lab
    .command('up')
    .description('start the lab (idempotent) and print its LabInfo as JSON')
    .option('--dir <dir>', 'lab directory (default <repo>/.lab)')
    .option('--cache-dir <dir>', 'guest image and libvirt capability cache (default $OE_LAB_CACHE or ~/.cache/online-extend)')
    .option('--no-install', 'do not apt-get install missing Debian packages')
    .action(async (opts: { dir?: string; cacheDir?: string; install: boolean }) => {
      const { labUp } = await import('../lab/index.js');
      const info = await labUp({
        dir: opts.dir,
        cacheDir: opts.cacheDir,
        install: opts.install,
        log: (m) => process.stderr.write(`lab: ${m}\n`),
      });
      out(JSON.stringify(info, null, 2));
    });

  lab
    .command('install-clients')
    .description("install Debian's OpenStack clients, tempest and keystone for the peer-suite tests (apt-get --no-install-recommends, as root; nothing to do when installed)")
    .action(async () => {
      const { CLIENT_PACKAGES, installClientPackages } = await import('../lab/index.js');
      const started = Date.now();
      const installed = await installClientPackages((m) => process.stderr.write(`lab: ${m}\n`));
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      out(installed.length === 0 ? `clients: all ${CLIENT_PACKAGES.length} packages already installed (${secs} s)` : `clients: installed ${installed.join(' ')} (${secs} s)`);
    });

  lab
    .command('install-scale')
    .description('install PostgreSQL and RabbitMQ for the multi-host tests and the scale benchmark (apt-get --no-install-recommends, as root; starts no service; nothing to do when installed)')
    .action(async () => {
      const { SCALE_PACKAGES, installScalePackages } = await import('../lab/index.js');
      const started = Date.now();
      const installed = await installScalePackages((m) => process.stderr.write(`lab: ${m}\n`));
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      out(installed.length === 0 ? `scale-out engines: all ${SCALE_PACKAGES.length} packages already installed (${secs} s)` : `scale-out engines: installed ${installed.join(' ')} (${secs} s)`);
    });

  lab
    .command('down')
    .description('stop everything `lab up` started (by pid), detach its loop devices, remove the lab directory')
    .option('--dir <dir>', 'lab directory (default <repo>/.lab)')
    .action(async (opts: { dir?: string }) => {
      const { labDown } = await import('../lab/index.js');
      await labDown({ dir: opts.dir, log: (m) => process.stderr.write(`lab: ${m}\n`) });
      out('lab down');
    });

  lab
    .command('register')
    .description("register the running lab's guest in a data dir as the image and flavor `lab-guest`; prints their ids as JSON")
    .option('--dir <dir>', 'lab directory (default <repo>/.lab)')
    .option('--data-dir <dir>', 'state directory (default ./data)')
    .option('--config <file>', 'settings from a JSON file (keys as in src/config.ts; flags and env win)')
    .action(async (opts: { dir?: string; dataDir?: string; config?: string }) => {
      const { readLab } = await import('../lab/index.js');
      const info = readLab(opts.dir);
      if (!info) throw new Error('no lab is up there: run `online-extend lab up` first');
      const config = loadConfig(env, { dataDir: opts.dataDir, driver: 'libvirt' }, opts.config);
      const dataDir = openDataDir(config.dataDir, { lock: false });
      try {
        out(JSON.stringify(await registerLabGuest(dataDir.store, info)));
      } finally {
        await dataDir.close();
      }
    });
}
