"""Summarises scripts/bench-compare.sh's JSON files: per row, the median and min-max of every
run for the old and the new build, and the ratio new/old of the medians.

    bench-summary.py OUT_DIR [OLD_LABEL NEW_LABEL]

The labels default to `old` and `new` (scripts/bench-cluster.sh passes `one` and `two`); rows
match on rate, clients and models (a scenario's " N nodes" suffix is ignored)."""
import glob, json, os, re, statistics, sys

out = sys.argv[1]
labels = tuple(sys.argv[2:4]) if len(sys.argv) >= 4 else ("old", "new")
fields = [
    ("deliveries_per_sec", "deliveries/s", lambda v: f"{v/1e6:.2f}M" if v >= 1e6 else f"{v/1e3:.0f}k"),
    ("p50_ms", "p50 ms", lambda v: f"{v:.1f}"),
    ("p99_ms", "p99 ms", lambda v: f"{v:.1f}"),
    ("cpu_us_per_delivery", "CPU µs/deliv", lambda v: f"{v:.3f}"),
    ("kib_per_conn", "KiB/conn", lambda v: f"{v:.1f}"),
    ("initial_state_secs", "init s", lambda v: f"{v:.2f}"),
]
rows = {}
if any("broker_cpu_us_per_commit" in r for p in glob.glob(os.path.join(out, "*.json")) for r in json.load(open(p))):
    fields.append(("broker_cpu_us_per_commit", "broker µs/commit", lambda v: f"{v:.1f}"))
for label, role in zip(labels, ("old", "new")):
    for path in sorted(glob.glob(os.path.join(out, f"{label}-*.json"))):
        for r in json.load(open(path)):
            key = (re.sub(r" \d+ nodes$", "", r["scenario"]), r["clients"], r["models"])
            rows.setdefault(key, {}).setdefault(role, []).append(r)
a, b = labels
print("| scenario | C | P | runs | " + " | ".join(f"{n} {a} | {n} {b} | {b}/{a}" for _, n, _ in fields) + f" | lost+reord ({a}/{b}) |")
print("|---|--:|--:|--:|" + "--:|--:|--:|" * len(fields) + "--:|")
for key, by in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
    old, new = by.get("old", []), by.get("new", [])
    cells = []
    for f, _, fmt in fields:
        def summary(rs):
            vs = [r[f] for r in rs if f in r]
            if not vs:
                return "-", None
            m = statistics.median(vs)
            return f"{fmt(m)} ({fmt(min(vs))}-{fmt(max(vs))})", m
        so, mo = summary(old)
        sn, mn = summary(new)
        ratio = f"{mn/mo:.2f}" if mo and mn is not None else "-"
        cells += [so, sn, ratio]
    bad = lambda rs: sum(r["lost"] + r["reordered"] for r in rs)
    print(f"| {key[0]} | {key[1]} | {key[2]} | {len(old)}/{len(new)} | " + " | ".join(cells) + f" | {bad(old)}/{bad(new)} |")
