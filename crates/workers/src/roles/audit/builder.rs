//! The tree builder of one stream: an ordered replay of the stream from the
//! tree's size + 1, read in batches (the next message, awaited, then whatever
//! the replay already holds, up to the configured batch), each appended to the
//! stored tree in one atomic write ([`super::tree::StreamTree::append`]). Every
//! message counts, whatever it holds: the tree commits to the stream's bytes,
//! and judging them is the auditors' job. After a crash the builder resumes
//! at the stored size, so no leaf is appended twice or skipped.

use std::sync::Arc;
use std::time::Duration;

use amai_bus::consumer::{self, StartAt};
use amai_bus::EventStore;
use futures::{FutureExt, StreamExt};

use amai_bus::proto::payload::Kind;
use amai_bus::subjects::AggregateKind;
use amai_checkpoint::VerifierKey;

use super::checkpointer::AuditLog;
use super::tree::FoundCosignature;
use crate::role::Task;

/// The event type of a witness's cosignature record.
const COSIGNED: &str = "audit.checkpoint_cosigned";

/// How long to wait before reopening a replay that failed.
const RETRY: Duration = Duration::from_secs(1);

/// The builder task of `stream`.
pub(crate) fn task(log: Arc<AuditLog>, stream: String, store: EventStore) -> Task {
    Task {
        name: format!("audit tree {stream}"),
        run: Box::new(move |shutdown| {
            Box::pin(async move {
                tokio::select! {
                    r = build(&log, &stream, &store) => r,
                    _ = shutdown => Ok(()),
                }
            })
        }),
    }
}

/// Builds forever (until an unrecoverable storage error).
async fn build(log: &AuditLog, stream: &str, store: &EventStore) -> Result<(), String> {
    let Some(slog) = log.streams.get(stream) else {
        return Err(format!("stream {stream} is not audited"));
    };
    loop {
        let size = slog.tree.size().map_err(|e| e.to_string())?;
        let mut replay =
            match consumer::replay(store.jetstream(), stream, None, StartAt::Sequence(size + 1))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(stream, error = %e, "audit tree: cannot open the replay yet");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
        loop {
            let Some(first) = replay.next().await else {
                break;
            };
            let (first, mut pending) = match first {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(stream, error = %e, "audit tree: replay failed; reopening");
                    break;
                }
            };
            let mut cosignatures = Vec::new();
            let mut significant = None;
            if !cosignature_in(&first, &mut cosignatures) {
                significant = Some(first.position.seq);
            }
            let mut batch = vec![(first.position.seq, first.hash)];
            while pending > 0 && batch.len() < log.config.max_batch {
                match replay.next().now_or_never() {
                    Some(Some(Ok((ev, p)))) => {
                        if !cosignature_in(&ev, &mut cosignatures) {
                            significant = Some(ev.position.seq);
                        }
                        batch.push((ev.position.seq, ev.hash));
                        pending = p;
                    }
                    _ => break,
                }
            }
            let new_size = slog
                .tree
                .append(&batch, &cosignatures)
                .map_err(|e| e.to_string())?;
            slog.grew(new_size, significant);
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Collects a witness's `audit.checkpoint_cosigned` (an action on its own
/// chain, so in AMAI_AGENTS): kept when the event's signature verifies and
/// the witness key it names is the key that signed the event. Whether the
/// cosignature itself verifies is checked by whoever relies on it, against
/// the witness keys it trusts.
///
/// Returns whether the message is such a record (whatever its fate): those
/// do not count as growth for interval checkpoints.
fn cosignature_in(stored: &amai_bus::store::StoredEvent, out: &mut Vec<FoundCosignature>) -> bool {
    if stored.position.stream != AggregateKind::Agent.stream()
        || stored.event_type.as_deref() != Some(COSIGNED)
    {
        return false;
    }
    let Ok(ev) = amai_bus::verify::verify_stored(stored) else {
        return true;
    };
    let Kind::AuditCheckpointCosigned(c) = &ev.payload else {
        return true;
    };
    let own_key = c
        .witness_vkey
        .parse::<VerifierKey>()
        .is_ok_and(|v| v.verifying_key() == &ev.signer);
    if own_key {
        out.push(FoundCosignature {
            origin: c.origin.clone(),
            size: c.tree_size,
            witness: c.witness_name.clone(),
            vkey: c.witness_vkey.clone(),
            line: c.cosignature.clone(),
        });
    }
    true
}
