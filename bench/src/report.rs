//! What a run measured: a row per configuration, medians over runs, the printed table.

use serde::Serialize;

/// One table row: a configuration's figures.
#[derive(Serialize, Debug, Clone, Default)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) clients: usize,
    pub(crate) models: usize,
    pub(crate) writers: usize,
    /// Seconds measured.
    pub(crate) secs: f64,
    /// Changes acknowledged per second (all writers) during the measured window.
    pub(crate) changes_per_sec: f64,
    /// Change messages received per second by all clients during the measured window.
    pub(crate) deliveries_per_sec: f64,
    /// Latency from the writer's send to a client's receipt, in milliseconds.
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    /// Deliveries that never arrived (gaps in a model's sequence, or missing at the end).
    pub(crate) lost: u64,
    /// Deliveries that arrived out of order or twice.
    pub(crate) reordered: u64,
    /// `reject`/`error` answers, failed connections, and resyncs of normal clients.
    pub(crate) errors: u64,
    /// Server CPU time (user + system, all threads) per delivery, in microseconds.
    pub(crate) cpu_us_per_delivery: f64,
    /// Server CPU use during the window, in % of one core.
    pub(crate) server_cpu_pct: f64,
    /// Load generator CPU use during the window, in % of one core.
    pub(crate) generator_cpu_pct: f64,
    /// Server RSS before clients connected, in MiB.
    pub(crate) rss_base_mib: f64,
    /// (RSS with all clients connected and idle - base) / clients, in KiB.
    pub(crate) kib_per_conn: f64,
    /// Highest server RSS sampled during the load, in MiB.
    pub(crate) rss_max_mib: f64,
    /// Server RSS at the end of the window, in MiB.
    pub(crate) rss_end_mib: f64,
    /// Seconds for all C clients to connect and receive the initial state of P models.
    pub(crate) initial_state_secs: f64,
    /// The slow-client report, in slow-client mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) slow: Option<SlowReport>,
    /// Nodes of the cluster (1: a single server).
    pub(crate) nodes: usize,
    /// With a cluster: the NATS server's CPU time per commit, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) broker_cpu_us_per_commit: Option<f64>,
    /// Server RSS samples (seconds since the load started, MiB).
    pub(crate) rss_series: Vec<(f64, f64)>,
    /// The individual runs this row is the median of.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) runs: Vec<Row>,
}

#[derive(Serialize, Debug, Clone, Default)]
pub(crate) struct SlowReport {
    /// Bytes the slow client had read before it stopped reading.
    pub(crate) stopped_after_snapshot: bool,
    /// Whether it held the server's final state after it read again.
    pub(crate) caught_up: bool,
    /// Seconds from reading again to holding the final state.
    pub(crate) catch_up_secs: f64,
    /// Snapshots (resyncs) it received after reading again.
    pub(crate) resyncs: u64,
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub(crate) fn median_row(runs: Vec<Row>) -> Row {
    let m = |f: fn(&Row) -> f64| median(runs.iter().map(f).collect());
    let mut row = runs[0].clone();
    row.secs = m(|r| r.secs);
    row.changes_per_sec = m(|r| r.changes_per_sec);
    row.deliveries_per_sec = m(|r| r.deliveries_per_sec);
    row.p50_ms = m(|r| r.p50_ms);
    row.p99_ms = m(|r| r.p99_ms);
    row.max_ms = m(|r| r.max_ms);
    row.cpu_us_per_delivery = m(|r| r.cpu_us_per_delivery);
    row.server_cpu_pct = m(|r| r.server_cpu_pct);
    row.generator_cpu_pct = m(|r| r.generator_cpu_pct);
    row.rss_base_mib = m(|r| r.rss_base_mib);
    row.kib_per_conn = m(|r| r.kib_per_conn);
    row.rss_max_mib = m(|r| r.rss_max_mib);
    row.rss_end_mib = m(|r| r.rss_end_mib);
    row.initial_state_secs = m(|r| r.initial_state_secs);
    // Losses are summed, not averaged: any run with a loss shows.
    row.lost = runs.iter().map(|r| r.lost).sum();
    row.reordered = runs.iter().map(|r| r.reordered).sum();
    row.errors = runs.iter().map(|r| r.errors).sum();
    if runs.len() > 1 {
        // Each run keeps its own RSS series.
        row.rss_series = Vec::new();
        row.runs = runs;
    }
    row
}

pub(crate) fn human(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e4 {
        format!("{:.0}k", n / 1e3)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

pub(crate) fn print_table(rows: &[Row]) {
    println!(
        "| scenario | C | P | W | changes/s | deliveries/s | p50 ms | p99 ms | max ms | lost | reord | err | CPU µs/deliv | srv CPU | gen CPU | KiB/conn | RSS max MiB | init s |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {:.3} | {:.0}% | {:.0}% | {:.1} | {:.1} | {:.2} |",
            r.scenario,
            r.clients,
            r.models,
            r.writers,
            human(r.changes_per_sec),
            human(r.deliveries_per_sec),
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.lost,
            r.reordered,
            r.errors,
            r.cpu_us_per_delivery,
            r.server_cpu_pct,
            r.generator_cpu_pct,
            r.kib_per_conn,
            r.rss_max_mib,
            r.initial_state_secs,
        );
    }
    for r in rows.iter().filter(|r| r.slow.is_some()) {
        if let Some(s) = &r.slow {
            println!(
                "slow client (C={} P={} {}): server RSS max {:.1} MiB, end {:.1} MiB; after reading again: {} in {:.2} s ({} resync snapshot(s)); other clients p99 {:.2} ms, max {:.1} ms",
                r.clients,
                r.models,
                r.scenario,
                r.rss_max_mib,
                r.rss_end_mib,
                if s.caught_up {
                    "caught up"
                } else {
                    "DID NOT catch up"
                },
                s.catch_up_secs,
                s.resyncs,
                r.p99_ms,
                r.max_ms
            );
        }
    }
}
