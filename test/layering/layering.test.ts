// The layering rules (.dependency-cruiser.cjs) bite: each violating fixture dropped into a copy of the
// repository is reported under exactly the rules it names, the healthy ones under none, every rule has a
// fixture, and today's src/ shows only the known violations listed below. dependency-cruiser runs as a
// real process, twice in all (the copy with every fixture, and the real src/).
import { cpSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync, mkdirSync, appendFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONFIG, REPO, cruise, describeViolation, type Violation } from './cruise.js';
import { HEALTHY, UNREACHABLE, VIOLATING, type LayeringFixture } from './fixtures.js';

/**
 * Violations on today's src/, each being fixed on another branch of issue E. This list is emptied when
 * those branches merge; after that the real src/ must be clean. Keep it sorted.
 */
let tree: string;
let inTree: Violation[];
let inSrc: Violation[];

/** Writes every fixture's files into `root` (a copy of the repository's src/). */
function dropFixtures(root: string, fixtures: LayeringFixture[]): void {
  for (const f of fixtures) {
    for (const [path, content] of Object.entries(f.files)) {
      const target = join(root, path);
      mkdirSync(dirname(target), { recursive: true });
      if (typeof content === 'string') writeFileSync(target, content);
      else appendFileSync(target, `\n${content.append}`);
    }
  }
}

/** Whether a violation concerns one of `paths`: as importer, as the module itself, or in a cycle. */
function concerns(v: Violation, paths: Set<string>): boolean {
  // Not as an import's target: another fixture may import one of these files (e.g. src/context.ts).
  return paths.has(v.from) || v.cycle.some((m) => paths.has(m));
}

/** The rule names reported for a fixture's files, sorted, once each. */
function rulesFor(f: LayeringFixture, violations: Violation[]): string[] {
  const paths = new Set(Object.keys(f.files));
  return [...new Set(violations.filter((v) => concerns(v, paths)).map((v) => v.rule))].sort();
}

beforeAll(async () => {
  tree = mkdtempSync(join(tmpdir(), 'oe-layering-'));
  cpSync(join(REPO, 'src'), join(tree, 'src'), { recursive: true });
  for (const file of ['package.json', 'tsconfig.json']) cpSync(join(REPO, file), join(tree, file));
  // Packages resolve as in the repository (npm vs devDependency vs not in package.json).
  symlinkSync(realpathSync(join(REPO, 'node_modules')), join(tree, 'node_modules'), 'dir');
  dropFixtures(tree, [...VIOLATING, ...HEALTHY]);
  [inTree, inSrc] = await Promise.all([cruise(tree), cruise(REPO)]);
});

afterAll(() => {
  if (tree) rmSync(tree, { recursive: true, force: true });
});

describe('the layering rules', () => {
  describe.each(VIOLATING.map((f) => [f.name, f] as const))('a module that %s', (_name, fixture) => {
    it('is reported under exactly the rules it breaks', () => {
      const expected = [...new Set(fixture.rules)].sort();
      const reported = rulesFor(fixture, inTree);
      // Every dropped-in file is unreachable from the entry points; that rule counts only where listed.
      const relevant = expected.includes(UNREACHABLE) ? reported : reported.filter((r) => r !== UNREACHABLE);
      expect(relevant).toEqual(expected);
    });
  });

  describe.each(HEALTHY.map((f) => [f.name, f] as const))('a module that %s', (_name, fixture) => {
    it('is allowed', () => {
      expect(rulesFor(fixture, inTree).filter((r) => r !== UNREACHABLE)).toEqual([]);
    });
  });

  it('each have a violating fixture', () => {
    const config = createRequire(import.meta.url)(CONFIG) as { forbidden: Array<{ name: string }> };
    const covered = new Set(VIOLATING.flatMap((f) => f.rules));
    const uncovered = config.forbidden.map((r) => r.name).filter((name) => !covered.has(name));
    expect(uncovered).toEqual([]);
    expect(config.forbidden.length).toBeGreaterThan(20);
  });

  it('report on the copy of src/ itself only what they report on the real src/', () => {
    const fixtureFiles = new Set([...VIOLATING, ...HEALTHY].flatMap((f) => Object.keys(f.files)));
    const rest = inTree.filter((v) => !concerns(v, fixtureFiles));
    expect(rest.map(describeViolation).sort()).toEqual(inSrc.map(describeViolation).sort());
  });

  it('find no violation in the real src/', () => {
    expect(inSrc.map(describeViolation).sort()).toEqual([]);
  });

  it('read the repository\'s package.json for the devDependency rule', () => {
    // The devDependency fixture is meaningful only if vitest is a devDependency and esbuild is not listed.
    const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
      devDependencies: Record<string, string>;
    };
    expect(Object.keys(pkg.devDependencies)).toContain('vitest');
    expect({ ...pkg.dependencies, ...pkg.devDependencies }).not.toHaveProperty('esbuild');
  });
});
