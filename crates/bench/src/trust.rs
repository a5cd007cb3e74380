//! The trust phase of `amai bench`: how fast the trust role analyses evidence,
//! against the identity projection's replay rate measured in the same run, and
//! `GetTrust` latency through the gateway under an open-loop load.
//!
//! 1. Waits until the trust feed has sourced everything appended so far (the
//!    agents' actions of the earlier phases).
//! 2. Replays the whole feed into a fresh trust projection (new sled): the
//!    fold verifies every event as any projection does and runs the model on
//!    it; events per second is `trust_events_per_s`, and its ratio to the
//!    identity projection's fresh replay rate is `trust_vs_projection` (goal:
//!    at least 0.8, the analysis must not be the bottleneck).
//! 3. Starts the trust role (as `amai up` does), lets its publisher drain, then
//!    asks `GetTrust` for random agents at [`GET_TRUST_RPS`] requests a second.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amai_bus::streams::{TRUST_FEED_SOURCES, TRUST_FEED_STREAM};
use amai_projections::ProjectionRunner;
use amai_trust::TrustConfig;
use amai_workers::roles::trust::TrustProjection;

use crate::error::{Context as _, Fail};
use crate::load::{open_loop, Latency, XorShift};
use crate::platform::Platform;
use crate::report::fmt_int;
use crate::{wait_positions, Sizes, WAIT};

/// Open-loop rate of the GetTrust latency test.
pub const GET_TRUST_RPS: u32 = 2_000;

/// What the trust phase measured.
#[derive(Debug, Default)]
pub(crate) struct TrustFigures {
    /// Feed events the fresh trust projection folded.
    pub(crate) events: u64,
    /// How long that took.
    pub(crate) secs: f64,
    /// `events / secs`.
    pub(crate) events_per_s: f64,
    /// `GetTrust` through the gateway.
    pub(crate) get_trust: Latency,
}

impl TrustFigures {
    /// The trust fold's rate over the identity projection's replay rate.
    pub(crate) fn vs_projection(&self, projection_per_s: f64) -> f64 {
        self.events_per_s / projection_per_s
    }
}

/// Messages in `stream`.
async fn messages(p: &Platform, stream: &str) -> Result<u64, Fail> {
    let mut s =
        p.js.get_stream(stream)
            .await
            .with_context(|| format!("stream {stream}"))?;
    Ok(s.info().await?.state.messages)
}

/// Waits until the feed holds every message of the streams it sources.
async fn feed_caught_up(p: &Platform) -> Result<u64, Fail> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut sources = 0;
        for kind in TRUST_FEED_SOURCES {
            sources += messages(p, kind.stream()).await?;
        }
        let feed = messages(p, TRUST_FEED_STREAM).await?;
        if feed >= sources {
            return Ok(feed);
        }
        if Instant::now() > deadline {
            return Err(Fail::msg(format!(
                "the trust feed holds {feed} of the {sources} events it sources"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn measure(
    p: &mut Platform,
    sizes: &Sizes,
    scratch: &Path,
    agent_ids: Arc<Vec<String>>,
) -> Result<TrustFigures, Fail> {
    let mut figures = TrustFigures::default();
    let feed = feed_caught_up(p).await?;
    let end = amai_bus::Position::new(TRUST_FEED_STREAM, feed);

    let dir = scratch.join("fresh-trust-projection");
    let db = sled::open(&dir).with_context(|| format!("cannot open {}", dir.display()))?;
    let store = amai_bus::EventStore::new(p.js.clone(), p.store_config.clone());
    let started = Instant::now();
    let handle = ProjectionRunner::spawn(
        db.clone(),
        store,
        Arc::new(TrustProjection::new(TrustConfig::default())),
        std::future::pending(),
    )
    .await?;
    handle.caught_up().await;
    wait_positions(&handle, std::slice::from_ref(&end)).await?;
    figures.secs = started.elapsed().as_secs_f64();
    handle.shutdown();
    handle.stopped().await;
    drop(db);
    figures.events = feed;
    figures.events_per_s = feed as f64 / figures.secs;
    p.say(&format!(
        "trust analysis  {:>8} events {:>10}/s  (fresh fold of the feed, {:.2} s)",
        fmt_int(feed as f64),
        fmt_int(figures.events_per_s),
        figures.secs
    ));

    p.start_trust_role().await?;
    p.say("trust role started and caught up");
    let sdk = amai_client::AmaiClient::connect(p.gateway_url.clone()).await?;
    for id in agent_ids.iter().take(16) {
        sdk.trust(id).await.context("GetTrust warm-up")?;
    }
    let mut rng = XorShift::seeded();
    figures.get_trust = open_loop(GET_TRUST_RPS, sizes.latency_for, |_| {
        let (sdk, ids) = (sdk.clone(), agent_ids.clone());
        let i = rng.pick(ids.len());
        async move {
            tokio::time::timeout(WAIT, sdk.trust(&ids[i]))
                .await
                .map_err(|_| Fail::msg("GetTrust timed out"))?
                .map(|_| ())
                .map_err(Fail::from)
        }
    })
    .await;
    p.say(&format!(
        "get_trust       at {} rps: {}",
        fmt_int(f64::from(GET_TRUST_RPS)),
        figures.get_trust.summary()
    ));
    Ok(figures)
}
