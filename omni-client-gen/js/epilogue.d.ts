/** The client: `Omni.collections`, `Omni.trigger`, `Omni.ready`, `Omni.on`. */
export interface OmniClient {
  /** Every collection this app declares, filled from the server's snapshot. */
  readonly collections: Collections;
  /** Whether the socket is open and the server said hello. */
  readonly connected: boolean;
  /** `open` (connected), `resuming` (a resumable connection dropped: writes are applied locally and
   *  queued, and go out in order when it resumes), `connecting` (first connect, or a reconnect that
   *  cannot resume), `offline` (not connecting: before `connect`, after `close`). */
  readonly state: "connecting" | "open" | "resuming" | "offline";
  /** Whether the first snapshot has arrived. */
  readonly isReady: boolean;
  /** The server the client is connected to, or will try next (one of the list given to `connect`). */
  readonly url: string | null;
  /** This connection's id on the server, while connected. */
  readonly conn: number | null;
  readonly PROTOCOL_VERSION: number;
  /** Opens the connection (default URL in a browser: `ws(s)://<host>/omni`); reconnects by itself. */
  /** One server, or the nodes of a cluster: each client starts at a random one and moves to
   *  the next when an attempt to connect fails. */
  connect(url?: string | readonly string[], options?: ConnectOptions): this;
  connect(options: ConnectOptions): this;
  /** Closes the connection for good; unanswered requests fail. */
  close(): this;
  disconnect(): this;
  /** Calls back once the first snapshot arrived (at once if it has). */
  ready(callback: (omni: this) => void): this;
  ready(): Promise<this>;
  /** Calls a server event; resolves with its reply, rejects with its error. */
  trigger<E extends keyof Events>(name: E, args: Events[E]["args"], callback?: (err: OmniError | null, reply?: Events[E]["reply"]) => void): Promise<Events[E]["reply"]>;
  on(event: "ready" | "sync" | "reconnect", callback: (omni: this) => void, context?: Ctx): this;
  on(event: "disconnect", callback: (info: DisconnectInfo) => void, context?: Ctx): this;
  /** A connection attempt closed before the server said hello (unreachable, or the upgrade was
   *  refused: HTTP 401/403/429, e.g. by the server's `authenticate` hook); it is retried. */
  on(event: "connect_error", callback: (info: DisconnectInfo) => void, context?: Ctx): this;
  /** The connection was resumed after a drop: the same session; `full` when a snapshot was
   *  needed instead of only the changes. */
  on(event: "resume", callback: (info: { full: boolean }) => void, context?: Ctx): this;
  /** The connection state changed (see `state`). */
  on(event: "state", callback: (state: "connecting" | "open" | "resuming" | "offline") => void, context?: Ctx): this;
  on(event: "error", callback: (error: OmniError) => void, context?: Ctx): this;
  /** Events the server emits (`conn.emit`, `world.broadcast`). */
  on(event: string, callback: (data: any) => void, context?: Ctx): this;
  once(event: "ready" | "sync" | "reconnect", callback: (omni: this) => void, context?: Ctx): this;
  once(event: "disconnect", callback: (info: DisconnectInfo) => void, context?: Ctx): this;
  once(event: "connect_error", callback: (info: DisconnectInfo) => void, context?: Ctx): this;
  once(event: "resume", callback: (info: { full: boolean }) => void, context?: Ctx): this;
  once(event: "state", callback: (state: "connecting" | "open" | "resuming" | "offline") => void, context?: Ctx): this;
  once(event: "error", callback: (error: OmniError) => void, context?: Ctx): this;
  once(event: string, callback: (data: any) => void, context?: Ctx): this;
  off(event?: string | null, callback?: ((...args: any[]) => void) | null, context?: Ctx): this;
  /** A new, independent client (its own connection and collections). */
  create(options?: { Backbone?: unknown }): OmniClient;
}

declare const Omni: OmniClient;
export default Omni;
export { Omni };
export declare const collections: Collections;
export declare function create(options?: { Backbone?: unknown }): OmniClient;

declare global {
  interface Window {
    /** Set by omni.global.js. */
    Omni: OmniClient;
    /** Set before loading omni.global.js to connect yourself with `Omni.connect(...)`. */
    OMNI_MANUAL_CONNECT?: boolean;
  }
}
