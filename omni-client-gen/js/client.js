/* Omni client runtime. Hand-written, dependency-free; omni-client-gen wraps it with the app's
 * schema (as SCHEMA) into omni.js (ES module) and omni.global.js (classic script).
 * Speaks the wire protocol of docs/PROTOCOL.md. Keep it plain ES2017 with explicit semicolons
 * and no regular-expression or template literals: release builds go through a token-level
 * minifier. */
function createOmni(SCHEMA, env) {
  "use strict";
  env = env || {};
  const root = typeof globalThis !== "undefined" ? globalThis : {};
  const hasOwn = function (o, k) { return Object.prototype.hasOwnProperty.call(o, k); };

  /* Deep equality of JSON values: objects equal whatever their keys' order, so setting an
     attribute to the value it already has sends nothing (Backbone's `set`). */
  function isEqual(a, b) {
    if (a === b) { return true; }
    if (!a || !b || typeof a !== "object" || typeof b !== "object") { return false; }
    if (Array.isArray(a) !== Array.isArray(b)) { return false; }
    if (Array.isArray(a)) {
      if (a.length !== b.length) { return false; }
      for (let i = 0; i < a.length; i++) {
        if (!isEqual(a[i], b[i])) { return false; }
      }
      return true;
    }
    const ka = Object.keys(a);
    if (ka.length !== Object.keys(b).length) { return false; }
    for (const k of ka) {
      if (!hasOwn(b, k) || !isEqual(a[k], b[k])) { return false; }
    }
    return true;
  }

  function copy(v) {
    return v && typeof v === "object" ? JSON.parse(JSON.stringify(v)) : v;
  }

  function isDigits(s) {
    if (!s.length) { return false; }
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c < 48 || c > 57) { return false; }
    }
    return true;
  }

  /* An error reported by the server or by the client itself. `reason` is the message. */
  class OmniError extends Error {
    constructor(reason, extra) {
      super(reason);
      this.name = "OmniError";
      this.reason = reason;
      if (extra) { Object.assign(this, extra); }
    }
  }

  function splitNames(name) {
    return String(name).split(" ").filter(Boolean);
  }

  /* Backbone-style events: on/off/once/trigger with an optional context and "all". */
  const Events = {
    on: function (name, cb, ctx) {
      if (name && typeof name === "object") {
        for (const k in name) { this.on(k, name[k], cb); }
        return this;
      }
      if (typeof cb !== "function") { return this; }
      const ev = this._events || (this._events = Object.create(null));
      for (const n of splitNames(name)) { (ev[n] || (ev[n] = [])).push({ cb: cb, ctx: ctx, once: false }); }
      return this;
    },
    once: function (name, cb, ctx) {
      if (typeof cb !== "function") { return this; }
      const ev = this._events || (this._events = Object.create(null));
      for (const n of splitNames(name)) { (ev[n] || (ev[n] = [])).push({ cb: cb, ctx: ctx, once: true }); }
      return this;
    },
    off: function (name, cb, ctx) {
      const ev = this._events;
      if (!ev) { return this; }
      if (name == null && cb == null && ctx == null) {
        this._events = Object.create(null);
        return this;
      }
      const names = name == null ? Object.keys(ev) : splitNames(name);
      for (const n of names) {
        const list = ev[n];
        if (!list) { continue; }
        const keep = list.filter(function (l) {
          return (cb != null && l.cb !== cb) || (ctx != null && l.ctx !== ctx);
        });
        if (keep.length) { ev[n] = keep; } else { delete ev[n]; }
      }
      return this;
    },
    _fire: function (name, args) {
      const ev = this._events;
      if (!ev) { return; }
      fireList(this, ev, name, args);
      if (name !== "all") { fireList(this, ev, "all", [name].concat(args)); }
    }
  };

  function fireList(self, ev, name, args) {
    const list = ev[name];
    if (!list) { return; }
    for (const l of list.slice()) {
      if (l.once) {
        const cur = ev[name];
        if (cur) {
          const i = cur.indexOf(l);
          if (i >= 0) { cur.splice(i, 1); }
          if (!cur.length) { delete ev[name]; }
        }
      }
      l.cb.apply(l.ctx === undefined ? self : l.ctx, args);
    }
  }

  function newState(ci) {
    /* server: last authoritative values; pending: attr -> number of unanswered local changes */
    return { ci: ci, live: false, server: {}, pending: {}, tmp: null, queued: null, waiters: null };
  }

  function matches(model, attrs) {
    for (const k in attrs) {
      if (!isEqual(model.get(k), attrs[k])) { return false; }
    }
    return true;
  }

  function normArgs(key, val, options) {
    let attrs;
    if (key == null) { return [null, {}]; }
    if (typeof key === "object") {
      attrs = key;
      options = val;
    } else {
      attrs = {};
      attrs[key] = val;
    }
    return [attrs, options || {}];
  }

  /* ---------- plain models and collections (no Backbone) ---------- */

  let cidCounter = 0;

  class Model {
    constructor(attrs, options) {
      this.cid = "c" + (++cidCounter);
      this.attributes = {};
      this.changed = {};
      this._previous = {};
      this._o = newState(options && options.ci);
      if (attrs) { Object.assign(this.attributes, attrs); }
    }
    get id() { return this.attributes.oid; }
    get oid() { return this.attributes.oid; }
    get idAttribute() { return "oid"; }
    get(key) { return this.attributes[key]; }
    has(key) { return this.attributes[key] != null; }
    toJSON() { return Object.assign({}, this.attributes); }
    isNew() { return this.attributes.oid == null; }
    previous(key) { return this._previous[key]; }
    previousAttributes() { return Object.assign({}, this._previous); }
    hasChanged(key) { return key == null ? Object.keys(this.changed).length > 0 : hasOwn(this.changed, key); }
    changedAttributes() { return Object.keys(this.changed).length ? Object.assign({}, this.changed) : false; }
    set(key, val, options) {
      const a = normArgs(key, val, options);
      const attrs = a[0];
      const opts = a[1];
      if (!attrs) { return this; }
      if (!opts.omni && this._o.live && !engine.localSet(this, attrs, opts)) { return false; }
      applyPlain(this, attrs, opts);
      return this;
    }
    unset(key, options) { return this.set(key, undefined, Object.assign({}, options, { unset: true })); }
    save(key, val, options) {
      const a = normArgs(key, val, options);
      return engine.save(this, a[0] || {}, a[1]);
    }
    destroy(options) {
      if (this._o.ci) { engine.localRemove(this._o.ci, this, options); }
      return this;
    }
    trigger(name) {
      this._fire(name, Array.prototype.slice.call(arguments, 1));
      return this;
    }
    _fire(name, args) {
      Events._fire.call(this, name, args);
      if (this.collection) { this.collection._fire(name, args); }
    }
  }
  Model.prototype.on = Events.on;
  Model.prototype.once = Events.once;
  Model.prototype.off = Events.off;

  function applyPlain(model, attrs, opts) {
    const cur = model.attributes;
    const changes = [];
    model._previous = Object.assign({}, cur);
    model.changed = {};
    for (const k in attrs) {
      if (opts.unset) {
        if (hasOwn(cur, k)) {
          delete cur[k];
          model.changed[k] = undefined;
          changes.push(k);
        }
      } else if (!isEqual(cur[k], attrs[k])) {
        cur[k] = attrs[k];
        model.changed[k] = attrs[k];
        changes.push(k);
      }
    }
    if (!opts.silent && changes.length) {
      for (const k of changes) { model.trigger("change:" + k, model, cur[k], opts); }
      model.trigger("change", model, opts);
    }
  }

  const ARRAY_METHODS = ["forEach", "map", "filter", "find", "findIndex", "some", "every", "reduce", "indexOf", "includes", "slice"];

  class Collection {
    constructor(ci) {
      this._ci = ci;
      this.name = ci.name;
      this.models = [];
    }
    get length() { return this.models.length; }
    get(x) { return engine.find(this._ci, x); }
    at(i) { return this.models[i < 0 ? this.models.length + i : i]; }
    first() { return this.models[0]; }
    last() { return this.models[this.models.length - 1]; }
    each(fn, ctx) { this.models.forEach(fn, ctx); return this; }
    where(attrs) { return this.models.filter(function (m) { return matches(m, attrs); }); }
    findWhere(attrs) { return this.models.find(function (m) { return matches(m, attrs); }); }
    pluck(key) { return this.models.map(function (m) { return m.get(key); }); }
    contains(m) { return this.models.indexOf(m) >= 0; }
    toArray() { return this.models.slice(); }
    toJSON() { return this.models.map(function (m) { return m.toJSON(); }); }
    add(models, options) { return engine.localAdd(this._ci, models, options); }
    create(attrs, options) { return engine.create(this._ci, attrs, options); }
    remove(models, options) { return engine.localRemove(this._ci, models, options); }
    subscribe(channel) { return engine.channel(this._ci, channel, true); }
    unsubscribe(channel) { return engine.channel(this._ci, channel, false); }
    channels() { return Array.from(this._ci.channels); }
    read(oid) { return engine.read(this._ci, oid); }
    query(spec) { return queries.open(this._ci, spec); }
    queries() { return Array.from(this._ci.queries.values()); }
    trigger(name) {
      this._fire(name, Array.prototype.slice.call(arguments, 1));
      return this;
    }
  }
  for (const name of ARRAY_METHODS) {
    Collection.prototype[name] = function () { return Array.prototype[name].apply(this.models, arguments); };
  }
  Collection.prototype.on = Events.on;
  Collection.prototype.once = Events.once;
  Collection.prototype.off = Events.off;
  Collection.prototype._fire = Events._fire;
  if (typeof Symbol !== "undefined") {
    Collection.prototype[Symbol.iterator] = function () { return this.models[Symbol.iterator](); };
  }

  const plainAdapter = {
    make: function (ci, attrs) { return new Model(attrs, { ci: ci }); },
    insert: function (ci, model, opts) {
      const coll = ci.coll;
      coll.models.push(model);
      model.collection = coll;
      if (!opts.silent) { model.trigger("add", model, coll, opts); }
    },
    remove: function (ci, model, opts) {
      const coll = ci.coll;
      const index = coll.models.indexOf(model);
      if (index < 0) { return; }
      coll.models.splice(index, 1);
      if (!opts.silent) { model.trigger("remove", model, coll, Object.assign({ index: index }, opts)); }
      if (model.collection === coll) { model.collection = undefined; }
    },
    reset: function (ci, models, opts) {
      const coll = ci.coll;
      for (const m of coll.models) { m.collection = undefined; }
      coll.models = models.slice();
      for (const m of models) { m.collection = coll; }
      coll.trigger("reset", coll, opts);
    },
    contains: function (ci, model) { return model.collection === ci.coll; }
  };

  /* ---------- Backbone mode: real Backbone.Model / Backbone.Collection subclasses ---------- */

  function backboneAdapter(BB) {
    return {
      make: function (ci, attrs) { return new ci.Model(attrs); },
      insert: function (ci, model, opts) { BB.Collection.prototype.add.call(ci.coll, model, Object.assign({}, opts, { omni: true })); },
      remove: function (ci, model, opts) { BB.Collection.prototype.remove.call(ci.coll, model, Object.assign({}, opts, { omni: true })); },
      reset: function (ci, models, opts) { BB.Collection.prototype.reset.call(ci.coll, models, Object.assign({}, opts, { omni: true })); },
      contains: function (ci, model) { return ci.coll.get(model) === model; }
    };
  }

  function backboneClasses(BB, ci) {
    const BModel = BB.Model.extend({
      idAttribute: "oid",
      constructor: function () {
        this._o = newState(ci);
        BB.Model.apply(this, arguments);
      },
      set: function (key, val, options) {
        const a = normArgs(key, val, options);
        const attrs = a[0];
        const opts = a[1];
        if (!attrs) { return this; }
        if (!opts.omni && this._o && this._o.live && !engine.localSet(this, attrs, opts)) { return false; }
        return BB.Model.prototype.set.call(this, attrs, opts);
      },
      save: function (key, val, options) {
        const a = normArgs(key, val, options);
        return engine.save(this, a[0] || {}, a[1]);
      },
      destroy: function (options) {
        engine.localRemove(ci, this, options);
        return this;
      },
      fetch: function () { return Promise.resolve(this); },
      sync: function () { return null; }
    });
    const BCollection = BB.Collection.extend({
      model: BModel,
      add: function (models, options) {
        if (options && options.omni) { return BB.Collection.prototype.add.call(this, models, options); }
        return engine.localAdd(ci, models, options);
      },
      remove: function (models, options) {
        if (options && options.omni) { return BB.Collection.prototype.remove.call(this, models, options); }
        return engine.localRemove(ci, models, options);
      },
      create: function (attrs, options) { return engine.create(ci, attrs, options); },
      subscribe: function (channel) { return engine.channel(ci, channel, true); },
      unsubscribe: function (channel) { return engine.channel(ci, channel, false); },
      channels: function () { return Array.from(ci.channels); },
      query: function (spec) { return queries.open(ci, spec); },
      queries: function () { return Array.from(ci.queries.values()); },
      read: function (oid) { return engine.read(ci, oid); },
      fetch: function () { return Promise.resolve(this); },
      sync: function () { return null; }
    });
    return [BModel, BCollection];
  }

  /* ---------- the engine: one connection, its collections and its pending requests ---------- */

  const Omni = {};
  Omni.on = Events.on;
  Omni.once = Events.once;
  Omni.off = Events.off;
  Omni._fire = Events._fire;

  const collections = {};
  let cis = [];
  let BB = null;
  let adapter = plainAdapter;
  let WS = null;
  let url = null;
  /* Several servers (the nodes of a cluster): the next is tried when an attempt fails. */
  let urls = [];
  let urlIndex = 0;
  let ws = null;
  let live = false;
  let wanted = false;
  let isReady = false;
  let everSynced = false;
  let conn = null;
  let attempt = 0;
  let timer = null;
  let lastId = 0;
  let tmpCounter = 0;
  let reconnect = { enabled: true, min: 250, max: 10000 };
  const pending = new Map();
  let outbox = [];
  /* The resumable connection: its token and the log position its frames said they reflect
     (docs/PROTOCOL.md, "Resume"); null when the server does not resume connections. */
  let resume = null;
  /* Whether the current connection resumed the previous one (same session on the server). */
  let resumedConn = false;
  let readyCbs = [];
  /* Live queries (queries.js). */
  const queries = omniQueries({
    Events: Events,
    OmniError: OmniError,
    request: function (req, msg) { return request(req, msg); },
    live: function () { return live; },
    wanted: function () { return wanted; }
  });

  function build(Backbone) {
    if (cis.some(function (ci) { return ci.loaded; })) {
      throw new OmniError("Backbone mode can only be chosen before the first snapshot");
    }
    BB = Backbone || null;
    adapter = BB ? backboneAdapter(BB) : plainAdapter;
    cis = SCHEMA.collections.map(function (spec) {
      const ci = { name: spec.name, spec: spec, attrs: {}, readonly: {}, byOid: new Map(), byTmp: new Map(), channels: new Set(), queries: new Map(), loaded: false, coll: null, Model: null };
      for (const a of spec.attrs) { ci.attrs[a] = true; }
      for (const a of spec.readonly) { ci.readonly[a] = true; }
      if (BB) {
        const classes = backboneClasses(BB, ci);
        ci.Model = classes[0];
        ci.coll = new classes[1]();
        ci.coll.name = spec.name;
      } else {
        ci.coll = new Collection(ci);
      }
      collections[spec.name] = ci.coll;
      return ci;
    });
  }

  function ciOf(name) {
    for (const ci of cis) {
      if (ci.name === name) { return ci; }
    }
    return null;
  }

  function send(msg) {
    ws.send(JSON.stringify(msg));
  }

  /* Whether writes are taken while the socket is down: a resumable connection dropped and the
     client is reconnecting. They apply locally at once and go out, in order, on resume. */
  function offline() {
    return !live && wanted && resume !== null;
  }

  /* Sends a request now, or queues it for the resume. */
  function submit(req, msg) {
    if (live) { return request(req, msg); }
    outbox.push([req, msg]);
    return req;
  }

  /* connecting | open | resuming | offline */
  function connState() {
    if (live) { return "open"; }
    if (!wanted) { return "offline"; }
    return resume ? "resuming" : "connecting";
  }

  let lastState = "offline";
  function stateChanged() {
    const now = connState();
    if (now !== lastState) {
      lastState = now;
      Omni._fire("state", [now]);
    }
  }

  function request(req, msg) {
    req.id = ++lastId;
    msg.id = req.id;
    req.msg = msg; /* sent again, same id, if the connection drops and is resumed */
    pending.set(req.id, req);
    send(msg);
    return req;
  }

  function settleWaiters(waiters, err, value) {
    if (!waiters) { return; }
    for (const w of waiters) {
      if (err) { w.reject(err); } else { w.resolve(value); }
    }
  }

  function raise(ci, model, err) {
    err.collection = ci ? ci.name : undefined;
    if (model) {
      err.model = model;
      if (ci && adapter.contains(ci, model)) {
        model.trigger("error", model, err, {});
      } else {
        model.trigger("error", model, err, {});
        if (ci) { ci.coll.trigger("error", model, err, {}); }
      }
    } else if (ci) {
      ci.coll.trigger("error", null, err, {});
    }
    Omni._fire("error", [err]);
  }

  function setRemote(model, attrs) {
    if (Object.keys(attrs).length) { model.set(attrs, { omni: true }); }
  }

  function unsetRemote(model, keys) {
    if (!keys.length) { return; }
    const obj = {};
    for (const k of keys) { obj[k] = undefined; }
    model.set(obj, { omni: true, unset: true });
  }

  /* Applies server values: attributes with unanswered local changes keep the local value for
   * now (the answer settles them), everything else is applied at once. */
  function applyRemote(model, set, unset, full) {
    const st = model._o;
    const apply = {};
    for (const k in set) {
      const v = set[k];
      if (k === "oid") {
        if (model.get("oid") !== v) { apply.oid = v; }
        continue;
      }
      st.server[k] = v;
      if (st.pending[k]) {
        for (const r of pending.values()) {
          if (r.model === model && r.kind === "change" && hasOwn(r.values, k)) { r.seen[k] = true; }
        }
      } else {
        apply[k] = v;
      }
    }
    const drop = [];
    if (unset) {
      for (const k of unset) { delete st.server[k]; drop.push(k); }
    }
    if (full) {
      for (const k in st.ci.attrs) {
        if (!hasOwn(set, k) && model.get(k) !== undefined) {
          delete st.server[k];
          drop.push(k);
        }
      }
    }
    setRemote(model, apply);
    unsetRemote(model, drop);
  }

  function makeRemote(ci, m) {
    const model = adapter.make(ci, m);
    const st = model._o;
    st.ci = ci;
    st.live = true;
    for (const k in m) {
      if (k !== "oid") { st.server[k] = copy(m[k]); }
    }
    ci.byOid.set(m.oid, model);
    return model;
  }

  function addRemote(ci, m) {
    const existing = ci.byOid.get(m.oid);
    if (existing) {
      applyRemote(existing, m, null, true);
      return existing;
    }
    const model = makeRemote(ci, m);
    adapter.insert(ci, model, {});
    return model;
  }

  function removeModel(ci, model, opts) {
    const oid = model.get("oid");
    if (oid != null && ci.byOid.get(oid) === model) { ci.byOid.delete(oid); }
    if (model._o.tmp != null && ci.byTmp.get(model._o.tmp) === model) { ci.byTmp.delete(model._o.tmp); }
    adapter.remove(ci, model, opts || {});
  }

  function snapshot(data) {
    data = data || {};
    for (const ci of cis) {
      const list = Array.isArray(data[ci.name]) ? data[ci.name] : [];
      if (!ci.loaded) {
        ci.loaded = true;
        const models = [];
        for (const m of list) {
          if (!ci.byOid.has(m.oid)) { models.push(makeRemote(ci, m)); }
        }
        adapter.reset(ci, models, {});
        continue;
      }
      const seen = new Set();
      for (const m of list) {
        seen.add(m.oid);
        addRemote(ci, m);
      }
      for (const entry of Array.from(ci.byOid.entries())) {
        if (!seen.has(entry[0])) { removeModel(ci, entry[1], {}); }
      }
    }
  }

  /* Settles a change request: `m` is the authoritative object from a reject (or undefined). */
  function settleChange(req, m, err) {
    const model = req.model;
    const st = model._o;
    if (m) {
      for (const k in m) {
        if (k !== "oid") { st.server[k] = m[k]; }
      }
    }
    const revert = {};
    for (const k in req.values) {
      if (!err && !req.seen[k]) { st.server[k] = req.values[k]; }
      st.pending[k] = (st.pending[k] || 1) - 1;
      if (st.pending[k] <= 0) {
        delete st.pending[k];
        if (hasOwn(st.server, k) && !isEqual(model.get(k), st.server[k])) { revert[k] = st.server[k]; }
      }
    }
    if (m) {
      for (const k in m) {
        if (k !== "oid" && !st.pending[k] && !hasOwn(revert, k) && !isEqual(model.get(k), m[k])) { revert[k] = m[k]; }
      }
    }
    setRemote(model, revert);
  }

  /* Fails a request that got no positive answer: a reject, an error, or a dropped socket. */
  function failRequest(req, msg, reason) {
    const ci = req.ci;
    const m = msg ? msg.m : undefined;
    const err = new OmniError(reason, { request: req.kind, id: req.id });
    if (req.kind === "event") {
      err.event = req.name;
      req.reject(err);
      return;
    }
    if (req.kind === "query" || req.kind === "unquery") {
      err.collection = req.ci.name;
      queries.refused(req, !msg && reason.indexOf("disconnected") >= 0);
      req.reject(err);
      return;
    }
    if (req.kind === "sub" || req.kind === "unsub" || req.kind === "read") {
      err.collection = req.ci.name;
      if (req.kind === "sub") {
        err.channel = req.channel;
        /* a refused subscription is forgotten; a dropped socket keeps it for the reconnect */
        if (msg || reason.indexOf("disconnected") < 0) { req.ci.channels.delete(req.channel); }
      }
      req.reject(err);
      return;
    }
    const model = req.model;
    if (req.kind === "change") {
      err.oid = model.get("oid");
      err.attributes = req.values;
      settleChange(req, m, err);
      if (m === null && adapter.contains(ci, model)) {
        raise(ci, model, err);
        removeModel(ci, model, {});
      } else {
        raise(ci, model, err);
      }
    } else if (req.kind === "add") {
      err.tmp = model._o.tmp;
      raise(ci, model, err);
      removeModel(ci, model, {});
      settleWaiters(model._o.waiters, err);
      model._o.waiters = null;
      model._o.queued = null;
    } else if (req.kind === "remove") {
      err.oid = req.oid;
      if (m && !ci.byOid.has(m.oid)) {
        ci.byOid.set(m.oid, model);
        applyRemote(model, m, null, true);
        adapter.insert(ci, model, {});
      }
      raise(ci, model, err);
    }
    settleWaiters(req.waiters, err);
  }

  function take(id) {
    const req = pending.get(id);
    if (req) { pending.delete(id); }
    return req;
  }

  function onCreated(msg) {
    const req = take(msg.id);
    if (!req || req.kind !== "add") { return; }
    const ci = req.ci;
    const model = req.model;
    const st = model._o;
    if (st.tmp != null) { ci.byTmp.delete(st.tmp); }
    const m = msg.m;
    let result = model;
    if (m == null) {
      removeModel(ci, model, {});
    } else {
      const existing = ci.byOid.get(m.oid);
      if (existing && existing !== model) {
        removeModel(ci, model, {});
        applyRemote(existing, m, null, true);
        result = existing;
      } else {
        ci.byOid.set(m.oid, model);
        for (const k in m) {
          if (k !== "oid") { st.server[k] = copy(m[k]); }
        }
        applyRemote(model, m, null, true);
        const q = st.queued;
        st.queued = null;
        if (q && live) {
          const patch = {};
          let n = 0;
          for (const k in q) {
            if (!isEqual(st.server[k], q[k])) { patch[k] = q[k]; n++; }
          }
          if (n) { sendChange(ci, model, patch); }
        }
      }
      /* The windows of this client's queries came before the answer: they may show it already. */
      queries.created(ci, result);
    }
    settleWaiters(st.waiters, null, result);
    st.waiters = null;
    settleWaiters(req.waiters, null, result);
  }

  function onAck(msg) {
    const req = take(msg.id);
    if (!req) { return; }
    if (req.kind === "sub" || req.kind === "unsub" || req.kind === "query" || req.kind === "unquery") {
      req.resolve();
      return;
    }
    if (req.kind === "change") { settleChange(req, undefined, null); }
    settleWaiters(req.waiters, null, req.model);
  }

  function sendChange(ci, model, patch) {
    const st = model._o;
    for (const k in patch) { st.pending[k] = (st.pending[k] || 0) + 1; }
    const req = { kind: "change", ci: ci, model: model, values: patch, seen: {}, waiters: [] };
    return submit(req, { t: "change", c: ci.name, oid: model.get("oid"), set: patch });
  }

  function refuse(ci, model, reason) {
    raise(ci, model, new OmniError(reason, { request: "local" }));
    return false;
  }

  const engine = {
    find: function (ci, x) {
      if (x == null) { return undefined; }
      if (typeof x === "object") {
        if (x._o) {
          return adapter.contains(ci, x) ? x : undefined;
        }
        if (x.oid != null) { return ci.byOid.get(Number(x.oid)); }
        if (x.cid != null) { x = x.cid; } else { return undefined; }
      }
      if (typeof x === "number") { return ci.byOid.get(x); }
      const s = String(x);
      if (isDigits(s)) { return ci.byOid.get(Number(s)); }
      if (ci.byTmp.has(s)) { return ci.byTmp.get(s); }
      return ci.coll.models.find(function (m) { return m.cid === s; });
    },

    /* Validates and sends a local set; false refuses it (nothing applied). */
    localSet: function (model, attrs, opts) {
      const st = model._o;
      const ci = st.ci;
      let n = 0;
      const patch = {};
      for (const k in attrs) {
        if (k === "oid") {
          if (attrs[k] === model.get("oid")) { continue; }
          return refuse(ci, model, "the oid is assigned by the server");
        }
        if (!ci.attrs[k]) { return refuse(ci, model, "unknown attribute `" + k + "` of " + ci.spec.model); }
        if (ci.readonly[k]) { return refuse(ci, model, "attribute `" + k + "` of " + ci.spec.model + " is read-only"); }
        if (opts.unset) { return refuse(ci, model, "attribute `" + k + "` cannot be unset"); }
        if (!isEqual(model.get(k), attrs[k])) {
          patch[k] = copy(attrs[k]);
          n++;
        }
      }
      if (!n) { opts._omniReq = null; return true; }
      if (model.get("oid") == null) {
        st.queued = Object.assign(st.queued || {}, patch);
        opts._omniReq = null;
        return true;
      }
      if (!live && !offline()) { return refuse(ci, model, "not connected"); }
      opts._omniReq = sendChange(ci, model, patch);
      return true;
    },

    save: function (model, attrs, opts) {
      const o = Object.assign({}, opts);
      return new Promise(function (resolve, reject) {
        let failed = null;
        const onErr = function (m, err) { failed = err; };
        model.once("error", onErr);
        const ok = model.set(attrs, o);
        model.off("error", onErr);
        if (ok === false) {
          reject(failed || new OmniError("refused"));
          return;
        }
        const req = o._omniReq;
        if (req) {
          req.waiters.push({ resolve: resolve, reject: reject });
        } else if (model.get("oid") == null && model._o.tmp != null) {
          (model._o.waiters || (model._o.waiters = [])).push({ resolve: resolve, reject: reject });
        } else {
          resolve(model);
        }
      });
    },

    localAdd: function (ci, input, opts) {
      opts = opts || {};
      const many = Array.isArray(input);
      const list = many ? input : [input];
      const out = [];
      for (const item of list) {
        if (item == null) { continue; }
        let reuse = null;
        let attrs;
        if (item._o) {
          if (item._o.live) {
            out.push(item);
            continue;
          }
          reuse = item;
          attrs = typeof item.toJSON === "function" ? item.toJSON() : Object.assign({}, item.attributes);
        } else {
          attrs = Object.assign({}, item);
        }
        if (attrs.oid != null && ci.byOid.has(attrs.oid)) {
          out.push(ci.byOid.get(attrs.oid));
          continue;
        }
        delete attrs.oid;
        let bad = null;
        for (const k in attrs) {
          if (!ci.attrs[k]) { bad = "unknown attribute `" + k + "` of " + ci.spec.model; }
        }
        if (!bad && !live && !offline()) { bad = "not connected"; }
        if (bad) {
          refuse(ci, null, bad);
          if (opts._omniWaiter) { opts._omniWaiter.reject(new OmniError(bad, { request: "local" })); }
          continue;
        }
        const model = reuse || adapter.make(ci, attrs);
        const st = model._o;
        st.ci = ci;
        st.live = true;
        st.tmp = "t" + (++tmpCounter);
        if (opts._omniWaiter) { st.waiters = [opts._omniWaiter]; }
        ci.byTmp.set(st.tmp, model);
        adapter.insert(ci, model, opts);
        submit({ kind: "add", ci: ci, model: model, waiters: [] }, { t: "add", c: ci.name, tmp: st.tmp, m: attrs });
        out.push(model);
      }
      return many ? out : out[0];
    },

    /* Subscribes to (on) or leaves (!on) a channel; remembered for reconnects. */
    channel: function (ci, channel, on) {
      channel = String(channel);
      if (on) { ci.channels.add(channel); } else { ci.channels.delete(channel); }
      return new Promise(function (resolve, reject) {
        const kind = on ? "sub" : "unsub";
        if (!live) {
          if (wanted) { resolve(); } else { reject(new OmniError("not connected: call Omni.connect() first", { request: kind })); }
          return;
        }
        request({ kind: kind, ci: ci, channel: channel, resolve: resolve, reject: reject }, { t: kind, c: ci.name, ch: channel });
      });
    },

    read: function (ci, oid) {
      return new Promise(function (resolve, reject) {
        if (!live) {
          reject(new OmniError("not connected", { request: "read" }));
          return;
        }
        request({ kind: "read", ci: ci, resolve: resolve, reject: reject }, { t: "read", c: ci.name, oid: Number(oid) });
      });
    },

    create: function (ci, attrs, opts) {
      return new Promise(function (resolve, reject) {
        engine.localAdd(ci, attrs, Object.assign({}, opts, { _omniWaiter: { resolve: resolve, reject: reject } }));
      });
    },

    localRemove: function (ci, input, opts) {
      opts = opts || {};
      const many = Array.isArray(input);
      const list = many ? input.slice() : [input];
      const out = [];
      for (const x of list) {
        const model = engine.find(ci, x);
        if (!model) { continue; }
        const oid = model.get("oid");
        if (oid == null) {
          refuse(ci, model, "the server has not created this model yet");
          continue;
        }
        if (!live && !offline()) {
          refuse(ci, model, "not connected");
          continue;
        }
        removeModel(ci, model, opts);
        submit({ kind: "remove", ci: ci, model: model, oid: oid, waiters: [] }, { t: "remove", c: ci.name, oid: oid });
        out.push(model);
      }
      return many ? out : out[0];
    }
  };

  /* ---------- the socket ---------- */

  function handle(msg) {
    if (!msg || typeof msg !== "object") { return; }
    let ci;
    let model;
    let req;
    switch (msg.t) {
      case "hello":
        if (msg.v !== SCHEMA.v) {
          wanted = false;
          Omni._fire("error", [new OmniError("protocol version mismatch: the server speaks " + msg.v + ", this client " + SCHEMA.v, { request: "hello" })]);
          closeSocket(1002, "protocol version mismatch");
          return;
        }
        conn = msg.conn;
        live = true;
        resumedConn = !!msg.resumed;
        stateChanged();
        if (msg.token) {
          const keep = resumedConn && resume;
          resume = { token: msg.token, epoch: msg.epoch, seq: keep ? resume.seq : 0, v: keep ? resume.v : 0 };
        } else {
          resume = null;
        }
        /* A new connection: requests sent before the drop will never be answered. */
        if (!resumedConn) { failPending("disconnected before the server answered"); }
        break;
      case "at":
        if (resume) {
          resume.seq = msg.seq;
          resume.v = msg.v;
        }
        break;
      case "resumed": {
        if (resume) { resume.seq = msg.seq; }
        attempt = 0;
        /* Unanswered requests again, same ids and order: the server answers each once. */
        const again = Array.from(pending.values()).sort(function (a, b) { return a.id - b.id; });
        for (const r of again) { send(r.msg); }
        const queued = outbox;
        outbox = [];
        for (const q of queued) { request(q[0], q[1]); }
        if (!msg.full) { Omni._fire("sync", [Omni]); }
        if (reconnecting) {
          reconnecting = false;
          Omni._fire("reconnect", [Omni]);
        }
        Omni._fire("resume", [{ full: !!msg.full }]);
        break;
      }
      case "snapshot": {
        if (resume && msg.seq != null) { resume.seq = msg.seq; }
        snapshot(msg.data);
        const first = !isReady;
        const again = everSynced;
        everSynced = true;
        attempt = 0;
        /* A resumed connection kept its channels; its queue goes out on `resumed`. */
        if (!resumedConn) {
          const queued = outbox;
          outbox = [];
          /* channels survive reconnects: subscribe again (the server forgot them) */
          for (const c of cis) {
            for (const ch of c.channels) {
              request({ kind: "sub", ci: c, channel: ch, resolve: function () {}, reject: function (e) { raise(c, null, e); } }, { t: "sub", c: c.name, ch: ch });
            }
          }
          /* and so do queries */
          queries.resend(cis);
          for (const q of queued) { request(q[0], q[1]); }
        }
        if (first) {
          isReady = true;
          const cbs = readyCbs;
          readyCbs = [];
          for (const cb of cbs) { cb.call(Omni, Omni); }
          Omni._fire("ready", [Omni]);
        }
        Omni._fire("sync", [Omni]);
        if (again && reconnecting) {
          reconnecting = false;
          Omni._fire("reconnect", [Omni]);
        }
        break;
      }
      case "sync":
        Omni._fire("sync", [Omni]);
        break;
      case "add":
        ci = ciOf(msg.c);
        if (ci && msg.m) { addRemote(ci, msg.m); }
        break;
      case "change":
        ci = ciOf(msg.c);
        model = ci && ci.byOid.get(msg.oid);
        if (model) {
          applyRemote(model, msg.set || {}, msg.unset || null, false);
          queries.changed(ci, model);
        }
        break;
      case "window":
        ci = ciOf(msg.c);
        if (ci) { queries.window(ci, msg); }
        break;
      case "remove":
        ci = ciOf(msg.c);
        model = ci && ci.byOid.get(msg.oid);
        if (model) { removeModel(ci, model, {}); }
        break;
      case "ack":
        onAck(msg);
        break;
      case "created":
        onCreated(msg);
        break;
      case "reject":
        req = take(msg.id);
        if (req) {
          failRequest(req, msg, msg.reason || "rejected");
        } else {
          Omni._fire("error", [new OmniError(msg.reason || "rejected", { id: msg.id, collection: msg.c })]);
        }
        break;
      case "reply":
        req = take(msg.id);
        if (req && req.kind === "read") {
          if (hasOwn(msg, "err")) {
            failRequest(req, null, String(msg.err));
          } else {
            req.resolve(msg.ok);
          }
        } else if (req && req.kind === "event") {
          if (hasOwn(msg, "err")) {
            req.reject(new OmniError(String(msg.err), { request: "event", event: req.name, id: msg.id }));
          } else {
            req.resolve(msg.ok);
          }
        }
        break;
      case "emit":
        Omni._fire(String(msg.name), [msg.data]);
        break;
      case "error":
        req = msg.id != null ? take(msg.id) : null;
        if (req) {
          failRequest(req, null, msg.reason || "error");
        } else {
          Omni._fire("error", [new OmniError(msg.reason || "error", { id: msg.id })]);
        }
        break;
      default:
        break;
    }
  }

  function onFrame(data) {
    let text = data;
    if (typeof text !== "string") {
      if (typeof TextDecoder !== "undefined" && text && (text instanceof ArrayBuffer || ArrayBuffer.isView(text))) {
        text = new TextDecoder().decode(text);
      } else {
        text = String(text);
      }
    }
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      Omni._fire("error", [new OmniError("malformed frame from the server: " + e.message)]);
      return;
    }
    const list = Array.isArray(parsed) ? parsed : [parsed];
    for (const msg of list) {
      try {
        handle(msg);
      } catch (e) {
        /* a listener threw: report it without losing the rest of the frame */
        setTimeout(function () { throw e; }, 0);
      }
    }
  }

  let reconnecting = false;

  function failPending(reason) {
    const reqs = Array.from(pending.values());
    pending.clear();
    for (const req of reqs) { failRequest(req, null, reason); }
  }

  function lost(ev) {
    const wasLive = live;
    live = false;
    conn = null;
    stateChanged();
    /* A resumable connection keeps its unanswered requests: they go again on resume (and
       fail if the server starts a new connection instead). */
    if (!resume || !wanted) { failPending("disconnected before the server answered"); }
    if (wasLive) {
      Omni._fire("disconnect", [{ code: ev && ev.code, reason: ev && ev.reason }]);
    } else {
      /* The attempt closed before the server said hello: unreachable, or the upgrade was refused
         (HTTP 401/403/429; browsers do not show the status). It is retried like a drop. */
      Omni._fire("connect_error", [{ code: ev && ev.code, reason: ev && ev.reason }]);
      /* With several servers, the next attempt goes to the next one (a dropped connection is
         first resumed where it was: a connection resumes only on its own server). */
      if (urls.length > 1) {
        urlIndex = (urlIndex + 1) % urls.length;
        url = urls[urlIndex];
      }
    }
    if (wanted && reconnect.enabled) {
      schedule();
    } else {
      const queued = outbox;
      outbox = [];
      for (const q of queued) { failRequest(q[0], null, "not connected"); }
    }
  }

  function schedule() {
    if (timer) { return; }
    const ceiling = Math.min(reconnect.max, reconnect.min * Math.pow(2, attempt));
    attempt++;
    const delay = ceiling / 2 + Math.random() * ceiling / 2;
    reconnecting = everSynced;
    timer = setTimeout(function () {
      timer = null;
      if (wanted) { open(); }
    }, delay);
  }

  function open() {
    const Impl = WS || root.WebSocket;
    if (!Impl) {
      wanted = false;
      throw new OmniError("no WebSocket implementation: pass one, e.g. Omni.connect(url, { WebSocket: require(\"ws\") })");
    }
    let sock;
    let target = url;
    if (resume) {
      target += (url.indexOf("?") < 0 ? "?" : "&") + "resume=" + encodeURIComponent(resume.token) +
        "&epoch=" + resume.epoch + "&seq=" + resume.seq + "&v=" + resume.v;
    }
    try {
      sock = new Impl(target);
    } catch (e) {
      Omni._fire("error", [new OmniError("cannot open " + url + ": " + e.message)]);
      if (urls.length > 1) {
        urlIndex = (urlIndex + 1) % urls.length;
        url = urls[urlIndex];
      }
      if (wanted && reconnect.enabled) { schedule(); }
      return;
    }
    ws = sock;
    sock.onmessage = function (ev) {
      if (sock === ws) { onFrame(ev.data); }
    };
    sock.onclose = function (ev) {
      if (sock !== ws) { return; }
      ws = null;
      lost(ev);
    };
    sock.onerror = function () { /* a close event follows */ };
  }

  function closeSocket(code, reason) {
    const sock = ws;
    ws = null;
    if (sock) {
      try { sock.close(code || 1000, reason); } catch (e) { sock.close(); }
      lost({ code: code || 1000, reason: reason || "" });
    }
  }

  function defaultUrl() {
    const loc = root.location;
    if (!loc || !loc.host) { return null; }
    return (loc.protocol === "https:" ? "wss://" : "ws://") + loc.host + "/omni";
  }

  /* ---------- the public object ---------- */

  Omni.collections = collections;
  Omni.schema = SCHEMA;
  Omni.PROTOCOL_VERSION = SCHEMA.v;
  Omni.OmniError = OmniError;
  Omni.Events = Events;
  Object.defineProperty(Omni, "connected", { get: function () { return live; }, enumerable: true });
  Object.defineProperty(Omni, "state", { get: connState, enumerable: true });
  Object.defineProperty(Omni, "isReady", { get: function () { return isReady; }, enumerable: true });
  Object.defineProperty(Omni, "conn", { get: function () { return conn; }, enumerable: true });
  Object.defineProperty(Omni, "url", { get: function () { return url; }, enumerable: true });
  Object.defineProperty(Omni, "Backbone", { get: function () { return BB; }, enumerable: true });

  /* connect(url? | urls?, { WebSocket?, Backbone?, reconnect?: false | { min, max } }) */
  Omni.connect = function (u, options) {
    if (Array.isArray(u)) {
      if (!u.length) { throw new OmniError("Omni.connect needs at least one URL"); }
      urls = u.slice();
      /* Clients spread over the servers: each starts at a random one. */
      urlIndex = Math.floor(Math.random() * urls.length);
      u = urls[urlIndex];
    } else if (u && typeof u === "object") {
      options = u;
      u = undefined;
    } else if (typeof u === "string") {
      urls = [u];
      urlIndex = 0;
    }
    options = options || {};
    if (options.WebSocket) { WS = options.WebSocket; }
    if (options.Backbone && options.Backbone !== BB) { build(options.Backbone); }
    if (options.reconnect === false) {
      reconnect = { enabled: false, min: reconnect.min, max: reconnect.max };
    } else if (options.reconnect && typeof options.reconnect === "object") {
      reconnect = {
        enabled: true,
        min: options.reconnect.min || reconnect.min,
        max: options.reconnect.max || reconnect.max
      };
    }
    url = u || url || defaultUrl();
    if (!urls.length && url) { urls = [url]; }
    if (!url) { throw new OmniError("Omni.connect needs a URL outside a browser, e.g. ws://127.0.0.1:3000/omni"); }
    if (ws || timer) { return Omni; }
    wanted = true;
    attempt = 0;
    stateChanged();
    open();
    return Omni;
  };

  /* Closes the connection for good (no reconnect); unanswered requests fail. */
  Omni.close = function () {
    wanted = false;
    resume = null; /* a close frame ends the connection on the server too */
    stateChanged();
    if (timer) {
      clearTimeout(timer);
      timer = null;
    }
    closeSocket(1000, "closed by the client");
    const queued = outbox;
    outbox = [];
    for (const q of queued) { failRequest(q[0], null, "connection closed"); }
    return Omni;
  };
  Omni.disconnect = Omni.close;

  Omni.ready = function (cb) {
    if (typeof cb === "function") {
      if (isReady) { cb.call(Omni, Omni); } else { readyCbs.push(cb); }
      return Omni;
    }
    return new Promise(function (resolve) {
      if (isReady) { resolve(Omni); } else { readyCbs.push(resolve); }
    });
  };

  /* trigger(name, args, callback?) -> Promise of the reply; callback is Node-style (err, reply). */
  Omni.trigger = function (name, args, cb) {
    if (typeof args === "function" && cb === undefined) {
      cb = args;
      args = undefined;
    }
    const p = new Promise(function (resolve, reject) {
      const req = { kind: "event", name: name, resolve: resolve, reject: reject };
      const msg = { t: "event", name: name, args: args === undefined ? null : args };
      if (live) {
        request(req, msg);
      } else if (wanted) {
        outbox.push([req, msg]);
      } else {
        reject(new OmniError("not connected: call Omni.connect() first", { request: "event", event: name }));
      }
    });
    if (typeof cb === "function") {
      p.then(function (reply) { cb.call(Omni, null, reply); }, function (err) { cb.call(Omni, err); });
    }
    return p;
  };

  /* A new, independent client (own connection and collections) for the same schema. */
  Omni.create = function (options) {
    return createOmni(SCHEMA, Object.assign({}, env, options));
  };

  build(env.Backbone || (env.Backbone === null ? null : root.Backbone) || null);
  return Omni;
}
