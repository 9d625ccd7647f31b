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
}

/** The id of the invocation in progress. */
export function requestId(): string;
