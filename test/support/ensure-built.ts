/** Vitest global setup for the fast tier: compile dist/ when src/ is newer, once, before any test file. */
import { ensureBuilt } from './build.js';

export default function setup(): void {
  ensureBuilt();
}
