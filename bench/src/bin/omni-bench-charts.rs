//! `omni-bench-charts`: SVG charts of `omni-bench --json` runs (docs/BENCHMARKS.md, "Charts").
//!
//! Reads the runs `scripts/bench-compare.sh` leaves in a directory (`<label>-<i>.json`, one file
//! per run, each a list of rows), or the JSON lines of `bench/omnijs/run.sh --json` (`*.jsonl`,
//! one run per line, labelled by its `target`), and draws, for deliveries/s, p99 latency and
//! server CPU per delivery, one chart with a line per label (the servers compared) over the
//! scenarios (clients x rate): the median of the runs, with a bar from the lowest to the highest
//! run.
//!
//! ```sh
//! target/release/omni-bench-charts --runs docs/bench/sweep --label old=floor --label new=Omni \
//!     --out docs/bench/charts
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Parser;
use plotters::prelude::*;
use serde_json::Value;

#[derive(Parser, Debug)]
#[command(about = "SVG charts of omni-bench --json runs")]
struct Args {
    /// Directory of `<label>-<i>.json` runs (as scripts/bench-compare.sh writes them).
    #[arg(long)]
    runs: PathBuf,
    /// A label's name on the charts, `label=Name` (default: the label itself).
    #[arg(long)]
    label: Vec<String>,
    /// Where the SVG files go.
    #[arg(long)]
    out: PathBuf,
    /// A title prefix for the charts.
    #[arg(long, default_value = "")]
    title: String,
    /// A prefix for the files' names (`<prefix><metric>.svg`).
    #[arg(long, default_value = "")]
    prefix: String,
}

/// The figures charted (each on a log scale): JSON key, title, unit.
const METRICS: [(&str, &str, &str); 3] = [
    (
        "deliveries_per_sec",
        "deliveries per second",
        "deliveries/s",
    ),
    ("p99_ms", "p99 latency", "ms"),
    ("cpu_us_per_delivery", "server CPU per delivery", "µs"),
];

/// A scenario: clients, then rate (the rate's text, ordered numerically with `max` last).
type Scenario = (u64, u64, String);

fn rate_key(s: &str) -> u64 {
    s.trim_end_matches("/s")
        .parse::<f64>()
        .map_or(u64::MAX, |r| r as u64)
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let names: BTreeMap<String, String> = args
        .label
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
    // label -> scenario -> metric -> values over the runs
    let mut data: BTreeMap<String, BTreeMap<Scenario, BTreeMap<&str, Vec<f64>>>> = BTreeMap::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&args.runs)
        .map_err(|e| format!("{}: {e}", args.runs.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "jsonl"))
        .collect();
    entries.sort();
    for path in entries {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let label = stem.rsplit_once('-').map_or(stem, |(l, _)| l).to_owned();
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        let rows: Vec<(String, Value)> = if path.extension().is_some_and(|x| x == "jsonl") {
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    serde_json::from_str::<Value>(l).map_err(|e| format!("{}: {e}", path.display()))
                })
                .map(|r| r.map(|v| (v["target"].as_str().unwrap_or("?").to_owned(), v)))
                .collect::<Result<_, _>>()?
        } else {
            let rows: Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let list = rows.as_array().cloned().unwrap_or_default();
            list.into_iter().map(|v| (label.clone(), v)).collect()
        };
        for (label, row) in rows {
            let scenario = match row["scenario"].as_str() {
                Some(s) => s.to_owned(),
                None => format!("{}/s", row["rate"].as_f64().unwrap_or(0.0)),
            };
            let key = (
                row["clients"].as_u64().unwrap_or(0),
                rate_key(&scenario),
                scenario,
            );
            let per = data.entry(label).or_default().entry(key).or_default();
            for (metric, ..) in METRICS {
                if let Some(v) = row[metric].as_f64() {
                    per.entry(metric).or_default().push(v);
                }
            }
        }
    }
    if data.is_empty() {
        return Err(format!("no runs in {}", args.runs.display()));
    }
    std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
    let scenarios: Vec<Scenario> = {
        let mut all: Vec<Scenario> = data.values().flat_map(|m| m.keys().cloned()).collect();
        all.sort();
        all.dedup();
        all
    };
    for (metric, title, unit) in METRICS {
        let file = args.out.join(format!("{}{metric}.svg", args.prefix));
        draw(
            &file,
            &args.title,
            metric,
            title,
            unit,
            &scenarios,
            &data,
            &names,
        )
        .map_err(|e| format!("{}: {e}", file.display()))?;
        println!("wrote {}", file.display());
    }
    Ok(())
}

/// Median, lowest and highest.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

#[allow(clippy::too_many_arguments)]
fn draw(
    file: &Path,
    prefix: &str,
    metric: &str,
    title: &str,
    unit: &str,
    scenarios: &[Scenario],
    data: &BTreeMap<String, BTreeMap<Scenario, BTreeMap<&str, Vec<f64>>>>,
    names: &BTreeMap<String, String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut lo = f64::MAX;
    let mut hi = f64::MIN;
    for per in data.values() {
        for m in per.values() {
            for v in m.get(metric).into_iter().flatten() {
                lo = lo.min(*v);
                hi = hi.max(*v);
            }
        }
    }
    let (lo, hi) = (lo.max(1e-3) / 1.5, hi * 1.5);
    let root = SVGBackend::new(file, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let caption = format!("{prefix}{title} ({unit})");
    let n = scenarios.len();
    let labels: Vec<String> = scenarios
        .iter()
        .map(|(c, _, rate)| format!("C={c} {rate}"))
        .collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(RGBColor(0xf0, 0xf0, 0xf0))
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(unit)
        .y_label_formatter(&|y| format_value(*y))
        .draw()?;
    let palette = [
        RGBColor(0x2d, 0x6c, 0xdf),
        RGBColor(0x9e, 0x9e, 0x9e),
        RGBColor(0xd9, 0x4f, 0x2b),
    ];
    for (i, (label, per)) in data.iter().enumerate() {
        let color = palette[i % palette.len()];
        let name = names.get(label).cloned().unwrap_or_else(|| label.clone());
        // (x, clients, (median, low, high)): lines join the rates of one client count.
        let points: Vec<(f64, u64, (f64, f64, f64))> = scenarios
            .iter()
            .enumerate()
            .filter_map(|(x, s)| {
                let v = per.get(s)?.get(metric)?;
                (!v.is_empty()).then(|| (x as f64, s.0, spread(v)))
            })
            .collect();
        for (g, group) in points.chunk_by(|a, b| a.1 == b.1).enumerate() {
            let line = chart.draw_series(LineSeries::new(
                group.iter().map(|(x, _, (m, _, _))| (*x, *m)),
                color.stroke_width(2),
            ))?;
            if g == 0 {
                line.label(name.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            }
        }
        let points: Vec<(f64, (f64, f64, f64))> =
            points.into_iter().map(|(x, _, v)| (x, v)).collect();
        chart.draw_series(
            points
                .iter()
                .map(|(x, (m, _, _))| Circle::new((*x, *m), 4, color.filled())),
        )?;
        chart.draw_series(points.iter().map(|(x, (_, l, h))| {
            PathElement::new(vec![(*x, *l), (*x, *h)], color.stroke_width(1))
        }))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

/// A compact value: 1.2M, 35k, 4.1, 0.21.
fn format_value(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
