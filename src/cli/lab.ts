/**
 * `online-extend lab up|down|install-clients`: the test lab (src/lab) from the command line. The lab is loaded
 * only when one of these commands runs, so the rest of the CLI never loads test infrastructure.
 */
import type { Command } from 'commander';

/** Adds `lab up` and `lab down` to `program`; `out` receives their stdout lines. */
export function registerLabCommands(program: Command, out: (s: string) => void): void {
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
    .command('down')
    .description('stop everything `lab up` started (by pid), detach its loop devices, remove the lab directory')
    .option('--dir <dir>', 'lab directory (default <repo>/.lab)')
    .action(async (opts: { dir?: string }) => {
      const { labDown } = await import('../lab/index.js');
      await labDown({ dir: opts.dir, log: (m) => process.stderr.write(`lab: ${m}\n`) });
      out('lab down');
    });
}
