//! Verifying a chain read from the store, page by page, with THE verification
//! step ([`amai_core::chain::ChainVerifier`]): memory stays bounded by the page
//! size whatever the chain's length. Foreign signers are resolved by folding
//! their own chains the same way.

use std::collections::HashMap;

pub use amai_core::chain::*;

use crate::store::{EventStore, ReadError};
use crate::subjects::Aggregate;

/// Events verified per page.
pub const VERIFY_PAGE: usize = 512;

/// Reads and verifies a whole chain from the store, a page at a time.
pub async fn verify_chain(
    store: &EventStore,
    aggregate: &Aggregate,
) -> Result<ChainReport, ReadError> {
    let head = store.chain_head_stream_seq(aggregate).await?;
    if head == 0 {
        return Err(ReadError::NotFound(format!("{aggregate} has no events")));
    }
    let mut verifier = ChainVerifier::new(aggregate);
    let mut signers = HashMap::new();
    let mut from = 1;
    while from <= head {
        let page = store
            .read_subject_page(aggregate, from, head, VERIFY_PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        from = last.position.seq + 1;
        for id in foreign_signers(aggregate, &page) {
            if signers.contains_key(&id) || crate::subjects::validate_id(&id).is_err() {
                continue;
            }
            match store.identity_state(&id).await {
                Ok(s) => {
                    signers.insert(id, s);
                }
                Err(ReadError::Unavailable(m)) => return Err(ReadError::Unavailable(m)),
                Err(_) => {}
            }
        }
        if !verifier.feed(&page, store.config().get_trust_root(), &signers) {
            break;
        }
    }
    Ok(verifier.finish())
}
