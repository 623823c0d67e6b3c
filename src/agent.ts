/**
 * PLACEHOLDER (G, roles helper): the compute agent (`online-extend compute-agent`) is written by
 * another helper; this file only gives the CLI's dynamic import a module to resolve until theirs
 * is merged. At merge, take the other helper's src/agent.ts whole and drop this one.
 *
 * Contract the CLI relies on: `startComputeAgent(config)` starts the host's driver and manager,
 * serves compute RPC for `compute.<config.computeHost>`, writes the host's `nova-compute`
 * heartbeat every `config.serviceHeartbeatMs`, and resolves to something with `close()`.
 */
/** Not built yet in this branch: throws. (Takes the CLI's Config; typed structurally, as src/config.ts is the entry points' alone.) */
export function startComputeAgent(config: { computeHost: string }): Promise<{ close(): Promise<void> }> {
  return Promise.reject(new Error(`compute-agent ${config.computeHost}: the compute agent is not built in this branch yet (src/agent.ts placeholder)`));
}
