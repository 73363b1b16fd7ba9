//! Shared helpers of the end-to-end tests: start a server on 127.0.0.1 and connect clients.

use omni_runtime::client::Client;
use omni_runtime::{Omni, Server};

/// A server under test, listening on an ephemeral port of 127.0.0.1. It stops when dropped.
pub struct TestServer<S> {
    /// The built server: its world and connections.
    pub server: Server<S>,
    /// `127.0.0.1:<port>`.
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl<S: Default + Send + Sync + 'static> TestServer<S> {
    /// Builds and starts `app`.
    pub async fn start(app: Omni<S>) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("warn")
            .try_init();
        let server = app.no_static().build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.clone().serve_with_shutdown(listener, async move {
            let _ = stopped.await;
        }));
        TestServer {
            server,
            addr,
            stop: Some(stop),
        }
    }

    /// The WebSocket URL.
    pub fn url(&self) -> String {
        format!("ws://{}/omni", self.addr)
    }

    /// Connects a new client and waits for its snapshot.
    pub async fn client(&self) -> Client {
        Client::connect(&self.url()).await.expect("client connects")
    }
}

impl<S> Drop for TestServer<S> {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
