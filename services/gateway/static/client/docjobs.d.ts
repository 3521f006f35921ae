// TypeScript declarations of the docjobs browser client (/client/docjobs.js).

export type DocumentType = "spreadsheet" | "document" | "pdf" | "presentation";
export type JobStatus = "pending" | "processing" | "completed" | "failed" | "cancelled";

/** The body of POST /api/jobs (the gateway's OpenAPI document, JobRequest, is the full contract). */
export interface JobRequest {
  documentType: DocumentType;
  title?: string;
  /** A declarative spec (the default, safe mode); or `code`, when the server runs code jobs. */
  spec?: Record<string, unknown>;
  code?: string;
  sessionId?: string;
  messageId?: string;
  /** Required from a service token (the job's user); a user token's must be its own. */
  userId?: string | number;
  /** Honoured for service tokens only. */
  priority?: number;
  expiresInSeconds?: number;
  /** RFC 3339 with an offset. */
  runAt?: string;
  maxRetries?: number;
  /** Also a PDF of the document and a PNG of its first page (docs/gateway.md, Renditions). */
  renditions?: ("pdf" | "thumbnail")[];
  [field: string]: unknown;
}

/** The 202 answer of submit(), its URLs made absolute. */
export interface Accepted {
  jobId: string;
  status: JobStatus;
  /** False when an Idempotency-Key named a job made before. */
  created: boolean;
  eventsUrl: string;
  statusUrl: string;
  downloadUrl: string;
  sessionEventsUrl?: string;
}

export interface SubmitOptions {
  /** The gateway's base URL; empty: this page's origin. */
  gateway?: string;
  /** A bearer token (a user's, or a service's). */
  token?: string;
  idempotencyKey?: string;
  signal?: AbortSignal;
  /** "/api/jobs" (the default) or "/api/jobs/enqueue". */
  path?: string;
}

export declare class DocjobsError extends Error {
  constructor(status: number, code: string, message: string, field?: string | null);
  /** The HTTP status; 0 for a network failure. */
  readonly status: number;
  readonly code: string;
  /** The request field (or header) the error is about, when there is one. */
  readonly field: string | null;
  /** True when asking again may succeed (network, 408, 429, 5xx). */
  readonly retryable: boolean;
}

export type EventType = "status" | "progress" | "job-complete" | "job-failed";

export interface JobResult {
  artifactId: string;
  /** Signed; relative to the gateway as sent (resolveUrl makes it absolute; <docjobs-job> does). */
  downloadUrl: string;
  filename: string;
  contentType: string;
  size: number;
  sha256: string;
  preview: Preview | null;
  /** What a spec document could not be as asked (empty when all is well): glyph_missing, formula_error,
   * formula_unsupported, each with its place in the spec ("blocks[3].text", "sheets[0].rows[2][3]"). */
  warnings?: { code: string; message: string; where: string }[];
  /** The renditions the request asked for: each made (a signed url, relative as downloadUrl) or failed. */
  renditions?: {
    pdf?: Rendition | RenditionError;
    thumbnail?: (Rendition & { width: number; height: number }) | RenditionError;
  };
}

export interface Rendition {
  url: string;
  sizeBytes: number;
  contentType: string;
  pages?: number;
}

export interface RenditionError {
  error: { code: string; message: string };
}

export type Preview =
  | { kind: "spreadsheet"; sheets: { name: string; rows: string[][] }[] }
  | { kind: "document"; headings: string[]; paragraphs: string[] }
  | { kind: "pdf"; pages: number; firstPageText: string }
  | { kind: "presentation"; slides: number; titles: string[] };

export interface EventData {
  jobId: string;
  status: JobStatus;
  message?: string;
  progress?: number;
  attempt?: number;
  retryAt?: string;
  lastError?: { code: string; message: string };
  /** A `status` back to pending that runs a failed or cancelled job again (POST /api/jobs/{jobId}/retry). */
  retried?: boolean;
  result?: JobResult;
  error?: { code: string; message: string };
  [field: string]: unknown;
}

/** One event of a job's stream or of a session's stream. */
export interface DocjobsEvent {
  type: EventType;
  /** The event id (`id:`); streams resume after the last one. */
  id: string | null;
  jobId: string;
  data: EventData;
}

export interface WatchHandlers {
  onEvent?(event: DocjobsEvent): void;
  /** A failure: retried by itself when error.retryable, else the watch has stopped. */
  onError?(error: DocjobsError): void;
  onOpen?(): void;
}

export interface SessionHandlers extends WatchHandlers {
  /** A job seen for the first time on the stream (with its first event). */
  onJob?(jobId: string, event: DocjobsEvent): void;
}

export interface Watch {
  readonly url: string;
  /** The id of the last event received: where the stream resumes. */
  readonly lastEventId: string;
  readonly closed: boolean;
  close(): void;
}

export interface SessionWatch {
  readonly lastEventId: string;
  readonly closed: boolean;
  /** The ids of the jobs seen so far, in the order they first appeared. */
  jobs(): string[];
  /** The job's events seen so far, then its live ones; returns the function that unsubscribes. */
  subscribe(jobId: string, listener: (event: DocjobsEvent) => void): () => void;
  close(): void;
}

/** Gives a fresh signed URL (absolute, or relative to the gateway) when the one followed has expired:
 * the gateway ends the stream then and refuses it with 401. Asked once per 401, until the stream opens
 * again; resolving to null (or throwing) stops the watch with that 401. */
export type RefreshUrl = () => Promise<string | null | undefined> | string | null | undefined;
/** Gives a fresh bearer token when the one a stream was opened with has expired; as RefreshUrl. */
export type RefreshToken = () => Promise<string | null | undefined> | string | null | undefined;

export type WatchJobOptions =
  /** refreshUrl: the job's eventsUrl, from GET /api/jobs/{jobId} (through the page's backend, say). */
  | { gateway?: string; eventsUrl: string; lastEventId?: string | number; refreshUrl?: RefreshUrl }
  | { gateway?: string; jobId: string; token: string; lastEventId?: string | number; refreshToken?: RefreshToken };

export type WatchSessionOptions =
  /** refreshUrl: a sessionEventsUrl, from GET /api/events/url?sessionId= (through the page's backend, say). */
  | { gateway?: string; sessionEventsUrl: string; lastEventId?: string | number; refreshUrl?: RefreshUrl }
  | { gateway?: string; token: string; sessionId?: string; userId?: string | number; lastEventId?: string | number;
      refreshToken?: RefreshToken };

export declare function resolveUrl(gateway: string | undefined, url: string): string;
export declare function submit(request: JobRequest, options?: SubmitOptions): Promise<Accepted>;
export declare function watchJob(options: WatchJobOptions, handlers?: WatchHandlers): Watch;
export declare function watchSession(options: WatchSessionOptions, handlers?: SessionHandlers): SessionWatch;
export declare function renderPreview(preview: Preview | null | undefined): Node[];

/** <docjobs-job gateway job-id events-url>. */
export declare class DocjobsJob extends HTMLElement {
  static readonly observedAttributes: string[];
  /** A bearer token: follows job-id over GET /api/jobs/{jobId}/events when there is no events-url. */
  token: string | null;
  /** A session's watch: follows job-id on it when there is no events-url. */
  session: SessionWatch | null;
  /** A fresh eventsUrl when events-url has expired (read when needed). */
  refreshUrl: RefreshUrl | null;
  /** A fresh bearer token when `token` has expired (read when needed). */
  refreshToken: RefreshToken | null;
  readonly gateway: string;
  readonly jobId: string | null;
  readonly status: JobStatus | null;
  readonly progress: number;
  /** The job-complete result, its downloadUrl absolute. */
  readonly result: JobResult | null;
  readonly error: { code: string; message: string } | null;
}

declare global {
  interface HTMLElementTagNameMap {
    "docjobs-job": DocjobsJob;
  }
  interface HTMLElementEventMap {
    "docjobs-event": CustomEvent<DocjobsEvent>;
    "docjobs-error": CustomEvent<DocjobsError>;
  }
}
