//! Partial selections: never authoritative, and missing context is never
//! reported as tampering.

use amai_audit::{Evidence, PartialKind, Scope};
use amai_core::subjects::{Aggregate, AggregateKind};

use crate::common::{audit, complete, failures, AGENTS, AUDIT, TRUST};
use crate::honest::busy;

#[test]
fn a_range_not_starting_at_seq_1_is_partial_without_failures() {
    let (mut d, _, _) = busy();
    d.checkpoint_all();
    let mut streams = complete(&d.streams);
    for s in streams.iter_mut() {
        if s.0 == AGENTS {
            s.1 = Scope::Range;
            s.2.retain(|m| m.seq >= 5);
        }
    }
    let r = audit(d.trust_root(), &streams, None);
    assert!(r.failures.is_empty(), "{}", failures(&r));
    assert_eq!(r.evidence, Evidence::Partial);
    assert_eq!(r.exit_code(), 3);
    let agents = r.stream(AGENTS).expect("agents");
    assert_eq!(
        (agents.evidence, agents.first_seq),
        (Evidence::Partial, Some(5))
    );
    for reason in [
        PartialKind::IncompleteRange,
        PartialKind::ChainStartOutsideSelection,
        PartialKind::SignerNotInInput,
        PartialKind::CheckpointUnchecked,
    ] {
        assert!(
            r.partial_of(reason).count() > 0,
            "{reason} expected:\n{}",
            failures(&r)
        );
    }
}

#[test]
fn one_aggregate_only_is_partial_without_failures() {
    let (mut d, alice, _) = busy();
    d.checkpoint_all();
    let subject = Aggregate::new(AggregateKind::Trust, &alice.id)
        .expect("agg")
        .subject();
    let only: Vec<_> = d.streams[TRUST]
        .iter()
        .filter(|m| m.subject == subject)
        .cloned()
        .collect();
    assert!(!only.is_empty());
    let r = audit(
        d.trust_root(),
        &[(TRUST.to_string(), Scope::Selection, only)],
        None,
    );
    assert!(r.failures.is_empty(), "{}", failures(&r));
    assert_eq!(r.evidence, Evidence::Partial);
    for reason in [
        PartialKind::IncompleteRange,
        PartialKind::StreamNotInInput,
        PartialKind::SignerNotInInput,
        PartialKind::CausationOutsideInput,
        PartialKind::NotCovered,
    ] {
        assert!(
            r.partial_of(reason).count() > 0,
            "{reason} expected:\n{}",
            failures(&r)
        );
    }
}

#[test]
fn one_identity_chain_with_its_checkpoints_is_partial_without_failures() {
    let (mut d, alice, _) = busy();
    d.checkpoint_all();
    let subject = alice.aggregate().subject();
    let chain: Vec<_> = d.streams[AGENTS]
        .iter()
        .filter(|m| m.subject == subject)
        .cloned()
        .collect();
    let r = audit(
        d.trust_root(),
        &[
            (AGENTS.to_string(), Scope::Selection, chain),
            (AUDIT.to_string(), Scope::Complete, d.streams[AUDIT].clone()),
        ],
        None,
    );
    assert!(r.failures.is_empty(), "{}", failures(&r));
    assert_eq!(r.evidence, Evidence::Partial);
    // Her chain is fully checked (an agent has no foreign signer)...
    let agents = r.stream(AGENTS).expect("agents");
    assert_eq!(agents.events_invalid + agents.events_unchecked, 0);
    // ...but its checkpoint cannot be recomputed from a selection.
    assert!(r
        .partial_of(PartialKind::CheckpointUnchecked)
        .any(|p| p.stream == AGENTS));
    // The audit service's chain is not in the input.
    assert!(r
        .partial_of(PartialKind::SignerNotInInput)
        .any(|p| p.stream == AUDIT));
}

#[test]
fn a_range_from_seq_1_verifies_the_checkpoints_it_holds() {
    let (mut d, alice, _) = busy();
    let cp = d.checkpoint(AGENTS);
    let size = d.checkpoint_payload(cp).tree_size;
    d.act(&alice, "task.more");
    d.act(&alice, "task.more");
    let mut streams = complete(&d.streams);
    for s in streams.iter_mut() {
        if s.0 == AGENTS {
            s.1 = Scope::Range;
            s.2.retain(|m| m.seq <= size + 1);
        }
    }
    let r = audit(d.trust_root(), &streams, None);
    assert!(r.failures.is_empty(), "{}", failures(&r));
    let agents = r.stream(AGENTS).expect("agents");
    assert_eq!(agents.checkpointed_size, size);
    assert_eq!(
        agents.events_valid, size,
        "the checkpointed prefix is verified"
    );
    assert_eq!(agents.evidence, Evidence::Partial);
    let p: Vec<_> = r
        .partial_of(PartialKind::NotCovered)
        .filter(|p| p.stream == AGENTS)
        .collect();
    assert_eq!((p.len(), p[0].first_seq), (1, Some(size + 1)));
}

#[test]
fn a_range_with_a_hole_inside_is_a_deletion() {
    let (mut d, _, _) = busy();
    d.checkpoint_all();
    let mut streams = complete(&d.streams);
    for s in streams.iter_mut() {
        if s.0 == AGENTS {
            s.1 = Scope::Range;
            s.2.retain(|m| m.seq >= 5 && m.seq != 9);
        }
    }
    let r = audit(d.trust_root(), &streams, None);
    let missing: Vec<_> = r
        .failures_of(amai_audit::FailureKind::MissingEvent)
        .collect();
    assert_eq!(missing.len(), 1, "{}", failures(&r));
    assert_eq!(missing[0].seq, Some(9));
}
