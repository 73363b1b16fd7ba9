//! The load: clients that connect, read their snapshot and check every change they receive;
//! writers that send changes at the configured rate; the slow client.

use std::fmt::Write as _;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use omni_bench::scan::{Event, scan};
use tokio::sync::{Notify, Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::report::SlowReport;
use crate::{Rate, Sink, Stream, WriterHandoff, Ws};

/// State shared by the tasks of one run.
pub(crate) struct Run {
    pub(crate) epoch: Instant,
    pub(crate) measuring: AtomicBool,
    pub(crate) writers_stop: AtomicBool,
    pub(crate) deliveries: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) reordered: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) snapshots: AtomicUsize,
    pub(crate) hists: Vec<Mutex<Histogram<u64>>>,
    /// Each model's last sequence number, by model index, once the writers finished.
    pub(crate) finals: OnceLock<Vec<u64>>,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) models: usize,
    /// The first client error, to stop a run early.
    pub(crate) failure: Mutex<Option<String>>,
}

/// Between a writer and the reader of the same connection.
#[derive(Default)]
pub(crate) struct Link {
    pub(crate) acked: AtomicU64,
    pub(crate) notify: Notify,
}

pub(crate) const SHARDS: usize = 32;

pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 << 10)
        .write_buffer_size(16 << 10)
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20))
}

pub(crate) async fn connect(url: &str) -> Result<Ws, String> {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true)
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    Ok(ws)
}

/// Per-client tracking of each model's sequence number.
pub(crate) struct Seqs {
    pub(crate) first_oid: u64,
    pub(crate) last: Vec<u64>,
}

impl Seqs {
    fn from_models(models: &[(u64, u64)]) -> Result<Seqs, String> {
        let first_oid = models.iter().map(|m| m.0).min().unwrap_or(1);
        let mut last = vec![0; models.len()];
        for &(oid, seq) in models {
            let i = (oid - first_oid) as usize;
            *last
                .get_mut(i)
                .ok_or_else(|| format!("snapshot OIDs are not contiguous (oid {oid})"))? = seq;
        }
        Ok(Seqs { first_oid, last })
    }
    fn slot(&mut self, oid: u64) -> Option<&mut u64> {
        self.last.get_mut(oid.checked_sub(self.first_oid)? as usize)
    }
}

/// Reads frames until the snapshot; returns the models (oid, seq) it held.
pub(crate) async fn read_snapshot(stream: &mut Stream) -> Result<Vec<(u64, u64)>, String> {
    loop {
        let msg = stream
            .next()
            .await
            .ok_or("closed before the snapshot")?
            .map_err(|e| e.to_string())?;
        let Message::Text(text) = msg else { continue };
        let mut models = Vec::new();
        let mut got = false;
        scan(text.as_bytes(), |e| match e {
            Event::Snapshot => got = true,
            Event::Model { oid, seq } => models.push((oid, seq)),
            _ => {}
        });
        if got {
            return Ok(models);
        }
    }
}

/// One of the C clients: connects, takes its snapshot, then checks and times every change.
pub(crate) async fn client(
    idx: usize,
    url: Arc<str>,
    run: Arc<Run>,
    gate: Arc<Semaphore>,
    writer: Option<WriterHandoff>,
) -> Result<(), String> {
    let permit = gate.acquire().await.map_err(|e| e.to_string())?;
    let (sink, mut stream) = connect(&url).await?.split();
    let models = read_snapshot(&mut stream).await?;
    drop(permit);
    if models.len() != run.models {
        return Err(format!(
            "snapshot held {} models, expected {}",
            models.len(),
            run.models
        ));
    }
    let mut seqs = Seqs::from_models(&models)?;
    run.snapshots.fetch_add(1, Relaxed);
    let mut stop = run.stop.subscribe();
    // The write half goes to the writer, or stays here until the end of the run (the socket
    // closes when both halves are dropped).
    let (link, _sink) = match writer {
        Some((link, tx)) => {
            let mut oids: Vec<u64> = models.iter().map(|m| m.0).collect();
            oids.sort_unstable();
            let _ = tx.send((sink, oids));
            (Some(link), None)
        }
        None => (None, Some(sink)),
    };
    let shard = &run.hists[idx % SHARDS];
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.changed() => break,
            msg = stream.next() => msg,
        };
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                if *stop.borrow() {
                    break;
                }
                return Err("the server closed the connection".into());
            }
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(_)) => continue,
        };
        let now = run.epoch.elapsed().as_nanos() as i64;
        let mut hist = if run.measuring.load(Relaxed) {
            Some(shard.lock().unwrap_or_else(|e| e.into_inner()))
        } else {
            None
        };
        let (mut n, mut lost, mut reordered, mut errors, mut acks) = (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut resync: Option<Vec<(u64, u64)>> = None;
        scan(text.as_bytes(), |e| match e {
            Event::Change { oid, seq, ts } => {
                n += 1;
                match (seqs.slot(oid), seq) {
                    (Some(last), Some(seq)) => {
                        if seq == *last + 1 {
                            *last = seq;
                        } else if seq > *last {
                            lost += seq - *last - 1;
                            *last = seq;
                        } else {
                            reordered += 1;
                        }
                    }
                    _ => errors += 1,
                }
                if let (Some(h), Some(ts)) = (hist.as_mut(), ts) {
                    h.saturating_record(((now - ts).max(0) / 1000) as u64);
                }
            }
            Event::Ack { .. } => acks += 1,
            Event::Refusal => {
                errors += 1;
                acks += 1;
            }
            Event::Snapshot => {
                // A resync: this client fell behind and the server dropped its queue.
                errors += 1;
                resync = Some(Vec::new());
            }
            Event::Model { oid, seq } => {
                if let Some(r) = resync.as_mut() {
                    r.push((oid, seq));
                }
            }
            Event::Hello | Event::Other => {}
        });
        drop(hist);
        if let Some(models) = resync {
            seqs = Seqs::from_models(&models)?;
        }
        run.deliveries.fetch_add(n, Relaxed);
        if lost > 0 {
            run.lost.fetch_add(lost, Relaxed);
        }
        if reordered > 0 {
            run.reordered.fetch_add(reordered, Relaxed);
        }
        if errors > 0 {
            run.errors.fetch_add(errors, Relaxed);
        }
        if let (Some(link), true) = (&link, acks > 0) {
            link.acked.fetch_add(acks, Relaxed);
            link.notify.notify_one();
        }
    }
    // Whatever did not arrive by the end is lost.
    if let Some(finals) = run.finals.get() {
        let missing: u64 = finals
            .iter()
            .zip(&seqs.last)
            .map(|(f, l)| f.saturating_sub(*l))
            .sum();
        run.lost.fetch_add(missing, Relaxed);
    }
    Ok(())
}

/// What a writer did.
pub(crate) struct Written {
    pub(crate) sent: u64,
    /// (oid, last seq) of the players it owns.
    pub(crate) finals: Vec<(u64, u64)>,
}

/// Changes its players (round robin) at `rate` (its share) or as fast as acks allow.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn writer(
    w: usize,
    writers: usize,
    mut sink: Sink,
    oids: Vec<u64>,
    link: Arc<Link>,
    run: Arc<Run>,
    rate: Rate,
    window: u64,
) -> Result<Written, String> {
    let mine: Vec<u64> = oids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % writers == w)
        .map(|(_, o)| *o)
        .collect();
    let mut seq = vec![0u64; mine.len()];
    let mut next = 0usize;
    let mut sent = 0u64;
    let start = Instant::now();
    let mut buf = String::with_capacity(160);
    while !run.writers_stop.load(Relaxed) && !mine.is_empty() {
        let notified = pin!(link.notify.notified());
        let room = window.saturating_sub(sent - link.acked.load(Relaxed));
        let n = match rate {
            Rate::Max => room,
            Rate::PerSecond(total) => {
                let due = (start.elapsed().as_secs_f64() * total / writers as f64) as u64;
                due.saturating_sub(sent).min(room)
            }
        };
        if n == 0 {
            let wait = match rate {
                Rate::Max => Duration::from_millis(50),
                Rate::PerSecond(_) => Duration::from_millis(1),
            };
            tokio::select! {
                _ = notified, if rate == Rate::Max => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        for _ in 0..n {
            let i = next;
            next = (next + 1) % mine.len();
            seq[i] += 1;
            sent += 1;
            let s = seq[i];
            let ts = run.epoch.elapsed().as_nanos() as i64;
            buf.clear();
            let _ = write!(
                buf,
                r#"{{"t":"change","id":{sent},"c":"players","oid":{},"set":{{"x":{},"y":{},"seq":{s},"ts":{ts}}}}}"#,
                mine[i],
                s % 640,
                (s / 640) % 400,
            );
            sink.feed(Message::text(buf.as_str()))
                .await
                .map_err(|e| format!("writer {w}: {e}"))?;
        }
        sink.flush().await.map_err(|e| format!("writer {w}: {e}"))?;
    }
    // Wait for the answers to everything sent.
    let deadline = Instant::now() + Duration::from_secs(60);
    while link.acked.load(Relaxed) < sent {
        if Instant::now() > deadline {
            return Err(format!(
                "writer {w}: {} changes never acknowledged",
                sent - link.acked.load(Relaxed)
            ));
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), link.notify.notified()).await;
    }
    drop(sink);
    Ok(Written {
        sent,
        finals: mine.into_iter().zip(seq).collect(),
    })
}

/// The slow client: takes its snapshot, stops reading until `resume`, then reads until it holds
/// the final state.
pub(crate) async fn slow_client(
    url: Arc<str>,
    run: Arc<Run>,
    resume: Arc<Notify>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<SlowReport, String> {
    let (sink, mut stream) = connect(&url).await?.split();
    let models = read_snapshot(&mut stream).await?;
    let mut seqs = Seqs::from_models(&models)?;
    let _ = ready.send(());
    resume.notified().await;
    let start = Instant::now();
    let mut resyncs = 0;
    let finals = run.finals.get().cloned().unwrap_or_default();
    let done = |seqs: &Seqs| finals.iter().zip(&seqs.last).all(|(f, l)| l >= f);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done(&seqs) {
        let msg = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => break,
            Ok(Some(Ok(msg))) => msg,
            Ok(_) => break,
        };
        let Message::Text(text) = msg else { continue };
        let mut resync: Option<Vec<(u64, u64)>> = None;
        scan(text.as_bytes(), |e| match e {
            Event::Snapshot => {
                resyncs += 1;
                resync = Some(Vec::new());
            }
            Event::Model { oid, seq } => {
                if let Some(r) = resync.as_mut() {
                    r.push((oid, seq));
                }
            }
            Event::Change {
                oid, seq: Some(s), ..
            } => {
                if let Some(r) = resync.take() {
                    seqs = Seqs::from_models(&r).unwrap_or(Seqs {
                        first_oid: 1,
                        last: Vec::new(),
                    });
                }
                if let Some(l) = seqs.slot(oid) {
                    *l = (*l).max(s);
                }
            }
            _ => {}
        });
        if let Some(r) = resync {
            seqs = Seqs::from_models(&r)?;
        }
    }
    drop(sink);
    Ok(SlowReport {
        stopped_after_snapshot: true,
        caught_up: done(&seqs),
        catch_up_secs: start.elapsed().as_secs_f64(),
        resyncs,
    })
}
