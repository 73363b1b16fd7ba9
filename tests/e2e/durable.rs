//! The durable store survives `SIGKILL`: a real server process (the todo example with
//! `--data`), real clients, the real redb file.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use omni_runtime::client::Client;
use serde_json::json;

/// The todo server as a child process on a free port of 127.0.0.1, killed when dropped.
struct Proc {
    child: Child,
    url: String,
}

impl Proc {
    fn start(data: &std::path::Path) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_todo-server"))
            .args(["--host", "127.0.0.1", "--port", "0", "--data"])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start todo-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or_default().to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("todo-server prints its address");
        Proc {
            child,
            url: format!("ws://{addr}/omni"),
        }
    }

    /// `SIGKILL`: no shutdown code runs.
    fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn identified(url: &str, name: &str) -> Client {
    let mut c = Client::connect(url).await.expect("connect");
    let token = format!("{name}-token-0123456789abcdef");
    let _: () = c
        .trigger("identify", &json!({"token": token, "name": name}))
        .await
        .expect("identify");
    c
}

#[tokio::test]
async fn a_killed_server_restarts_with_every_acknowledged_change_and_the_same_oids() {
    let dir = std::env::temp_dir().join(format!("omni-durable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("todos.redb");
    let _ = std::fs::remove_file(&data);

    let server = Proc::start(&data);
    let mut ann = identified(&server.url, "ann").await;
    let mut bob = identified(&server.url, "bob").await;
    let seed: Vec<u64> = ann.collection("todos").keys().copied().collect();
    assert_eq!(seed.len(), 1, "seeded on first start");

    // Writes from two clients, each acknowledged before the next.
    let mut oids = Vec::new();
    for i in 0..20 {
        let c = if i % 2 == 0 { &mut ann } else { &mut bob };
        oids.push(
            c.add("todos", json!({"title": format!("todo {i}")}))
                .await
                .unwrap(),
        );
    }
    for (i, oid) in oids.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        let c = if i % 2 == 0 { &mut ann } else { &mut bob };
        c.change(
            "todos",
            *oid,
            json!({"done": true, "title": format!("todo {i} done")}),
        )
        .await
        .unwrap();
    }
    ann.remove("todos", oids[4]).await.unwrap();
    bob.remove("todos", oids[5]).await.unwrap();
    ann.change("todos", seed[0], json!({"done": true}))
        .await
        .unwrap();
    // What every client holds now is what the server acknowledged.
    ann.wait_until(|c| c.collection("todos").len() == 19)
        .await
        .unwrap();
    let before = ann.collection("todos");
    drop(ann);
    drop(bob);
    server.kill();

    let server = Proc::start(&data);
    let mut carl = identified(&server.url, "carl").await;
    let after = carl.collection("todos");
    assert_eq!(
        after, before,
        "every acknowledged change, under the same OIDs"
    );
    assert!(after.contains_key(&seed[0]), "not seeded again");
    assert!(!after.contains_key(&oids[4]) && !after.contains_key(&oids[5]));
    // Server-only fields survive too: the creator may still remove its own todo, others not.
    let mut bob = identified(&server.url, "bob").await;
    let err = carl.remove("todos", oids[1]).await.unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    bob.remove("todos", oids[1]).await.unwrap();
    // OIDs are never reused, even those of deleted models.
    let fresh = carl
        .add("todos", json!({"title": "after restart"}))
        .await
        .unwrap();
    assert!(fresh > *oids.iter().max().unwrap(), "{fresh}");
    drop(carl);
    drop(bob);

    // A second kill, right after an acknowledged write.
    let start = Instant::now();
    let mut dave = identified(&server.url, "dave").await;
    let last = dave
        .add("todos", json!({"title": "last words"}))
        .await
        .unwrap();
    server.kill();
    let server = Proc::start(&data);
    let eve = identified(&server.url, "eve").await;
    assert_eq!(eve.model("todos", last).unwrap()["title"], "last words");
    assert_eq!(eve.model("todos", fresh).unwrap()["title"], "after restart");
    assert!(eve.model("todos", oids[1]).is_none());
    assert!(start.elapsed() < Duration::from_secs(60));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a title written by the crash test says: writer, todo, version.
fn parse_title(title: &str) -> Option<(u64, u64, u64)> {
    let mut it = title.strip_prefix('w')?.split('-');
    let w = it.next()?.parse().ok()?;
    let t = it.next()?.parse().ok()?;
    let v = it.next()?.strip_prefix('v')?.parse().ok()?;
    Some((w, t, v))
}

/// Every `(oid, title)` a client received: in its snapshot, an `add`, a `created` or a `change`.
fn seen_titles(c: &Client) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut push = |oid: &serde_json::Value, title: &serde_json::Value| {
        if let (Some(oid), Some(title)) = (oid.as_u64(), title.as_str()) {
            out.push((oid, title.to_owned()));
        }
    };
    for m in c.log() {
        match m["t"].as_str() {
            Some("snapshot") => {
                for todo in m["data"]["todos"].as_array().into_iter().flatten() {
                    push(&todo["oid"], &todo["title"]);
                }
            }
            Some("add") => push(&m["m"]["oid"], &m["m"]["title"]),
            Some("created") => push(&m["oid"], &m["m"]["title"]),
            Some("change") => push(&m["oid"], &m["set"]["title"]),
            _ => {}
        }
    }
    out
}

/// The old engine fanned a write out before its group commit was on disk: a crash then took
/// back values (and OIDs) other clients had already received. Now nothing is sent before it is
/// durable. 8 writers pipeline creates and title changes; the server is SIGKILLed at a random
/// moment, 10 times; after each restart every OID any client received holds the same todo, at
/// the version that client saw or a later one.
#[tokio::test]
async fn a_crash_loses_nothing_any_client_received() {
    const WRITERS: u64 = 8;
    const ROUNDS: u64 = 10;
    let dir = std::env::temp_dir().join(format!("omni-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("todos.redb");
    let _ = std::fs::remove_file(&data);
    // oid -> (writer, todo, highest version any client received)
    let mut seen: std::collections::BTreeMap<u64, (u64, u64, u64)> = Default::default();
    let mut checked_rounds = 0;
    for round in 0..=ROUNDS {
        let server = Proc::start(&data);
        let watcher = identified(&server.url, "watcher").await;
        // Everything any client received before the last crash is there.
        let now = watcher.collection("todos");
        for (oid, (w, t, v)) in &seen {
            let todo = now
                .get(oid)
                .unwrap_or_else(|| panic!("round {round}: oid {oid} (w{w}-{t}-v{v}) is gone"));
            let title = todo["title"].as_str().unwrap_or_default();
            let (w2, t2, v2) = parse_title(title)
                .unwrap_or_else(|| panic!("round {round}: oid {oid} now holds `{title}`"));
            assert_eq!(
                (w2, t2),
                (*w, *t),
                "round {round}: oid {oid} now holds another todo"
            );
            assert!(
                v2 >= *v,
                "round {round}: oid {oid} went back from v{v} to v{v2}"
            );
        }
        checked_rounds += 1;
        if round == ROUNDS {
            break;
        }
        let mut watcher = watcher;
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            writers.push(identified(&server.url, &format!("writer{w}")).await);
        }
        // Each writer pipelines: creates a todo, then bumps titles of the todos it created.
        let mut mine: Vec<Vec<(u64, u64, u64)>> = vec![Vec::new(); WRITERS as usize];
        let deadline = Instant::now() + Duration::from_millis(150 + (round * 37) % 250);
        let mut step = 0u64;
        while Instant::now() < deadline {
            for (w, c) in writers.iter_mut().enumerate() {
                let t = round * 1000 + step;
                let title = format!("w{w}-{t}-v0");
                let _ = c
                    .send(json!({"t": "add", "c": "todos", "tmp": format!("t{t}"), "m": {"title": title}}))
                    .await;
                // Bump one of its acknowledged todos.
                for m in c.log().iter().filter(|m| m["t"] == "created") {
                    let oid = m["oid"].as_u64().unwrap_or_default();
                    if let Some((w2, t2, _)) = m["m"]["title"].as_str().and_then(parse_title)
                        && !mine[w].iter().any(|(o, _, _)| *o == oid)
                    {
                        mine[w].push((oid, t2, 0));
                        let _ = w2;
                    }
                }
                if !mine[w].is_empty() {
                    let k = (step as usize) % mine[w].len();
                    let (oid, t2, v) = &mut mine[w][k];
                    *v += 1;
                    let title = format!("w{w}-{t2}-v{v}");
                    let _ = c
                        .send(json!({"t": "change", "c": "todos", "oid": *oid, "set": {"title": title}}))
                        .await;
                }
                let _ = c.drain(Duration::from_millis(1)).await;
            }
            let _ = watcher.drain(Duration::from_millis(1)).await;
            step += 1;
        }
        server.kill();
        for c in writers.iter_mut().chain(std::iter::once(&mut watcher)) {
            let _ = c.drain(Duration::from_millis(50)).await;
            for (oid, title) in seen_titles(c) {
                let Some((w, t, v)) = parse_title(&title) else {
                    continue;
                };
                let e = seen.entry(oid).or_insert((w, t, v));
                assert_eq!((e.0, e.1), (w, t), "oid {oid} was sent as two todos");
                e.2 = e.2.max(v);
            }
        }
    }
    assert_eq!(checked_rounds, ROUNDS + 1);
    assert!(
        seen.len() > 50,
        "the test wrote too little to mean anything: {}",
        seen.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
