//! Our own WebSocket upgrade, on warp's HTTP server.
//!
//! warp 0.4's `ws()` filter builds every socket with tungstenite's default 128 KiB read and
//! 128 KiB write buffers and offers no setter for them: about 135 KB of memory per connection,
//! most of it idle. This filter does the same RFC 6455 handshake, then builds the
//! tokio-tungstenite stream over hyper's upgraded connection with a [`WebSocketConfig`] of our
//! own: a small read buffer (it grows for a large message and is reused), no write buffer (the
//! connection task already writes one batched frame at a time), and the server's message-size
//! limits.

use std::future::Future;

use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use warp::Filter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::hyper::upgrade::{OnUpgrade, Upgraded};

/// A server-side WebSocket.
pub(crate) type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// A WebSocket upgrade request that passed the handshake checks.
pub(crate) struct Upgrade {
    key: String,
    on_upgrade: OnUpgrade,
}

fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Matches a WebSocket upgrade request (`GET`, `Connection: upgrade`, `Upgrade: websocket`,
/// `Sec-WebSocket-Version: 13`, a `Sec-WebSocket-Key`); anything else is rejected so that other
/// routes may answer it.
pub(crate) fn upgrade() -> impl Filter<Extract = (Upgrade,), Error = warp::Rejection> + Clone {
    warp::get()
        .and(warp::header::optional::<String>("connection"))
        .and(warp::header::optional::<String>("upgrade"))
        .and(warp::header::optional::<String>("sec-websocket-version"))
        .and(warp::header::optional::<String>("sec-websocket-key"))
        .and(warp::ext::optional::<OnUpgrade>())
        .and_then(
            |connection: Option<String>,
             upgrade: Option<String>,
             version: Option<String>,
             key: Option<String>,
             on_upgrade: Option<OnUpgrade>| async move {
                let ok = has_token(connection.as_deref(), "upgrade")
                    && has_token(upgrade.as_deref(), "websocket")
                    && version.as_deref().map(str::trim) == Some("13");
                match (ok, key, on_upgrade) {
                    (true, Some(key), Some(on_upgrade)) => Ok(Upgrade {
                        key: key.trim().to_owned(),
                        on_upgrade,
                    }),
                    _ => Err(warp::reject::not_found()),
                }
            },
        )
}

impl Upgrade {
    /// Answers `101 Switching Protocols` and runs `then` on the socket once hyper handed the
    /// connection over.
    pub(crate) fn accept<F, Fut>(
        self,
        read_buffer_size: usize,
        max_message_size: usize,
        then: F,
    ) -> warp::reply::Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let config = WebSocketConfig::default()
            .read_buffer_size(read_buffer_size.max(256))
            .write_buffer_size(0)
            .max_message_size(Some(max_message_size))
            .max_frame_size(Some(max_message_size));
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    then(socket).await;
                }
                Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
            }
        });
        let mut resp = warp::reply::Response::default();
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = resp.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(self.key.as_bytes())) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::has_token;

    #[test]
    fn connection_header_tokens() {
        assert!(has_token(Some("Upgrade"), "upgrade"));
        assert!(has_token(Some("keep-alive, Upgrade"), "upgrade"));
        assert!(!has_token(Some("keep-alive"), "upgrade"));
        assert!(!has_token(None, "upgrade"));
    }
}
