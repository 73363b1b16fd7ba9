// The generated omni.d.ts: a typed usage file compiles with `tsc --noEmit --strict`, a wrong
// attribute name and a wrong attribute type do not. The typings of each example, generated from
// the schema its running server serves, pass `tsc --strict` with TypeScript's default target and
// with a modern one.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { before, test } from "node:test";

import { EXAMPLES, generateClient, here, startExample, tempDir } from "./helpers.mjs";

const require = createRequire(import.meta.url);
const tsc = require.resolve("typescript/bin/tsc");
let dir;

before(() => {
  dir = generateClient(path.join(here, "fixtures", "schema.json"), tempDir("typings"));
});

function compile(name, source) {
  const file = path.join(dir, name);
  writeFileSync(file, source);
  const r = spawnSync(
    process.execPath,
    [tsc, "--noEmit", "--strict", "--target", "es2020", "--module", "esnext", "--moduleResolution", "bundler", "--lib", "es2020,dom", file],
    { encoding: "utf8" },
  );
  return { status: r.status, output: r.stdout + r.stderr };
}

const header = `import Omni, { collections, create, type Player, type PlayerModel, type LoggedIn, type Pos } from "./omni.js";\n`;

test("typed usage compiles", () => {
  const r = compile(
    "ok.ts",
    header +
      `
const players = Omni.collections.players;
const p: PlayerModel | undefined = players.findWhere({ name: "Jim" });
if (p) {
  const x: number = p.get("x");
  const name: string = p.get("name");
  const home: Pos | null = p.get("home");
  p.set("x", x + 10);
  p.set({ y: 3, online: true });
  p.on("change:x", (model: PlayerModel, value: number) => console.log(model.oid, value));
  p.on("change", (model) => console.log(model.toJSON().name));
  p.on("error", (_m, err) => console.log(err.reason));
  void p.save({ x: 1 }).then((m) => m.get("y"));
  const json: Player = p.toJSON();
  console.log(json.oid, name, home);
}
players.on("add", (m) => console.log(m.get("name")));
players.on("change:online", (m, online: boolean) => console.log(m.oid, online));
const xs: number[] = players.map((m) => m.get("x"));
const names: string[] = players.pluck("name");
const m2 = collections.messages.add({ text: "hi" });
console.log(m2?.get("author"), xs, names, players.length, players.get(1)?.oid);
async function main(): Promise<void> {
  Omni.connect("ws://127.0.0.1:1/omni", { reconnect: { max: 1000 } });
  await Omni.ready();
  const reply: LoggedIn = await Omni.trigger("login", { name: "Ann", password: "pw" });
  Omni.trigger("login", { name: "Ann", password: "pw" }, (err, r) => console.log(err?.reason, r?.oid));
  const pong: string = await Omni.trigger("ping", null);
  Omni.on("joined", (who) => console.log(who));
  Omni.on("error", (e) => console.log(e.reason));
  const other = create();
  console.log(reply.oid, pong, other.isReady);
  await Omni.collections.messages.subscribe("lobby");
  const subscribed: string[] = Omni.collections.messages.channels();
  await Omni.collections.messages.unsubscribe("lobby");
  const one: Player = await Omni.collections.players.read(1);
  console.log(subscribed, one.name);
  const q = Omni.collections.players.query({
    where: { online: true, x: { $gte: 0, $lt: 100 }, $or: [{ name: "Ann" }, { name: { $in: ["Bob", "Cy"] } }], oid: { $gt: 2 } },
    order: [["x", "desc"], "name"],
    limit: 10,
  });
  await q.ready;
  const shown: PlayerModel[] = q.models;
  q.on("add", (m: PlayerModel) => console.log(m.get("x")));
  q.on("update", (query) => console.log(query.more, query.length));
  const page = await q.loadMore(10);
  const xs2: number[] = page.pluck("x");
  await q.close();
  console.log(shown.length, xs2, Omni.collections.players.queries().length);
}
void main();
`,
  );
  assert.equal(r.status, 0, r.output);
});

test("a wrong attribute name does not compile", () => {
  const r = compile("bad-name.ts", header + `const p = Omni.collections.players.get(1)!;\nconst v = p.get("nmae");\nconsole.log(v);\n`);
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /error TS2345: Argument of type '"nmae"' is not assignable/);
});

test("a wrong attribute type does not compile", () => {
  const r = compile("bad-type.ts", header + `const p = Omni.collections.players.get(1)!;\np.set("x", "ten");\n`);
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /error TS2769: No overload matches this call/);
});

test("writing a read-only attribute does not compile", () => {
  const r = compile("bad-readonly.ts", header + `const p = Omni.collections.players.get(1)!;\np.set("name", "Bob");\n`);
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /error TS2769/);
});

test("wrong event arguments do not compile", () => {
  const r = compile("bad-event.ts", header + `void Omni.trigger("login", { name: "Ann" });\nvoid Omni.trigger("nope", {});\n`);
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /error TS2345/);
  assert.match(r.output, /"nope"/);
});

test("a read resolves to the model's attributes: a wrong attribute does not compile", () => {
  const r = compile(
    "bad-read.ts",
    header + `async function f(): Promise<void> {\n  const p = await Omni.collections.players.read(1);\n  const n: number = p.name;\n  console.log(n);\n}\nvoid f();\n`,
  );
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /error TS2322/);
});

test("a query on a misspelled attribute does not compile", () => {
  const r = compile("bad-query-name.ts", header + `Omni.collections.players.query({ where: { onlnie: true } });\n`);
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /error TS2561: Object literal may only specify known properties, but 'onlnie' does not exist in type 'Where<Player>'. Did you mean to write 'online'\?/);
});

test("a query with a value of the wrong type does not compile", () => {
  const r = compile("bad-query-type.ts", header + `Omni.collections.players.query({ where: { x: { $gt: "ten" } } });\n`);
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /error TS2322: Type 'string' is not assignable to type 'number'/);
});

test("a query ordered by a misspelled attribute does not compile", () => {
  const r = compile("bad-query-order.ts", header + `Omni.collections.players.query({ order: [["nmae", "asc"]] });\n`);
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /error TS2322/);
  assert.match(r.output, /"nmae"/);
});

/** `tsc --noEmit --strict` with the given extra options (none: TypeScript's defaults). */
function tscCheck(files, options) {
  const r = spawnSync(process.execPath, [tsc, "--noEmit", "--strict", ...options, ...files], { encoding: "utf8" });
  return { status: r.status, output: r.stdout + r.stderr };
}

for (const name of Object.keys(EXAMPLES)) {
  test(`the ${name} example's typings pass tsc --strict with the default and a modern target`, async () => {
    const server = await startExample(name);
    let schema;
    try {
      const res = await fetch(`${server.http}/omni/schema.json`);
      assert.equal(res.status, 200);
      schema = await res.json();
    } finally {
      await server.stop();
    }
    const out = tempDir(`typings-${name}`);
    const schemaPath = path.join(out, "schema.json");
    writeFileSync(schemaPath, JSON.stringify(schema));
    generateClient(schemaPath, out);
    assert.ok(schema.collections.length > 0);
    // Uses every collection, in code valid for any target (no for-of over a collection: below
    // ES2015 that needs --downlevelIteration in the user's own settings).
    const uses = schema.collections
      .map((c) => `  Omni.collections.${c.name}.each((m) => console.log(m.oid, m.toJSON()));\n`)
      .join("");
    const loops = schema.collections
      .map((c) => `  for (const m of Omni.collections.${c.name}) { console.log(m.get("oid")); }\n`)
      .join("");
    const head = `import Omni from "./omni.js";\nOmni.connect("ws://127.0.0.1:1/omni");\n`;
    const basic = path.join(out, "use.ts");
    writeFileSync(basic, head + `void Omni.ready().then(() => {\n${uses}});\n`);
    const modern = path.join(out, "use-modern.ts");
    writeFileSync(modern, head + `await Omni.ready();\n${uses}${loops}export {};\n`);
    const dts = path.join(out, "omni.d.ts");
    const checks = [];
    if (name === "game") {
      // The README's JavaScript talks to the players game: it must type-check against the
      // game's typings (e.g. `const { oid } = await Omni.trigger("login", ...)`).
      const readme = readFileSync(path.join(here, "..", "..", "README.md"), "utf8");
      const blocks = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
      const login = blocks.find((b) => b.includes('Omni.trigger("login"'));
      assert.ok(login, "the README has a JavaScript block that logs in");
      const readmeTs = path.join(out, "readme.ts");
      writeFileSync(readmeTs, login.replace('from "/omni.js"', 'from "./omni.js"') + "export {};\n");
      checks.push([[dts, readmeTs], ["--target", "es2022", "--module", "es2022", "--moduleResolution", "bundler"]]);
    }
    for (const [files, options] of [
      ...checks,
      [[dts], []],
      [[dts, basic], []],
      [[dts], ["--target", "es2022"]],
      [[dts, modern], ["--target", "es2022", "--module", "es2022", "--moduleResolution", "bundler"]],
    ]) {
      const r = tscCheck(files, options);
      assert.equal(r.status, 0, `tsc --strict ${options.join(" ")} ${files.map((f) => path.basename(f)).join(" ")}:\n${r.output}`);
    }
  });
}
