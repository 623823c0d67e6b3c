/**
 * Stand-alone entry for the lab, usable before the main CLI is built:
 *   npx tsx src/cli/labMain.ts up [--dir D] [--no-install]   |   npx tsx src/cli/labMain.ts down [--dir D]
 * (`online-extend lab up|down` is the same commands through the main CLI.)
 */
import { Command } from 'commander';
import { registerLabCommands } from './lab.js';

const program = new Command('online-extend-lab');
registerLabCommands(program, (s) => process.stdout.write(`${s}\n`));
// `main.ts up` and `main.ts lab up` both work.
const argv = process.argv.slice(2);
await program.parseAsync(argv[0] === 'lab' ? argv : ['lab', ...argv], { from: 'user' });
