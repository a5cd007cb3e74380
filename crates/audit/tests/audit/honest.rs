//! Honest deployments: authoritative when everything is checkpointed (and
//! witnessed, when witnesses are required), partial otherwise.

use amai_audit::{Evidence, PartialKind, Scope};
use amai_checkpoint::WitnessKey;

use crate::common::{audit, complete, failures, Deployment, AGENTS, AUDIT, TRUST};

/// Operator, two services, two agents acting, trust results caused by their
/// actions.
pub(crate) fn busy() -> (Deployment, crate::common::Identity, crate::common::Identity) {
    let mut d = Deployment::new();
    let alice = d.agent("alice");
    let bob = d.agent("bob");
    for i in 0..3 {
        let (_, a) = d.act(&alice, "task.done");
        let (_, b) = d.act(&bob, "task.started");
        if i == 0 {
            let trust = d.trust.clone();
            d.trust_result(&trust, &alice, &a);
            d.trust_result(&trust, &bob, &b);
        }
    }
    (d, alice, bob)
}

#[test]
fn an_honest_deployment_checkpointed_is_authoritative() {
    let (mut d, _, _) = busy();
    let checkpoints = d.checkpoint_all();
    let r = d.audit();
    assert_eq!(r.evidence, Evidence::Authoritative, "{}", failures(&r));
    assert_eq!(r.exit_code(), 0);
    assert!(r.failures.is_empty() && r.partial.is_empty());
    assert!(r.input_complete);
    assert_eq!(r.counts.events_valid, r.counts.messages);
    assert_eq!(r.counts.events_verified, r.counts.messages);
    assert_eq!(r.counts.checkpoints, checkpoints.len() as u64);
    assert_eq!(r.counts.checkpoints_verified, checkpoints.len() as u64);
    for s in &r.streams {
        assert_eq!(s.evidence, Evidence::Authoritative, "{}", s.stream);
    }
    let agents = r.stream(AGENTS).expect("agents");
    assert_eq!(agents.checkpointed_size, agents.messages);
    assert_eq!(r.deployment, d.deployment());
}

#[test]
fn with_a_required_witness_that_cosigned_every_checkpoint_it_is_authoritative() {
    let (mut d, _, _) = busy();
    let witness = d.agent("witness");
    let key = WitnessKey::new("witness.example/w1", witness.keys.signing_key().clone())
        .expect("witness key");
    let checkpoints = d.checkpoint_all();
    for seq in &checkpoints {
        d.cosign(&witness, &key, *seq);
    }
    // The cosignature records are in AMAI_AGENTS: a later checkpoint covers them.
    d.checkpoint(AGENTS);
    let r = audit(
        d.trust_root(),
        &complete(&d.streams),
        Some((vec![key.verifier()], 1)),
    );
    assert_eq!(r.evidence, Evidence::Authoritative, "{}", failures(&r));
    assert_eq!(r.counts.checkpoints_witnessed, checkpoints.len() as u64);
    assert_eq!(r.counts.cosignatures, checkpoints.len() as u64);
    assert_eq!(r.counts.witnesses, 1);
    assert_eq!(r.witnesses.required, 1);
}

#[test]
fn without_the_required_cosignature_it_is_partial_not_witnessed() {
    let (mut d, _, _) = busy();
    let witness = d.agent("witness");
    let key = WitnessKey::new("witness.example/w1", witness.keys.signing_key().clone())
        .expect("witness key");
    d.checkpoint_all();
    let r = audit(
        d.trust_root(),
        &complete(&d.streams),
        Some((vec![key.verifier()], 1)),
    );
    assert_eq!(r.evidence, Evidence::Partial, "{}", failures(&r));
    assert_eq!(r.exit_code(), 3);
    assert!(r.failures.is_empty(), "{}", failures(&r));
    let not_witnessed: u64 = r
        .partial_of(PartialKind::NotWitnessed)
        .map(|p| p.events)
        .sum();
    let audited: u64 = r
        .streams
        .iter()
        .filter(|s| s.stream != AUDIT)
        .map(|s| s.messages)
        .sum();
    assert_eq!(
        not_witnessed, audited,
        "every event is covered, none witnessed"
    );
    assert_eq!(r.counts.checkpoints_witnessed, 0);
    assert_eq!(r.stream(AGENTS).expect("agents").witnessed_size, 0);
}

#[test]
fn a_cosignature_by_an_untrusted_witness_does_not_count() {
    let (mut d, _, _) = busy();
    let trusted = d.agent("witness");
    let stranger = d.agent("stranger");
    let trusted_key = WitnessKey::new("witness.example/w1", trusted.keys.signing_key().clone())
        .expect("witness key");
    let stranger_key = WitnessKey::new("witness.example/w1", stranger.keys.signing_key().clone())
        .expect("witness key");
    for seq in d.checkpoint_all() {
        d.cosign(&stranger, &stranger_key, seq);
    }
    d.checkpoint(AGENTS);
    let r = audit(
        d.trust_root(),
        &complete(&d.streams),
        Some((vec![trusted_key.verifier()], 1)),
    );
    assert_eq!(r.evidence, Evidence::Partial, "{}", failures(&r));
    assert!(r.partial_of(PartialKind::NotWitnessed).count() > 0);
    assert_eq!(r.counts.cosignatures, 0);
}

#[test]
fn events_after_the_last_checkpoint_are_partial_not_covered() {
    let (mut d, alice, _) = busy();
    d.checkpoint_all();
    let (late, _) = d.act(&alice, "task.late");
    let (later, _) = d.act(&alice, "task.later");
    let r = d.audit();
    assert_eq!(r.evidence, Evidence::Partial, "{}", failures(&r));
    assert!(r.failures.is_empty());
    let p: Vec<_> = r.partial_of(PartialKind::NotCovered).collect();
    assert_eq!(p.len(), 1, "{}", failures(&r));
    assert_eq!(
        (
            p[0].stream.as_str(),
            p[0].events,
            p[0].first_seq,
            p[0].last_seq
        ),
        (AGENTS, 2, Some(late), Some(later))
    );
    assert_eq!(
        r.stream(AGENTS).expect("agents").evidence,
        Evidence::Partial
    );
    assert_eq!(
        r.stream(TRUST).expect("trust").evidence,
        Evidence::Authoritative
    );
}

#[test]
fn cosignature_records_of_the_latest_checkpoint_need_no_later_checkpoint() {
    let (mut d, alice, _) = busy();
    let witness = d.agent("witness");
    let key = WitnessKey::new("witness.example/w1", witness.keys.signing_key().clone())
        .expect("witness key");
    let checkpoints = d.checkpoint_all();
    // The witness cosigns the latest checkpoints; its records follow them
    // and no checkpoint covers them: the evidence stays authoritative,
    // witnessed or not.
    for seq in &checkpoints {
        d.cosign(&witness, &key, *seq);
    }
    let r = d.audit();
    assert_eq!(r.evidence, Evidence::Authoritative, "{}", failures(&r));
    let r = audit(
        d.trust_root(),
        &complete(&d.streams),
        Some((vec![key.verifier()], 1)),
    );
    assert_eq!(r.evidence, Evidence::Authoritative, "{}", failures(&r));
    // Any other event after them is still uncovered.
    let (late, _) = d.act(&alice, "task.late");
    let r = d.audit();
    let p: Vec<_> = r.partial_of(PartialKind::NotCovered).collect();
    assert_eq!(p.len(), 1, "{}", failures(&r));
    assert_eq!((p[0].events, p[0].first_seq), (1, Some(late)));
}

#[test]
fn a_deployment_never_checkpointed_is_partial_not_covered() {
    let (d, _, _) = busy();
    let r = d.audit();
    assert_eq!(r.evidence, Evidence::Partial);
    let uncovered: u64 = r
        .partial_of(PartialKind::NotCovered)
        .map(|p| p.events)
        .sum();
    assert_eq!(uncovered, r.counts.messages);
    assert_eq!(r.counts.checkpoints, 0);
}

#[test]
fn a_missing_stream_makes_the_whole_partial() {
    let (mut d, _, _) = busy();
    d.checkpoint_all();
    let mut streams = complete(&d.streams);
    streams.retain(|(name, _, _)| name != "AMAI_LLM");
    let r = audit(d.trust_root(), &streams, None);
    assert_eq!(r.evidence, Evidence::Partial);
    assert!(!r.input_complete);
    assert_eq!(r.streams_absent, vec!["AMAI_LLM".to_string()]);
    assert_eq!(r.partial_of(PartialKind::StreamNotInInput).count(), 1);
    assert!(r
        .streams
        .iter()
        .all(|s| s.evidence == Evidence::Authoritative));
}

#[test]
fn streams_may_come_in_any_order() {
    let (mut d, _, _) = busy();
    d.checkpoint_all();
    // AMAI_AGENTS last: every service result waits for its signer's chain.
    let mut auditor = amai_audit::Auditor::new(d.trust_root()).batch_size(3);
    let mut names: Vec<&String> = d.streams.keys().collect();
    names.sort_by_key(|n| n.as_str() == AGENTS);
    for name in names {
        auditor
            .add_stream(name, Scope::Complete, d.streams[name].clone())
            .expect("usable");
    }
    let r = auditor.finish();
    assert_eq!(r.evidence, Evidence::Authoritative, "{}", failures(&r));
}

#[test]
fn progress_counts_every_message() {
    let (d, _, _) = busy();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s = seen.clone();
    let mut auditor = amai_audit::Auditor::new(d.trust_root())
        .batch_size(4)
        .on_progress(move |n| s.store(n, std::sync::atomic::Ordering::SeqCst));
    let mut total = 0;
    for (name, messages) in &d.streams {
        total += messages.len() as u64;
        auditor
            .add_stream(name, Scope::Complete, messages.clone())
            .expect("usable");
    }
    let r = auditor.finish();
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), total);
    assert_eq!(r.counts.messages, total);
}
