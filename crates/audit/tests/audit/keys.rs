//! Key validity at signing time: rotations, revocations, and foreign signers
//! (services endorsed by the operator, judged at the position they cite).

use amai_audit::{Evidence, FailureKind, Scope};
use amai_core::keys::IdentityKeys;
use amai_core::proto::{self, payload::Kind, IdentityKind};
use amai_core::subjects::{Aggregate, AggregateKind};

use crate::common::{audit, complete, endorsement, failures, Deployment, Identity, AGENTS, TRUST};

#[test]
fn an_event_signed_with_a_rotated_out_key_is_invalid_at_that_event() {
    let mut d = Deployment::new();
    let alice = d.agent("alice");
    d.act(&alice, "task.done");
    let next = IdentityKeys::generate();
    d.rotate(&alice, &next);
    d.act(&alice, "task.with_new_key");
    // The old key signs again: whoever still holds it.
    let (stale, _) = d.act_signed(&alice, "task.with_old_key", &alice.keys);
    d.checkpoint_all();
    let r = d.audit();
    assert_eq!(r.evidence, Evidence::Invalid);
    let f: Vec<_> = r.failures.iter().collect();
    assert_eq!(f.len(), 1, "{}", failures(&r));
    assert_eq!(
        (
            f[0].kind,
            f[0].stream.as_str(),
            f[0].seq,
            f[0].aggregate_seq
        ),
        (FailureKind::RotatedKey, AGENTS, Some(stale), Some(5))
    );
}

#[test]
fn an_event_after_revocation_is_invalid_at_that_event() {
    let mut d = Deployment::new();
    let alice = d.agent("alice");
    d.act(&alice, "task.done");
    d.revoke(&alice);
    let (after, _) = d.act(&alice, "task.after_revocation");
    d.checkpoint_all();
    let r = d.audit();
    let f: Vec<_> = r.failures.iter().collect();
    assert_eq!(f.len(), 1, "{}", failures(&r));
    assert_eq!(
        (f[0].kind, f[0].seq),
        (FailureKind::RevokedKey, Some(after))
    );
}

/// A service whose endorsement is signed by a key that is not the
/// operator's (nobody the deployment knows).
fn unendorsed_service(d: &mut Deployment) -> Identity {
    let rogue_operator = Identity {
        keys: IdentityKeys::generate(),
        id: String::new(),
    };
    let rogue_operator = Identity {
        id: rogue_operator.keys.identity_id(),
        ..rogue_operator
    };
    let keys = IdentityKeys::generate();
    let e = endorsement(&rogue_operator, &keys, "service", &["trust"]);
    d.register_keys(keys, "svc-rogue", IdentityKind::Service, Some(e))
}

#[test]
fn a_service_result_signed_by_a_service_the_operator_never_endorsed_is_invalid() {
    let mut d = Deployment::new();
    let alice = d.agent("alice");
    let (_, cause) = d.act(&alice, "task.done");
    let rogue = unendorsed_service(&mut d);
    let genesis = d.streams[AGENTS].last().expect("genesis").seq;
    let result = d.trust_result(&rogue, &alice, &cause);
    d.checkpoint_all();
    for order in [false, true] {
        // Either order of the streams gives the same verdicts.
        let mut streams = complete(&d.streams);
        if order {
            streams.reverse();
        }
        let r = audit(d.trust_root(), &streams, None);
        assert_eq!(r.evidence, Evidence::Invalid);
        let at_genesis: Vec<_> = r.failures.iter().filter(|f| f.stream == AGENTS).collect();
        assert_eq!(at_genesis.len(), 1, "{}", failures(&r));
        assert_eq!(at_genesis[0].seq, Some(genesis));
        assert_eq!(
            at_genesis[0].kind,
            FailureKind::UnknownKey,
            "the endorser is nobody"
        );
        let at_result: Vec<_> = r.failures.iter().filter(|f| f.stream == TRUST).collect();
        assert_eq!(at_result.len(), 1, "{}", failures(&r));
        assert_eq!(
            (at_result[0].kind, at_result[0].seq),
            (FailureKind::UnknownKey, Some(result))
        );
    }
}

#[test]
fn a_service_writing_outside_its_scopes_is_not_permitted() {
    let mut d = Deployment::new();
    let alice = d.agent("alice");
    let (_, cause) = d.act(&alice, "task.done");
    // The audit service may write audit aggregates only.
    let audit_svc = d.audit.clone();
    let seq = d.trust_result(&audit_svc, &alice, &cause);
    d.checkpoint_all();
    let r = d.audit();
    let f: Vec<_> = r.failures.iter().collect();
    assert_eq!(f.len(), 1, "{}", failures(&r));
    assert_eq!(
        (f[0].kind, f[0].stream.as_str(), f[0].seq),
        (FailureKind::NotPermitted, TRUST, Some(seq))
    );
}

#[test]
fn a_service_result_citing_a_position_where_its_key_was_rotated_out_is_invalid() {
    let mut d = Deployment::new();
    let alice = d.agent("alice");
    let (_, cause) = d.act(&alice, "task.done");
    let trust = d.trust.clone();
    d.rotate(&trust, &IdentityKeys::generate());
    // Signed with the old key, citing the service's head (after the rotation).
    let (head, _) = d.head(&trust.aggregate());
    let signed = d
        .draft(
            Aggregate::new(AggregateKind::Trust, &alice.id).expect("agg"),
            Kind::TrustInitialized(proto::TrustInitialized {
                agent_id: alice.id.clone(),
                score: 60.0,
            }),
        )
        .signer_seq(head)
        .causation(cause.clone())
        .sign(&trust.keys, &trust.id);
    let stale = d.append(signed);
    d.checkpoint_all();
    let r = d.audit();
    let f: Vec<_> = r.failures.iter().collect();
    assert_eq!(f.len(), 1, "{}", failures(&r));
    assert_eq!(
        (f[0].kind, f[0].stream.as_str(), f[0].seq),
        (FailureKind::UnknownKey, TRUST, Some(stale))
    );
}

#[test]
fn a_service_result_citing_a_position_where_its_key_was_current_stays_valid_after_rotation() {
    let mut d = Deployment::new();
    let alice = d.agent("alice");
    let (_, cause) = d.act(&alice, "task.done");
    let trust = d.trust.clone();
    // The result is signed (citing seq 1) before the rotation, stored after it.
    let signed = d
        .draft(
            Aggregate::new(AggregateKind::Trust, &alice.id).expect("agg"),
            Kind::TrustInitialized(proto::TrustInitialized {
                agent_id: alice.id.clone(),
                score: 60.0,
            }),
        )
        .signer_seq(1)
        .causation(cause)
        .sign(&trust.keys, &trust.id);
    d.rotate(&trust, &IdentityKeys::generate());
    d.append(signed);
    d.checkpoint_all();
    let r = d.audit();
    assert_eq!(r.evidence, Evidence::Authoritative, "{}", failures(&r));
}

#[test]
fn an_operator_revoking_an_agent_is_judged_at_the_position_it_cites() {
    let mut d = Deployment::new();
    let alice = d.agent("alice");
    d.act(&alice, "task.done");
    let operator = d.operator.clone();
    let (op_head, _) = d.head(&operator.aggregate());
    let revoke = d
        .draft(
            alice.aggregate(),
            Kind::AgentRevoked(proto::AgentRevoked {
                reason: "policy".into(),
            }),
        )
        .signer_seq(op_head)
        .sign(&operator.keys, &operator.id);
    d.append(revoke);
    let (after, _) = d.act(&alice, "task.after");
    d.checkpoint_all();
    let r = d.audit();
    let f: Vec<_> = r.failures.iter().collect();
    assert_eq!(f.len(), 1, "{}", failures(&r));
    assert_eq!(
        (f[0].kind, f[0].seq),
        (FailureKind::RevokedKey, Some(after))
    );

    // An agent may not revoke another.
    let mut d = Deployment::new();
    let alice = d.agent("alice");
    let bob = d.agent("bob");
    let (bob_head, _) = d.head(&bob.aggregate());
    let revoke = d
        .draft(
            alice.aggregate(),
            Kind::AgentRevoked(proto::AgentRevoked {
                reason: "spite".into(),
            }),
        )
        .signer_seq(bob_head)
        .sign(&bob.keys, &bob.id);
    let seq = d.append(revoke);
    d.checkpoint_all();
    let r = audit(d.trust_root(), &complete(&d.streams), None);
    let f: Vec<_> = r.failures.iter().collect();
    assert_eq!(f.len(), 1, "{}", failures(&r));
    assert_eq!(
        (f[0].kind, f[0].seq),
        (FailureKind::NotPermitted, Some(seq))
    );
}

#[test]
fn a_result_whose_signer_chain_is_in_no_stream_is_unknown_in_a_complete_input() {
    let mut d = Deployment::new();
    let alice = d.agent("alice");
    let (_, cause) = d.act(&alice, "task.done");
    // A service nobody registered.
    let ghost = Identity {
        id: IdentityKeys::generate().identity_id(),
        keys: IdentityKeys::generate(),
    };
    let ghost = Identity {
        id: ghost.keys.identity_id(),
        ..ghost
    };
    let signed = d
        .draft(
            Aggregate::new(AggregateKind::Trust, &alice.id).expect("agg"),
            Kind::TrustInitialized(proto::TrustInitialized {
                agent_id: alice.id.clone(),
                score: 60.0,
            }),
        )
        .signer_seq(1)
        .causation(cause)
        .sign(&ghost.keys, &ghost.id);
    let seq = d.append(signed);
    d.checkpoint_all();
    let r = d.audit();
    let f: Vec<_> = r.failures.iter().collect();
    assert_eq!(f.len(), 1, "{}", failures(&r));
    assert_eq!((f[0].kind, f[0].seq), (FailureKind::UnknownKey, Some(seq)));

    // The same without AMAI_AGENTS complete is partial, not tampering.
    let mut streams = complete(&d.streams);
    for s in streams.iter_mut() {
        if s.0 == AGENTS {
            s.1 = Scope::Selection;
        }
    }
    let r = audit(d.trust_root(), &streams, None);
    assert!(r.failures.is_empty(), "{}", failures(&r));
    assert_eq!(r.evidence, Evidence::Partial);
}
