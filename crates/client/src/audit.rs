//! Client-side, auditor-style chain verification: nothing the gateway says is
//! trusted but the event bytes themselves. Hashes are recomputed from the bytes,
//! signatures checked, links and sequences followed, and foreign signers resolved
//! by reading and folding their own chains the same way.

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message;

use std::future::Future;
use std::pin::Pin;

use amai_bus::chain::{self, ChainReport, ChainVerifier};
use amai_bus::envelope::hash_bytes;
use amai_bus::identity::IdentityState;
use amai_bus::proto;
use amai_bus::store::StoredEvent;
use amai_bus::subjects::Aggregate;
use amai_bus::Position;

use amai_bus::identity::{check_requirement, SignerCheck, SignerRequirement};
use amai_bus::proto::payload::Kind;

use crate::{AmaiClient, ClientError, ErrorKind};

/// Foreign signers of foreign signers are resolved this deep at most.
const MAX_SIGNER_DEPTH: u8 = 3;

/// Page size used when reading whole chains.
const PAGE: u32 = 1000;

/// Converts a proto `StoredEvent` into the bus form from its `raw` bytes, exactly
/// as stored (never a re-encoding). The hash is recomputed from those bytes (the
/// server's `hash` field is ignored); missing bytes verify as malformed.
pub fn stored_from_proto(ev: &proto::StoredEvent) -> StoredEvent {
    let payload = Bytes::from(ev.raw.clone());
    let position: Position = ev
        .position
        .clone()
        .map(Position::from)
        .unwrap_or_else(|| Position::new("", 0));
    let published_ms = ev.published_at.as_ref().map_or(0, |t| {
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos) / 1_000_000)
    });
    let event_type = ev
        .event
        .as_ref()
        .and_then(|s| proto::EventBody::decode(s.body.as_slice()).ok())
        .map(|b| b.r#type);
    StoredEvent {
        position,
        subject: ev.subject.clone(),
        published_ms,
        hash: hash_bytes(&payload),
        payload,
        event_type,
    }
}

/// Pages of a chain in order (all events, or key events only), continuing
/// each scan where the last page stopped: the one pager of the SDK.
struct ChainPager<'a> {
    client: &'a AmaiClient,
    aggregate: &'a Aggregate,
    key_events_only: bool,
    from: u64,
    scan_from: u64,
    done: bool,
}

impl<'a> ChainPager<'a> {
    fn new(client: &'a AmaiClient, aggregate: &'a Aggregate, key_events_only: bool) -> Self {
        Self {
            client,
            aggregate,
            key_events_only,
            from: 1,
            scan_from: 0,
            done: false,
        }
    }

    /// The next page (possibly empty for key events), `None` after the last.
    async fn next_page(&mut self) -> Result<Option<Vec<StoredEvent>>, ClientError> {
        if self.done {
            return Ok(None);
        }
        let page = if self.key_events_only {
            self.client
                .read_key_events(self.aggregate, self.from, PAGE, self.scan_from)
                .await?
        } else {
            self.client
                .read_chain_from(self.aggregate, self.from, PAGE, self.scan_from)
                .await?
        };
        let events: Vec<StoredEvent> = page.events.iter().map(stored_from_proto).collect();
        if page.next_aggregate_seq == 0 || (events.is_empty() && !self.key_events_only) {
            self.done = true;
        } else if page.next_aggregate_seq <= self.from {
            return Err(ClientError::Integrity(format!(
                "ReadChain of {} did not advance past seq {}",
                self.aggregate, self.from
            )));
        } else {
            self.from = page.next_aggregate_seq;
            self.scan_from = page.next_stream_seq;
        }
        Ok(Some(events))
    }

    async fn collect(mut self) -> Result<Vec<StoredEvent>, ClientError> {
        let mut out = Vec::new();
        while let Some(page) = self.next_page().await? {
            out.extend(page);
        }
        Ok(out)
    }
}

/// Reads every event of `aggregate`, page by page.
pub async fn read_all(
    client: &AmaiClient,
    aggregate: &Aggregate,
) -> Result<Vec<StoredEvent>, ClientError> {
    ChainPager::new(client, aggregate, false).collect().await
}

/// An identity's state, read through the gateway and folded client-side through
/// THE verification step (the same as `amai chain verify`), its foreign signers
/// resolved the same way. `None` when it has no chain or no valid genesis; the
/// valid prefix when a later event fails. Nothing the gateway says but the
/// event bytes is trusted.
pub async fn identity_state(
    client: &AmaiClient,
    id: &str,
) -> Result<Option<IdentityState>, ClientError> {
    identity_state_depth(client, id.to_string(), 0).await
}

fn identity_state_depth(
    client: &AmaiClient,
    id: String,
    depth: u8,
) -> Pin<Box<dyn Future<Output = Result<Option<IdentityState>, ClientError>> + Send + '_>> {
    Box::pin(async move {
        let Ok(aggregate) = Aggregate::agent(&id) else {
            return Ok(None);
        };
        let events = match read_all(client, &aggregate).await {
            Ok(events) => events,
            // Someone else's agent chain: only its key events are readable.
            Err(e) if e.kind() == ErrorKind::ReadNotPermitted => {
                return key_state_depth(client, &aggregate, depth).await
            }
            Err(e) => return Err(e),
        };
        if events.is_empty() {
            return Ok(None);
        }
        let mut signers = HashMap::new();
        if depth < MAX_SIGNER_DEPTH {
            for signer in chain::foreign_signers(&aggregate, &events) {
                if signer == id {
                    continue;
                }
                if let Some(state) = identity_state_depth(client, signer.clone(), depth + 1).await?
                {
                    signers.insert(signer, state);
                }
            }
        }
        let mut verifier = ChainVerifier::new(&aggregate);
        let trust_root = client.trust_root().await?;
        verifier.feed(&events, trust_root.as_ref(), &signers);
        Ok(verifier.state().identity.clone())
    })
}

/// Every key event (`agent.registered`, `agent.key_rotated`, `agent.revoked`)
/// of `aggregate`, page by page (`ReadChain` with `key_events_only`).
pub async fn read_key_events(
    client: &AmaiClient,
    aggregate: &Aggregate,
) -> Result<Vec<StoredEvent>, ClientError> {
    ChainPager::new(client, aggregate, true).collect().await
}

/// The keys and revocation of agent `id`, folded client-side from its key
/// events alone: what an identity may read of another agent's chain. Each
/// event's signature, the genesis rules, every rotation's signature by the key
/// current before it and its proof of possession, and an operator's revocation
/// are checked with the core rules (`IdentityState::from_genesis`, `check`,
/// `apply`); hash links are not (the events between are not readable), so an
/// omitted rotation in the middle shows as a signature by an unknown key and
/// ends the fold. As with full reads, a server can withhold the newest events.
/// `None` when there is no valid genesis; the valid prefix otherwise.
pub async fn key_state(
    client: &AmaiClient,
    id: &str,
) -> Result<Option<IdentityState>, ClientError> {
    let aggregate = Aggregate::agent(id).map_err(|e| ClientError::Input(e.to_string()))?;
    key_state_depth(client, &aggregate, 0).await
}

async fn key_state_depth(
    client: &AmaiClient,
    aggregate: &Aggregate,
    depth: u8,
) -> Result<Option<IdentityState>, ClientError> {
    let events = read_key_events(client, aggregate).await?;
    let trust_root = client.trust_root().await?;
    let mut state: Option<IdentityState> = None;
    for stored in &events {
        let Ok(ev) = amai_bus::verify::verify_stored(stored) else {
            break;
        };
        if ev.aggregate != *aggregate
            || !matches!(
                ev.payload,
                Kind::AgentRegistered(_) | Kind::AgentKeyRotated(_) | Kind::AgentRevoked(_)
            )
        {
            break;
        }
        let (next, requirement) = match &state {
            None => {
                match IdentityState::from_genesis(&ev, stored.published_ms, trust_root.as_ref()) {
                    Ok(r) => r,
                    Err(_) => break,
                }
            }
            Some(s) => {
                if ev.aggregate_seq() <= s.head_seq {
                    break;
                }
                let Ok(req) = s.check(&ev) else {
                    break;
                };
                let mut next = s.clone();
                next.apply(&ev, stored.published_ms);
                (next, req)
            }
        };
        if let Some(signer) = requirement.identity().map(str::to_string) {
            if depth >= MAX_SIGNER_DEPTH {
                break;
            }
            // Operators (endorsers, revokers) have fully readable chains.
            let signer_state = identity_state_depth(client, signer, depth + 1).await?;
            if check_requirement(&requirement, signer_state.as_ref(), SignerCheck::AtPosition)
                .is_err()
            {
                break;
            }
        } else if requirement != SignerRequirement::None {
            break;
        }
        state = Some(next);
    }
    Ok(state)
}

/// See [`AmaiClient::verify_chain`].
pub async fn verify_chain(
    client: &AmaiClient,
    aggregate: &Aggregate,
) -> Result<ChainReport, ClientError> {
    // Page by page through the verifier: memory stays bounded by the page size.
    let trust_root = client.trust_root().await?;
    let mut verifier = ChainVerifier::new(aggregate);
    let mut signers = HashMap::new();
    let mut pager = ChainPager::new(client, aggregate, false);
    let mut seen = 0usize;
    while let Some(events) = pager.next_page().await? {
        seen += events.len();
        for id in chain::foreign_signers(aggregate, &events) {
            if signers.contains_key(&id) {
                continue;
            }
            if let Some(state) = identity_state(client, &id).await? {
                signers.insert(id, state);
            }
        }
        if !verifier.feed(&events, trust_root.as_ref(), &signers) {
            break;
        }
    }
    if seen == 0 {
        return Err(ClientError::Input(format!(
            "{aggregate} has no events to verify"
        )));
    }
    Ok(verifier.finish())
}
