/** The extend workflow's timings (workflow.ts), all in milliseconds. */

/** How long and how often the extend workflow waits; all in ms. */
export interface WorkflowOptions {
  /** Total time an extend may take before it ends in error_extending. Generous: storage can be slow. */
  timeoutMs: number;
  /** Backoff for retries and host polling: first delay, and cap. */
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** First interval of the host-size polling (doubles up to backoffMaxMs). */
  pollBaseMs: number;
  /** Sleep before every step. For crash-recovery tests only; 0 in production. */
  stepDelayMs: number;
  /** How often the watchdog looks for extends without a run and for passed deadlines. */
  watchdogMs: number;
  /**
   * How long a worker's lease on an extend lasts (renewed every third of it): another worker
   * takes over a dead worker's extend this long after its last renewal (config `extendLeaseMs`).
   */
  leaseMs: number;
}

/** The defaults (app.ts overrides timeoutMs, stepDelayMs, watchdogMs and leaseMs from Config). */
export const DEFAULT_WORKFLOW_OPTIONS: WorkflowOptions = {
  timeoutMs: 15 * 60_000,
  backoffBaseMs: 50,
  backoffMaxMs: 5_000,
  pollBaseMs: 5,
  stepDelayMs: 0,
  watchdogMs: 1_000,
  leaseMs: 15_000,
};

