//! The cassette importer: for each `llm.session_opened` naming a cassette blob,
//! the llm service appends the cassette's interactions to the new session's
//! stream `llm/<session_id>`, in cassette order, caused by the owner's action.
//!
//! A cassette is untrusted data: it is parsed strictly
//! ([`amai_llm::cassette::Cassette::from_json`]), nothing in it is executed or
//! used as an address, and the request hash and occurrence of every
//! interaction are recomputed from its request body under the new session's
//! options (the hash a cassette claims is never used). Misses are not imported
//! (they are history of the exported session). Outputs are chained
//! ([`PlannedOutput::after_previous`]) with ids derived from the action, so a
//! redelivery, a crash mid-import or a second instance finds the outputs
//! already there and appends none twice. An unreadable or invalid cassette is
//! a poison input: its `reactor.failed` record on `failure/llm` says why.

use std::collections::HashMap;

use amai_bus::blob::BlobStore;
use amai_bus::consumer::WorkConsumerConfig;
use amai_bus::proto::{self, payload::Kind};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventStore, VerifiedEvent, ZERO_HASH};
use amai_llm::canonical::{self, IgnoredFields};
use amai_llm::cassette::Cassette;

use crate::reactor::{PlannedOutput, ReactError, ReactFuture, Reactor};

/// Appends the interactions of imported cassettes.
#[derive(Debug, Clone)]
pub struct CassetteImporter {
    blob_threshold: usize,
}

impl CassetteImporter {
    /// An importer keeping bodies over `blob_threshold` bytes in the blob store.
    pub fn new(blob_threshold: usize) -> Self {
        Self { blob_threshold }
    }
}

impl Reactor for CassetteImporter {
    fn role(&self) -> &'static str {
        super::NAME
    }

    fn subscription(&self) -> WorkConsumerConfig {
        WorkConsumerConfig::new(AggregateKind::Agent.stream(), "llm-cassette-import")
            .filter_subject(AggregateKind::Agent.stream_subject())
    }

    fn react<'a>(&'a self, store: &'a EventStore, input: &'a VerifiedEvent) -> ReactFuture<'a> {
        Box::pin(async move {
            let Kind::LlmSessionOpened(open) = &input.payload else {
                return Ok(Vec::new());
            };
            let Some(cassette_ref) = &open.cassette else {
                return Ok(Vec::new());
            };
            let poison = |what: String| ReactError::Poison(format!("cassette import: {what}"));
            let expected = amai_bus::llm::session_id(&input.aggregate.id, &input.body.id);
            if open.session_id != expected {
                return Err(poison(format!(
                    "session id {:?} is not derived from the action",
                    open.session_id
                )));
            }
            let aggregate = Aggregate::new(AggregateKind::Llm, &open.session_id)
                .map_err(|e| poison(e.to_string()))?;
            let blobs = BlobStore::open(store.jetstream(), 1, self.blob_threshold)
                .await
                .map_err(|e| ReactError::Transient(e.to_string()))?;
            let digest: [u8; 32] = cassette_ref
                .sha256
                .as_slice()
                .try_into()
                .map_err(|_| poison("the cassette reference is not a SHA-256".into()))?;
            let data = blobs.get(&digest).await.map_err(|e| {
                // A missing blob never appears later for this action: poison.
                poison(format!(
                    "cannot read cassette blob {}: {e}",
                    hex::encode(digest)
                ))
            })?;
            let cassette = Cassette::from_json(&data).map_err(|e| poison(e.to_string()))?;
            let options = open.options.clone().unwrap_or_default();
            let ignored = IgnoredFields::from_options(&options);
            let mut counts: HashMap<[u8; 32], u32> = HashMap::new();
            let mut outputs = Vec::with_capacity(cassette.interactions.len());
            for (index, entry) in cassette.interactions.iter().enumerate() {
                let body = entry.request.0.clone();
                let json = if entry.method.eq_ignore_ascii_case("GET") {
                    None
                } else {
                    Some(
                        serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| {
                            poison(format!(
                                "interaction {index}: request body is not JSON: {e}"
                            ))
                        })?,
                    )
                };
                let request_hash =
                    canonical::request_hash(&entry.method, &entry.path, json.as_ref(), &ignored)
                        .map_err(|e| poison(format!("interaction {index}: {e}")))?;
                let occurrence = counts.entry(request_hash).or_default();
                let request = super::body::to_llm_body(&blobs, &body, self.blob_threshold)
                    .await
                    .map_err(ReactError::Transient)?;
                let response = match &entry.response {
                    Some(b) if !entry.streamed => Some(
                        super::body::to_llm_body(&blobs, &b.0, self.blob_threshold)
                            .await
                            .map_err(ReactError::Transient)?,
                    ),
                    _ => None,
                };
                let events: Vec<proto::LlmSseEvent> = entry
                    .events
                    .iter()
                    .flatten()
                    .map(|e| proto::LlmSseEvent {
                        offset_us: e.offset_us,
                        raw: e.data.0.to_vec(),
                    })
                    .collect();
                let (events, events_blob) =
                    super::body::to_llm_events(&blobs, events, self.blob_threshold)
                        .await
                        .map_err(ReactError::Transient)?;
                let payload = Kind::LlmInteractionRecorded(proto::LlmInteractionRecorded {
                    session_id: open.session_id.clone(),
                    request_hash: request_hash.to_vec(),
                    occurrence: *occurrence,
                    upstream: entry.upstream.to_proto() as i32,
                    method: entry.method.clone(),
                    path: entry.path.clone(),
                    request: Some(request),
                    status: u32::from(entry.status),
                    // Only headers a recording may hold: a cassette cannot make
                    // the proxy answer `set-cookie`, `location`, ...
                    headers: entry
                        .headers
                        .iter()
                        .filter(|(n, _)| amai_llm::headers::is_recorded_response_header(n))
                        .map(|(n, v)| (n.clone(), v.clone()))
                        .collect(),
                    streamed: entry.streamed,
                    response,
                    events,
                    events_blob,
                    outcome: entry.outcome.to_proto() as i32,
                    usage: Some(proto::LlmUsage {
                        input_tokens: entry.usage.input_tokens,
                        output_tokens: entry.usage.output_tokens,
                    }),
                    latency_us: entry.latency_us,
                    upstream_model: entry.upstream_model.clone(),
                    detail: entry.detail.clone(),
                    imported_from: entry.event_id.clone(),
                });
                *occurrence += 1;
                outputs.push(if index == 0 {
                    PlannedOutput::at(aggregate.clone(), payload, 0, ZERO_HASH)
                } else {
                    PlannedOutput::after_previous(aggregate.clone(), payload)
                });
            }
            Ok(outputs)
        })
    }
}
