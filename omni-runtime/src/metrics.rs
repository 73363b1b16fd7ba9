//! Prometheus metrics of one server, on [prometheus-client](https://docs.rs/prometheus-client):
//! a registry per server (no global state, so several servers in one process count apart).
//!
//! Always counted (each figure costs one relaxed atomic add per frame, fan-out or message, never
//! one per delivery); exposed only when the app mounts them with
//! [`Omni::metrics`](crate::Omni::metrics) or reads [`Server::metrics`](crate::Server::metrics).
//! Every name is listed in the README's "In production" section.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A label naming a kind of message.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Kind {
    pub(crate) kind: &'static str,
}

/// A label naming why a connection ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Reason {
    pub(crate) reason: &'static str,
}

/// Labels of a delivery count: the collection and the kind of message.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Delivery {
    pub(crate) collection: &'static str,
    pub(crate) kind: &'static str,
}

/// A label naming a server event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EventName {
    pub(crate) event: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 100 µs .. ~26 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

/// The counters of one server.
pub(crate) struct Metrics {
    registry: parking_lot::Mutex<Registry>,
    pub(crate) connections_open: Gauge,
    pub(crate) connections: Counter,
    pub(crate) received: Family<Kind, Counter>,
    pub(crate) frames_sent: Counter,
    pub(crate) messages_sent: Counter,
    pub(crate) bytes_sent: Counter,
    pub(crate) deliveries: Family<Delivery, Counter>,
    pub(crate) snapshots: Counter,
    pub(crate) resyncs: Counter,
    pub(crate) rate_limited: Counter,
    pub(crate) disconnects: Family<Reason, Counter>,
    pub(crate) resumes: Family<Kind, Counter>,
    pub(crate) event_seconds: Histograms<EventName>,
    pub(crate) commits: Counter,
    pub(crate) commits_failed: Counter,
    pub(crate) commit_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: parking_lot::Mutex::new(Registry::with_prefix("omni")),
            connections_open: Gauge::default(),
            connections: Counter::default(),
            received: Family::default(),
            frames_sent: Counter::default(),
            messages_sent: Counter::default(),
            bytes_sent: Counter::default(),
            deliveries: Family::default(),
            snapshots: Counter::default(),
            resyncs: Counter::default(),
            rate_limited: Counter::default(),
            disconnects: Family::default(),
            resumes: Family::default(),
            event_seconds: Family::new_with_constructor(latency),
            commits: Counter::default(),
            commits_failed: Counter::default(),
            commit_seconds: latency(),
        };
        {
            let mut r = m.registry.lock();
            r.register(
                "connections_open",
                "WebSocket connections open now",
                m.connections_open.clone(),
            );
            r.register(
                "connections",
                "WebSocket connections accepted",
                m.connections.clone(),
            );
            r.register(
                "messages_received",
                "Client messages received, by kind (add, change, remove, read, subscribe, event, invalid)",
                m.received.clone(),
            );
            r.register(
                "frames_sent",
                "WebSocket frames sent",
                m.frames_sent.clone(),
            );
            r.register(
                "messages_sent",
                "Messages sent (a frame batches several)",
                m.messages_sent.clone(),
            );
            r.register(
                "bytes_sent",
                "Payload bytes of the frames sent",
                m.bytes_sent.clone(),
            );
            r.register(
                "deliveries",
                "Changes queued to a connection by the fan-out, by collection and kind (add, change, remove)",
                m.deliveries.clone(),
            );
            r.register(
                "snapshots",
                "Snapshots sent (first state of a connection, or a resync)",
                m.snapshots.clone(),
            );
            r.register(
                "resyncs",
                "Outbound queues that overflowed (the client gets a fresh snapshot)",
                m.resyncs.clone(),
            );
            r.register(
                "rate_limited",
                "Client messages refused by the rate limit",
                m.rate_limited.clone(),
            );
            r.register(
                "disconnects",
                "Connections ended, by reason (closed, dropped, flood, too_big, connect_hook, server, unauthenticated)",
                m.disconnects.clone(),
            );
            r.register(
                "resumes",
                "Connections resumed after a drop, by what they were sent (changes, snapshot) or refused (unknown: the token expired or was never issued)",
                m.resumes.clone(),
            );
            r.register(
                "event_duration_seconds",
                "Time a server event handler took, by event",
                m.event_seconds.clone(),
            );
            r.register(
                "commits",
                "Writes applied as commits of the log",
                m.commits.clone(),
            );
            r.register(
                "commits_failed",
                "Writes the storage refused or failed (nothing applied)",
                m.commits_failed.clone(),
            );
            r.register(
                "commit_duration_seconds",
                "Time from validation to applied of writes through a storage that may wait",
                m.commit_seconds.clone(),
            );
        }
        m
    }
}

impl Metrics {
    /// Lets `f` register more metrics (the storage's own).
    pub(crate) fn register_with(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.registry.lock());
    }

    /// Adds the per-collection model counts, read from the engine at each scrape.
    pub(crate) fn count_models(
        &self,
        models: impl Fn() -> Vec<(&'static str, usize)> + Send + Sync + 'static,
    ) {
        self.registry
            .lock()
            .register_collector(Box::new(ModelCounts(Arc::new(models))));
    }

    /// The OpenMetrics text of every metric.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

type CountFn = dyn Fn() -> Vec<(&'static str, usize)> + Send + Sync;

struct ModelCounts(Arc<CountFn>);

impl std::fmt::Debug for ModelCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ModelCounts")
    }
}

impl Collector for ModelCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "models",
            "Models the server holds, by collection",
            None,
            MetricType::Gauge,
        )?;
        for (collection, n) in (self.0)() {
            let gauge = ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
            gauge.encode(family.encode_family(&[("collection", collection)])?)?;
        }
        Ok(())
    }
}

/// The delivery counters of one collection, taken once so the fan-out adds without a lookup.
#[derive(Clone, Default)]
pub(crate) struct Delivered {
    pub(crate) add: Counter,
    pub(crate) change: Counter,
    pub(crate) remove: Counter,
}

impl Delivered {
    pub(crate) fn of(metrics: &Metrics, collection: &'static str) -> Self {
        let get = |kind| {
            metrics
                .deliveries
                .get_or_create(&Delivery { collection, kind })
                .clone()
        };
        Delivered {
            add: get("add"),
            change: get("change"),
            remove: get("remove"),
        }
    }
}
