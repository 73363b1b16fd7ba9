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
