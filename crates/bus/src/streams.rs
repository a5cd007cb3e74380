//! Stream specs in code, created or updated idempotently at start.
//!
//! Every Amai stream uses file storage, forbids deleting and purging messages
//! (the history is the source of truth), deduplicates on `Nats-Msg-Id` within a
//! window, and has a configurable replica count (1 in dev, 3 on a cluster).
//!
//! [`ensure_streams`] only *reads* a stream that already matches its spec, so
//! processes whose NATS user holds no stream admin rights (see
//! `deploy/nats/accounts.conf`) start once an admin has created the streams
//! (`amai streams ensure` with the admin user).

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::subjects::AggregateKind;

/// Largest encoded event a stream accepts (the store enforces its own, usually
/// smaller, limit first with a precise error).
pub const STREAM_MAX_MESSAGE_BYTES: i32 = 1024 * 1024;

/// How the streams are laid out.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    /// Replica count of every stream (1 dev, 3 cluster).
    pub replicas: usize,
    /// Deduplication window on `Nats-Msg-Id`.
    pub dedup_window: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            dedup_window: Duration::from_secs(120),
        }
    }
}

/// The settings every Amai stream shares: file storage, no deletes or
/// purges, the dedup window, replicas, unlimited retention.
fn amai_stream(name: &str, description: String, settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        description: Some(description),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        deny_delete: true,
        deny_purge: true,
        duplicate_window: settings.dedup_window,
        num_replicas: settings.replicas,
        max_message_size: STREAM_MAX_MESSAGE_BYTES,
        max_consumers: -1,
        max_messages: -1,
        max_bytes: -1,
        ..Default::default()
    }
}

/// The stream config of one aggregate kind.
pub fn stream_config(kind: AggregateKind, settings: &StreamSettings) -> stream::Config {
    stream::Config {
        subjects: vec![kind.stream_subject()],
        ..amai_stream(
            kind.stream(),
            format!(
                "amai {} aggregates ({})",
                kind.as_str(),
                kind.stream_subject()
            ),
            settings,
        )
    }
}

pub use crate::subjects::{TRUST_FEED_SOURCES, TRUST_FEED_STREAM};

/// The trust feed's stream config (sources only, no subjects of its own).
pub fn trust_feed_config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        sources: Some(
            TRUST_FEED_SOURCES
                .iter()
                .map(|kind| stream::Source {
                    name: kind.stream().to_string(),
                    filter_subject: Some(kind.stream_subject()),
                    ..Default::default()
                })
                .collect(),
        ),
        ..amai_stream(
            TRUST_FEED_STREAM,
            "amai trust feed: agent, llm, jail and lifecycle events in one order".to_string(),
            settings,
        )
    }
}

/// Every stream Amai runs on: one per aggregate kind, then the trust feed
/// (which sources some of them, so it comes last).
pub fn all_stream_configs(settings: &StreamSettings) -> Vec<stream::Config> {
    let mut configs: Vec<_> = AggregateKind::ALL
        .into_iter()
        .map(|kind| stream_config(kind, settings))
        .collect();
    configs.push(trust_feed_config(settings));
    configs
}

/// Why the streams could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot create or update stream {stream}: {detail}. Is nats-server running with JetStream enabled (-js)? \
With NATS accounts, streams are created by the admin user: run `amai streams ensure` with its credentials")]
pub struct EnsureStreamsError {
    /// The stream that failed.
    pub stream: String,
    /// The server's answer.
    pub detail: String,
}

/// Whether a stream's current config already has everything `spec` sets.
pub fn matches_spec(current: &stream::Config, spec: &stream::Config) -> bool {
    current.subjects == spec.subjects
        && current.storage == spec.storage
        && current.retention == spec.retention
        && current.deny_delete == spec.deny_delete
        && current.deny_purge == spec.deny_purge
        && current.duplicate_window == spec.duplicate_window
        && current.num_replicas == spec.num_replicas
        && current.max_message_size == spec.max_message_size
        && current.max_messages == spec.max_messages
        && current.max_bytes == spec.max_bytes
        && current.max_consumers == spec.max_consumers
        && current.description == spec.description
        && sources_match(current, spec)
}

fn sources_match(current: &stream::Config, spec: &stream::Config) -> bool {
    let key = |c: &stream::Config| {
        let mut v: Vec<(String, Option<String>)> = c
            .sources
            .iter()
            .flatten()
            .map(|s| (s.name.clone(), s.filter_subject.clone()))
            .collect();
        v.sort();
        v
    };
    key(current) == key(spec)
}

/// Creates every Amai stream, or updates it to the spec if it differs. A stream
/// that already matches is only read (`STREAM.INFO`), never written.
pub async fn ensure_streams(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<(), EnsureStreamsError> {
    for config in all_stream_configs(settings) {
        if let Ok(existing) = js.get_stream(&config.name).await {
            if matches_spec(&existing.cached_info().config, &config) {
                continue;
            }
        }
        let name = config.name.clone();
        js.create_or_update_stream(config)
            .await
            .map_err(|e| EnsureStreamsError {
                stream: name,
                detail: e.to_string(),
            })?;
    }
    Ok(())
}
