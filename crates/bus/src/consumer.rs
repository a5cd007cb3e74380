//! Reading streams: ordered replays (from a sequence, a time, the start or only
//! new events) and shared durable pull consumers (work queues across instances).

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, consumer::pull, consumer::DeliverPolicy};
use futures::{Stream, StreamExt};

use crate::store::StoredEvent;

/// Where a replay starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// From the first event.
    All,
    /// From this stream sequence (inclusive).
    Sequence(u64),
    /// From the first event published at or after this time.
    Time(time::OffsetDateTime),
    /// Only events published from now on.
    New,
}

impl StartAt {
    fn deliver_policy(&self) -> DeliverPolicy {
        match self {
            StartAt::All => DeliverPolicy::All,
            StartAt::Sequence(0) => DeliverPolicy::All,
            StartAt::Sequence(s) => DeliverPolicy::ByStartSequence { start_sequence: *s },
            StartAt::Time(t) => DeliverPolicy::ByStartTime { start_time: *t },
            StartAt::New => DeliverPolicy::New,
        }
    }
}

/// Why a consumer could not be created or read.
#[derive(Debug, thiserror::Error)]
#[error("consumer on {stream}: {detail}")]
pub struct ConsumerError {
    /// The stream.
    pub stream: String,
    /// What failed.
    pub detail: String,
}

/// A replayed event and how many more the consumer knew of at that moment
/// (0 = caught up).
pub type ReplayItem = Result<(StoredEvent, u64), ConsumerError>;

/// An ordered replay: a boxed stream of events in stream order.
pub type Replay = Pin<Box<dyn Stream<Item = ReplayItem> + Send>>;

/// Opens an ordered (ephemeral, gap-free, self-healing) replay of `stream`,
/// optionally filtered to one subject.
///
/// The ephemeral consumer behind it does not survive a nats-server restart, and
/// the client library only notices a lost consumer after missed heartbeats
/// (tens of seconds). So the replay also watches the connection: after a
/// reconnect it reopens itself right after the last event it delivered, and
/// consumers (projections, subscriptions) stall for about a second, not half a
/// minute.
pub async fn replay(
    js: &jetstream::Context,
    stream: &str,
    filter_subject: Option<String>,
    start: StartAt,
) -> Result<Replay, ConsumerError> {
    let next = match start {
        // Reopening "new only" later must not skip what arrived in between.
        StartAt::New => Some(
            js.get_stream(stream)
                .await
                .map_err(|e| ConsumerError {
                    stream: stream.to_string(),
                    detail: e.to_string(),
                })?
                .cached_info()
                .state
                .last_sequence
                + 1,
        ),
        _ => None,
    };
    let inner = open_ordered(js, stream, filter_subject.clone(), start.clone()).await?;
    let stats = js.client().statistics();
    let mut tick = tokio::time::interval(RECONNECT_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = ReplayState {
        js: js.clone(),
        stream: stream.to_string(),
        filter_subject,
        start,
        next,
        connects: stats.connects.load(Ordering::Relaxed),
        stats,
        inner,
        tick,
    };
    Ok(Box::pin(futures::stream::unfold(
        state,
        |mut st| async move {
            loop {
                tokio::select! {
                    item = st.inner.next() => {
                        if let Some(Ok((ev, _))) = &item {
                            st.next = Some(ev.position.seq + 1);
                        }
                        return item.map(|i| (i, st));
                    }
                    _ = st.tick.tick() => {
                        let connects = st.stats.connects.load(Ordering::Relaxed);
                        if connects != st.connects {
                            st.connects = connects;
                            let start = st.next.map(StartAt::Sequence).unwrap_or_else(|| st.start.clone());
                            tracing::debug!(stream = %st.stream, ?start, "nats reconnected; reopening the replay");
                            match open_ordered(&st.js, &st.stream, st.filter_subject.clone(), start).await {
                                Ok(inner) => st.inner = inner,
                                Err(e) => return Some((Err(e), st)),
                            }
                        }
                    }
                }
            }
        },
    )))
}

/// How often a replay checks whether the connection was re-established.
const RECONNECT_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

struct ReplayState {
    js: jetstream::Context,
    stream: String,
    filter_subject: Option<String>,
    start: StartAt,
    /// Stream sequence to reopen at: right after the last delivered event.
    next: Option<u64>,
    connects: u64,
    stats: std::sync::Arc<async_nats::Statistics>,
    inner: Replay,
    tick: tokio::time::Interval,
}

async fn open_ordered(
    js: &jetstream::Context,
    stream: &str,
    filter_subject: Option<String>,
    start: StartAt,
) -> Result<Replay, ConsumerError> {
    let err = |d: String| ConsumerError {
        stream: stream.to_string(),
        detail: d,
    };
    let s = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| err(e.to_string()))?;
    let config = pull::OrderedConfig {
        filter_subject: filter_subject.unwrap_or_default(),
        deliver_policy: start.deliver_policy(),
        ..Default::default()
    };
    let consumer = s
        .create_consumer(config)
        .await
        .map_err(|e| err(e.to_string()))?;
    let messages = consumer.messages().await.map_err(|e| err(e.to_string()))?;
    let stream_name = stream.to_string();
    Ok(Box::pin(messages.map(move |m| {
        let m = m.map_err(|e| ConsumerError {
            stream: stream_name.clone(),
            detail: e.to_string(),
        })?;
        let info = m.info().map_err(|e| ConsumerError {
            stream: stream_name.clone(),
            detail: e.to_string(),
        })?;
        let (seq, pending, published) = (info.stream_sequence, info.pending, info.published);
        let subject = m.subject.to_string();
        Ok((
            crate::reads::stored_event(
                &stream_name,
                seq,
                subject,
                published,
                m.payload.clone(),
                m.headers.as_ref(),
            ),
            pending,
        ))
    })))
}

/// Settings of a shared durable pull consumer (builder style).
#[derive(Clone, Debug)]
pub struct WorkConsumerConfig {
    durable: String,
    stream: String,
    filter_subject: Option<String>,
    ack_wait: Duration,
    max_deliver: i64,
    backoff: Vec<Duration>,
    max_ack_pending: i64,
}

impl WorkConsumerConfig {
    /// A shared consumer named `durable` on `stream`.
    pub fn new(stream: impl Into<String>, durable: impl Into<String>) -> Self {
        Self {
            durable: durable.into(),
            stream: stream.into(),
            filter_subject: None,
            ack_wait: Duration::from_secs(30),
            max_deliver: 8,
            backoff: vec![
                Duration::from_millis(200),
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(15),
            ],
            max_ack_pending: 1024,
        }
    }

    /// Only subjects matching this filter.
    pub fn filter_subject(mut self, subject: impl Into<String>) -> Self {
        self.filter_subject = Some(subject.into());
        self
    }

    /// How long a delivery may stay unacknowledged before redelivery.
    pub fn ack_wait(mut self, d: Duration) -> Self {
        self.ack_wait = d;
        self
    }

    /// Deliveries before the server gives up on a message.
    pub fn max_deliver(mut self, n: i64) -> Self {
        self.max_deliver = n;
        self
    }

    /// Deliveries handed out and not yet acknowledged, at most (the rest wait
    /// in the stream: a work queue).
    pub fn max_ack_pending(mut self, n: i64) -> Self {
        self.max_ack_pending = n;
        self
    }

    /// The configured maximum of unacknowledged deliveries.
    pub fn get_max_ack_pending(&self) -> i64 {
        self.max_ack_pending
    }

    /// The configured maximum deliveries.
    pub fn get_max_deliver(&self) -> i64 {
        self.max_deliver
    }

    /// The stream name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The durable consumer's name.
    pub fn durable(&self) -> &str {
        &self.durable
    }
}

/// Creates (or binds to) a shared durable pull consumer: every instance that binds
/// the same durable name shares the work.
pub async fn work_consumer(
    js: &jetstream::Context,
    cfg: &WorkConsumerConfig,
) -> Result<consumer::PullConsumer, ConsumerError> {
    let err = |d: String| ConsumerError {
        stream: cfg.stream.clone(),
        detail: d,
    };
    let s = js
        .get_stream_no_info(&cfg.stream)
        .await
        .map_err(|e| err(e.to_string()))?;
    let backoff = if cfg.backoff.len() as i64 <= cfg.max_deliver {
        cfg.backoff.clone()
    } else {
        Vec::new()
    };
    let config = pull::Config {
        durable_name: Some(cfg.durable.clone()),
        filter_subject: cfg.filter_subject.clone().unwrap_or_default(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: cfg.ack_wait,
        max_deliver: cfg.max_deliver,
        backoff,
        max_ack_pending: cfg.max_ack_pending,
        deliver_policy: DeliverPolicy::All,
        ..Default::default()
    };
    s.get_or_create_consumer(&cfg.durable, config)
        .await
        .map_err(|e| err(e.to_string()))
}
