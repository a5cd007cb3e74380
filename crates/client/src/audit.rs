//! Client-side, auditor-style chain verification: nothing the gateway says is
//! trusted but the event bytes themselves. Hashes are recomputed from the bytes,
//! signatures checked, links and sequences followed, and foreign signers resolved
//! by reading and folding their own chains the same way.

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message;

use amai_bus::chain::{self, ChainReport};
use amai_bus::envelope::hash_bytes;
use amai_bus::identity::IdentityState;
use amai_bus::proto::{self, payload::Kind};
use amai_bus::store::StoredEvent;
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::Position;

use crate::{AmaiClient, ClientError};

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

/// Reads every event of `aggregate`, page by page.
pub async fn read_all(
    client: &AmaiClient,
    aggregate: &Aggregate,
) -> Result<Vec<StoredEvent>, ClientError> {
    let mut out = Vec::new();
    let (mut from, mut scan_from) = (1, 0);
    loop {
        let page = client
            .read_chain_from(aggregate, from, PAGE, scan_from)
            .await?;
        out.extend(page.events.iter().map(stored_from_proto));
        if page.next_aggregate_seq == 0 || page.events.is_empty() {
            return Ok(out);
        }
        if page.next_aggregate_seq <= from {
            return Err(ClientError::Integrity(format!(
                "ReadChain of {aggregate} did not advance past seq {from}"
            )));
        }
        from = page.next_aggregate_seq;
        scan_from = page.next_stream_seq;
    }
}

/// Folds an identity's chain into its state, checking each event like the
/// verifier does; `None` when the chain is empty or does not verify.
pub async fn identity_state(
    client: &AmaiClient,
    id: &str,
) -> Result<Option<IdentityState>, ClientError> {
    let Ok(aggregate) = Aggregate::agent(id) else {
        return Ok(None);
    };
    let events = read_all(client, &aggregate).await?;
    if events.is_empty() {
        return Ok(None);
    }
    // Own-chain checks (signature, links, current key at publish time); the
    // identity's endorsement is not re-verified here, only by auditing its chain.
    let mut state: Option<IdentityState> = None;
    let mut prev = amai_bus::ZERO_HASH;
    for (i, stored) in events.iter().enumerate() {
        let Ok(ev) = stored.verify() else { break };
        if ev.aggregate != aggregate || ev.aggregate_seq() != i as u64 + 1 || ev.prev_hash() != prev
        {
            break;
        }
        match state.as_mut() {
            None => match IdentityState::from_genesis(
                &ev,
                stored.published_ms,
                client.trust_root.as_ref(),
            ) {
                Ok((s, _)) => state = Some(s),
                Err(_) => return Ok(None),
            },
            Some(s) => {
                if s.check(&ev).is_err() {
                    break;
                }
                s.apply(&ev, stored.published_ms);
            }
        }
        prev = ev.hash;
    }
    Ok(state)
}

fn foreign_signers(aggregate: &Aggregate, events: &[StoredEvent]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for stored in events {
        let Ok(ev) = stored.verify() else { continue };
        let mut push = |id: &str| {
            if !out.iter().any(|o| o == id) {
                out.push(id.to_string());
            }
        };
        if aggregate.kind != AggregateKind::Agent || ev.actor() != aggregate.id {
            push(ev.actor());
        }
        if let Kind::AgentRegistered(r) = &ev.payload {
            if let Some(e) = &r.endorsement {
                push(&e.operator_id);
            }
        }
    }
    out
}

/// See [`AmaiClient::verify_chain`].
pub async fn verify_chain(
    client: &AmaiClient,
    aggregate: &Aggregate,
) -> Result<ChainReport, ClientError> {
    let events = read_all(client, aggregate).await?;
    if events.is_empty() {
        return Err(ClientError::Input(format!(
            "{aggregate} has no events to verify"
        )));
    }
    let mut signers = HashMap::new();
    for id in foreign_signers(aggregate, &events) {
        if let Some(state) = identity_state(client, &id).await? {
            signers.insert(id, state);
        }
    }
    Ok(chain::verify_events(
        aggregate,
        &events,
        client.trust_root.as_ref(),
        &signers,
    ))
}
