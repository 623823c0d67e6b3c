// Imports that dependency-cruiser cannot see (a computed import() specifier, require, createRequire)
// would walk around the layering rules; ESLint refuses them in src/ (eslint.config.js IMPORT_ESCAPES),
// together with the process.env rule in the same files — checked here with the real configuration,
// so a later config block that silently replaced these options would fail this test.
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';
import { REPO } from './cruise.js';

const eslint = new ESLint({ cwd: REPO });

/** The no-restricted-syntax messages ESLint gives `code` as if it were the file `filePath`. */
async function restricted(code: string, filePath: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath });
  return result!.messages.filter((m) => m.ruleId === 'no-restricted-syntax').map((m) => m.message);
}

const ESCAPES: Array<[name: string, code: string, message: RegExp]> = [
  ['a computed import() specifier', "const p = '../compute/manager.js';\nexport const load = () => import(p);\n", /import\(\) only with a literal specifier/],
  ['a template import() specifier', "const d = 'compute';\nexport const load = () => import(`../${d}/manager.js`);\n", /import\(\) only with a literal specifier/],
  ['createRequire', "import { createRequire } from 'node:module';\nexport const m: unknown = createRequire(import.meta.url)('../compute/manager.js');\n", /no createRequire in src/],
  ['require', "declare const require: (id: string) => unknown;\nexport const m = require('../compute/manager.js');\n", /no require in src/],
];

describe('imports the layering rules cannot see', () => {
  for (const file of ['src/host/escape.ts', 'src/virt/libvirt/escape.ts', 'src/config.ts', 'src/lab/escape.ts']) {
    it.each(ESCAPES)(`refuses %s in ${file}`, async (_name, code, message) => {
      expect(await restricted(code, file)).toEqual([expect.stringMatching(message)]);
    });
  }

  it('allows a literal dynamic import (the CLI loads the demo and the lab that way)', async () => {
    expect(await restricted("export const load = () => import('../lab/index.js');\n", 'src/cli/escape.ts')).toEqual([]);
  });

  it('still refuses process.env outside src/config.ts in the same files (the two rules do not replace each other)', async () => {
    expect(await restricted('export const x = process.env.HOME;\n', 'src/host/escape.ts')).toEqual([expect.stringMatching(/read configuration in src\/config.ts/)]);
    expect(await restricted('export const x = process.env.HOME;\n', 'src/config.ts')).toEqual([]);
  });
});
