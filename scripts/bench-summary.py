"""Summarises scripts/bench-compare.sh's JSON files: per row, the median and min-max of every
run for the old and the new build, and the ratio new/old of the medians."""
import glob, json, os, statistics, sys

out = sys.argv[1]
fields = [
    ("deliveries_per_sec", "deliveries/s", lambda v: f"{v/1e6:.2f}M" if v >= 1e6 else f"{v/1e3:.0f}k"),
    ("p50_ms", "p50 ms", lambda v: f"{v:.1f}"),
    ("p99_ms", "p99 ms", lambda v: f"{v:.1f}"),
    ("cpu_us_per_delivery", "CPU µs/deliv", lambda v: f"{v:.3f}"),
    ("kib_per_conn", "KiB/conn", lambda v: f"{v:.1f}"),
    ("initial_state_secs", "init s", lambda v: f"{v:.2f}"),
]
rows = {}
for label in ("old", "new"):
    for path in sorted(glob.glob(os.path.join(out, f"{label}-*.json"))):
        for r in json.load(open(path)):
            key = (r["scenario"], r["clients"], r["models"])
            rows.setdefault(key, {}).setdefault(label, []).append(r)
print("| scenario | C | P | runs | " + " | ".join(f"{n} old | {n} new | new/old" for _, n, _ in fields) + " | lost+reord (old/new) |")
print("|---|--:|--:|--:|" + "--:|--:|--:|" * len(fields) + "--:|")
for key, by in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
    old, new = by.get("old", []), by.get("new", [])
    cells = []
    for f, _, fmt in fields:
        def summary(rs):
            vs = [r[f] for r in rs]
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
