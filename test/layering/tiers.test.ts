// The two test tiers (vitest.config.ts) split the suite mechanically: every test file is in exactly one
// tier, as vitest itself lists them, and no file of the fast tier reaches the lab, directly or through a
// helper — so a test that boots guests cannot slip into `npm run test:fast` unnoticed.
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { CONFIG, REPO } from './cruise.js';

const run = (args: string[]): Promise<string> =>
  new Promise((done, fail) => {
    execFile(process.execPath, args, { cwd: REPO, maxBuffer: 64 * 1024 * 1024, timeout: 120_000 }, (err, stdout, stderr) => {
      if (err && stdout.trim() === '') fail(new Error(`${args.join(' ')}: ${err.message}\n${stderr.slice(-2000)}`));
      else done(stdout);
    });
  });

/** Every `*.test.ts` under test/, relative to the repository root. */
function testFilesOnDisk(dir = join(REPO, 'test')): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return testFilesOnDisk(p);
    return e.name.endsWith('.test.ts') ? [relative(REPO, p)] : [];
  });
}

let listed: Array<{ file: string; tier: string }>;
let fastReaches: string[];

beforeAll(async () => {
  const out = await run([join(REPO, 'node_modules/vitest/vitest.mjs'), 'list', '--filesOnly', '--json']);
  listed = (JSON.parse(out) as Array<{ file: string; projectName: string }>).map((f) => ({
    file: relative(REPO, f.file),
    tier: f.projectName,
  }));
  const fast = listed.filter((f) => f.tier === 'fast').map((f) => f.file);
  // dependency-cruiser follows the fast files' imports through test/support into src/ (the rules'
  // verdicts on test files are beside the point here; only the modules reached are read).
  const cruised = await run([
    join(REPO, 'node_modules/dependency-cruiser/bin/dependency-cruise.mjs'),
    ...fast,
    '--config', CONFIG, '--output-type', 'json',
  ]);
  // Reached = loaded when the file is: static imports only. A dynamic import (the CLI's `demo` and
  // `lab` commands load the lab only when they run) is not followed.
  type Cruised = { modules: Array<{ source: string; dependencies: Array<{ resolved: string; dependencyTypes: string[] }> }> };
  const modules = new Map((JSON.parse(cruised) as Cruised).modules.map((m) => [m.source, m]));
  const reached = new Set<string>();
  const queue = [...fast];
  while (queue.length > 0) {
    const source = queue.pop()!;
    if (reached.has(source)) continue;
    reached.add(source);
    for (const d of modules.get(source)?.dependencies ?? []) {
      if (!d.dependencyTypes.includes('dynamic-import')) queue.push(d.resolved);
    }
  }
  fastReaches = [...reached];
});

describe('the test tiers', () => {
  it('hold every test file exactly once', () => {
    expect(listed.map((f) => f.file).sort()).toEqual(testFilesOnDisk().sort());
    expect(new Set(listed.map((f) => f.tier))).toEqual(new Set(['fast', 'load', 'real']));
  });

  it('keep the lab and the files named for real parts out of the fast tier', () => {
    const fast = listed.filter((f) => f.tier === 'fast').map((f) => f.file);
    expect(fast.filter((f) => /\.(e2e|real|load)\.test\.ts$/.test(f) || /^test\/(e2e|lab)\//.test(f))).toEqual([]);
    expect(fast.length).toBeGreaterThan(listed.length / 2);
  });

  it('let no fast test load src/lab, directly or through a helper (static imports)', () => {
    expect(fastReaches.length).toBeGreaterThan(listed.length);
    expect(fastReaches.filter((m) => m.startsWith('src/lab/'))).toEqual([]);
  });
});
