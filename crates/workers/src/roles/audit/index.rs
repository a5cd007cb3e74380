//! The checkpoint index: which event of AMAI_AUDIT holds the checkpoint of a
//! stream at a given size, so `checkpoint` queries for an exact size (a
//! witness's old size, an auditor's) are one lookup. Built by a replay of
//! AMAI_AUDIT; only checkpoints whose signature verifies and whose signer is
//! this deployment's audit service are indexed (anything else there is a
//! forgery for auditors to report, not an answer to serve). The index and its
//! replay position are written in one atomic batch.

use std::sync::Arc;
use std::time::Duration;

use amai_bus::consumer::{self, StartAt};
use amai_bus::subjects::AggregateKind;
use amai_bus::EventStore;
use futures::StreamExt;

use super::checkpointer::{decode_checkpoint, AuditLog};
use crate::role::Task;

/// Key of the last AMAI_AUDIT sequence indexed.
const POSITION_KEY: &[u8] = b"m/position";

/// The index, in sled tree `audit-index`.
#[derive(Clone, Debug)]
pub struct CheckpointIndex {
    tree: sled::Tree,
}

fn key(stream: &str, size: u64) -> Vec<u8> {
    let mut k = prefix(stream);
    k.extend_from_slice(&size.to_be_bytes());
    k
}

fn prefix(stream: &str) -> Vec<u8> {
    let mut k = b"c/".to_vec();
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k
}

fn be(v: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes)
}

impl CheckpointIndex {
    /// Opens the index.
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(Self {
            tree: db.open_tree("audit-index")?,
        })
    }

    /// The AMAI_AUDIT sequence of the checkpoint of `stream` at `size`.
    pub fn find(&self, stream: &str, size: u64) -> Result<Option<u64>, sled::Error> {
        Ok(self.tree.get(key(stream, size))?.and_then(|v| be(&v)))
    }

    /// The last AMAI_AUDIT sequence indexed.
    pub fn position(&self) -> Result<u64, sled::Error> {
        Ok(self
            .tree
            .get(POSITION_KEY)?
            .and_then(|v| be(&v))
            .unwrap_or(0))
    }

    fn record(&self, entries: &[(String, u64, u64)], last_seq: u64) -> Result<(), sled::Error> {
        let mut batch = sled::Batch::default();
        for (stream, size, seq) in entries {
            batch.insert(key(stream, *size), &seq.to_be_bytes()[..]);
        }
        batch.insert(POSITION_KEY, &last_seq.to_be_bytes()[..]);
        self.tree.apply_batch(batch)
    }
}

/// The index task.
pub(crate) fn task(log: Arc<AuditLog>, store: EventStore) -> Task {
    Task {
        name: "audit checkpoint index".to_string(),
        run: Box::new(move |shutdown| {
            Box::pin(async move {
                tokio::select! {
                    r = run(&log, &store) => r,
                    _ = shutdown => Ok(()),
                }
            })
        }),
    }
}

async fn run(log: &AuditLog, store: &EventStore) -> Result<(), String> {
    let stream = AggregateKind::Audit.stream();
    loop {
        let from = log.index.position().map_err(|e| e.to_string())? + 1;
        let mut replay = match consumer::replay(
            store.jetstream(),
            stream,
            None,
            StartAt::Sequence(from),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "audit index: cannot open the replay yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(item) = replay.next().await {
            let (stored, _) = match item {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "audit index: replay failed; reopening");
                    break;
                }
            };
            let mut entries = Vec::new();
            let genuine = match amai_bus::verify::verify_stored(&stored) {
                Ok(ev) if ev.actor() == log.signer.id => {
                    ev.signer == log.signer.keys.public_key()
                        || is_service_key(store, &log.signer.id, &ev.signer).await
                }
                _ => false,
            };
            match decode_checkpoint(&stored.payload) {
                Some(c) if genuine => entries.push((c.stream, c.tree_size, stored.position.seq)),
                _ => tracing::warn!(seq = stored.position.seq, "audit index: AMAI_AUDIT holds a message that is no checkpoint of this audit service; not indexed"),
            }
            log.index
                .record(&entries, stored.position.seq)
                .map_err(|e| e.to_string())?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Whether `key` is one of the (rotated) keys of the audit service `id`.
async fn is_service_key(store: &EventStore, id: &str, key: &ed25519_dalek::VerifyingKey) -> bool {
    match store.identity_state(id).await {
        Ok(state) => state.keys.iter().any(|k| &k.signing_key == key),
        Err(_) => false,
    }
}
