//! HTTP: the client files, the schema, static files, mounting in a bigger warp app (behaviour 8).

use omni_runtime::client::Client;
use omni_tests::TestServer;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warp::Filter;

/// A minimal HTTP/1.1 GET over a real socket; returns (status line + headers, body).
async fn get(addr: std::net::SocketAddr, path: &str, headers: &str) -> (String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&buf[..split]).to_lowercase();
    (head, buf[split + 4..].to_vec())
}

#[tokio::test]
async fn schema_and_client_files_are_served() {
    let srv = TestServer::start(example_game::app("unused")).await;
    let (head, body) = get(srv.addr, "/omni/schema.json", "").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let schema: Value = serde_json::from_slice(&body).unwrap();
    let player = schema["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "Player")
        .unwrap();
    let fields: Vec<&str> = player["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "x", "y", "online", "color"]);
    assert!(!String::from_utf8_lossy(&body).contains("password"));
    assert_eq!(schema["events"][0]["name"], "login");
    let (head, _) = get(srv.addr, "/no/such/file", "").await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
}

#[tokio::test]
async fn static_files_are_served_unless_turned_off() {
    let dir = std::env::temp_dir().join(format!("omni-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<h1>hello omni</h1>").unwrap();
    let server = example_game::app(&dir).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(server.serve(listener));
    let (head, body) = get(addr, "/index.html", "").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"<h1>hello omni</h1>");
    task.abort();

    let srv = TestServer::start(example_game::app(&dir)).await; // TestServer turns static off
    let (head, _) = get(srv.addr, "/index.html", "").await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn omni_mounts_inside_a_bigger_warp_app() {
    let server = example_game::app("unused").no_static().build();
    let api = warp::path!("api" / "health").map(|| "ok");
    let routes = warp::path("game").and(server.routes()).or(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(warp::serve(routes).incoming(listener).run());
    let (head, body) = get(addr, "/api/health", "").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"ok");
    let mut c = Client::connect(&format!("ws://{addr}/game/omni"))
        .await
        .unwrap();
    let reply: Value = c
        .trigger(
            "login",
            &serde_json::json!({"name": "Mounted", "password": "pw"}),
        )
        .await
        .unwrap();
    assert!(reply["oid"].as_u64().is_some());
    task.abort();
}
