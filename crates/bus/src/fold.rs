//! The write path's view of chains: each aggregate's events folded through THE
//! verification step of `amai-core` ([`amai_core::verify`]), exactly as an auditor
//! folds them. An event that fails verification (only possible when something
//! published around the store) never changes key state: the fold stops there and
//! the chain is marked corrupted, which appends answer with a precise error.
//!
//! Folded chains are cached in a bounded concurrent cache (`quick_cache`, so a
//! flood of junk aggregates evicts cold entries instead of flushing every cached
//! head); a cache entry is only ever a starting point: every fold first reads the
//! chain's head from JetStream and folds whatever came after the cached position.

use std::future::Future;
use std::pin::Pin;

use amai_core::identity::{IdentityState, SignerCheck, SignerRequirement};
use amai_core::subjects::Aggregate;
use amai_core::verify::{self, ChainState, Failure};
use amai_core::{Position, StoredEvent};

use crate::store::{AppendError, AppendErrorKind, ChainHeadInfo, EventStore, ReadError};

/// Foreign signers of foreign signers are resolved this deep at most (an
/// operator revoked by an operator endorsed by ...); deeper is refused.
const MAX_SIGNER_DEPTH: u8 = 4;

/// Folds of more events than this check signatures on all cores.
const PARALLEL_FROM: usize = 8;

/// The first invalid event of a chain.
#[derive(Clone, Debug)]
pub struct Corruption {
    /// Where it is.
    pub position: Position,
    /// Why it is invalid.
    pub failure: Failure,
}

/// A chain as the write path knows it.
#[derive(Clone, Debug)]
pub(crate) struct CachedChain {
    /// The stream's last message on the subject (valid or not).
    pub(crate) head: ChainHeadInfo,
    /// The valid prefix, folded through the verification step.
    pub(crate) state: ChainState,
    /// Stream sequence up to which the subject has been folded.
    pub(crate) folded_to: u64,
    /// The first invalid event, if any: nothing more can be appended.
    pub(crate) corrupted: Option<Corruption>,
}

impl CachedChain {
    pub(crate) fn empty(aggregate: &Aggregate) -> Self {
        Self {
            head: ChainHeadInfo::empty(aggregate.clone()),
            state: ChainState::EMPTY,
            folded_to: 0,
            corrupted: None,
        }
    }
}

type FoldFuture<'a> = Pin<Box<dyn Future<Output = Result<CachedChain, ReadError>> + Send + 'a>>;

impl EventStore {
    /// The folded chain of `aggregate`: the cached fold brought up to the head
    /// read fresh from JetStream.
    pub(crate) async fn fresh_chain(
        &self,
        aggregate: &Aggregate,
    ) -> Result<CachedChain, ReadError> {
        self.fold_chain(aggregate.clone(), 0).await
    }

    /// A cached fold without any read (may be stale; callers confirm on a fresh
    /// read before rejecting anything because of it).
    pub(crate) fn cached_fold(&self, aggregate: &Aggregate) -> Option<CachedChain> {
        self.chains.get(&aggregate.subject())
    }

    pub(crate) fn remember(&self, aggregate: &Aggregate, chain: CachedChain) {
        self.chains.insert(aggregate.subject(), chain);
    }

    fn fold_chain(&self, aggregate: Aggregate, depth: u8) -> FoldFuture<'_> {
        Box::pin(async move {
            let head = self.head_message(&aggregate).await?;
            let mut chain = self
                .cached_fold(&aggregate)
                .unwrap_or_else(|| CachedChain::empty(&aggregate));
            let Some(head) = head else {
                let empty = CachedChain::empty(&aggregate);
                self.remember(&aggregate, empty.clone());
                return Ok(empty);
            };
            if chain.folded_to > head.position.seq {
                // The cache is ahead of what this server sees (another leader):
                // start over rather than trust it.
                chain = CachedChain::empty(&aggregate);
            }
            if chain.folded_to < head.position.seq && chain.corrupted.is_none() {
                let events = self
                    .read_subject(&aggregate, chain.folded_to + 1, head.position.seq)
                    .await?;
                self.fold_events(&mut chain, &events, depth).await?;
            }
            chain.folded_to = head.position.seq;
            chain.head = ChainHeadInfo {
                aggregate: aggregate.clone(),
                aggregate_seq: amai_core::stored::aggregate_seq_of(&head).unwrap_or(0),
                hash: head.hash,
                stream_seq: head.position.seq,
            };
            self.remember(&aggregate, chain.clone());
            Ok(chain)
        })
    }

    /// Folds `events` (in stream order) into `chain` through the verification
    /// step; foreign signers are judged at the positions the events cite.
    async fn fold_events(
        &self,
        chain: &mut CachedChain,
        events: &[StoredEvent],
        depth: u8,
    ) -> Result<(), ReadError> {
        let trust_root = self.config().get_trust_root().copied();
        // Phase 1 for the whole range: inline for a few events (the usual
        // incremental fold), else on all cores, off the async runtime.
        let checked = if events.len() <= PARALLEL_FROM {
            events.iter().map(verify::verify_stored).collect::<Vec<_>>()
        } else {
            let owned = events.to_vec();
            tokio::task::spawn_blocking(move || verify::verify_all(&owned))
                .await
                .map_err(|e| {
                    ReadError::Unavailable(format!("signature checks failed to run: {e}"))
                })?
        };
        for (stored, checked) in events.iter().zip(checked) {
            let pending = checked.and_then(|ev| {
                verify::step(&chain.state, &ev, stored.published_ms, trust_root.as_ref())
            });
            let result = match pending {
                Ok(p) => self
                    .resolve_history(&p.requirement, depth)
                    .await?
                    .map(|()| p),
                Err(f) => Err(f),
            };
            match result {
                Ok(p) => {
                    chain.state = p.next;
                    chain.folded_to = stored.position.seq;
                }
                Err(failure) => {
                    tracing::warn!(
                        position = %stored.position,
                        kind = %failure.kind,
                        detail = %failure.detail,
                        "invalid event in a chain: the write path stops folding it here"
                    );
                    chain.corrupted = Some(Corruption {
                        position: stored.position.clone(),
                        failure,
                    });
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// A foreign-signer requirement judged on history (at the cited position).
    async fn resolve_history(
        &self,
        req: &SignerRequirement,
        depth: u8,
    ) -> Result<Result<(), Failure>, ReadError> {
        let Some(id) = req.identity() else {
            return Ok(verify::resolve(req, None, SignerCheck::AtPosition));
        };
        let state = if matches!(req, SignerRequirement::NameOwner { .. }) {
            // On history a name claim only needs the identity's genesis.
            self.genesis_state(id).await?
        } else {
            self.signer_identity(id, depth + 1).await?
        };
        Ok(verify::resolve(
            req,
            state.as_ref(),
            SignerCheck::AtPosition,
        ))
    }

    /// The identity as its genesis alone makes it (one read: the first message on
    /// its subject, verified as a genesis); `None` when it has none or the first
    /// message is not a valid genesis. Enough to judge a name claim on history
    /// (which needs only the genesis hash), without folding the whole chain.
    pub async fn genesis_state(&self, id: &str) -> Result<Option<IdentityState>, ReadError> {
        let Ok(aggregate) = Aggregate::agent(id) else {
            return Ok(None);
        };
        if let Some(cached) = self.cached_fold(&aggregate) {
            if let Some(identity) = cached.state.identity {
                return Ok(Some(identity));
            }
        }
        let Some(first) = self
            .read_subject_page(&aggregate, 1, u64::MAX, 1)
            .await?
            .pop()
        else {
            return Ok(None);
        };
        let trust_root = self.config().get_trust_root().copied();
        Ok(verify::verify_stored(&first)
            .ok()
            .and_then(|ev| {
                verify::step(
                    &ChainState::EMPTY,
                    &ev,
                    first.published_ms,
                    trust_root.as_ref(),
                )
                .ok()
            })
            .and_then(|p| p.next.identity))
    }

    /// A foreign-signer requirement judged for an append: the signer's chain is
    /// read fresh up to its head, and its key must be current there.
    pub(crate) async fn resolve_current(&self, req: &SignerRequirement) -> Result<(), AppendError> {
        let state = match req.identity() {
            Some(id) => self
                .signer_identity(id, 1)
                .await
                .map_err(|e| AppendError::new(AppendErrorKind::Unavailable, e.to_string()))?,
            None => None,
        };
        Ok(verify::resolve(req, state.as_ref(), SignerCheck::Current)?)
    }

    /// The identity folded from `id`'s chain (its valid prefix), `None` when it
    /// has no chain or no valid genesis.
    async fn signer_identity(
        &self,
        id: &str,
        depth: u8,
    ) -> Result<Option<IdentityState>, ReadError> {
        if depth > MAX_SIGNER_DEPTH {
            return Err(ReadError::Invalid(format!(
                "resolving signer {id}: foreign signers nest deeper than {MAX_SIGNER_DEPTH}"
            )));
        }
        let Ok(aggregate) = Aggregate::agent(id) else {
            return Ok(None);
        };
        Ok(self.fold_chain(aggregate, depth).await?.state.identity)
    }

    /// An identity's state: its chain folded through the verification step up
    /// to the head read fresh from JetStream. Events that fail verification (a
    /// forged rotation or revocation published around the store) never count.
    pub async fn identity_state(&self, id: &str) -> Result<IdentityState, ReadError> {
        let aggregate = Aggregate::agent(id).map_err(|e| ReadError::Invalid(e.to_string()))?;
        let chain = self.fresh_chain(&aggregate).await?;
        chain.state.identity.ok_or_else(|| match chain.corrupted {
            Some(c) => ReadError::Invalid(format!(
                "identity {id} has no valid genesis: {} at {}",
                c.failure, c.position
            )),
            None => ReadError::NotFound(format!("identity {id} is not registered")),
        })
    }

    /// The first invalid event of an aggregate's chain, if any (fresh read).
    pub async fn corruption(&self, aggregate: &Aggregate) -> Result<Option<Corruption>, ReadError> {
        Ok(self.fresh_chain(aggregate).await?.corrupted)
    }
}
