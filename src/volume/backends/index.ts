export type { BackendVolume, CreateOptions, StorageInspection, VolumeBackend } from './backend.js';
export { ENCRYPTION_FORMATS, type EncryptionFormat, type VolumeEncryption } from './backend.js';
export { readLuksHeader } from './luks.js';
export { FileBackend, type FileBackendOptions, type FileFormat } from './file.js';
export { BlockBackend, type BlockBackendOptions } from './block.js';
export { IscsiBackend, IQN_PREFIX, ISCSI_LUN, iqnOf, type IscsiBackendOptions } from './iscsi.js';
export { exec, execRaw, type ExecOptions, type ExecResult } from './exec.js';
