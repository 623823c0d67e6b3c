/** Who is calling and under which request id; passed from the API into every service call. */
export interface RequestContext {
  requestId: string;
  userId: string;
  projectId: string;
  roles: readonly string[];
}
