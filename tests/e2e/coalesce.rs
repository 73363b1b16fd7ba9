//! `Config::coalesce`: a connection's messages gathered into one frame per window.

use std::time::{Duration, Instant};

use omni_runtime::prelude::*;
use omni_tests::TestServer;

#[derive(Model, Clone, Default)]
struct Tick {
    n: u64,
}
impl Permissions<()> for Tick {}

#[collection(model = Tick)]
struct Ticks;
impl CollectionPermissions<()> for Ticks {}

/// The `omni_frames_sent_total` counter.
fn frames(srv: &TestServer<()>) -> f64 {
    srv.server
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix("omni_frames_sent_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("omni_frames_sent_total")
}

/// Ten changes 5 ms apart (50 ms in all): how many frames reached the client, and how long
/// until it held the last.
async fn burst(coalesce: Duration) -> (f64, Duration) {
    let app = Omni::<()>::new()
        .config(Config {
            coalesce,
            ..Config::default()
        })
        .collection(Ticks::with([Tick::default()]));
    let srv = TestServer::start(app).await;
    let mut c = srv.client().await;
    let ticks = srv.server.world().collection::<Ticks>();
    let oid = ticks.all()[0].0;
    let before = frames(&srv);
    let start = Instant::now();
    for n in 1..=10 {
        ticks
            .update(oid, move |t| {
                t.set_n(n);
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.wait_model::<Ticks>(oid, |t| t.n == 10).await.unwrap();
    (frames(&srv) - before, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_gathers_a_burst_into_one_frame_and_bounds_the_wait() {
    // Off (the default): each change goes out as it comes.
    let (plain, _) = burst(Duration::ZERO).await;
    assert!(plain >= 6.0, "{plain} frames for 10 changes 5 ms apart");
    // A 300 ms window: the 50 ms burst fits in one or two windows.
    let (coalesced, took) = burst(Duration::from_millis(300)).await;
    assert!(
        coalesced <= 3.0,
        "{coalesced} frames for 10 changes within a 300 ms window"
    );
    // The last change waited for its window's end, and not much longer.
    assert!(took < Duration::from_millis(2_000), "took {took:?}");
}
