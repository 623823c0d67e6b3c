/**
 * The shapes of identity ids, shared by the API (a project id in a URL) and by token issuing, so
 * a token can only be made for a project the API would accept.
 */

/** Keystone-like project ids: 1–64 of A-Z a-z 0-9 `_` `.` `-`, not `.` or `..` (no path tricks). */
export const PROJECT_ID_PATTERN = '^(?!\\.{1,2}$)[A-Za-z0-9_.-]{1,64}$';
export const PROJECT_ID_RULE = "1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-' (not '.' or '..')";
const PROJECT_ID = new RegExp(PROJECT_ID_PATTERN);

/** User ids end up in audit records and logs: 1–255 printable characters. */
export const USER_ID_RULE = '1 to 255 characters, no control characters';
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const USER_ID = /^[^\u0000-\u001f\u007f-\u009f]{1,255}$/;

/** Whether `id` is a valid project id (`PROJECT_ID_RULE`). */
export function isProjectId(id: string): boolean {
  return PROJECT_ID.test(id);
}

/** Whether `id` is a valid user id (`USER_ID_RULE`). */
export function isUserId(id: string): boolean {
  return USER_ID.test(id);
}
