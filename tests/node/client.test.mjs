// The generated client (development and minified builds) against the live example game
// (examples/game) on 127.0.0.1. The test starts the server itself and stops only that child.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
import vm from "node:vm";
import { after, before, describe, test } from "node:test";

import { generateClient, next, startGame, startProxy, tempDir, until } from "./helpers.mjs";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");
const Backbone = require("backbone");

let game;
let schemaPath;
let run = 0;
/** A player name unique to this test run. */
const uniq = (base) => `${base}${process.pid % 1000}_${++run}`;

before(async () => {
  game = await startGame();
  const res = await fetch(`${game.http}/omni/schema.json`);
  assert.equal(res.status, 200, "the server serves its schema");
  const dir = tempDir("schema");
  schemaPath = path.join(dir, "schema.json");
  writeFileSync(schemaPath, await res.text());
});

after(async () => {
  if (game) await game.stop();
});

for (const flavor of ["development", "release"]) {
  describe(`generated client (${flavor})`, () => {
    let Omni;
    let dir;
    const clients = [];

    /** A new connected client; `opts` go to `connect`. */
    async function client(opts = {}) {
      const c = Omni.create(opts.Backbone ? { Backbone: opts.Backbone } : { Backbone: null });
      clients.push(c);
      c.connect(opts.url || game.url, { WebSocket, reconnect: { min: 20, max: 200 }, ...opts });
      await c.ready();
      return c;
    }

    /** A connected client logged in as a new player; resolves with [client, player model]. */
    async function player(base, opts) {
      const c = await client(opts);
      const name = uniq(base);
      const reply = await c.trigger("login", { name, password: "pw" });
      const me = await until(() => c.collections.players.get(reply.oid), "own player");
      return [c, me, name];
    }

    before(async () => {
      dir = generateClient(schemaPath, tempDir(flavor), { release: flavor === "release" });
      writeFileSync(path.join(dir, "package.json"), '{"type":"module"}\n');
      const mod = await import(pathToFileURL(path.join(dir, "omni.js")).href);
      Omni = mod.default;
      assert.equal(mod.Omni, Omni);
      assert.equal(mod.collections, Omni.collections);
      assert.equal(mod.PROTOCOL_VERSION, 1);
    });

    after(() => {
      for (const c of clients) c.close();
    });

    test("snapshot, ready by callback and by Promise, sync", async () => {
      const [, , annName] = await player("ann");
      const c = Omni.create({ Backbone: null });
      clients.push(c);
      let viaCallback = 0;
      let syncs = 0;
      c.ready(() => viaCallback++);
      c.on("sync", () => syncs++);
      const ready = next(c, "ready");
      c.connect(game.url, { WebSocket });
      const [omni] = await ready;
      assert.equal(omni, c);
      assert.equal(await c.ready(), c);
      assert.equal(viaCallback, 1);
      assert.equal(syncs, 1, "a sync per snapshot");
      assert.ok(c.isReady && c.connected && typeof c.conn === "number");
      let now = false;
      c.ready(() => (now = true));
      assert.ok(now, "ready(cb) after ready calls back at once");
      const ann = c.collections.players.findWhere({ name: annName });
      assert.ok(ann, "the snapshot holds the online players");
      assert.equal(typeof ann.oid, "number");
      assert.equal(ann.get("online"), true);
      assert.equal(ann.get("_password"), undefined, "private fields never arrive");
      assert.deepEqual(Object.keys(ann.toJSON()).sort(), ["color", "name", "oid", "online", "x", "y"]);
      assert.equal(c.collections.players.get(ann.oid), ann);
      assert.equal(c.collections.players.get(String(ann.oid)), ann);
      assert.ok(c.collections.players.where({ online: true }).includes(ann));
      assert.ok(c.collections.players.map((m) => m.oid).includes(ann.oid));
      let seen = 0;
      c.collections.players.each(() => seen++);
      assert.equal(seen, c.collections.players.length);
      assert.ok(Array.isArray(c.collections.messages.toJSON()));
    });

    test("remote change fires change events", async () => {
      const [a, ann] = await player("ann");
      const b = await client();
      const there = await until(() => b.collections.players.get(ann.oid), "ann on b");
      const onModel = next(there, "change:x");
      const onColl = next(b.collections.players, "change:x");
      const onChange = next(there, "change");
      assert.equal(ann.set("x", 123), ann);
      const [model, value] = await onModel;
      assert.equal(model, there);
      assert.equal(value, 123);
      assert.equal((await onColl)[0], there);
      await onChange;
      assert.equal(there.get("x"), 123);
      assert.ok(a.connected);
    });

    test("local change is applied at once and acknowledged", async () => {
      const [, me] = await player("cat");
      const changed = next(me, "change:y");
      const saved = me.save({ y: 77 });
      assert.equal(me.get("y"), 77, "applied before the server answers");
      await changed;
      assert.equal(await saved, me);
      assert.equal(me.get("y"), 77);
      // set() by attribute and by object
      me.set({ x: 5, y: 6 });
      await me.save("x", 7);
      assert.equal(me.get("x"), 7);
      assert.equal(me.get("y"), 6);
    });

    test("refused change rolls back and emits error on model, collection and Omni", async () => {
      const [a, ann] = await player("ann");
      const [b] = await player("bob");
      const theirs = await until(() => b.collections.players.get(ann.oid), "ann on bob's client");
      const before = theirs.get("x");
      const errors = { model: next(theirs, "error"), coll: next(b.collections.players, "error"), omni: next(b, "error") };
      const changes = [];
      theirs.on("change:x", (_m, v) => changes.push(v));
      assert.equal(theirs.set("x", before + 1), theirs);
      assert.equal(theirs.get("x"), before + 1, "applied locally at once");
      const [m, err] = await errors.model;
      assert.equal(m, theirs);
      assert.equal(err.name, "OmniError");
      assert.match(err.reason, /permission|may not/i);
      assert.equal(err.request, "change");
      assert.equal((await errors.coll)[1], err);
      assert.equal((await errors.omni)[0], err);
      assert.equal(theirs.get("x"), before, "rolled back to the authoritative value");
      assert.deepEqual(changes, [before + 1, before]);
      // save() rejects; an out-of-range value on one's own player too
      await assert.rejects(ann.save({ x: 100000 }), (e) => e.request === "change");
      assert.notEqual(ann.get("x"), 100000);
      // read-only attributes are refused locally, nothing is sent
      const local = next(ann, "error");
      assert.equal(ann.set("name", "Mallory"), false);
      assert.match((await local)[1].reason, /read-only/);
      assert.equal(typeof ann.get("name"), "string");
      assert.ok(a.connected);
    });

    test("add gets its OID from `created`; a refused add is dropped", async () => {
      const [a, , annName] = await player("ann");
      const b = await client();
      const added = next(b.collections.messages, "add");
      const msg = a.collections.messages.add({ text: "hello " + annName });
      assert.ok(msg, "add returns the model");
      assert.equal(msg.oid, undefined, "no OID before the server acknowledges");
      assert.ok(a.collections.messages.models.includes(msg), "the model appears at once");
      await until(() => msg.oid !== undefined, "created");
      assert.equal(typeof msg.oid, "number");
      assert.equal(msg.get("author"), annName, "server-filled attributes arrive with the OID");
      assert.equal(a.collections.messages.get(msg.oid), msg);
      assert.equal(a.collections.messages.where({ text: "hello " + annName }).length, 1, "no duplicate");
      const [other] = await added;
      assert.equal(other.oid, msg.oid);
      const created = await a.collections.messages.create({ text: "second" });
      assert.equal(typeof created.oid, "number");
      // a connection that is not logged in may not post
      const anon = await client();
      const errored = next(anon, "error");
      const refused = anon.collections.messages.add({ text: "spam" });
      assert.ok(anon.collections.messages.models.includes(refused));
      const [err] = await errored;
      assert.equal(err.request, "add");
      assert.ok(!anon.collections.messages.models.includes(refused), "the refused model is removed");
      await assert.rejects(anon.collections.messages.create({ text: "spam" }), (e) => e.request === "add");
    });

    test("remove, and a refused remove puts the model back", async () => {
      const [a] = await player("ann");
      const [b] = await player("bob");
      const mine = await a.collections.messages.create({ text: "to delete" });
      const keep = await a.collections.messages.create({ text: "to keep" });
      const onB = await until(() => b.collections.messages.get(mine.oid), "message on b");
      const removedOnB = next(b.collections.messages, "remove");
      assert.equal(a.collections.messages.remove(mine), mine);
      assert.equal(a.collections.messages.get(mine.oid), undefined, "removed at once");
      assert.equal((await removedOnB)[0], onB);
      // bob may not delete ann's message: it comes back on bob's side, with an error
      const keepOnB = await until(() => b.collections.messages.get(keep.oid), "keep on b");
      const err = next(b, "error");
      const back = next(b.collections.messages, "add");
      keepOnB.destroy();
      assert.equal(b.collections.messages.get(keep.oid), undefined);
      assert.equal((await err)[0].request, "remove");
      assert.equal((await back)[0], keepOnB, "the same model object returns");
      assert.equal(b.collections.messages.get(keep.oid), keepOnB);
    });

    test("event round-trip by callback and by Promise, with errors", async () => {
      const c = await client();
      const name = uniq("eve");
      const viaCallback = await new Promise((resolve, reject) => {
        const p = c.trigger("login", { name, password: "secret" }, (err, reply) => (err ? reject(err) : resolve(reply)));
        assert.ok(p instanceof Promise);
      });
      assert.equal(typeof viaCallback.oid, "number");
      await assert.rejects(c.trigger("login", { name, password: "secret" }), (e) => /already logged in/.test(e.reason));
      const d = await client();
      const cbErr = await new Promise((resolve) => d.trigger("login", { name, password: "wrong" }, (err) => resolve(err)));
      assert.match(cbErr.reason, /wrong password/);
      await assert.rejects(d.trigger("no-such-event", {}), (e) => e.request === "event" || e.name === "OmniError");
    });

    test("login makes the own (offline) player visible: permission change after sync", async () => {
      const [a, , annName] = await player("ann");
      const watcher = await client();
      const annThere = await until(() => watcher.collections.players.findWhere({ name: annName }), "ann visible");
      // ann goes offline: no longer readable for others
      const gone = next(watcher.collections.players, "remove");
      a.close();
      assert.equal((await gone)[0], annThere);
      const fresh = await client();
      assert.equal(fresh.collections.players.findWhere({ name: annName }), undefined, "offline players are invisible");
      const added = next(fresh.collections.players, "add");
      const reply = await fresh.trigger("login", { name: annName, password: "pw" });
      const [model] = await added;
      assert.equal(model.oid, reply.oid);
      assert.equal(model.get("online"), true);
      assert.ok(await until(() => watcher.collections.players.get(reply.oid), "visible again for others"));
    });

    test("server emit reaches Omni.on", async () => {
      const c = await client();
      const name = uniq("fay");
      const joined = next(c, "joined");
      const d = await client();
      await d.trigger("login", { name, password: "pw" });
      assert.deepEqual(await joined, [name]);
    });

    test("a dropped connection resumes: same session, in-flight write done once, only what changed", async () => {
      const proxy = await startProxy(game.port);
      try {
        const [a, ann] = await player("ann");
        const [d, dan] = await player("dan", { url: proxy.url });
        const annOnD = await until(() => d.collections.players.get(ann.oid), "ann on d");
        const doomed = await a.collections.messages.create({ text: "doomed" });
        await until(() => d.collections.messages.get(doomed.oid), "doomed on d");
        const events = [];
        d.on("disconnect", () => events.push("disconnect"));
        d.on("reconnect", () => events.push("reconnect"));
        const disconnected = next(d, "disconnect");
        const reconnected = next(d, "reconnect", 10000);
        const resumed = next(d, "resume", 10000);
        // a request in flight when the socket drops is sent again on resume, answered once
        const oldX = dan.get("x");
        const newX = oldX === 1 ? 2 : 1;
        const inFlight = dan.save({ x: newX });
        proxy.cut();
        await disconnected;
        assert.equal(d.connected, false);
        // the world moves on while d is away
        await ann.save({ x: 321 });
        const fresh = await a.collections.messages.create({ text: "while away" });
        a.collections.messages.remove(doomed);
        await inFlight;
        assert.equal(dan.get("x"), newX, "the in-flight write was applied, not rolled back");
        const [info] = await resumed;
        assert.equal(info.full, false, "only what changed, no snapshot");
        await reconnected;
        assert.deepEqual(events, ["disconnect", "reconnect"]);
        assert.equal(d.collections.players.get(ann.oid), annOnD, "the same model object is kept");
        await until(() => annOnD.get("x") === 321, "changes made while away arrive");
        await until(() => d.collections.messages.get(fresh.oid), "models added while away arrive");
        await until(() => d.collections.messages.get(doomed.oid) === undefined, "models removed while away go");
        const oids = d.collections.players.map((m) => m.oid);
        assert.equal(new Set(oids).size, oids.length, "no duplicated player");
        const moids = d.collections.messages.map((m) => m.oid);
        assert.equal(new Set(moids).size, moids.length, "no duplicated message");
        // the server kept the session: dan is still logged in and moves without a new login
        assert.equal(d.collections.players.get(dan.oid), dan);
        await dan.save({ x: 77 });
        await until(() => a.collections.players.get(dan.oid)?.get("x") === 77, "dan moves after the resume");
        const onServer = await a.collections.players.get(dan.oid);
        assert.equal(onServer.get("x"), 77);
      } finally {
        await proxy.close();
      }
    });

    test("writes made offline apply at once, queue, and go out in order on resume", async () => {
      const proxy = await startProxy(game.port);
      try {
        const [a] = await player("ann");
        const [d, dan] = await player("dan", { url: proxy.url });
        const states = [];
        d.on("state", (s) => states.push(s));
        const disconnected = next(d, "disconnect");
        proxy.hold();
        proxy.cut();
        await disconnected;
        assert.equal(d.state, "resuming");
        // Offline: applied locally at once, not refused.
        const first = dan.save({ x: 11 });
        const second = dan.save({ x: 12 });
        assert.equal(dan.get("x"), 12);
        const note = d.collections.messages.create({ text: "written offline" });
        // One the server will refuse (outside the board): rolled back after the resume.
        const refused = dan.save({ x: 99999 });
        assert.equal(dan.get("x"), 99999);
        await new Promise((r) => setTimeout(r, 300)); // still down: attempts fail
        assert.equal(d.state, "resuming");
        const resumed = next(d, "resume", 10000);
        proxy.release();
        const [info] = await resumed;
        assert.equal(info.full, false);
        await first;
        await second;
        const created = await note;
        await assert.rejects(refused);
        assert.equal(dan.get("x"), 12, "the refused write rolled back to the server's value");
        await until(() => a.collections.players.get(dan.oid)?.get("x") === 12, "ann sees dan's offline moves");
        await until(() => a.collections.messages.get(created.oid), "ann sees the offline message");
        assert.equal(d.state, "open");
        assert.deepEqual(states, ["resuming", "open"]);
      } finally {
        await proxy.close();
      }
    });

    test("Backbone mode: real Backbone collections and models", async () => {
      const [a, ann] = await player("ann");
      const [b, bob] = await player("bob", { Backbone });
      assert.ok(b.collections.players instanceof Backbone.Collection);
      assert.ok(bob instanceof Backbone.Model);
      assert.equal(bob.idAttribute, "oid");
      assert.equal(bob.id, bob.get("oid"));
      const annOnB = await until(() => b.collections.players.get(ann.oid), "ann on b");
      assert.ok(annOnB instanceof Backbone.Model);
      assert.equal(b.collections.players.findWhere({ name: ann.get("name") }), annOnB);
      // A Backbone listener (what a View's `listenTo` is; a real View needs a DOM, which the
      // browser test has) sees server changes.
      const view = Object.assign({ xs: [] }, Backbone.Events);
      view.listenTo(annOnB, "change:x", (_m, x) => view.xs.push(x));
      const seen = next(annOnB, "change:x");
      await ann.save({ x: 42 });
      await seen;
      assert.deepEqual(view.xs, [42]);
      // local set on a Backbone model is sent
      const bobOnA = await until(() => a.collections.players.get(bob.id), "bob on a");
      const moved = next(bobOnA, "change:y");
      bob.set("y", 99);
      await moved;
      assert.equal(bobOnA.get("y"), 99);
      // refused: rolled back with Backbone change events
      const err = next(annOnB, "error");
      annOnB.set({ x: 1 });
      await err;
      assert.equal(annOnB.get("x"), 42);
      // add through the Backbone collection: id assigned from `created`
      const msg = b.collections.messages.add({ text: "from backbone" });
      assert.ok(msg instanceof Backbone.Model);
      await until(() => msg.id !== undefined, "created");
      assert.equal(b.collections.messages.get(msg.id), msg);
      const gone = next(b.collections.messages, "remove");
      msg.destroy();
      await gone;
      assert.equal(b.collections.messages.get(msg.id), undefined);
      view.stopListening();
    });

    test("omni.global.js: sets window.Omni, connects on load unless OMNI_MANUAL_CONNECT", async () => {
      const source = readFileSync(path.join(dir, "omni.global.js"), "utf8");
      const host = `127.0.0.1:${game.port}`;
      const window = { location: { host, protocol: "http:" }, WebSocket, setTimeout, clearTimeout, console, TextDecoder };
      vm.runInNewContext(source, window);
      const O = window.Omni;
      assert.ok(O && O.collections.players, "window.Omni");
      assert.equal(window.Collections, O.collections);
      await O.ready();
      assert.ok(O.connected);
      O.close();
      const manual = { location: { host, protocol: "http:" }, WebSocket, setTimeout, clearTimeout, console, TextDecoder, OMNI_MANUAL_CONNECT: true, Backbone };
      vm.runInNewContext(source, manual);
      assert.equal(manual.Omni.connected, false);
      assert.ok(manual.Omni.collections.players instanceof Backbone.Collection, "window.Backbone is picked up");
      manual.Omni.connect();
      await manual.Omni.ready();
      assert.ok(manual.Omni.connected);
      manual.Omni.close();
    });
  });
}
