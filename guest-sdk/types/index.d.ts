// The `fazt` module as apps see it. The host interfaces underneath are in
// ./wit/, generated from ../../wit/fazt.wit by `npm run types`.

/** What the host passes a handler besides the request. */
export interface Context {
  /** This invocation's id: in the `x-fazt-request-id` response header and in `fazt-host logs`. */
  readonly requestId: string;
  /** The app's name (from fazt.json). */
  readonly app: string;
  /** The `env` strings of fazt.json. */
  readonly env: Readonly<Record<string, string>>;
  /** Keeps the invocation alive until `promise` settles (after the response is built). */
  waitUntil(promise: Promise<unknown>): void;
  passThroughOnException(): void;
}

/** The default export of an app's entry module. */
export interface App {
  /**
   * Handles one HTTP request under /<app>/ (or <app>.<domain>). `request.url` is the
   * path inside the app; the prefix it was mounted at is in the `x-forwarded-prefix` header.
   */
  fetch?(request: Request, ctx: Context): Response | Promise<Response>;
  /** Runs the cron entries of fazt.json that have no `file` (`event.name` tells them apart). */
  scheduled?: ScheduledHandler;
}

/** The previous finished run of a cron entry. */
export interface LastRun {
  readonly scheduledTime: string;
  readonly attempt: number;
  readonly status: 'ok' | 'failed' | 'timeout';
  readonly startedAt: string | null;
  readonly finishedAt: string | null;
}

/** What a cron entry's handler receives. */
export interface ScheduledEvent {
  /** The entry's name in fazt.json. */
  readonly name: string;
  /** The slot, ISO 8601 UTC: the same for every attempt at it, so use it as the idempotency key. */
  readonly scheduledTime: string;
  /** 1 for the first try, 2 for the first retry, ... */
  readonly attempt: number;
  readonly lastRun: LastRun | null;
  readonly schedule: string;
  readonly timezone: string;
  /** True for `fazt-host cron run`. */
  readonly manual: boolean;
}

/** What a cron handler gets besides the event. */
export interface ScheduledContext {
  readonly requestId: string;
  readonly app: string;
  readonly env: Readonly<Record<string, string>>;
  /** Keeps the run alive until `promise` settles; a rejection fails the run. */
  waitUntil(promise: Promise<unknown>): void;
}

/** The default export of a cron file (or the app's `scheduled`); throwing fails the run (retried per `retries`). */
export type ScheduledHandler = (event: ScheduledEvent, ctx: ScheduledContext) => void | Promise<void>;

/** The id of the invocation in progress. */
export function requestId(): string;
