/**
 * How the libvirt driver reads a failure: THE table of libvirt's error numbers (final or
 * uncertain, and a public reason), and what a failed call on an attached volume may be about
 * (`FailureContext`), which `DomainDisks.reobserve` looks at before the table is consulted.
 */
import { VirErrorCode } from './remote/errors.js';
import type { DomainDisk } from './domxml.js';

/** How one libvirt error number is read: its name, final or uncertain, and a public reason. */
export interface LibvirtErrorClass {
  name: string;
  final: boolean;
  reason: string;
}

/**
 * THE classification of libvirt's errors, by virErrorNumber (include/libvirt/virterror.h),
 * never by message text. Uncertain: the operation may succeed if tried again unchanged (a
 * timeout waiting for the domain's job lock, a broken RPC, a busy resource or block job, an
 * unresponsive guest agent, libvirtd short of memory, an aborted job). Everything else, and any
 * number not listed, is final (external-resizer's rule for what nobody understood).
 *
 * Before this table is consulted the driver looks again at what the failure may be about (see
 * `reobserve`): a domain that is gone or no longer running, a disk that is no longer attached, a
 * host size below the request, a file size above what its filesystem holds. Those answers come
 * from the hypervisor and the host as they are now, not from libvirt's words.
 */
export const LIBVIRT_ERRORS: Readonly<Record<number, LibvirtErrorClass>> = {
  [VirErrorCode.INTERNAL_ERROR]: { name: 'VIR_ERR_INTERNAL_ERROR', final: true, reason: 'libvirt or QEMU reported an internal error' },
  [VirErrorCode.NO_MEMORY]: { name: 'VIR_ERR_NO_MEMORY', final: false, reason: 'libvirtd is out of memory' },
  [VirErrorCode.NO_SUPPORT]: { name: 'VIR_ERR_NO_SUPPORT', final: true, reason: 'the hypervisor does not support this operation' },
  [VirErrorCode.NO_CONNECT]: { name: 'VIR_ERR_NO_CONNECT', final: false, reason: 'libvirtd has no connection to the hypervisor' },
  [VirErrorCode.INVALID_CONN]: { name: 'VIR_ERR_INVALID_CONN', final: false, reason: 'the connection to libvirtd is no longer valid' },
  [VirErrorCode.INVALID_DOMAIN]: { name: 'VIR_ERR_INVALID_DOMAIN', final: true, reason: 'the domain handle is not valid' },
  [VirErrorCode.INVALID_ARG]: { name: 'VIR_ERR_INVALID_ARG', final: true, reason: 'libvirt refused an argument' },
  [VirErrorCode.OPERATION_FAILED]: { name: 'VIR_ERR_OPERATION_FAILED', final: true, reason: 'the operation failed in libvirt' },
  [VirErrorCode.XML_ERROR]: { name: 'VIR_ERR_XML_ERROR', final: true, reason: 'libvirt refused the device description' },
  [VirErrorCode.OPERATION_DENIED]: { name: 'VIR_ERR_OPERATION_DENIED', final: true, reason: 'libvirt denied the operation' },
  [VirErrorCode.SYSTEM_ERROR]: { name: 'VIR_ERR_SYSTEM_ERROR', final: true, reason: 'a system call failed on the hypervisor host' },
  [VirErrorCode.RPC]: { name: 'VIR_ERR_RPC', final: false, reason: 'the call to libvirtd broke off' },
  [VirErrorCode.NO_DOMAIN]: { name: 'VIR_ERR_NO_DOMAIN', final: true, reason: 'the domain does not exist' },
  [VirErrorCode.AUTH_FAILED]: { name: 'VIR_ERR_AUTH_FAILED', final: true, reason: 'libvirtd refused the credentials' },
  [VirErrorCode.OPERATION_INVALID]: { name: 'VIR_ERR_OPERATION_INVALID', final: true, reason: 'the operation is not valid in the state of the domain' },
  [VirErrorCode.CONFIG_UNSUPPORTED]: { name: 'VIR_ERR_CONFIG_UNSUPPORTED', final: true, reason: 'the hypervisor does not support this configuration' },
  [VirErrorCode.OPERATION_TIMEOUT]: { name: 'VIR_ERR_OPERATION_TIMEOUT', final: false, reason: 'timed out waiting for the domain (another job holds it)' },
  [VirErrorCode.ARGUMENT_UNSUPPORTED]: { name: 'VIR_ERR_ARGUMENT_UNSUPPORTED', final: true, reason: 'the hypervisor does not support an argument' },
  [VirErrorCode.OPERATION_ABORTED]: { name: 'VIR_ERR_OPERATION_ABORTED', final: false, reason: 'the operation was aborted' },
  [VirErrorCode.BLOCK_COPY_ACTIVE]: { name: 'VIR_ERR_BLOCK_COPY_ACTIVE', final: false, reason: 'a block job is active on the disk' },
  [VirErrorCode.OPERATION_UNSUPPORTED]: { name: 'VIR_ERR_OPERATION_UNSUPPORTED', final: true, reason: 'the hypervisor does not support this operation' },
  [VirErrorCode.AGENT_UNRESPONSIVE]: { name: 'VIR_ERR_AGENT_UNRESPONSIVE', final: false, reason: 'the guest agent does not respond' },
  [VirErrorCode.RESOURCE_BUSY]: { name: 'VIR_ERR_RESOURCE_BUSY', final: false, reason: 'the resource is in use' },
  [VirErrorCode.ACCESS_DENIED]: { name: 'VIR_ERR_ACCESS_DENIED', final: true, reason: 'libvirt denied access' },
  [VirErrorCode.AGENT_UNSYNCED]: { name: 'VIR_ERR_AGENT_UNSYNCED', final: false, reason: 'the guest agent is out of sync' },
  [VirErrorCode.DEVICE_MISSING]: { name: 'VIR_ERR_DEVICE_MISSING', final: true, reason: 'the device is missing' },
};

/** The class of a libvirt error number; unknown numbers are final. */
export function classifyLibvirtError(code: number): LibvirtErrorClass {
  return Object.hasOwn(LIBVIRT_ERRORS, code) ? LIBVIRT_ERRORS[code]! : { name: `libvirt error ${code}`, final: true, reason: 'libvirt refused the operation' };
}

/** What the failure of a call on an attached volume may be about; `reobserve` looks at each. */
export interface FailureContext {
  serverId: string;
  volumeId: string;
  action: string;
  /** The call acted on the running domain: if it no longer runs, that is the answer. */
  live: boolean;
  /** The disk should still be attached (false for attach, where it is not there yet). */
  diskExpected: boolean;
  /** A resize to this size: also re-measure the host size and the file size limit. */
  resize?: { disk: DomainDisk; bytes: number };
}
