//! Verification of replayed events with THE verification step of `amai-core`
//! (re-exported as [`amai_bus::verify`]): the runner re-implements no check.
//!
//! - [`verify_signatures`]: phase 1 (decode + Ed25519 `verify_strict`,
//!   [`verify::verify_stored`]) for a whole batch on all cores (rayon), ahead of
//!   the sequential fold: it depends on no chain state;
//! - [`Ctx::verify`]: phase 2, [`verify::step`] against the aggregate's chain
//!   state (the tree's, overlaid with the batch's own), then the requirement on a
//!   foreign signer resolved with [`verify::resolve`] against that signer's
//!   chain read from JetStream (cached in memory).

use amai_bus::identity::{SignerCheck, SignerRequirement};
use amai_bus::store::{ReadError, StoredEvent};
use amai_bus::verify::{self, Failure};
use amai_bus::VerifiedEvent;

use super::batch::{Overlay, Verdict};
use super::keys::chain_key;
use super::violation::violation;
use super::{Ctx, Transient};
use crate::codec::ChainState;

/// Foreign signer states kept in memory (a bounded cache: the coldest go first).
pub(super) const MAX_CACHED_SIGNERS: usize = 10_000;

impl Ctx {
    /// The chain state of `agg`: the batch's own if it wrote one, else the tree's.
    fn chain_state(&self, overlay: &Overlay, agg: &str) -> Result<Option<ChainState>, Transient> {
        let bytes = match overlay.0.get(agg) {
            Some(bytes) => Some(sled::IVec::from(bytes.as_slice())),
            None => self
                .shared
                .tree
                .get(chain_key(agg))
                .map_err(|e| Transient(format!("reading the chain state of {agg}: {e}")))?,
        };
        bytes
            .map(|b| ChainState::decode(&b).map_err(|e| Transient(format!("{agg}: {e}"))))
            .transpose()
    }
    /// Checks one stored event (whose signature phase already ran, in
    /// parallel, as `sig`) with THE verification step against its aggregate's
    /// state; `overlay` holds the chain states written by the earlier events of
    /// the batch (not yet in the tree).
    pub(super) async fn verify(
        &self,
        stored: &StoredEvent,
        sig: Result<VerifiedEvent, Failure>,
        overlay: &Overlay,
    ) -> Result<Verdict, Transient> {
        let invalid = |ev: Option<&VerifiedEvent>, f: Failure| {
            Ok(Verdict::Invalid(violation(
                stored,
                ev,
                f.kind.into(),
                f.detail,
            )))
        };
        let ev = match sig {
            Ok(ev) => ev,
            Err(f) => return invalid(None, f),
        };
        let agg = ev.aggregate.to_string();
        let prior = self.chain_state(overlay, &agg)?;
        let state = match prior {
            None => verify::ChainState::EMPTY,
            Some(c) => verify::ChainState {
                seq: c.seq,
                hash: c.hash,
                identity: c
                    .identity
                    .map(|i| i.to_state())
                    .transpose()
                    .map_err(|e| Transient(format!("{agg}: {e}")))?,
            },
        };
        let pending = match verify::step(
            &state,
            &ev,
            stored.published_ms,
            self.store.config().get_trust_root(),
        ) {
            Ok(p) => p,
            Err(f) => return invalid(Some(&ev), f),
        };
        if let Err(f) = self.check_foreign_signer(&pending.requirement).await? {
            return invalid(Some(&ev), f);
        }
        Ok(Verdict::Valid {
            event: Box::new(ev),
            identity: pending.next.identity,
        })
    }

    /// Checks a requirement on a signer whose state lives on another chain, at
    /// the position of that chain the event cites. A cached state answers when
    /// it already covers that position (later events of the signer's chain
    /// cannot change what was true there); otherwise the signer is re-read.
    async fn check_foreign_signer(
        &self,
        req: &SignerRequirement,
    ) -> Result<Result<(), Failure>, Transient> {
        let Some(actor) = req.identity() else {
            return Ok(verify::resolve(req, None, SignerCheck::AtPosition));
        };
        let cited = match req {
            SignerRequirement::Identity { at_seq, .. }
            | SignerRequirement::Endorser { at_seq, .. } => *at_seq,
            SignerRequirement::NameOwner { .. } => {
                // On history a name claim needs only the identity's genesis:
                // one read, not a fold of its chain.
                return match self.store.genesis_state(actor).await {
                    Ok(state) => Ok(verify::resolve(
                        req,
                        state.as_ref(),
                        SignerCheck::AtPosition,
                    )),
                    Err(ReadError::Unavailable(m)) => {
                        Err(Transient(format!("resolving the genesis of {actor}: {m}")))
                    }
                    Err(_) => Ok(verify::resolve(req, None, SignerCheck::AtPosition)),
                };
            }
            SignerRequirement::None => u64::MAX,
        };
        if let Some(state) = self.signers.get(actor) {
            if cited <= state.head_seq {
                return Ok(verify::resolve(req, Some(&state), SignerCheck::AtPosition));
            }
        }
        match self.store.identity_state(actor).await {
            Ok(state) => {
                let r = verify::resolve(req, Some(&state), SignerCheck::AtPosition);
                self.signers.insert(actor.to_string(), state);
                Ok(r)
            }
            Err(ReadError::NotFound(_)) | Err(ReadError::Invalid(_)) => {
                Ok(verify::resolve(req, None, SignerCheck::AtPosition))
            }
            Err(ReadError::Unavailable(m)) => {
                Err(Transient(format!("resolving signer {actor}: {m}")))
            }
        }
    }
}

/// Phase 1 of THE verification step (decode + Ed25519) for a whole batch, on
/// all cores: it does not depend on any chain state, so it runs ahead of the
/// sequential fold.
pub(super) async fn verify_signatures(
    events: &[(StoredEvent, u64)],
) -> Result<Vec<Result<VerifiedEvent, Failure>>, Transient> {
    let stored: Vec<StoredEvent> = events.iter().map(|(s, _)| s.clone()).collect();
    tokio::task::spawn_blocking(move || {
        use rayon::prelude::*;
        stored.par_iter().map(verify::verify_stored).collect()
    })
    .await
    .map_err(|e| Transient(format!("signature verification task failed: {e}")))
}
