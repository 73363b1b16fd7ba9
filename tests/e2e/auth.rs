//! Authentication at connect (issue 14, point 2): the `authenticate` hook sees the upgrade request
//! and refuses with HTTP 401/403 before any WebSocket frame; the game's signed login tokens.

use std::time::Duration;

use example_game::{Tokens, app_with};
use omni_runtime::client::Client;
use omni_runtime::prelude::*;
use omni_tests::TestServer;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, http::StatusCode};

fn tokens() -> Tokens {
    Tokens::new(b"test key".to_vec(), Duration::from_secs(3600))
}

/// Tries to open a WebSocket; the HTTP status and body of a refused upgrade.
async fn refused(request: impl IntoClientRequest + Unpin) -> (StatusCode, String) {
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(WsError::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (resp.status(), body)
        }
        Err(e) => panic!("not an HTTP refusal: {e}"),
    }
}

/// Logs `name` in through the `login` event; the player's OID and token. The client is closed
/// and the server has seen it go (the player is offline again).
async fn login(srv: &TestServer<example_game::Session>, name: &str) -> (u64, String) {
    let mut c = srv.client().await;
    let reply: Value = c
        .trigger("login", &json!({ "name": name, "password": "pw" }))
        .await
        .unwrap();
    c.close().await;
    let oid = reply["oid"].as_u64().unwrap();
    let players = srv.server.world().collection::<example_game::Players>();
    for _ in 0..200 {
        if players.get(Oid::from_raw(oid)).is_some_and(|p| !p.online) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (oid, reply["token"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_good_token_starts_the_connection_logged_in() {
    let srv = TestServer::start(app_with("unused", tokens())).await;
    let (oid, token) = login(&srv, "ann").await;
    let mut c = Client::connect(&format!("{}?token={token}", srv.url()))
        .await
        .unwrap();
    let me: Value = c.trigger("me", &json!({})).await.unwrap();
    assert_eq!(me["oid"], json!(oid), "logged in without the password");
    c.wait_until(|c| {
        c.model("players", oid)
            .is_some_and(|p| p["online"] == json!(true))
    })
    .await
    .unwrap();
    // It may move its player: the write permission sees the session the token set.
    c.change("players", oid, json!({ "x": 77 })).await.unwrap();
    let x = srv
        .server
        .world()
        .collection::<example_game::Players>()
        .get(Oid::from_raw(oid))
        .unwrap()
        .x;
    assert_eq!(x, 77);
}

#[tokio::test]
async fn the_token_also_works_as_a_cookie() {
    let srv = TestServer::start(app_with("unused", tokens())).await;
    let (oid, token) = login(&srv, "bob").await;
    let mut request = srv.url().into_client_request().unwrap();
    let cookie = format!("theme=dark; {}={token}", example_game::token::COOKIE);
    request
        .headers_mut()
        .insert("cookie", cookie.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({ "t": "event", "id": 1, "name": "me", "args": {} }).to_string(),
    ))
    .await
    .unwrap();
    let reply = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer")
            .unwrap()
            .unwrap();
        let text = msg.into_text().unwrap().to_string();
        if text.contains("\"reply\"") {
            break text;
        }
    };
    assert!(reply.contains(&format!("\"oid\":{oid}")), "{reply}");
}

#[tokio::test]
async fn a_tampered_token_is_refused_with_401_before_the_socket_opens() {
    let srv = TestServer::start(app_with("unused", tokens())).await;
    let (oid, token) = login(&srv, "cy").await;
    // Claim another player with the same signature.
    let forged = token.replacen(&format!("{oid}."), &format!("{}.", oid + 1), 1);
    let (status, body) = refused(format!("{}?token={forged}", srv.url())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("invalid login token"), "{body}");
    // Signed with another key.
    let other = Tokens::new(b"other key".to_vec(), Duration::from_secs(3600));
    let foreign = other.issue_at(Oid::from_raw(oid), example_game::token::now());
    let (status, _) = refused(format!("{}?token={foreign}", srv.url())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // No connection was ever made for them.
    assert!(srv.server.connections().is_empty());
}

#[tokio::test]
async fn an_expired_token_is_refused_with_401() {
    let t = tokens();
    let srv = TestServer::start(app_with("unused", t.clone())).await;
    let (oid, _) = login(&srv, "dee").await;
    let long_ago = example_game::token::now() - 2 * 3600;
    let stale = t.issue_at(Oid::from_raw(oid), long_ago);
    let (status, body) = refused(format!("{}?token={stale}", srv.url())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("expired"), "{body}");
}

#[derive(Default)]
struct Who {
    user: String,
}

#[derive(Model, Clone, Default)]
struct Note {
    text: String,
}
impl Permissions<Who> for Note {}
#[collection(model = Note)]
struct Notes;
impl CollectionPermissions<Who> for Notes {}

#[tokio::test]
async fn the_hook_sees_headers_and_peer_and_may_answer_403() {
    let app = Omni::<Who>::new()
        .collection(Notes::empty())
        .authenticate(|h: Handshake| async move {
            let peer = h.peer().expect("the peer address");
            assert!(peer.ip().is_loopback());
            match h.header("x-user") {
                Some("mallory") => Err(AuthError::forbidden("mallory may not connect")),
                Some(user) => Ok(Who {
                    user: user.to_owned(),
                }),
                None => Err(AuthError::unauthorized("say who you are")),
            }
        })
        .event("whoami", |conn: Conn<Who>, _w: World, _a: ()| async move {
            Ok::<_, EventError>(conn.session(|s| s.user.clone()).unwrap_or_default())
        });
    let srv = TestServer::start(app).await;
    let (status, body) = refused(srv.url()).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, "say who you are")
    );
    let mut request = srv.url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-user", "mallory".parse().unwrap());
    let (status, _) = refused(request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let mut request = srv.url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-user", "ann".parse().unwrap());
    let mut c = Client::connect_with(request).await.unwrap();
    let user: String = c.trigger("whoami", &()).await.unwrap();
    assert_eq!(user, "ann");
    let m = omni_runtime::Server::metrics(&srv.server);
    assert!(
        m.contains("omni_disconnects_total{reason=\"unauthenticated\"} 2"),
        "{m}"
    );
}
