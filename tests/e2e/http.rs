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
    assert!(
        !String::from_utf8_lossy(&body).contains("_password"),
        "the private field is not in the schema"
    );
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
async fn static_paths_no_file_can_have_get_400_404_414_not_500() {
    let dir = std::env::temp_dir().join(format!("omni-static-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<h1>hello omni</h1>").unwrap();
    let server = example_game::app(&dir).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(server.serve(listener));
    let long = format!("/{}", "a".repeat(10_000));
    let segment = format!("/{}.html", "a".repeat(300));
    let deep = "/a".repeat(3000);
    for (path, status) in [
        ("/%00", "400"),
        ("/index.html%00.txt", "400"),
        ("/%zz", "400"),
        (long.as_str(), "414"),
        (segment.as_str(), "404"),
        (deep.as_str(), "414"),
        ("/no-such-file.html", "404"),
        ("/index.html", "200"),
    ] {
        let (head, _) = get(addr, path, "").await;
        let shown = &path[..path.len().min(40)];
        assert!(
            head.starts_with(&format!("http/1.1 {status}")),
            "{shown}: {head}"
        );
    }
    // The server is still up and serving.
    let (head, body) = get(addr, "/index.html", "").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"<h1>hello omni</h1>");
    task.abort();
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

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

#[tokio::test]
async fn the_client_is_readable_in_development_and_minified_compressed_cached_otherwise() {
    let dev = TestServer::start(example_game::app("unused").development(true)).await;
    let (head, dev_body) = get(dev.addr, "/omni.js", "Accept-Encoding: gzip\r\n").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(header(&head, "cache-control"), Some("no-cache"));
    assert_eq!(
        header(&head, "content-encoding"),
        None,
        "development mode serves plain text"
    );
    assert!(
        header(&head, "content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    let dev_js = String::from_utf8(dev_body).unwrap();
    assert!(
        dev_js.contains("players") && dev_js.contains("login"),
        "the client knows the app's collections and events"
    );
    assert!(!dev_js.contains("_password"));
    assert!(
        dev_js.lines().count() > 100,
        "development output is readable"
    );

    let prod = TestServer::start(example_game::app("unused").development(false)).await;
    let (head, gz) = get(prod.addr, "/omni.js", "Accept-Encoding: gzip, br\r\n").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(header(&head, "content-encoding"), Some("gzip"));
    assert!(header(&head, "cache-control").unwrap().contains("max-age"));
    let etag = header(&head, "etag").unwrap().to_owned();
    let mut js = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut js).unwrap();
    assert!(
        js.len() < dev_js.len(),
        "minified ({}) is smaller than development ({})",
        js.len(),
        dev_js.len()
    );
    assert!(
        gz.len() < js.len(),
        "gzip ({}) is smaller than minified ({})",
        gz.len(),
        js.len()
    );
    assert!(js.contains("players"));
    // The sizes the README reports (`-- --nocapture` shows them).
    eprintln!(
        "example-game /omni.js: development {} B, minified {} B, minified+gzip {} B",
        dev_js.len(),
        js.len(),
        gz.len()
    );
    // Without gzip the minified text itself; with the ETag a 304.
    let (head, plain) = get(prod.addr, "/omni.js", "").await;
    assert_eq!(header(&head, "content-encoding"), None);
    assert_eq!(String::from_utf8(plain).unwrap(), js);
    let (head, body) = get(prod.addr, "/omni.js", &format!("If-None-Match: {etag}\r\n")).await;
    assert!(head.starts_with("http/1.1 304"), "{head}");
    assert!(body.is_empty());
    // The typings are served too.
    let (head, dts) = get(prod.addr, "/omni.d.ts", "").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(String::from_utf8(dts).unwrap().contains("players"));
}
