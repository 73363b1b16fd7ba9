/// <reference lib="es2015.iterable" />

type IfEquals<X, Y, A, B> = (<T>() => T extends X ? 1 : 2) extends (<T>() => T extends Y ? 1 : 2) ? A : B;

/** The attribute names of `T` that clients may write (those not marked `readonly`). */
export type WritableKeys<T> = {
  [P in keyof T]-?: IfEquals<{ [Q in P]: T[P] }, { -readonly [Q in P]: T[P] }, P, never>;
}[keyof T];

/** The attributes of `T` that clients may write. */
export type Writable<T> = Pick<T, WritableKeys<T>>;

/** The attributes a client may give a model it adds (the server fills in the rest). */
export type NewAttributes<T> = Partial<Omit<T, "oid">>;

/** A refused request, a server error or a lost connection. */
export interface OmniError extends Error {
  /** What went wrong, as the server (or the client) said it. */
  readonly reason: string;
  /** The kind of request that failed. */
  readonly request?: "change" | "add" | "remove" | "event" | "local" | "hello" | "sub" | "unsub" | "read" | "query" | "unquery";
  readonly collection?: string;
  readonly event?: string;
  readonly oid?: number;
  readonly tmp?: string;
  readonly attributes?: Record<string, unknown>;
}

/** Options passed through to event listeners, as in Backbone. */
export interface SetOptions {
  silent?: boolean;
  [key: string]: unknown;
}

type Ctx = unknown;

/** A model: its attributes are read with `get` and written with `set` (sent to the server). */
export interface Model<A extends { readonly oid: number }> {
  /** The server-assigned object id; `undefined` until the server acknowledged a model this client added. */
  readonly oid: number | undefined;
  /** Same as `oid` (Backbone's `idAttribute` is `oid`). */
  readonly id: number | undefined;
  /** A client-local id. */
  readonly cid: string;
  readonly attributes: Readonly<A>;
  get<K extends keyof A>(key: K): A[K];
  has(key: keyof A): boolean;
  /** Applies the value at once and sends it; the server's refusal rolls it back and emits `error`. */
  set<K extends WritableKeys<A>>(key: K, value: A[K], options?: SetOptions): this | false;
  set(attrs: Partial<Writable<A>>, options?: SetOptions): this | false;
  /** Like `set`, resolving when the server applied the change and rejecting when it refused it. */
  save(attrs: Partial<Writable<A>>, options?: SetOptions): Promise<this>;
  toJSON(): A;
  isNew(): boolean;
  /** Removes the model from its collection and asks the server to delete it. */
  destroy(options?: SetOptions): this;
  on<K extends keyof A & string>(event: `change:${K}`, callback: (model: this, value: A[K], options: SetOptions) => void, context?: Ctx): this;
  on(event: "change", callback: (model: this, options: SetOptions) => void, context?: Ctx): this;
  on(event: "error", callback: (model: this, error: OmniError, options: SetOptions) => void, context?: Ctx): this;
  on(event: "add" | "remove", callback: (model: this, collection: Collection<A>, options: SetOptions) => void, context?: Ctx): this;
  on(event: "all", callback: (event: string, ...args: any[]) => void, context?: Ctx): this;
  once<K extends keyof A & string>(event: `change:${K}`, callback: (model: this, value: A[K], options: SetOptions) => void, context?: Ctx): this;
  once(event: "change", callback: (model: this, options: SetOptions) => void, context?: Ctx): this;
  once(event: "error", callback: (model: this, error: OmniError, options: SetOptions) => void, context?: Ctx): this;
  off(event?: string | null, callback?: ((...args: any[]) => void) | null, context?: Ctx): this;
  trigger(event: string, ...args: unknown[]): this;
}

/** A condition on one attribute of a query's filter: a value (equality) or comparisons. */
export type Condition<T> = T | {
  $eq?: T; $ne?: T; $lt?: T; $lte?: T; $gt?: T; $gte?: T;
  /** Equal to one of these. */
  $in?: readonly T[];
};

/** A query's filter on the attributes of `A` (and `oid`): every condition must hold; `$or`
 *  needs one of its filters, `$and` all of them. An attribute this connection may not read
 *  never matches. */
export type Where<A> = { [K in keyof A]?: Condition<A[K]> } & {
  $and?: ReadonlyArray<Where<A>>;
  $or?: ReadonlyArray<Where<A>>;
};

/** A sort key: an attribute (ascending) or `[attribute, "asc" | "desc"]`. Ties are broken by `oid`. */
export type OrderKey<A> = (keyof A & string) | readonly [keyof A & string, "asc" | "desc"];

/** A live query: which models, in which order, how many. */
export interface QuerySpec<A> {
  where?: Where<A>;
  order?: ReadonlyArray<OrderKey<A>>;
  /** At most this many (the server has a maximum, 10,000 by default, also used without a limit). */
  limit?: number;
}

/** The live result of a query: the models the server says match, in the query's order, kept in
 *  sync as models enter and leave it. */
export interface LiveQuery<A extends { readonly oid: number }, M extends Model<A> = Model<A>> extends Iterable<M> {
  /** The query's id on this connection. */
  readonly id: string;
  readonly collection: Collection<A, M>;
  readonly spec: Readonly<QuerySpec<A>>;
  /** The models it shows, in its order. */
  readonly models: M[];
  readonly length: number;
  /** Whether more models match than it shows (`loadMore` shows them). */
  readonly more: boolean;
  /** Whether `close` was called, or the server refused it. */
  readonly closed: boolean;
  /** Resolves once the server answered with its first result; rejects if it refused the query. */
  readonly ready: Promise<this>;
  at(index: number): M | undefined;
  first(): M | undefined;
  last(): M | undefined;
  has(model: M | number): boolean;
  map<T>(fn: (model: M, index: number, models: M[]) => T, context?: Ctx): T[];
  forEach(fn: (model: M, index: number, models: M[]) => void, context?: Ctx): void;
  pluck<K extends keyof A>(key: K): Array<A[K]>;
  toJSON(): A[];
  /** Shows `n` more (default: as many as the first limit); resolves once they arrived. */
  loadMore(n?: number): Promise<this>;
  /** Asks again with another limit. */
  setLimit(n: number | null): Promise<this>;
  /** Ends the query; the models only it showed are removed from the collection. */
  close(): Promise<void>;
  on(event: "add" | "remove" | "change", callback: (model: M, query: this, options: SetOptions) => void, context?: Ctx): this;
  on(event: "update", callback: (query: this) => void, context?: Ctx): this;
  on(event: "error", callback: (error: OmniError) => void, context?: Ctx): this;
  once(event: "add" | "remove" | "change", callback: (model: M, query: this, options: SetOptions) => void, context?: Ctx): this;
  once(event: "update", callback: (query: this) => void, context?: Ctx): this;
  once(event: "error", callback: (error: OmniError) => void, context?: Ctx): this;
  off(event?: string | null, callback?: ((...args: any[]) => void) | null, context?: Ctx): this;
}

/** A collection of models, kept in sync with what the server lets this connection see. */
export interface Collection<A extends { readonly oid: number }, M extends Model<A> = Model<A>> extends Iterable<M> {
  readonly name: string;
  readonly models: M[];
  readonly length: number;
  /** By OID (number or numeric string), by a model this client added (temporary id or cid), or a model. */
  get(id: number | string | { oid: number } | M): M | undefined;
  at(index: number): M | undefined;
  first(): M | undefined;
  last(): M | undefined;
  where(attrs: Partial<A>): M[];
  findWhere(attrs: Partial<A>): M | undefined;
  each(fn: (model: M, index: number, models: M[]) => void, context?: Ctx): this;
  forEach(fn: (model: M, index: number, models: M[]) => void, context?: Ctx): void;
  map<T>(fn: (model: M, index: number, models: M[]) => T, context?: Ctx): T[];
  filter(fn: (model: M, index: number, models: M[]) => unknown, context?: Ctx): M[];
  find(fn: (model: M, index: number, models: M[]) => unknown, context?: Ctx): M | undefined;
  some(fn: (model: M, index: number, models: M[]) => unknown, context?: Ctx): boolean;
  every(fn: (model: M, index: number, models: M[]) => unknown, context?: Ctx): boolean;
  reduce<T>(fn: (acc: T, model: M, index: number, models: M[]) => T, initial: T): T;
  pluck<K extends keyof A>(key: K): Array<A[K]>;
  toJSON(): A[];
  /** Adds a model at once (without an OID) and asks the server to create it; `undefined` if refused locally. */
  add(attrs: NewAttributes<A>, options?: SetOptions): M | undefined;
  add(list: Array<NewAttributes<A>>, options?: SetOptions): M[];
  /** Like `add`, resolving with the model once the server created it (with its OID). */
  create(attrs: NewAttributes<A>, options?: SetOptions): Promise<M>;
  /** Removes at once and asks the server to delete; the server's refusal puts the model back. */
  remove(model: M | number | string, options?: SetOptions): M | undefined;
  remove(models: Array<M | number | string>, options?: SetOptions): M[];
  /**
   * Subscribes to a channel of a collection the server scoped by channel (a chat room): its
   * models arrive as `add`s, and stay in sync. Kept across reconnects. Rejects if the server
   * refuses (`can_subscribe`) or the collection has no channels.
   */
  subscribe(channel: string): Promise<void>;
  /** Leaves a channel: its models are removed locally. */
  unsubscribe(channel: string): Promise<void>;
  /** The channels this client subscribed to. */
  channels(): string[];
  /** A one-shot read of one model by OID (allowed even where the collection is not listed). */
  read(oid: number): Promise<A>;
  /**
   * A live query: `query({ where: { room: "lobby" }, order: [["oid", "desc"]], limit: 50 })`.
   * Its models arrive in this collection too (on a collection the server made *queried*, only
   * the models some query shows are held). Kept across reconnects.
   */
  query(spec?: QuerySpec<A>): LiveQuery<A, M>;
  /** The open live queries. */
  queries(): Array<LiveQuery<A, M>>;
  on(event: "add" | "remove", callback: (model: M, collection: this, options: SetOptions) => void, context?: Ctx): this;
  on(event: "reset", callback: (collection: this, options: SetOptions) => void, context?: Ctx): this;
  on(event: "change", callback: (model: M, options: SetOptions) => void, context?: Ctx): this;
  on<K extends keyof A & string>(event: `change:${K}`, callback: (model: M, value: A[K], options: SetOptions) => void, context?: Ctx): this;
  on(event: "error", callback: (model: M | null, error: OmniError, options: SetOptions) => void, context?: Ctx): this;
  on(event: "all", callback: (event: string, ...args: any[]) => void, context?: Ctx): this;
  once(event: "add" | "remove", callback: (model: M, collection: this, options: SetOptions) => void, context?: Ctx): this;
  once(event: "reset", callback: (collection: this, options: SetOptions) => void, context?: Ctx): this;
  once(event: "change", callback: (model: M, options: SetOptions) => void, context?: Ctx): this;
  off(event?: string | null, callback?: ((...args: any[]) => void) | null, context?: Ctx): this;
  trigger(event: string, ...args: unknown[]): this;
}

export interface ConnectOptions {
  /** A WebSocket implementation (e.g. the `ws` package) where there is no global one. */
  WebSocket?: unknown;
  /** A Backbone to back the collections with; by default `window.Backbone` when it is loaded. */
  Backbone?: unknown;
  /** `false` never reconnects; otherwise the backoff bounds in milliseconds (default 250 and 10000). */
  reconnect?: false | { min?: number; max?: number };
}

export interface DisconnectInfo {
  code?: number;
  reason?: string;
}
