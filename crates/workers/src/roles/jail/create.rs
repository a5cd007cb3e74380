//! The request reactor: for each `jail.requested` on a requester's chain, the
//! jail service decides `jail.created` (the spec parsed, its digest checked,
//! the image resolved on the engine) or `jail.run_failed` (why not), as the
//! first event of `jail/<jail_id>`.
//!
//! The request is untrusted: the jail id must be the one derived from the
//! requester and the event (else the request is poison and its
//! `reactor.failed` record says why), the spec is parsed strictly and its
//! digest recomputed (the digest the request claims is only compared), a
//! reproduction must name a jail of the same owner with the same spec, and
//! nothing in the spec is executed here.

use amai_bus::blob::BlobStore;
use amai_bus::consumer::WorkConsumerConfig;
use amai_bus::proto::{self, payload::Kind};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventStore, VerifiedEvent};
use amai_jail_spec::JailSpec;

use super::engine::{resolve_image, EngineSlot};
use crate::reactor::{PlannedOutput, ReactError, ReactFuture, Reactor};

/// Decides `jail.created` for each `jail.requested`.
#[derive(Clone)]
pub struct JailRequests {
    engine: EngineSlot,
}

impl JailRequests {
    /// The reactor, resolving images on the engine in `engine`.
    pub fn new(engine: EngineSlot) -> Self {
        Self { engine }
    }
}

fn failed(jail_id: &str, kind: proto::JailFailureKind, detail: impl Into<String>) -> Kind {
    Kind::JailRunFailed(proto::JailRunFailed {
        jail_id: jail_id.to_string(),
        kind: kind as i32,
        detail: detail.into(),
    })
}

/// The spec bytes of a request: inline, or from the blob store.
pub(crate) async fn spec_bytes(
    store: &EventStore,
    inline: &[u8],
    blob: Option<&proto::BlobRef>,
) -> Result<Vec<u8>, String> {
    match blob {
        None => Ok(inline.to_vec()),
        Some(blob) => {
            let digest: [u8; 32] = blob
                .sha256
                .as_slice()
                .try_into()
                .map_err(|_| "spec_blob is not a SHA-256".to_string())?;
            let blobs = BlobStore::open(store.jetstream(), 1, usize::MAX)
                .await
                .map_err(|e| format!("cannot open the blob store: {e}"))?;
            blobs
                .get(&digest)
                .await
                .map_err(|e| format!("cannot read the spec blob {}: {e}", hex::encode(digest)))
        }
    }
}

/// Whether `input` is part of its chain as the store verified it: the event
/// at its aggregate seq is this one, and it comes before any invalid event
/// (one published around the store). A rogue NATS publisher's forged request,
/// creation or run is thereby never acted on.
pub(crate) async fn on_verified_chain(
    store: &EventStore,
    input: &VerifiedEvent,
) -> Result<bool, ReactError> {
    let transient = |e: amai_bus::store::ReadError| ReactError::Transient(e.to_string());
    let corruption = store
        .corruption(&input.aggregate)
        .await
        .map_err(transient)?;
    let at = store
        .read_chain(&input.aggregate, input.body.aggregate_seq, 1)
        .await
        .map_err(transient)?;
    let Some(stored) = at.first() else {
        return Ok(false);
    };
    let same = VerifiedEvent::decode(&stored.payload).is_ok_and(|e| e.body.id == input.body.id);
    let valid = corruption.is_none_or(|c| stored.position.seq < c.position.seq);
    Ok(same && valid)
}

/// The events of a jail's chain, decoded, up to its first invalid event (one
/// published around the store): what the jail service itself stored.
pub(crate) async fn jail_events(
    store: &EventStore,
    jail_id: &str,
) -> Result<Vec<VerifiedEvent>, ReactError> {
    let aggregate = Aggregate::new(AggregateKind::Jail, jail_id)
        .map_err(|e| ReactError::Poison(e.to_string()))?;
    let transient = |e: amai_bus::store::ReadError| ReactError::Transient(e.to_string());
    let corruption = store.corruption(&aggregate).await.map_err(transient)?;
    let stored = store
        .read_chain(&aggregate, 1, 10_000)
        .await
        .map_err(transient)?;
    Ok(stored
        .iter()
        .take_while(|s| {
            corruption
                .as_ref()
                .is_none_or(|c| s.position.seq < c.position.seq)
        })
        .filter_map(|s| VerifiedEvent::decode(&s.payload).ok())
        .collect())
}

impl JailRequests {
    async fn decide(
        &self,
        store: &EventStore,
        input: &VerifiedEvent,
        request: &proto::JailRequested,
    ) -> Result<Kind, ReactError> {
        let owner = input.aggregate.id.as_str();
        use proto::JailFailureKind as F;
        let id = request.jail_id.as_str();
        let has_inline = !request.spec_json.is_empty();
        if has_inline == request.spec_blob.is_some() {
            return Ok(failed(
                id,
                F::InvalidSpec,
                "exactly one of spec_json and spec_blob must be set",
            ));
        }
        let bytes = match spec_bytes(store, &request.spec_json, request.spec_blob.as_ref()).await {
            Ok(b) => b,
            Err(e) => return Ok(failed(id, F::InvalidSpec, e)),
        };
        let spec = match JailSpec::from_json(&bytes) {
            Ok(spec) => spec,
            Err(errors) => return Ok(failed(id, F::InvalidSpec, errors.to_string())),
        };
        let digest = spec.canonical_digest();
        if request.spec_sha256 != digest {
            return Ok(failed(
                id,
                F::InvalidSpec,
                format!(
                    "spec_sha256 {} is not the digest of the spec ({})",
                    hex::encode(&request.spec_sha256),
                    hex::encode(digest)
                ),
            ));
        }
        if spec.llm.is_some() == request.llm_session_id.is_empty() {
            return Ok(failed(
                id,
                F::LlmSession,
                "a spec with `llm` needs llm_session_id (and a sealed key); a spec without it must not name one",
            ));
        }
        if !request.reproduces.is_empty() {
            if let Some(why) = self.reproduction_refused(store, owner, request).await? {
                return Ok(failed(id, F::InvalidSpec, why));
            }
        }
        let engine = self.engine.get().map(|c| &c.engine).ok_or_else(|| {
            ReactError::Transient("the Docker Engine is not connected yet".into())
        })?;
        let image = match resolve_image(engine, &spec.image).await {
            Ok(image) => image,
            Err(e) if e.kind == F::EngineUnavailable => {
                return Err(ReactError::Transient(e.detail))
            }
            Err(e) => return Ok(failed(id, e.kind, e.detail)),
        };
        // The runner reads the spec from here, whatever form the request had.
        let spec_blob = BlobStore::open(store.jetstream(), 1, usize::MAX)
            .await
            .map_err(|e| ReactError::Transient(format!("cannot open the blob store: {e}")))?
            .put(&bytes)
            .await
            .map_err(|e| ReactError::Transient(format!("cannot store the spec: {e}")))?;
        Ok(Kind::JailCreated(proto::JailCreated {
            jail_id: id.to_string(),
            owner: owner.to_string(),
            spec_sha256: digest.to_vec(),
            image_id: image,
            llm_session_id: request.llm_session_id.clone(),
            engine_version: engine.version().server_version.clone(),
            reproduces: request.reproduces.clone(),
            run: request.run,
            spec: Some(proto::BlobRef {
                sha256: spec_blob.sha256.to_vec(),
                size: spec_blob.size,
            }),
            sealed_llm_key: request.sealed_llm_key.clone(),
            request_event_id: input.body.id.clone(),
            request_seq: input.body.aggregate_seq,
        }))
    }

    /// Why a reproduction is refused: the original must be a jail of the same
    /// owner, created from the same spec.
    async fn reproduction_refused(
        &self,
        store: &EventStore,
        owner: &str,
        request: &proto::JailRequested,
    ) -> Result<Option<String>, ReactError> {
        if !amai_bus::jail::is_jail_id(&request.reproduces) {
            return Ok(Some(format!(
                "reproduces {:?} is not a jail id",
                request.reproduces
            )));
        }
        let original = jail_events(store, &request.reproduces).await?;
        let created = original.iter().find_map(|e| match &e.payload {
            Kind::JailCreated(c) => Some(c.clone()),
            _ => None,
        });
        Ok(match created {
            None => Some(format!(
                "jail {} does not exist (or was never created)",
                request.reproduces
            )),
            Some(c) if c.owner != owner => Some(format!(
                "jail {} belongs to another identity",
                request.reproduces
            )),
            Some(c) if c.spec_sha256 != request.spec_sha256 => Some(format!(
                "the spec differs from jail {}'s: a reproduction runs the same spec",
                request.reproduces
            )),
            Some(_) => None,
        })
    }
}

impl Reactor for JailRequests {
    fn role(&self) -> &'static str {
        super::NAME
    }

    fn subscription(&self) -> WorkConsumerConfig {
        WorkConsumerConfig::new(AggregateKind::Agent.stream(), "jail-requests")
            .filter_subject(AggregateKind::Agent.stream_subject())
    }

    fn react<'a>(&'a self, store: &'a EventStore, input: &'a VerifiedEvent) -> ReactFuture<'a> {
        Box::pin(async move {
            let Kind::JailRequested(request) = &input.payload else {
                return Ok(Vec::new());
            };
            if !on_verified_chain(store, input).await? {
                tracing::warn!(event = %input.body.id, "a jail request that is not on its requester's verified chain is ignored");
                return Ok(Vec::new());
            }
            let owner = input.aggregate.id.as_str();
            let expected = amai_bus::jail::jail_id(owner, &input.body.id);
            if request.jail_id != expected {
                return Err(ReactError::Poison(format!(
                    "jail id {:?} is not the one derived from the requester and the event ({expected})",
                    request.jail_id
                )));
            }
            let aggregate = Aggregate::new(AggregateKind::Jail, &request.jail_id)
                .map_err(|e| ReactError::Poison(e.to_string()))?;
            let head = store
                .chain_head(&aggregate)
                .await
                .map_err(|e| ReactError::Transient(e.to_string()))?;
            let decision = self.decide(store, input, request).await?;
            Ok(vec![PlannedOutput::at(
                aggregate,
                decision,
                head.aggregate_seq,
                head.hash,
            )])
        })
    }
}
