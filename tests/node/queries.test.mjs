// Live queries of the generated client against the chat example (examples/chat), whose messages
// are a queried collection: a page holds only what its queries show. The test starts the example
// itself ($OMNI_CHAT_BIN, else `cargo run`) on 127.0.0.1 and stops only that child.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { after, before, test } from "node:test";

import { generateClient, next, startExample, startProxy, tempDir, until } from "./helpers.mjs";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");

let server;
let Omni;
const clients = [];

async function client(url) {
  const c = Omni.create({ Backbone: null });
  clients.push(c);
  c.connect(url || server.url, { WebSocket, reconnect: { min: 20, max: 200 } });
  await c.ready();
  return c;
}

const lastLines = (c, room, limit = 50) =>
  c.collections.messages.query({ where: { room }, order: [["oid", "desc"]], limit });
const texts = (q) => q.models.map((m) => m.get("text"));

before(async () => {
  server = await startExample("chat");
  const res = await fetch(`${server.http}/omni/schema.json`);
  const dir = tempDir("queries");
  const schemaPath = path.join(dir, "schema.json");
  writeFileSync(schemaPath, await res.text());
  const out = generateClient(schemaPath, path.join(dir, "client"), {});
  writeFileSync(path.join(out, "package.json"), '{"type":"module"}\n');
  Omni = (await import(pathToFileURL(path.join(out, "omni.js")).href)).default;
});

after(async () => {
  for (const c of clients) c.close();
  if (server) await server.stop();
});

test("a query shows a room's last lines newest first, pages back, follows new lines and releases them", async () => {
  const ann = await client();
  await ann.trigger("join", { name: "ann", room: "hall" });
  for (let i = 0; i < 60; i++) await ann.collections.messages.create({ text: `line ${i}` });

  const bob = await client();
  // A queried collection: nothing arrives before a query asks.
  assert.equal(bob.collections.messages.length, 0);
  await bob.trigger("join", { name: "bob", room: "hall" });
  assert.equal(bob.collections.messages.length, 0);
  const q = lastLines(bob, "hall");
  assert.equal(await q.ready, q);
  assert.equal(q.length, 50);
  assert.equal(q.more, true);
  assert.equal(texts(q)[0], "line 59");
  assert.equal(texts(q)[49], "line 10");
  assert.equal(bob.collections.messages.length, 50, "the collection holds only the window");

  // Load older: 50 more asked, the 10 left arrive.
  await q.loadMore();
  assert.equal(q.length, 60);
  assert.equal(q.more, false);
  assert.equal(texts(q)[59], "line 0");

  // A new line enters at the top; listeners hear it.
  const added = next(q, "add");
  const updated = next(q, "update");
  await ann.collections.messages.create({ text: "fresh" });
  const [model, query] = await added;
  assert.equal(model.get("text"), "fresh");
  assert.equal(query, q);
  await updated;
  assert.equal(texts(q)[0], "fresh");

  // A smaller window: the oldest leave the query and the collection.
  await q.setLimit(5);
  assert.deepEqual(texts(q), ["fresh", "line 59", "line 58", "line 57", "line 56"]);
  assert.equal(bob.collections.messages.length, 5);

  // Two queries of one room: the union is held once.
  const q2 = lastLines(bob, "hall", 3);
  await q2.ready;
  assert.equal(bob.collections.messages.length, 5);
  assert.deepEqual(bob.collections.messages.queries(), [q, q2]);
  await q.close();
  assert.equal(q.closed, true);
  await until(() => bob.collections.messages.length === 3, "the lines only the closed query showed are removed");
  assert.deepEqual(texts(q2), ["fresh", "line 59", "line 58"]);
});

test("a query the server refuses rejects, says why, and is forgotten", async () => {
  const cy = await client();
  await cy.trigger("join", { name: "cy", room: "den" });
  const q = lastLines(cy, "hall");
  const errored = next(q, "error");
  await assert.rejects(q.ready, (e) => e.request === "query" && e.collection === "messages" && /can_query/.test(e.reason));
  await errored;
  assert.equal(q.closed, true);
  assert.deepEqual(cy.collections.messages.queries(), []);
  await assert.rejects(lastLines(cy, "den", 10_000).ready, /may not run this query/);
});

test("a query lives through a dropped connection: resumed with its window", async () => {
  const di = await client();
  await di.trigger("join", { name: "di", room: "attic" });
  await di.collections.messages.create({ text: "before the drop" });
  const proxy = await startProxy(server.port);
  try {
    const ed = await client(proxy.url);
    await ed.trigger("join", { name: "ed", room: "attic" });
    const q = lastLines(ed, "attic", 10);
    await q.ready;
    assert.deepEqual(texts(q), ["before the drop"]);
    const resumed = next(ed, "resume", 10_000);
    proxy.cut();
    await di.collections.messages.create({ text: "during the drop" });
    const [info] = await resumed;
    assert.equal(info.full, true, `a connection with queries resumes with a snapshot: ${JSON.stringify(info)}`);
    await until(() => texts(q).length === 2, "the window after the resume");
    assert.deepEqual(texts(q), ["during the drop", "before the drop"]);
    assert.equal(ed.collections.messages.length, 2);
  } finally {
    await proxy.close();
  }
});
