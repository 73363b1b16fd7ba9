/* Live queries of the Omni client (docs/PROTOCOL.md, "Queries"): a query's result, kept from
 * the server's `window` messages and ordered here by the query's order. Emitted before
 * client.js; createOmni hands it the engine's parts it needs (`deps`). Same rules as client.js:
 * plain ES2017, explicit semicolons, no regular-expression or template literals. */
function omniQueries(deps) {
  "use strict";
  let counter = 0;

  /* The server's order of JSON values: absent (unreadable) first, then null, booleans, numbers,
     strings, arrays (element by element), objects (by their JSON text). Strings compare by
     UTF-16 code units here and by code points on the server: they differ only between
     characters above U+FFFF and those from U+E000 to U+FFFF, which then may show in another
     order (the set of models shown is the server's either way). */
  function rank(v) {
    if (v === undefined) { return -1; }
    if (v === null) { return 0; }
    if (typeof v === "boolean") { return 1; }
    if (typeof v === "number") { return 2; }
    if (typeof v === "string") { return 3; }
    if (Array.isArray(v)) { return 4; }
    return 5;
  }

  function compare(a, b) {
    const ra = rank(a);
    const rb = rank(b);
    if (ra !== rb) { return ra < rb ? -1 : 1; }
    if (ra === 4) {
      const n = Math.min(a.length, b.length);
      for (let i = 0; i < n; i++) {
        const c = compare(a[i], b[i]);
        if (c !== 0) { return c; }
      }
      return a.length === b.length ? 0 : (a.length < b.length ? -1 : 1);
    }
    if (ra === 5) {
      a = JSON.stringify(a);
      b = JSON.stringify(b);
    }
    return a < b ? -1 : (a > b ? 1 : 0);
  }

  /* `order` as [name, "asc" | "desc"] pairs. */
  function normOrder(order) {
    if (order == null) { return []; }
    const list = Array.isArray(order) ? order : [order];
    return list.map(function (k) {
      if (typeof k === "string") { return [k, "asc"]; }
      if (Array.isArray(k) && typeof k[0] === "string" && (k[1] === "asc" || k[1] === "desc")) { return [k[0], k[1]]; }
      throw new deps.OmniError("each `order` key is an attribute name or [name, \"asc\" | \"desc\"]", { request: "query" });
    });
  }

  class LiveQuery {
    constructor(ci, spec) {
      spec = spec || {};
      this._ci = ci;
      this.id = "q" + (++counter);
      this.collection = ci.coll;
      this._order = normOrder(spec.order);
      this.spec = { where: spec.where || {}, order: this._order, limit: spec.limit == null ? null : Number(spec.limit) };
      this._oids = new Set();
      this._waiters = [];
      this._events = {};
      this.more = false;
      this.closed = false;
      this.ready = null;
      this._first = this.spec.limit || 50;
    }

    /* The models the server says it shows, in its order. */
    get models() {
      const out = [];
      for (const oid of this._oids) {
        const m = this._ci.byOid.get(oid);
        if (m) { out.push(m); }
      }
      const order = this._order;
      const last = order.length ? order[order.length - 1][1] : "asc";
      out.sort(function (a, b) {
        for (const k of order) {
          const c = compare(a.get(k[0]), b.get(k[0]));
          if (c !== 0) { return k[1] === "desc" ? -c : c; }
        }
        const c = a.get("oid") - b.get("oid");
        return last === "desc" ? -c : c;
      });
      return out;
    }

    get length() { return this.models.length; }
    at(i) { const ms = this.models; return ms[i < 0 ? ms.length + i : i]; }
    first() { return this.models[0]; }
    last() { const ms = this.models; return ms[ms.length - 1]; }
    has(model) { return this._oids.has(typeof model === "number" ? model : model.get("oid")); }
    map(fn, ctx) { return this.models.map(fn, ctx); }
    forEach(fn, ctx) { this.models.forEach(fn, ctx); }
    pluck(key) { return this.models.map(function (m) { return m.get(key); }); }
    toJSON() { return this.models.map(function (m) { return m.toJSON(); }); }
    [Symbol.iterator]() { return this.models[Symbol.iterator](); }

    /* Shows `n` more models (default: as many as the first limit); resolves once they are in. */
    loadMore(n) {
      if (this.spec.limit == null) { return Promise.resolve(this); }
      this.spec.limit += n == null ? this._first : Number(n);
      return send(this);
    }

    /* Asks again with another limit. */
    setLimit(n) {
      this.spec.limit = n == null ? null : Number(n);
      return send(this);
    }

    /* Ends the query: the models only it showed are removed. */
    close() {
      const q = this;
      if (q.closed) { return Promise.resolve(); }
      q.closed = true;
      q._ci.queries.delete(q.id);
      return new Promise(function (resolve, reject) {
        if (!deps.live()) { resolve(); return; }
        deps.request({ kind: "unquery", ci: q._ci, query: q, resolve: resolve, reject: reject }, { t: "unquery", c: q._ci.name, q: q.id });
      });
    }
  }
  Object.assign(LiveQuery.prototype, { on: deps.Events.on, once: deps.Events.once, off: deps.Events.off, _fire: deps.Events._fire });
  LiveQuery.prototype.trigger = function (name) { return this._fire(name, Array.prototype.slice.call(arguments, 1)); };

  function settle(q, err) {
    const waiters = q._waiters;
    q._waiters = [];
    for (const w of waiters) {
      if (err) { w.reject(err); } else { w.resolve(q); }
    }
    if (err) { q._fire("error", [err]); }
  }

  function transmit(q) {
    const msg = { t: "query", c: q._ci.name, q: q.id, where: q.spec.where, order: q._order };
    if (q.spec.limit != null) { msg.limit = q.spec.limit; }
    deps.request({
      kind: "query", ci: q._ci, query: q,
      resolve: function () { settle(q, null); },
      reject: function (e) { settle(q, e); }
    }, msg);
  }

  /* Sends the query now, or when the connection opens; resolves when the server answered. */
  function send(q) {
    const p = new Promise(function (resolve, reject) {
      q._waiters.push({ resolve: resolve, reject: reject });
      if (deps.live()) {
        transmit(q);
      } else if (!deps.wanted()) {
        settle(q, new deps.OmniError("not connected: call Omni.connect() first", { request: "query" }));
      }
    });
    p.catch(function () { /* reported through the query's `error` event too */ });
    return p;
  }

  return {
    open: function (ci, spec) {
      const q = new LiveQuery(ci, spec);
      ci.queries.set(q.id, q);
      q.ready = send(q);
      return q;
    },

    /* A refused query is forgotten (a dropped socket keeps it for the reconnect). */
    refused: function (req, dropped) {
      if (!dropped && req.query) { req.ci.queries.delete(req.query.id); req.query.closed = true; }
    },

    /* Every open query again, on a new connection (the server forgot them). */
    resend: function (cis) {
      for (const ci of cis) {
        for (const q of ci.queries.values()) { transmit(q); }
      }
    },

    /* A `window` message. */
    window: function (ci, msg) {
      const q = ci.queries.get(String(msg.q));
      if (!q) { return; }
      const added = [];
      const removed = [];
      const ins = Array.isArray(msg.in) ? msg.in : [];
      if (msg.all) {
        const next = new Set(ins);
        for (const o of q._oids) { if (!next.has(o)) { removed.push(o); } }
        for (const o of ins) { if (!q._oids.has(o)) { added.push(o); } }
        q._oids = next;
      } else {
        for (const o of (Array.isArray(msg.out) ? msg.out : [])) { if (q._oids.delete(o)) { removed.push(o); } }
        for (const o of ins) { if (!q._oids.has(o)) { q._oids.add(o); added.push(o); } }
      }
      q.more = !!msg.more;
      for (const o of removed) {
        const m = ci.byOid.get(o);
        if (m) { q._fire("remove", [m, q, {}]); }
      }
      for (const o of added) {
        const m = ci.byOid.get(o);
        if (m) { q._fire("add", [m, q, {}]); }
      }
      q._fire("update", [q]);
    },

    /* A model this client added got its OID (`created`, after the windows its insert changed):
       queries that already show it tell their listeners. */
    created: function (ci, model) {
      const oid = model.get("oid");
      for (const q of ci.queries.values()) {
        if (q._oids.has(oid)) {
          q._fire("add", [model, q, {}]);
          q._fire("update", [q]);
        }
      }
    },

    /* A model the server changed: queries showing it tell their listeners. */
    changed: function (ci, model) {
      const oid = model.get("oid");
      for (const q of ci.queries.values()) {
        if (q._oids.has(oid)) { q._fire("change", [model, q, {}]); }
      }
    }
  };
}
