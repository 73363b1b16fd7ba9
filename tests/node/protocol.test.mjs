// Protocol edge cases of the generated client that the example server cannot be made to
// produce: a scripted WebSocket peer on 127.0.0.1 (the `ws` package) plays the server.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { after, before, test } from "node:test";

import { generateClient, here, next, tempDir, until } from "./helpers.mjs";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");

let Omni;
let wss;
let url;
/** What the scripted server does with each new socket. */
let onConnection = () => {};
const received = [];

before(async () => {
  const dir = generateClient(path.join(here, "fixtures", "schema.json"), tempDir("protocol"), { release: true });
  writeFileSync(path.join(dir, "package.json"), '{"type":"module"}\n');
  Omni = (await import(pathToFileURL(path.join(dir, "omni.js")).href)).default;
  wss = new WebSocket.WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((r) => wss.once("listening", r));
  url = `ws://127.0.0.1:${wss.address().port}/omni`;
  wss.on("connection", (sock) => {
    sock.on("message", (data) => received.push(JSON.parse(String(data))));
    onConnection(sock);
  });
});

after(async () => {
  for (const s of wss.clients) s.terminate();
  await new Promise((r) => wss.close(r));
});

const hello = (v = 1) => ({ t: "hello", v, conn: 7 });
const snapshot = (players = [], messages = []) => ({ t: "snapshot", data: { players, messages } });
const jim = { oid: 1, name: "Jim", x: 0, y: 0, online: true, home: null };

test("a protocol version mismatch is an error, and the client does not retry", async () => {
  let connections = 0;
  onConnection = (s) => {
    connections++;
    s.send(JSON.stringify(hello(99)));
  };
  const c = Omni.create();
  const err = next(c, "error");
  c.connect(url, { WebSocket, reconnect: { min: 10, max: 20 } });
  assert.match((await err)[0].reason, /protocol version mismatch/);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(connections, 1);
  assert.equal(c.connected, false);
  assert.equal(c.isReady, false);
  c.close();
});

test("frames of one message or an array; unknown types ignored; string and array fields", async () => {
  onConnection = (s) => {
    s.send(JSON.stringify(hello()));
    s.send(JSON.stringify([{ t: "future-thing", x: 1 }, snapshot([jim])]));
  };
  const c = Omni.create();
  c.connect(url, { WebSocket });
  await c.ready();
  const p = c.collections.players.get(1);
  assert.equal(p.get("name"), "Jim");
  assert.equal(c.conn, 7);
  // `change` with `unset`: the attribute became unreadable
  const sock = [...wss.clients].at(-1);
  const unset = next(p, "change:y");
  sock.send(JSON.stringify({ t: "change", c: "players", oid: 1, set: { x: 4 }, unset: ["y"] }));
  await unset;
  assert.equal(p.get("x"), 4);
  assert.equal(p.has("y"), false);
  // a malformed frame is reported, the connection goes on
  const err = next(c, "error");
  sock.send("{not json");
  assert.match((await err)[0].reason, /malformed/);
  sock.send(JSON.stringify({ t: "add", c: "players", m: { ...jim, oid: 2, name: "Ann" } }));
  await until(() => c.collections.players.get(2), "add after a bad frame");
  c.close();
});

test("an `error` answering a request fails it; events sent before the snapshot are queued", async () => {
  let sock;
  onConnection = (s) => {
    sock = s;
    s.send(JSON.stringify(hello()));
  };
  received.length = 0;
  const c = Omni.create();
  c.connect(url, { WebSocket });
  const early = c.trigger("ping", null);
  await until(() => sock, "socket");
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(received.length, 0, "nothing is sent before the snapshot");
  sock.send(JSON.stringify(snapshot([jim])));
  await until(() => received.length === 1, "queued event sent");
  assert.deepEqual(received[0], { t: "event", name: "ping", args: null, id: received[0].id });
  sock.send(JSON.stringify({ t: "reply", id: received[0].id, ok: "pong" }));
  assert.equal(await early, "pong");
  const p = c.collections.players.get(1);
  const saving = p.save({ x: 9 });
  await until(() => received.length === 2, "change sent");
  assert.deepEqual(received[1], { t: "change", c: "players", oid: 1, set: { x: 9 }, id: received[1].id });
  sock.send(JSON.stringify({ t: "error", id: received[1].id, reason: "over a limit" }));
  await assert.rejects(saving, /over a limit/);
  assert.equal(p.get("x"), 0, "rolled back");
  // a change the server echoes, then acknowledges
  p.set("x", 3);
  await until(() => received.length === 3, "second change");
  sock.send(JSON.stringify([{ t: "change", c: "players", oid: 1, set: { x: 3 } }, { t: "ack", id: received[2].id }]));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(p.get("x"), 3);
  // an ack without an echo keeps the value too
  const saved = p.save("x", 8);
  await until(() => received.length === 4, "third change");
  sock.send(JSON.stringify({ t: "ack", id: received[3].id }));
  await saved;
  assert.equal(p.get("x"), 8);
  // a model that becomes invisible to its writer on reject is removed
  p.set("x", 11);
  await until(() => received.length === 5, "fourth change");
  const removed = next(c.collections.players, "remove");
  sock.send(JSON.stringify({ t: "reject", id: received[4].id, c: "players", oid: 1, reason: "gone", m: null }));
  await removed;
  assert.equal(c.collections.players.length, 0);
  c.close();
  await assert.rejects(c.trigger("ping", null), /not connected/);
});

test("a set that changes nothing sends nothing (Backbone semantics), also for objects in another key order", async () => {
  onConnection = (s) => {
    s.send(JSON.stringify([hello(), snapshot([{ ...jim, x: 5, home: { x: 1, y: 2 } }])]));
  };
  received.length = 0;
  const c = Omni.create();
  c.connect(url, { WebSocket });
  try {
    await c.ready();
    const p = c.collections.players.get(1);
    const changes = [];
    p.on("change", () => changes.push("change"));
    assert.equal(p.set("x", 5), p);
    assert.equal(p.set({ x: 5, y: 0 }), p);
    assert.equal(p.set("home", { y: 2, x: 1 }), p, "the same object, keys in another order");
    assert.equal(p.set("home", { x: 1, y: 2 }), p);
    await p.save({ x: 5 }); // settled at once: nothing to wait for
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(received, [], "nothing was sent");
    assert.deepEqual(changes, [], "no change event");
    // a real change is still sent, with only what changed
    p.set({ x: 6, home: { y: 2, x: 1 } });
    await until(() => received.length === 1, "the change");
    assert.deepEqual(received[0].set, { x: 6 });
  } finally {
    c.close();
  }
});

test("unknown and read-only attributes are refused locally; Node needs a URL", async () => {
  onConnection = (s) => {
    s.send(JSON.stringify([hello(), snapshot([jim])]));
  };
  received.length = 0;
  const c = Omni.create();
  c.connect(url, { WebSocket });
  await c.ready();
  const p = c.collections.players.get(1);
  const errors = [];
  c.on("error", (e) => errors.push(e.reason));
  assert.equal(p.set("nmae", "x"), false);
  assert.equal(p.set("name", "x"), false);
  assert.equal(c.collections.players.add({ bogus: 1 }), undefined);
  assert.equal(errors.length, 3);
  assert.match(errors[0], /unknown attribute `nmae`/);
  assert.match(errors[1], /read-only/);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(received.length, 0, "nothing was sent");
  c.close();
  assert.throws(() => Omni.create().connect(undefined, { WebSocket }), /needs a URL/);
});
