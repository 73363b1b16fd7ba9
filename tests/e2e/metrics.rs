//! Metrics (issue 14, point 1): a server's Prometheus endpoint, scraped over a real socket while
//! real clients make traffic; each figure checked against the traffic the test made.

use std::collections::HashMap;
use std::time::Duration;

use omni_runtime::Omni;
use omni_runtime::storage::RedbStore;
use omni_tests::TestServer;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::apps::{DocSession, doc, docs_app};

/// `GET path` over a real socket: (status line + headers, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("header end");
    (head.to_lowercase(), body.to_owned())
}

/// The samples of an OpenMetrics text: `name{labels}` -> value.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(addr: std::net::SocketAddr) -> HashMap<String, f64> {
    let (head, body) = get(addr, "/metrics").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    // A body that stops before `# EOF` would be cut off (a chunked body ends with its trailer).
    assert!(body.contains("# EOF"), "{body}");
    parse(&body)
}

fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no sample `{key}` in {:#?}", sorted(m)))
}

fn sorted(m: &HashMap<String, f64>) -> Vec<(&String, &f64)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

/// Scrapes until `key` has `want` (a disconnect is counted once the server noticed it).
async fn until(addr: std::net::SocketAddr, key: &str, want: f64) -> HashMap<String, f64> {
    for _ in 0..100 {
        let m = scrape(addr).await;
        if m.get(key) == Some(&want) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = scrape(addr).await;
    panic!("`{key}` never reached {want}: {:#?}", sorted(&m));
}

fn app() -> Omni<DocSession> {
    docs_app(vec![doc("a", ""), doc("b", "")]).metrics("/metrics")
}

#[tokio::test]
async fn the_figures_move_with_the_traffic() {
    let srv = TestServer::start(app()).await;
    let m = scrape(srv.addr).await;
    assert_eq!(value(&m, "omni_connections_open"), 0.0);
    assert_eq!(value(&m, r#"omni_models{collection="docs"}"#), 2.0);

    let mut a = srv.client().await;
    let b = srv.client().await;
    let mut c = srv.client().await;
    let m = scrape(srv.addr).await;
    assert_eq!(value(&m, "omni_connections_open"), 3.0);
    assert_eq!(value(&m, "omni_connections_total"), 3.0);
    assert_eq!(value(&m, "omni_snapshots_total"), 3.0);

    let oid = *a.collection("docs").keys().next().unwrap();
    for i in 1..=5 {
        a.change("docs", oid, json!({ "counter": i }))
            .await
            .unwrap();
    }
    let new = c.add("docs", json!({ "title": "x" })).await.unwrap();
    let reply: String = c
        .trigger("sleep", &json!({ "ms": 30, "echo": "hi" }))
        .await
        .unwrap();
    assert_eq!(reply, "hi");
    a.wait_until(|a| a.model("docs", new).is_some())
        .await
        .unwrap();

    // 3 hellos and snapshots, 15 changes, 5 acks, 2 adds, 1 created, 1 reply (all sent once
    // the server has written them to the sockets).
    let m = until(srv.addr, "omni_messages_sent_total", 30.0).await;
    // Every change reached all three clients; the add reached the two that did not make it
    // (its creator gets `created`).
    let change = r#"omni_deliveries_total{collection="docs",kind="change"}"#;
    assert_eq!(value(&m, change), 15.0);
    let add = r#"omni_deliveries_total{collection="docs",kind="add"}"#;
    assert_eq!(value(&m, add), 2.0);
    assert_eq!(
        value(&m, r#"omni_messages_received_total{kind="change"}"#),
        5.0
    );
    assert_eq!(
        value(&m, r#"omni_messages_received_total{kind="add"}"#),
        1.0
    );
    assert_eq!(
        value(&m, r#"omni_messages_received_total{kind="event"}"#),
        1.0
    );
    assert_eq!(value(&m, "omni_commits_total"), 6.0);
    assert_eq!(value(&m, r#"omni_models{collection="docs"}"#), 3.0);
    let events = r#"omni_event_duration_seconds_count{event="sleep"}"#;
    assert_eq!(value(&m, events), 1.0);
    let took = value(&m, r#"omni_event_duration_seconds_sum{event="sleep"}"#);
    assert!(took >= 0.03, "the handler slept 30 ms; measured {took} s");
    let frames = value(&m, "omni_frames_sent_total");
    assert!(
        (1.0..=30.0).contains(&frames),
        "{frames} frames for 30 messages"
    );
    assert!(value(&m, "omni_bytes_sent_total") > 300.0);

    b.close().await;
    let m = until(srv.addr, "omni_connections_open", 2.0).await;
    assert_eq!(value(&m, r#"omni_disconnects_total{reason="closed"}"#), 1.0);
}

#[tokio::test]
async fn refusals_and_floods_are_counted_by_reason() {
    let config = omni_runtime::Config {
        max_messages_per_second: 5,
        message_burst: 10,
        static_dir: None,
        ..Default::default()
    };
    let srv = TestServer::start(app().config(config).metrics("/metrics")).await;
    let mut a = srv.client().await;
    let oid = *a.collection("docs").keys().next().unwrap();
    // 15 reads at once: 10 within the burst, then refusals.
    for _ in 0..15 {
        a.send(json!({ "t": "read", "c": "docs", "oid": oid }))
            .await
            .unwrap();
    }
    let m = until(
        srv.addr,
        r#"omni_messages_received_total{kind="read"}"#,
        10.0,
    )
    .await;
    let refused = value(&m, "omni_rate_limited_total");
    assert!(refused >= 4.0, "{refused} refused of 5 over the burst");
    // A client that goes on is cut off: counted as a flood.
    for _ in 0..40 {
        if a.send(json!({ "t": "read", "c": "docs", "oid": oid }))
            .await
            .is_err()
        {
            break;
        }
    }
    let m = until(srv.addr, r#"omni_disconnects_total{reason="flood"}"#, 1.0).await;
    assert_eq!(value(&m, "omni_connections_open"), 0.0);
}

#[tokio::test]
async fn not_served_unless_mounted_and_readable_from_code() {
    let srv = TestServer::start(docs_app(vec![doc("a", "")])).await;
    let _a = srv.client().await;
    let (head, _) = get(srv.addr, "/metrics").await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
    let m = parse(&srv.server.metrics());
    assert_eq!(value(&m, "omni_connections_open"), 1.0);
}

#[tokio::test]
async fn a_config_set_after_metrics_keeps_them_mounted() {
    let app = docs_app(vec![doc("a", "")])
        .metrics("/stats")
        .config(omni_runtime::Config::default());
    let srv = TestServer::start(app).await;
    let _a = srv.client().await;
    let (head, body) = get(srv.addr, "/stats").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.contains("omni_connections_open 1"), "{body}");
}

#[tokio::test]
async fn the_durable_store_reports_its_group_commits() {
    let dir = std::env::temp_dir().join(format!("omni-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("data.redb");
    let _ = std::fs::remove_file(&path);
    let store = RedbStore::open(&path).unwrap();
    let app = app().storage(store).persist::<crate::apps::Docs>();
    let srv = TestServer::start(app).await;
    let mut a = srv.client().await;
    let oid = *a.collection("docs").keys().next().unwrap();
    let before = scrape(srv.addr).await;
    for i in 1..=3 {
        a.change("docs", oid, json!({ "counter": i }))
            .await
            .unwrap();
    }
    let m = scrape(srv.addr).await;
    let delta = |key: &str| value(&m, key) - value(&before, key);
    // Each change waited for its acknowledgement: one write per group commit.
    assert_eq!(delta("omni_store_batch_writes_sum"), 3.0);
    assert_eq!(delta("omni_store_batch_writes_count"), 3.0);
    assert_eq!(delta("omni_store_commit_duration_seconds_count"), 3.0);
    assert_eq!(value(&m, "omni_commit_duration_seconds_count"), 3.0);
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}
