// The generated client's channels (`subscribe` / `unsubscribe`, kept across reconnects) and
// one-shot `read`, against tests/bin/channels_server.rs on 127.0.0.1. The test starts that
// server itself ($OMNI_CHANNELS_BIN, else `cargo run`) and stops only that child.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { after, before, test } from "node:test";

import { generateClient, next, repoRoot, startProxy, tempDir, until } from "./helpers.mjs";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");

let child;
const extraChildren = [];
let port;
let Omni;
const clients = [];

function startServer(extra = []) {
  const bin = process.env.OMNI_CHANNELS_BIN;
  const args = ["--port", "0", ...extra];
  const proc = bin
    ? spawn(bin, args, { stdio: ["ignore", "pipe", "inherit"] })
    : spawn("cargo", ["run", "-q", "-p", "omni-tests", "--bin", "channels-server", "--", ...args], {
        cwd: repoRoot,
        stdio: ["ignore", "pipe", "inherit"],
      });
  if (extra.length === 0) child = proc;
  else extraChildren.push(proc);
  const child_ = proc;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("channels server did not start")), 600_000);
    let out = "";
    child_.stdout.setEncoding("utf8");
    child_.stdout.on("data", (chunk) => {
      out += chunk;
      const m = out.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child_.on("exit", (code) => reject(new Error(`channels server exited (${code})`)));
    child_.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot start the channels server (${e.message}); is it built?`));
    });
  });
}

async function client(url) {
  const c = Omni.create({ Backbone: null });
  clients.push(c);
  c.connect(url || `ws://127.0.0.1:${port}/omni`, { WebSocket, reconnect: { min: 20, max: 200 } });
  await c.ready();
  return c;
}

const texts = (c) => c.collections.posts.map((p) => p.get("text")).sort();

before(async () => {
  port = await startServer();
  const res = await fetch(`http://127.0.0.1:${port}/omni/schema.json`);
  const dir = tempDir("channels");
  const schemaPath = path.join(dir, "schema.json");
  writeFileSync(schemaPath, await res.text());
  const out = generateClient(schemaPath, path.join(dir, "client"), {});
  writeFileSync(path.join(out, "package.json"), '{"type":"module"}\n');
  Omni = (await import(pathToFileURL(path.join(out, "omni.js")).href)).default;
});

after(() => {
  for (const c of clients) c.close();
  if (child && child.exitCode === null) child.kill("SIGTERM");
  for (const c of extraChildren) if (c.exitCode === null) c.kill("SIGTERM");
});

test("subscribe and unsubscribe: only the channels' models, live", async () => {
  const red = await client();
  const both = await client();
  assert.equal(red.collections.posts.length, 0, "nothing before subscribing");
  await red.collections.posts.subscribe("red");
  assert.deepEqual(texts(red), ["first red"]);
  await both.collections.posts.subscribe("red");
  await both.collections.posts.subscribe("blue");
  assert.deepEqual(texts(both), ["first blue", "first red"]);
  assert.deepEqual(both.collections.posts.channels().sort(), ["blue", "red"]);

  const added = next(both.collections.posts, "add");
  const post = await red.collections.posts.create({ room: "red", text: "hello red" });
  assert.ok(post.oid > 0);
  assert.equal((await added)[0].get("text"), "hello red");
  assert.equal(post.get("_author_ip"), undefined, "private fields never arrive");

  // A post in blue never reaches red.
  const blue = await both.collections.posts.create({ room: "blue", text: "hello blue" });
  await red.trigger("name", "sync point"); // an answered round trip after the add
  assert.equal(red.collections.posts.get(blue.oid), undefined);

  const removed = next(both.collections.posts, "remove");
  await both.collections.posts.unsubscribe("blue");
  await removed;
  assert.deepEqual(texts(both), ["first red", "hello red"]);
});

test("a refused subscription rejects and is forgotten; allowed after the session changes", async () => {
  const c = await client();
  await assert.rejects(c.collections.posts.subscribe("private"), (e) => /may not subscribe to channel `private`/.test(e.reason));
  assert.deepEqual(c.collections.posts.channels(), []);
  await c.trigger("name", "vip ann");
  await c.collections.posts.subscribe("private");
  assert.deepEqual(texts(c), ["secret plans"]);
});

test("subscriptions are restored after a reconnect, without duplicates", async () => {
  const proxy = await startProxy(port);
  try {
    const c = await client(proxy.url);
    await c.collections.posts.subscribe("red");
    const before = c.collections.posts.length;
    const reconnected = next(c, "reconnect", 10000);
    proxy.cut();
    await reconnected;
    await until(() => c.collections.posts.length === before, "red posts back");
    const oids = c.collections.posts.map((p) => p.oid);
    assert.equal(new Set(oids).size, oids.length);
    // and still live
    const other = await client();
    await other.collections.posts.create({ room: "red", text: "after reconnect" });
    await until(() => c.collections.posts.findWhere({ text: "after reconnect" }), "live after reconnect");
  } finally {
    await proxy.close();
  }
});

test("a resume refused after the grace period falls back to a new connection: snapshot, channels renewed, queued writes sent", async () => {
  // A server that keeps a dropped connection for 200 ms only.
  const shortPort = await startServer(["--resume-grace-ms", "200"]);
  const proxy = await startProxy(shortPort);
  try {
    const c = await client(proxy.url);
    await c.collections.posts.subscribe("red");
    const before = c.collections.posts.length;
    let resumed = 0;
    c.on("resume", () => resumed++);
    const disconnected = next(c, "disconnect");
    const reconnected = next(c, "reconnect", 10000);
    proxy.hold();
    proxy.cut();
    await disconnected;
    assert.equal(c.state, "resuming");
    // Written offline: queued (the client still hopes to resume).
    const queued = c.collections.posts.create({ room: "red", text: "queued while away" });
    await new Promise((r) => setTimeout(r, 600)); // past the server's grace period
    proxy.release();
    await reconnected;
    assert.equal(resumed, 0, "not resumed: a new connection");
    assert.equal(c.state, "open");
    // The snapshot and the renewed subscription bring red back, without duplicates...
    await until(() => c.collections.posts.length >= before, "red posts back");
    const oids = c.collections.posts.map((p) => p.oid);
    assert.equal(new Set(oids).size, oids.length);
    // ...and the queued write went to the new connection, once.
    const made = await queued;
    const other = await client(`ws://127.0.0.1:${shortPort}/omni`);
    await other.collections.posts.subscribe("red");
    await until(() => other.collections.posts.get(made.oid), "the queued post on the server");
    assert.equal(other.collections.posts.filter((p) => p.get("text") === "queued while away").length, 1);
  } finally {
    await proxy.close();
  }
});

test("read: a one-shot read of an unlisted collection; rules refuse the rest", async () => {
  const c = await client();
  assert.equal(c.collections.archive.length, 0, "`list` is not allowed: nothing synced");
  const oid = 4; // posts are 1..3, the archive's record comes next
  assert.deepEqual(await c.collections.archive.read(oid), { oid, title: "1999" });
  assert.equal(c.collections.archive.length, 0, "a read does not subscribe");
  await assert.rejects(c.collections.archive.read(999), (e) => /no model with oid 999/.test(e.reason));
  const created = c.collections.archive.create({ title: "2000" });
  await assert.rejects(created, (e) => /action `create` is not allowed on collection `archive`/.test(e.reason));
});
