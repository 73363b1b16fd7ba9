//! End-to-end tests: each starts a real server on 127.0.0.1 and talks to it over real
//! WebSockets (tokio-tungstenite, through `omni_runtime::client::Client`).

mod apps;
mod auth;
mod chat;
mod cluster;
mod coalesce;
mod collections;
mod connections;
mod durable;
mod engine;
mod events;
mod fuzz;
mod hardening;
mod http;
mod leaks;
mod limits;
mod metrics;
mod migrate;
mod order;
mod pipeline;
mod queries;
mod resume;
mod storage;
mod sync;
mod typed_client;
