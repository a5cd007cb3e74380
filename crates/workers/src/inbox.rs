//! Inbox pages bounded by bytes as well as by count.
//!
//! A reply travels as one NATS message, so a page must fit the connection's
//! `max_payload` (1 MiB by default) while messages may be up to the event size
//! limit each. The page stops adding messages when the encoded reply would
//! exceed the budget ([`crate::query_service::reply_budget`]) and says where to
//! continue (`next_after_seq`). A single message too large for any reply is
//! `RESOURCE_EXHAUSTED` (`ITEM_TOO_LARGE`, metadata `seq`, `size`, `max`): pass
//! `seq` as `after_seq` to skip it.

use amai_bus::proto;
use amai_bus::query::{reason, QueryCode, QueryError};
use amai_projections::identity_model::inbox_limit;
use amai_projections::IdentityReadModel;
use bytes::Bytes;
use prost::Message;

/// Encoded size of `ListInboxResponse.next_after_seq` at most (tag + varint).
const CONTINUATION_BYTES: usize = 1 + 10;

/// The page of `req`'s inbox that fits `budget` bytes, encoded.
pub(crate) fn inbox_page(
    model: &IdentityReadModel,
    req: &proto::ListInboxRequest,
    budget: usize,
) -> Result<Bytes, QueryError> {
    let limit = inbox_limit(req.limit);
    let mut page = proto::ListInboxResponse::default();
    let mut size = CONTINUATION_BYTES;
    let mut last_seq = req.after_seq;
    for item in model.inbox_after(&req.agent_id, req.after_seq) {
        let item = item.map_err(|e| {
            QueryError::new(QueryCode::Internal, e.to_string()).with_reason(reason::INTERNAL)
        })?;
        let seq = item.position.as_ref().map(|p| p.seq).unwrap_or(last_seq);
        if page.messages.len() == limit {
            // More follow after the full page.
            page.next_after_seq = last_seq;
            break;
        }
        let len = item.encoded_len();
        let field = 1 + prost::length_delimiter_len(len) + len;
        if size + field > budget {
            if page.messages.is_empty() {
                return Err(too_large(seq, field + CONTINUATION_BYTES, budget));
            }
            page.next_after_seq = last_seq;
            break;
        }
        size += field;
        last_seq = seq;
        page.messages.push(item);
    }
    Ok(Bytes::from(page.encode_to_vec()))
}

fn too_large(seq: u64, size: usize, budget: usize) -> QueryError {
    QueryError::new(
        QueryCode::ResourceExhausted,
        format!(
            "inbox message at AMAI_AGENTS:{seq} takes {size} bytes, over the {budget} bytes a query reply may carry; \
             pass after_seq={seq} to skip it, or raise the NATS max_payload"
        ),
    )
    .with_reason(reason::ITEM_TOO_LARGE)
    .with_meta("seq", seq)
    .with_meta("size", size)
    .with_meta("max", budget)
}
