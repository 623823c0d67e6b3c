/**
 * The QEMU guest agent (qemu-ga) of one domain, spoken through libvirtd's qemu-agent-command
 * (the remote client's QEMU program): `guest-ping`, and commands run in the guest with
 * `guest-exec` + `guest-exec-status` (argv only, never a shell line built from input; output
 * base64 in the agent's reply, decoded here).
 *
 * Errors: an agent that is absent, not connected, out of sync, or a domain without the agent's
 * channel or not running is AgentUnavailable (the caller answers "no guest agent"); a command the
 * agent refused (e.g. a program that is not there) is AgentCommandFailed; a command still running
 * at its deadline is AgentExecTimeout. libvirtd's own failures (connection, timeout) pass through.
 */
import { LibvirtError, LibvirtTimeoutError, VirErrorCode } from './remote/errors.js';
import { withTimings, type RequestTimings } from '../../util/timing.js';

/** What AgentUnavailable means to libvirt: these error numbers, for qemu-agent-command. */
const AGENT_UNAVAILABLE_CODES: ReadonlySet<number> = new Set([
  VirErrorCode.AGENT_UNRESPONSIVE, // "Guest agent is not responding", "QEMU guest agent is not connected"
  VirErrorCode.AGENT_UNSYNCED, // the agent answered guest-sync wrongly
  VirErrorCode.ARGUMENT_UNSUPPORTED, // "QEMU guest agent is not configured": no channel in the domain
  VirErrorCode.OPERATION_INVALID, // "domain is not running"
]);

/** The guest has no agent libvirtd can talk to now; `detail` is libvirt's message (operator-only). */
export class AgentUnavailable extends Error {
  constructor(readonly detail: string) {
    super(`guest agent unavailable: ${detail}`);
    this.name = 'AgentUnavailable';
  }
}

/** The agent answered a command with an error (libvirt's VIR_ERR_INTERNAL_ERROR "unable to execute QEMU agent command …"). */
export class AgentCommandFailed extends Error {
  constructor(readonly command: string, readonly detail: string) {
    super(`guest agent command ${command} failed: ${detail}`);
    this.name = 'AgentCommandFailed';
  }
}

/** A guest-exec'd program did not exit before its deadline (it may still be running in the guest). */
export class AgentExecTimeout extends Error {
  constructor(readonly path: string, readonly timeoutMs: number) {
    super(`${path} did not exit within ${timeoutMs} ms in the guest`);
    this.name = 'AgentExecTimeout';
  }
}

/** How a program run with guest-exec ended: exit code (or the signal that ended it) and its decoded output. */
export interface AgentExecResult {
  exitCode: number;
  /** Set when a signal ended it (exitCode is then -1). */
  signal?: number;
  stdout: string;
  stderr: string;
}

/** What GuestAgent needs of a domain: one agent command (see Guest.agentCommand). */
export interface AgentChannel {
  /** `marginMs`: how long past `timeoutSeconds` to wait for libvirtd's reply before giving up (LibvirtTimeoutError). */
  agentCommand(cmd: string, timeoutSeconds: number, marginMs?: number): Promise<string | null>;
}

/** Options of GuestAgent.exec: input on stdin, and the deadline in ms (default 60 s). */
export interface AgentExecOptions {
  input?: string;
  timeoutMs?: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The agent of one domain. */
export class GuestAgent {
  constructor(
    private readonly channel: AgentChannel,
    /** libvirtd's wait for each agent reply, in whole seconds. */
    private readonly replyTimeoutS = 10,
    /** The request the commands are part of (Server-Timing's `libvirt` part; util/timing.ts), if any. */
    private readonly timings?: RequestTimings,
  ) {}

  /**
   * One agent command: `execute` with `args`; resolves with the reply's `return` value. Throws
   * AgentUnavailable, AgentCommandFailed, or the client's errors.
   */
  async command<T = unknown>(execute: string, args?: Record<string, unknown>, timeoutS = this.replyTimeoutS, marginMs?: number): Promise<T> {
    const cmd = JSON.stringify(args === undefined ? { execute } : { execute, arguments: args });
    let text: string | null;
    try {
      text = await withTimings(this.timings, () => this.channel.agentCommand(cmd, timeoutS, marginMs));
    } catch (err) {
      if (err instanceof LibvirtError && AGENT_UNAVAILABLE_CODES.has(err.code)) throw new AgentUnavailable(err.message);
      if (err instanceof LibvirtError && err.code === VirErrorCode.INTERNAL_ERROR) throw new AgentCommandFailed(execute, err.message);
      throw err;
    }
    if (text === null) throw new AgentCommandFailed(execute, 'libvirtd returned no reply');
    let reply: unknown;
    try {
      reply = JSON.parse(text);
    } catch {
      throw new AgentCommandFailed(execute, `reply is not JSON: ${text.slice(0, 200)}`);
    }
    if (typeof reply !== 'object' || reply === null || !('return' in reply)) {
      throw new AgentCommandFailed(execute, `reply has no return value: ${text.slice(0, 200)}`);
    }
    return (reply as { return: T }).return;
  }

  /**
   * guest-ping, answered within about `timeoutS` seconds. Throws AgentUnavailable when the agent
   * does not answer. libvirtd first syncs with the agent under its own 5 s timeout, whatever
   * ours: so the call itself gives up half a second after `timeoutS`, and that counts as no agent
   * too (a hung agent answers "no agent" in ~2.5 s rather than 5).
   */
  async ping(timeoutS = 2): Promise<void> {
    try {
      await this.command('guest-ping', undefined, timeoutS, 500);
    } catch (err) {
      if (err instanceof LibvirtTimeoutError) throw new AgentUnavailable(`no answer to guest-ping within ${err.timeoutMs} ms`);
      throw err;
    }
  }

  /**
   * Run `path` with `args` in the guest (guest-exec, PATH searched by the agent), wait for it to
   * exit (guest-exec-status, polled), and return its exit code and output. A non-zero exit is a
   * result, not an error. Throws AgentExecTimeout past `timeoutMs`, AgentCommandFailed when the
   * agent cannot start it, AgentUnavailable, or the client's errors.
   */
  async exec(path: string, args: readonly string[], opts: AgentExecOptions = {}): Promise<AgentExecResult> {
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs;
    const started = await this.command<{ pid: number }>('guest-exec', {
      path,
      arg: [...args],
      'capture-output': true,
      ...(opts.input !== undefined ? { 'input-data': Buffer.from(opts.input).toString('base64') } : {}),
    });
    if (typeof started?.pid !== 'number') throw new AgentCommandFailed('guest-exec', 'no pid in the reply');
    // Poll quickly first (most of our commands take tens of ms), then back off to 200 ms.
    let wait = 10;
    for (;;) {
      const st = await this.command<{ exited: boolean; exitcode?: number; signal?: number; 'out-data'?: string; 'err-data'?: string }>('guest-exec-status', {
        pid: started.pid,
      });
      if (st.exited) {
        return {
          exitCode: st.exitcode ?? -1,
          ...(st.signal !== undefined ? { signal: st.signal } : {}),
          stdout: Buffer.from(st['out-data'] ?? '', 'base64').toString('utf8'),
          stderr: Buffer.from(st['err-data'] ?? '', 'base64').toString('utf8'),
        };
      }
      if (Date.now() + wait > deadline) throw new AgentExecTimeout(path, timeoutMs);
      await sleep(wait);
      wait = Math.min(wait * 2, 200);
    }
  }
}
