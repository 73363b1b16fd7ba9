// One Node load generator for Omni.js 0.2.6 (socket.io 0.9, spoken over `ws`) and Omni for Rust
// (its wire protocol): the players scenario of omni-bench. C clients hold P players; W of them
// change players at a fixed total rate; every change reaches every client. Measured per run:
// deliveries/s (a change reaching one client, counted by its send time), latency from the
// writer's send to each receipt, the server's CPU per delivery (/proc) and memory per
// connection. Runs alternate the two servers; the table shows medians (min-max) and
// Omni/Omni.js ratios. See docs/BENCHMARKS.md, "Side by side with Omni.js".
import { spawn } from "node:child_process";
import { readFileSync, appendFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import WebSocket from "ws";

const here = path.dirname(fileURLToPath(import.meta.url));
const { values: opt } = parseArgs({
  options: {
    clients: { type: "string", default: "1000" },
    models: { type: "string", default: "100" },
    rates: { type: "string", default: "20,200" },
    writers: { type: "string", default: "4" },
    secs: { type: "string", default: "5" },
    warmup: { type: "string", default: "1" },
    runs: { type: "string", default: "5" },
    "omni-server": { type: "string" },
    json: { type: "string" },
  },
});
const C = Number(opt.clients), P = Number(opt.models), W = Number(opt.writers);
const SECS = Number(opt.secs), WARMUP = Number(opt.warmup), RUNS = Number(opt.runs);
const RATES = opt.rates.split(",").map(Number);
if (!opt["omni-server"]) throw new Error("--omni-server PATH (target/release/omni-bench-server) is required");

const nowUs = () => Math.round(performance.now() * 1000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ticks = 100; // CLK_TCK on Linux
const cpu = (pid) => {
  const s = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / ticks;
};
const rssKib = (pid) => {
  const m = readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/);
  return m ? Number(m[1]) : 0;
};

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Starts a server; resolves with { child, addr } once it printed `listening <addr>`. */
async function startServer(target) {
  const child = target === "omnijs"
    ? spawn(process.execPath, [path.join(here, "server.js"), String(await freePort()), String(P)], { cwd: here, stdio: ["pipe", "pipe", "inherit"] })
    : spawn(opt["omni-server"], ["--models", String(P), "--addr", "127.0.0.1:0"], { stdio: ["pipe", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/listening (?:http:\/\/)?(127\.0\.0\.1:\d+)/);
      if (m) resolve({ child, addr: m[1] });
    });
    child.on("exit", (code) => reject(new Error(`${target} server exited (${code}): ${out}`)));
  });
}

/** Omni.js: socket.io 0.9 over a WebSocket (handshake, then `5:::{"name":..,"args":[..]}` packets). */
async function connectOmniJs(addr, onChange) {
  const res = await fetch(`http://${addr}/socket.io/1/?t=${Date.now()}`);
  const sid = (await res.text()).split(":")[0];
  const ws = new WebSocket(`ws://${addr}/socket.io/1/websocket/${sid}`, { perMessageDeflate: false });
  let oids = null;
  await new Promise((resolve, reject) => {
    ws.on("error", reject);
    ws.on("message", (data) => {
      const s = data.toString();
      if (s.startsWith("2::")) return ws.send("2::");
      if (!s.startsWith("5:")) return;
      const at = s.indexOf(":", s.indexOf(":", s.indexOf(":") + 1) + 1);
      const ev = JSON.parse(s.slice(at + 1));
      if (ev.name === "omni") {
        oids = ev.args[0].players.models.map((m) => m.oid);
        resolve();
      } else if (ev.name === "change:player") {
        onChange(ev.args[0].ts);
      }
    });
  });
  return {
    oids,
    change: (oid, set) => ws.send("5:::" + JSON.stringify({ name: "change:player", args: [Object.assign({ oid }, set)] })),
    close: () => ws.terminate(),
  };
}

/** Omni for Rust: its own protocol (docs/PROTOCOL.md). */
async function connectOmni(addr, onChange) {
  const ws = new WebSocket(`ws://${addr}/omni`, { perMessageDeflate: false });
  let oids = null;
  let id = 0;
  await new Promise((resolve, reject) => {
    ws.on("error", reject);
    ws.on("message", (data) => {
      const v = JSON.parse(data.toString());
      for (const m of Array.isArray(v) ? v : [v]) {
        if (m.t === "snapshot") {
          oids = m.data.players.map((p) => p.oid);
          resolve();
        } else if (m.t === "change" && m.c === "players" && m.set.ts !== undefined) {
          onChange(m.set.ts);
        }
      }
    });
  });
  return {
    oids,
    change: (oid, set) => ws.send(JSON.stringify({ t: "change", id: ++id, c: "players", oid, set })),
    close: () => ws.terminate(),
  };
}

/** A latency histogram in 10 µs buckets up to 60 s. */
class Hist {
  constructor() { this.b = new Uint32Array(6_000_000); this.n = 0; }
  add(us) { this.b[Math.min(this.b.length - 1, Math.max(0, Math.floor(us / 10)))]++; this.n++; }
  q(p) {
    let need = Math.ceil(this.n * p), acc = 0;
    for (let i = 0; i < this.b.length; i++) { acc += this.b[i]; if (acc >= need && acc > 0) return (i * 10) / 1000; }
    return 0;
  }
}

async function runOne(target, rate) {
  const { child, addr } = await startServer(target);
  await sleep(300);
  const rss0 = rssKib(child.pid);
  const window = { start: 0, end: 0 };
  const hist = new Hist();
  let delivered = 0;
  const onChange = (ts) => {
    if (window.start && ts >= window.start && (!window.end || ts < window.end)) {
      delivered++;
      hist.add(nowUs() - ts);
    }
  };
  const connect = target === "omnijs" ? connectOmniJs : connectOmni;
  const clients = [];
  for (let i = 0; i < C; i += 64) {
    const batch = [];
    for (let j = i; j < Math.min(C, i + 64); j++) batch.push(connect(addr, onChange));
    clients.push(...(await Promise.all(batch)));
  }
  await sleep(500);
  const kibPerConn = (rssKib(child.pid) - rss0) / C;
  const oids = clients[0].oids;
  // Writers: writer w changes the players i with i % W == w, round robin, `rate` changes/s in total.
  const seq = new Map();
  let sent = 0;
  const t0 = performance.now();
  const timer = setInterval(() => {
    const due = Math.floor(((performance.now() - t0) / 1000) * rate);
    for (; sent < due; sent++) {
      const i = sent % oids.length;
      const oid = oids[i];
      const s = (seq.get(oid) || 0) + 1;
      seq.set(oid, s);
      clients[i % W].change(oid, { x: s % 640, y: (s >> 3) % 480, seq: s, ts: nowUs() });
    }
  }, 2);
  await sleep(WARMUP * 1000);
  const cpu0 = cpu(child.pid);
  window.start = nowUs();
  await sleep(SECS * 1000);
  window.end = nowUs();
  const cpu1 = cpu(child.pid);
  const secs = (window.end - window.start) / 1e6;
  await sleep(1000); // the last changes of the window arrive
  clearInterval(timer);
  for (const c of clients) c.close();
  child.stdin.end();
  child.kill("SIGTERM");
  return {
    target, rate, clients: C, models: P,
    deliveries_per_sec: delivered / secs,
    expected_per_sec: rate * C,
    p50_ms: hist.q(0.5), p99_ms: hist.q(0.99),
    cpu_us_per_delivery: delivered ? ((cpu1 - cpu0) * 1e6) / delivered : 0,
    kib_per_conn: kibPerConn,
  };
}

const spread = (xs) => {
  const v = [...xs].sort((a, b) => a - b);
  const m = v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
  return [m, v[0], v[v.length - 1]];
};
const fmt = (x, d) => x.toFixed(d);

const rows = [];
for (const rate of RATES) {
  for (let run = 1; run <= RUNS; run++) {
    for (const target of ["omnijs", "omni"]) {
      const r = await runOne(target, rate);
      rows.push(r);
      console.error(`run ${run}/${RUNS} ${target} ${rate}/s: ${Math.round(r.deliveries_per_sec)} deliveries/s (of ${r.expected_per_sec}), p99 ${r.p99_ms} ms, ${fmt(r.cpu_us_per_delivery, 2)} µs/delivery, ${fmt(r.kib_per_conn, 1)} KiB/conn`);
      if (opt.json) appendFileSync(opt.json, JSON.stringify(r) + "\n");
    }
  }
}

console.log(`\nC=${C} clients, P=${P} players, ${W} writers; medians of ${RUNS} alternating runs (min-max)\n`);
console.log("| rate | server | deliveries/s | p50 ms | p99 ms | CPU µs/delivery | KiB/conn |");
console.log("|---|---|--:|--:|--:|--:|--:|");
for (const rate of RATES) {
  const med = {};
  for (const target of ["omnijs", "omni"]) {
    const of = rows.filter((r) => r.rate === rate && r.target === target);
    const cell = (k, d) => { const [m, lo, hi] = spread(of.map((r) => r[k])); (med[target] ||= {})[k] = m; return `${fmt(m, d)} (${fmt(lo, d)}-${fmt(hi, d)})`; };
    const name = target === "omnijs" ? "Omni.js 0.2.6" : "Omni for Rust";
    console.log(`| ${rate}/s | ${name} | ${cell("deliveries_per_sec", 0)} | ${cell("p50_ms", 2)} | ${cell("p99_ms", 2)} | ${cell("cpu_us_per_delivery", 2)} | ${cell("kib_per_conn", 1)} |`);
  }
  const ratio = (k) => fmt(med.omni[k] / med.omnijs[k], 2);
  console.log(`| ${rate}/s | Omni / Omni.js | ${ratio("deliveries_per_sec")} | ${ratio("p50_ms")} | ${ratio("p99_ms")} | ${ratio("cpu_us_per_delivery")} | ${ratio("kib_per_conn")} |`);
}
