// The example game as two nodes of a cluster (a real nats-server with JetStream, two
// `example-game --nats` processes) and the generated client given both nodes' URLs: what one
// node's client writes, the other's sees; when the node a client is on is killed, the client
// moves to the other node, stays logged in, and its writes (queued while offline) go through.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { after, before, test } from "node:test";

import { generateClient, startExample, startNats, tempDir, until } from "./helpers.mjs";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");

let nats;
const nodes = [];
let Omni;
const clients = [];

before(async () => {
  nats = await startNats();
  const args = ["--nats", nats.url, "--bucket", `game${process.pid}`, "--secret", "the same on every node"];
  nodes.push(await startExample("game", { args }));
  nodes.push(await startExample("game", { args }));
  const res = await fetch(`${nodes[0].http}/omni/schema.json`);
  const dir = tempDir("cluster");
  const schemaPath = path.join(dir, "schema.json");
  writeFileSync(schemaPath, await res.text());
  const out = generateClient(schemaPath, tempDir("cluster-client"));
  writeFileSync(path.join(out, "package.json"), '{"type":"module"}\n');
  Omni = (await import(pathToFileURL(path.join(out, "omni.js")).href)).default;
});

after(async () => {
  for (const c of clients) c.close();
  for (const n of nodes) await n.stop();
  if (nats) await nats.stop();
});

function client(urls) {
  const c = Omni.create({ Backbone: null });
  clients.push(c);
  c.connect(urls, { WebSocket, reconnect: { min: 20, max: 200 } });
  return c;
}

test("two nodes share one game; a client moves to the other node when its node dies", async () => {
  const urls = nodes.map((n) => n.url);
  const a = client(urls);
  await a.ready();
  const first = urls.indexOf(a.url);
  assert.ok(first >= 0, `connected to one of the nodes: ${a.url}`);
  const other = nodes[1 - first];
  // A watcher on the other node only.
  const watcher = client(other.url);
  await watcher.ready();

  const { oid, token } = await a.trigger("login", { name: `ann${process.pid}`, password: "pw" });
  a.connect(urls.map((u) => `${u}?token=${encodeURIComponent(token)}`)); // next reconnects log in
  await a.collections.messages.create({ text: "hello from the first node" }, { wait: true });
  await until(
    () => watcher.collections.messages.findWhere({ text: "hello from the first node" }),
    "the message on the other node",
  );
  const me = await until(() => a.collections.players.get(oid), "own player");
  me.save({ x: 42 });
  await until(() => watcher.collections.players.get(oid)?.get("x") === 42, "the move on the other node");

  // The node the client is on dies (SIGKILL): the client goes to the other node.
  await nodes[first].kill();
  await until(() => a.state !== "open", "the client notices", 5000);
  // Written while offline: queued, sent once connected again.
  const queued = a.collections.messages.create({ text: "written while moving" }, { wait: true });
  await until(() => a.state === "open" && a.url.startsWith(other.url), "connected to the other node", 10_000);
  const seen = await until(
    () => watcher.collections.messages.findWhere({ text: "written while moving" }),
    "the queued message on the surviving node",
    10_000,
  );
  await queued;
  assert.equal(seen.get("author"), `ann${process.pid}`, "still logged in after moving (the token is good on every node)");
  assert.equal(a.collections.players.get(oid)?.get("online"), true);
  assert.ok(a.collections.messages.findWhere({ text: "hello from the first node" }), "the state survived the node");
  assert.equal(
    watcher.collections.messages.filter((m) => m.get("text") === "written while moving").length,
    1,
    "sent once",
  );
});
