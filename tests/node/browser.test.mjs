// The example pages in a real browser (Debian's headless Chromium driven by playwright-core):
// each example server is started on 127.0.0.1, its page opened in two separate browser contexts
// (two users), an action taken through the page's UI in one and its effect awaited in the other.
// Every WebSocket frame each page receives is recorded, so the game test can prove the players'
// passwords never reach a browser. Screenshots go to tests/artifacts/browser/ (git-ignored).
//
// Chromium: `$OMNI_CHROMIUM` or /usr/bin/chromium (scripts/test.sh installs Debian's package).
// No tool downloads a browser. Without Chromium the tests are skipped, except under CI=true,
// where they fail. OMNI_DOCS_SCREENSHOT=1 also writes docs/game.png (the README's picture).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { chromium } from "playwright-core";

import { repoRoot, startExample, startProxy, until } from "./helpers.mjs";

const CHROMIUM = process.env.OMNI_CHROMIUM || "/usr/bin/chromium";
const CI = process.env.CI === "true";
const SHOTS = path.join(repoRoot, "tests", "artifacts", "browser");
/** Bound of every single wait on a page (an element, a text, a navigation). */
const WAIT = 10_000;

const skip = !existsSync(CHROMIUM) && !CI ? `Chromium not found at ${CHROMIUM} (scripts/test.sh installs it)` : false;

let browser;

before(async () => {
  if (skip) return;
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM}; under CI the browser test may not be skipped`);
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-quic",
      "--no-first-run",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout: 30_000,
  });
});

after(async () => {
  if (browser) await browser.close();
});

/**
 * Opens `url` in a fresh browser context (own cookies and localStorage: another user). Records
 * the text of every WebSocket frame the page receives, and uncaught page errors.
 */
async function openPage(url, label) {
  const context = await browser.newContext({ viewport: { width: 720, height: 700 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.setDefaultNavigationTimeout(WAIT);
  const user = { label, context, page, frames: [], sockets: [], errors: [] };
  page.on("websocket", (ws) => {
    user.sockets.push(ws.url());
    ws.on("framereceived", (f) => {
      user.frames.push(typeof f.payload === "string" ? f.payload : Buffer.from(f.payload).toString("utf8"));
    });
  });
  page.on("pageerror", (e) => user.errors.push(e));
  await page.goto(url);
  return user;
}

/** Waits until an element matching `selector` contains `text` (string or RegExp); says what it saw on timeout. */
async function see(user, selector, text) {
  try {
    await user.page.locator(selector).filter({ hasText: text }).first().waitFor({ state: "visible", timeout: WAIT });
  } catch (e) {
    const seen = await user.page.locator(selector).allInnerTexts().catch(() => []);
    const err = await user.page.locator("#error").innerText().catch(() => "");
    throw new Error(`${user.label}: no ${selector} showing ${text} within ${WAIT} ms; it shows ${JSON.stringify(seen)}; #error: ${JSON.stringify(err)}`);
  }
}

/** Waits until no element matching `selector` contains `text`. */
async function notSee(user, selector, text) {
  try {
    await user.page.locator(selector).filter({ hasText: text }).first().waitFor({ state: "detached", timeout: WAIT });
  } catch (e) {
    const seen = await user.page.locator(selector).allInnerTexts().catch(() => []);
    throw new Error(`${user.label}: ${selector} still shows ${text} after ${WAIT} ms: ${JSON.stringify(seen)}`);
  }
}

async function screenshot(user, name) {
  await user.page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
}

async function closeAll(users) {
  for (const u of users) {
    await u.context.close().catch(() => {});
    if (u.proxy) await u.proxy.close();
  }
}

/** Every message object in the recorded frames (a frame holds one message or an array). */
function messages(user) {
  return user.frames.flatMap((f) => {
    const v = JSON.parse(f);
    return Array.isArray(v) ? v : [v];
  });
}

/** Whether `value` holds an object key `key` at any depth. */
function hasKey(value, key) {
  if (Array.isArray(value)) return value.some((v) => hasKey(v, key));
  if (value && typeof value === "object") {
    return Object.keys(value).some((k) => k === key || hasKey(value[k], key));
  }
  return false;
}

/** Parses the page's player list entry `Name (x, y)`. */
/**
 * A page served through a loopback TCP proxy (page and WebSocket alike), so a test can take
 * its network down: `down()` cuts every connection and refuses new ones, `up()` restores it.
 * Chromium's offline emulation does not close an open WebSocket to 127.0.0.1; this does, and
 * the server sees the socket end without a close frame, as on a real network drop.
 */
async function openBehindProxy(server, label) {
  const proxy = await startProxy(server.port);
  const u = await openPage(proxy.url.replace(/^ws:/, "http:").replace(/\/omni$/, "/"), label);
  u.proxy = proxy;
  u.down = async () => {
    proxy.hold();
    proxy.cut();
    await u.page.waitForFunction(async () => (await import("/omni.js")).default.state === "resuming", null, { timeout: WAIT });
  };
  u.up = async () => {
    proxy.release();
    await u.page.waitForFunction(async () => (await import("/omni.js")).default.state === "open", null, { timeout: WAIT });
  };
  return u;
}

/** Two seconds without a network. */
const outage = () => new Promise((r) => setTimeout(r, 2000));

function position(text) {
  const m = /\((\d+), (\d+)\)/.exec(text);
  assert.ok(m, `no position in ${JSON.stringify(text)}`);
  return { x: Number(m[1]), y: Number(m[2]) };
}

describe("game (examples/game)", { skip }, () => {
  let server;
  const users = [];

  before(async () => {
    server = await startExample("game");
  });

  after(async () => {
    await closeAll(users);
    if (server) await server.stop();
  });

  test("two players log in; a move and a chat line in one page show in the other; no password reaches a browser", async () => {
    const secret = () => `pw-${randomBytes(8).toString("hex")}`;
    const ann = await openPage(server.http + "/", "ann's page");
    const bob = await openPage(server.http + "/", "bob's page");
    users.push(ann, bob);
    ann.name = "Ann";
    ann.password = secret();
    bob.name = "Bob";
    bob.password = secret();

    for (const u of [ann, bob]) await see(u, "#status", "connected: log in to play");
    for (const u of [ann, bob]) {
      await u.page.fill("#name", u.name);
      await u.page.fill("#password", u.password);
      await u.page.click("#login-button");
      await see(u, "#status", `playing as ${u.name}`);
      await see(u, "#players li", `${u.name} (`);
    }
    await see(bob, "#players li", `${ann.name} (`);
    await see(ann, "#players li", `${bob.name} (`);
    const annInBob = () => bob.page.locator("#players li", { hasText: `${ann.name} (` }).innerText();
    const annInAnn = () => ann.page.locator("#players li", { hasText: `${ann.name} (` }).innerText();
    const start = position(await annInBob());
    assert.deepEqual(position(await annInAnn()), start, "both pages agree where Ann starts");

    // Ann clicks the board: her player moves there, in her page and in Bob's.
    const target = { x: start.x > 300 ? 150 : 450, y: start.y > 200 ? 100 : 300 };
    await ann.page.click("#board", { position: target });
    await see(ann, "#players li", new RegExp(`^${ann.name} \\((${target.x - 2}|${target.x - 1}|${target.x}|${target.x + 1}|${target.x + 2}), `));
    const clicked = position(await annInAnn());
    assert.ok(Math.abs(clicked.x - target.x) <= 2 && Math.abs(clicked.y - target.y) <= 2, `Ann moved to ${JSON.stringify(clicked)}, clicked ${JSON.stringify(target)}`);
    await see(bob, "#players li", `${ann.name} (${clicked.x}, ${clicked.y})`);

    // Then presses the right arrow key: 10 px to the right, seen by Bob.
    await ann.page.keyboard.press("ArrowRight");
    const moved = { x: clicked.x + 10, y: clicked.y };
    await see(ann, "#players li", `${ann.name} (${moved.x}, ${moved.y})`);
    await see(bob, "#players li", `${ann.name} (${moved.x}, ${moved.y})`);

    // Bob's client state agrees with what his page shows (the page imports /omni.js: the same module instance).
    const state = await bob.page.evaluate(async (name) => {
      const { default: Omni } = await import("/omni.js");
      const p = Omni.collections.players.findWhere({ name });
      return p && p.toJSON();
    }, ann.name);
    assert.equal(state.x, moved.x);
    assert.equal(state.y, moved.y);
    assert.equal(state.online, true);
    assert.ok(!("_password" in state), "no _password attribute in the client's model");

    // The chat under the board: Ann says hello, Bob reads it.
    await ann.page.fill("#text", "hi Bob");
    await ann.page.press("#text", "Enter");
    await see(bob, "#chat li", /^Annhi Bob$/);

    await screenshot(ann, "game-ann");
    await screenshot(bob, "game-bob");
    if (process.env.OMNI_DOCS_SCREENSHOT) {
      await bob.page.screenshot({ path: path.join(repoRoot, "docs", "game.png"), clip: { x: 0, y: 0, width: 720, height: 620 } });
    }

    // The recording is real: Bob's page received the move as a change of Ann's model...
    const annOid = state.oid;
    const bobMsgs = messages(bob);
    assert.ok(
      bobMsgs.some((m) => m.t === "change" && m.c === "players" && m.oid === annOid && m.set && m.set.x === moved.x),
      "Bob's page received Ann's move over its WebSocket",
    );
    assert.ok(messages(ann).some((m) => m.t === "snapshot"), "Ann's page received a snapshot");
    for (const u of [ann, bob]) {
      assert.deepEqual(u.sockets, [`${server.url}`], `${u.label} opened exactly one WebSocket, to /omni`);
      assert.ok(u.frames.length >= 3, `${u.label} received frames`);
      // ...and no frame either page received holds a password or a `_password` key.
      for (const f of u.frames) {
        for (const pw of [ann.password, bob.password]) {
          assert.ok(!f.includes(pw), `${u.label} received a password in ${f}`);
        }
        assert.ok(!f.includes("_password"), `${u.label} received "_password" in ${f}`);
        assert.ok(!hasKey(JSON.parse(f), "_password"), `${u.label} received a _password key in ${f}`);
      }
      assert.deepEqual(u.errors, [], `${u.label} threw no uncaught error`);
    }
  });
});

describe("game (examples/game) across a network drop", { skip }, () => {
  let server;
  const users = [];

  before(async () => {
    server = await startExample("game");
  });

  after(async () => {
    await closeAll(users);
    if (server) await server.stop();
  });

  test("a player stays logged in through a 2 s drop, and a move made offline reaches the other page", async () => {
    const cy = await openBehindProxy(server, "cy's page");
    const di = await openPage(server.http + "/", "di's page");
    users.push(cy, di);
    for (const u of [cy, di]) await see(u, "#status", "connected: log in to play");
    for (const [u, name] of [[cy, "Cy"], [di, "Di"]]) {
      await u.page.fill("#name", name);
      await u.page.fill("#password", `pw-${randomBytes(8).toString("hex")}`);
      await u.page.click("#login-button");
      await see(u, "#status", `playing as ${name}`);
    }
    await see(di, "#players li", "Cy (");
    const cyInDi = () => di.page.locator("#players li", { hasText: "Cy (" }).innerText();
    const start = position(await cyInDi());

    await cy.down();
    await outage();
    // Offline, Cy moves: the page shows it at once; it goes out on resume.
    await cy.page.keyboard.press("ArrowDown");
    const moved = { x: start.x, y: start.y + 10 };
    await see(cy, "#players li", `Cy (${moved.x}, ${moved.y})`);
    await cy.up();

    await see(di, "#players li", `Cy (${moved.x}, ${moved.y})`);
    await see(cy, "#status", "playing as Cy");
    // Still logged in: the next move is accepted without a new login.
    await cy.page.keyboard.press("ArrowRight");
    await see(di, "#players li", `Cy (${moved.x + 10}, ${moved.y})`);
    assert.equal(await cy.page.locator("#error").innerText(), "", "no error on Cy's page");
    assert.ok(messages(cy).some((m) => m.t === "resumed" && m.full === false), "resumed with only the changes");
    assert.deepEqual(cy.errors, []);
  });
});

describe("chat (examples/chat)", { skip }, () => {
  let server;
  const users = [];

  before(async () => {
    server = await startExample("chat");
  });

  after(async () => {
    await closeAll(users);
    if (server) await server.stop();
  });

  /** Joins `room` as `name` through the page's form. */
  async function join(u, name, room) {
    await u.page.fill("#name", name);
    await u.page.fill("#room-input", room);
    await u.page.click("#join button");
    await see(u, "#status", `in ${room} as ${name}`);
    await see(u, "#room", room);
  }

  async function say(u, text) {
    await u.page.fill("#text", text);
    await u.page.press("#text", "Enter");
  }

  test("a message posted in one page shows in the other; rooms scope what each page holds", async () => {
    const ann = await openPage(server.http + "/", "ann's chat");
    const bob = await openPage(server.http + "/", "bob's chat");
    users.push(ann, bob);
    for (const u of [ann, bob]) {
      await see(u, "#status", "connected");
      await see(u, "#log li", "Welcome to the lobby");
    }
    await join(ann, "ann", "lobby");
    await join(bob, "bob", "lobby");

    await say(ann, "hello from ann");
    await see(bob, "#log li", /^annhello from ann$/);
    await see(ann, "#log li", /^annhello from ann$/);

    // Bob moves to another room: the lobby's messages leave his page, the kitchen is empty.
    await join(bob, "bob", "kitchen");
    await notSee(bob, "#log li", "hello from ann");
    await notSee(bob, "#log li", "Welcome to the lobby");
    await say(bob, "anyone in the kitchen?");
    await see(bob, "#log li", /^bobanyone in the kitchen\?$/);
    // Ann's own later message arrives after Bob's was applied: had Bob's reached her page, it would be there now.
    await say(ann, "still here");
    await see(ann, "#log li", /^annstill here$/);
    assert.deepEqual(
      await ann.page.locator("#log li").allInnerTexts(),
      ["omniWelcome to the lobby. Pick a name to talk.", "annhello from ann", "annstill here"],
      "Ann's page holds the lobby's messages only",
    );
    await screenshot(ann, "chat-ann");
    await screenshot(bob, "chat-bob");
    for (const u of [ann, bob]) {
      assert.equal(await u.page.locator("#error").innerText(), "", `${u.label} shows no error`);
      assert.deepEqual(u.errors, [], `${u.label} threw no uncaught error`);
    }
  });
  test("a room's page shows its last 50 lines and pages back with \"load older\"", async () => {
    const eve = await openPage(server.http + "/", "eve's chat");
    const fay = await openPage(server.http + "/", "fay's chat");
    users.push(eve, fay);
    for (const u of [eve, fay]) await see(u, "#status", "connected");
    await join(eve, "eve", "library");
    // 55 lines, posted through the page's own client.
    await eve.page.evaluate(async () => {
      const { default: Omni } = await import("/omni.js");
      for (let i = 0; i < 55; i++) await Omni.collections.messages.create({ text: `book ${i}` });
    });
    await see(eve, "#log li", /^evebook 54$/);
    await join(fay, "fay", "library");
    await see(fay, "#log li", /^evebook 54$/);
    const lines = () => fay.page.locator("#log li").allInnerTexts();
    await until(async () => (await lines()).length === 50, "fay's page shows 50 lines");
    assert.equal((await lines())[0], "evebook 5", "the oldest of the last 50 on top");
    assert.equal(await fay.page.locator("#older").isVisible(), true);
    await fay.page.click("#older");
    await until(async () => (await lines()).length === 55, "the older page arrives");
    assert.equal((await lines())[0], "evebook 0");
    await until(async () => !(await fay.page.locator("#older").isVisible()), "no older lines left");
    // The page's client holds what it shows, not the lobby it left.
    const held = await fay.page.evaluate(async () => {
      const { default: Omni } = await import("/omni.js");
      return Omni.collections.messages.length;
    });
    assert.equal(held, 55);
    await screenshot(fay, "chat-load-older");
    for (const u of [eve, fay]) assert.deepEqual(u.errors, [], `${u.label} threw no uncaught error`);
  });

  test("a chat page keeps its room through a 2 s drop; a line typed offline is posted on resume", async () => {
    const cy = await openBehindProxy(server, "cy's chat");
    const di = await openPage(server.http + "/", "di's chat");
    users.push(cy, di);
    for (const u of [cy, di]) await see(u, "#status", "connected");
    await join(cy, "cy", "den");
    await join(di, "di", "den");
    await cy.down();
    await say(cy, "typed offline");
    await outage();
    await cy.up();
    await see(di, "#log li", /^cytyped offline$/);
    await say(cy, "back online");
    await see(di, "#log li", /^cyback online$/);
    await see(cy, "#status", "in den as cy");
    assert.equal(await cy.page.locator("#error").innerText(), "", "no error on Cy's page");
    assert.deepEqual(cy.errors, []);
  });
});

describe("todo (examples/todo)", { skip }, () => {
  let server;
  const users = [];

  before(async () => {
    server = await startExample("todo");
  });

  after(async () => {
    await closeAll(users);
    if (server) await server.stop();
  });

  const item = (u, title) => u.page.locator("#list li", { hasText: title });

  test("a todo added in one page shows in the other; toggles sync; only its creator may remove it", async () => {
    const ann = await openPage(server.http + "/", "ann's todos");
    const bob = await openPage(server.http + "/", "bob's todos");
    users.push(ann, bob);
    for (const u of [ann, bob]) {
      await see(u, "#status", "signed in as guest-");
      await see(u, "#list li", "Try Omni");
    }
    const annName = (await ann.page.locator("#status").innerText()).replace("signed in as ", "");
    const bobName = (await bob.page.locator("#status").innerText()).replace("signed in as ", "");
    assert.notEqual(annName, bobName, "two contexts, two identities");

    await ann.page.fill("#title", "Buy milk");
    await ann.page.click("#add-button");
    await see(bob, "#list li", "Buy milk");
    assert.equal(await item(bob, "Buy milk").locator(".owner").innerText(), annName);

    // Bob ticks it: Ann's page shows it done.
    await item(bob, "Buy milk").locator(".toggle").check();
    await see(ann, "#list li.done", "Buy milk");
    assert.equal(await item(ann, "Buy milk").locator(".toggle").isChecked(), true);

    // Bob may not remove Ann's todo: he is told, and it comes back in his page.
    await item(bob, "Buy milk").locator(".remove").click();
    await see(bob, "#error", "may not remove");
    await see(bob, "#list li", "Buy milk");

    // Ann may: it leaves Bob's page.
    await item(ann, "Buy milk").locator(".remove").click();
    await notSee(bob, "#list li", "Buy milk");
    await notSee(ann, "#list li", "Buy milk");
    await see(bob, "#list li", "Try Omni");
    await screenshot(ann, "todo-ann");
    await screenshot(bob, "todo-bob");
    assert.equal(await ann.page.locator("#error").innerText(), "", "Ann's page shows no error");
    const tokens = await Promise.all([ann, bob].map((u) => u.page.evaluate(() => localStorage.getItem("omni-todo-token"))));
    assert.ok(tokens.every((t) => typeof t === "string" && t.length >= 16), "each page made a token");
    for (const u of [ann, bob]) {
      assert.deepEqual(u.errors, [], `${u.label} threw no uncaught error`);
      assert.ok(u.frames.length > 0, `${u.label} received frames`);
      for (const f of u.frames) {
        assert.ok(!f.includes("_owner_token"), `${u.label} received a server-only field in ${f}`);
        for (const t of tokens) assert.ok(!f.includes(t), `${u.label} received a secret token in ${f}`);
      }
    }
  });
  test("a todo written while a page is offline reaches the other page on resume", async () => {
    const cy = await openBehindProxy(server, "cy's todos");
    const di = await openPage(server.http + "/", "di's todos");
    users.push(cy, di);
    for (const u of [cy, di]) await see(u, "#status", "signed in as guest-");
    await cy.down();
    await cy.page.fill("#title", "Written offline");
    await cy.page.click("#add-button");
    await see(cy, "#list li", "Written offline");
    await outage();
    await cy.up();
    await see(di, "#list li", "Written offline");
    // Its creator (the same session) may still remove it.
    await item(cy, "Written offline").locator(".remove").click();
    await notSee(di, "#list li", "Written offline");
    assert.equal(await cy.page.locator("#error").innerText(), "", "no error on Cy's page");
    assert.deepEqual(cy.errors, []);
  });
});
