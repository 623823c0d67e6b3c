/**
 * The names of the extend workflow's steps, in order (what each does: steps.ts). Kept apart,
 * with no imports, so the store's record type (db/store.ts `ExtendState.step`) can name them
 * with a type-only import and no cycle.
 */

/** The steps of the extend workflow, in order (stored as ExtendState.step). */
export const EXTEND_STEPS = ['storage', 'rescan', 'wait_host', 'assist', 'confirm', 'grow_fs'] as const;
/** One of EXTEND_STEPS. */
export type ExtendStep = (typeof EXTEND_STEPS)[number];
/** Where every extend starts. */
export const FIRST_STEP: ExtendStep = EXTEND_STEPS[0];
