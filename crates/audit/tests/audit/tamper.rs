//! A rogue publisher with NATS admin rights: each tamper case is invalid,
//! caught at the exact event or checkpoint with the expected kind.

use amai_audit::{AuditReport, Evidence, Failure, FailureKind, PartialKind};
use amai_checkpoint::LogKey;
use amai_core::envelope::{EventDraft, VerifiedEvent};
use amai_core::keys::IdentityKeys;
use amai_core::proto::{self, payload::Kind};
use amai_core::subjects::{Aggregate, AggregateKind};
use prost::Message;

use crate::common::{
    audit, complete, failures, id_at, renumber, Deployment, Identity, AGENTS, AUDIT, TRUST,
};
use crate::honest::busy;

/// The only failure of `kind`.
fn only(r: &AuditReport, kind: FailureKind) -> Failure {
    let all: Vec<&Failure> = r.failures_of(kind).collect();
    assert_eq!(all.len(), 1, "one {kind} expected:\n{}", failures(r));
    all[0].clone()
}

/// The AMAI_AGENTS seqs of `who`'s events, in order.
fn chain_seqs(d: &Deployment, who: &Identity) -> Vec<u64> {
    let subject = who.aggregate().subject();
    d.streams[AGENTS]
        .iter()
        .filter(|m| m.subject == subject)
        .map(|m| m.seq)
        .collect()
}

fn invalid(r: &AuditReport) {
    assert_eq!(r.evidence, Evidence::Invalid, "{}", failures(r));
    assert_eq!(r.exit_code(), 1);
}

#[test]
fn a_flipped_signature_byte_is_a_bad_signature_at_its_seq_and_a_root_mismatch_at_its_checkpoint() {
    let (mut d, alice, _) = busy();
    let cp = d.checkpoint(AGENTS);
    let target = chain_seqs(&d, &alice)[2];
    let id = id_at(&d.streams, AGENTS, target);
    let m = &mut d.streams.get_mut(AGENTS).expect("agents")[target as usize - 1];
    // The signature is the last field of the encoded SignedEvent.
    let last = m.data.len() - 1;
    m.data[last] ^= 0x01;
    let r = d.audit();
    invalid(&r);
    let f = only(&r, FailureKind::BadSignature);
    assert_eq!(
        (f.stream.as_str(), f.seq, f.aggregate.as_deref()),
        (
            AGENTS,
            Some(target),
            Some(alice.aggregate().to_string().as_str())
        )
    );
    let cf = only(&r, FailureKind::CheckpointRootMismatch);
    assert_eq!((cf.stream.as_str(), cf.seq), (AUDIT, Some(cp)));
    let finding = cf.checkpoint.expect("checkpoint finding");
    assert_eq!(
        (
            finding.stream.as_str(),
            finding.matching_size,
            finding.first_suspect_seq
        ),
        (AGENTS, 0, Some(target))
    );
    // The id its (intact) body claims, to locate it.
    assert_eq!(f.event_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        r.stream(AGENTS).expect("agents").evidence,
        Evidence::Invalid
    );
}

#[test]
fn a_flipped_byte_in_a_body_is_malformed_or_a_bad_signature_at_its_seq() {
    let (mut d, _, bob) = busy();
    d.checkpoint(AGENTS);
    let target = chain_seqs(&d, &bob)[1];
    let m = &mut d.streams.get_mut(AGENTS).expect("agents")[target as usize - 1];
    let middle = m.data.len() / 3;
    m.data[middle] ^= 0x20;
    let r = d.audit();
    invalid(&r);
    let at_target: Vec<&Failure> = r
        .failures
        .iter()
        .filter(|f| f.stream == AGENTS && f.seq == Some(target))
        .collect();
    assert_eq!(at_target.len(), 1, "{}", failures(&r));
    assert!(
        matches!(
            at_target[0].kind,
            FailureKind::BadSignature | FailureKind::Malformed
        ),
        "{}",
        failures(&r)
    );
    assert_eq!(
        only(&r, FailureKind::CheckpointRootMismatch)
            .checkpoint
            .and_then(|c| c.first_suspect_seq),
        Some(target)
    );
}

#[test]
fn a_forged_event_inserted_by_another_key_is_an_unknown_key_at_its_seq() {
    let (mut d, alice, _) = busy();
    let cp = d.checkpoint(AGENTS);
    // Forge alice's third event with mallory's key and slip it in right
    // after her second one, republishing the stream.
    let seqs = chain_seqs(&d, &alice);
    let second = &d.streams[AGENTS][seqs[1] as usize - 1];
    let second_hash = amai_core::envelope::hash_bytes(&second.data);
    let mallory = IdentityKeys::generate();
    let forged = EventDraft::action(alice.aggregate(), "funds.sent", "{}")
        .after(2, second_hash)
        .sign(&mallory, &alice.id);
    let mut msg = d.streams[AGENTS][seqs[1] as usize - 1].clone();
    msg.data = forged.encode_to_vec();
    let at = seqs[1] as usize; // index after alice's second event
    let agents = d.streams.get_mut(AGENTS).expect("agents");
    agents.insert(at, msg);
    renumber(agents);
    let forged_seq = at as u64 + 1;
    let r = d.audit();
    invalid(&r);
    let f = only(&r, FailureKind::UnknownKey);
    assert_eq!(
        (f.stream.as_str(), f.seq, f.aggregate_seq),
        (AGENTS, Some(forged_seq), Some(3))
    );
    assert_eq!(r.failures.iter().filter(|f| f.stream == AGENTS).count(), 1);
    // alice's events after it are not checked against her chain.
    assert!(r.stream(AGENTS).expect("agents").events_unchecked >= 2);
    let cf = only(&r, FailureKind::CheckpointRootMismatch);
    assert_eq!(cf.seq, Some(cp));
    assert_eq!(
        cf.checkpoint.and_then(|c| c.first_suspect_seq),
        Some(forged_seq)
    );
}

#[test]
fn a_forged_event_published_at_the_tail_is_invalid_at_its_seq() {
    let (mut d, alice, _) = busy();
    d.checkpoint_all();
    let (head, hash) = d.head(&alice.aggregate());
    let forged = EventDraft::action(alice.aggregate(), "funds.sent", "{}")
        .after(head, hash)
        .sign(&IdentityKeys::generate(), &alice.id);
    let seq = d.append(forged);
    let r = d.audit();
    invalid(&r);
    let f = only(&r, FailureKind::UnknownKey);
    assert_eq!((f.stream.as_str(), f.seq), (AGENTS, Some(seq)));
    assert_eq!(
        r.failures.len(),
        1,
        "the checkpoints still hold: {}",
        failures(&r)
    );
}

#[test]
fn reordered_events_are_a_sequence_gap_at_the_first_misplaced_one() {
    let (mut d, alice, _) = busy();
    let cp = d.checkpoint(AGENTS);
    let seqs = chain_seqs(&d, &alice);
    let (a, b) = (seqs[2] as usize - 1, seqs[3] as usize - 1);
    let agents = d.streams.get_mut(AGENTS).expect("agents");
    let (ma, mb) = (agents[a].data.clone(), agents[b].data.clone());
    agents[a].data = mb;
    agents[b].data = ma;
    let r = d.audit();
    invalid(&r);
    let f = only(&r, FailureKind::SequenceGap);
    assert_eq!(
        (f.stream.as_str(), f.seq, f.aggregate_seq),
        (AGENTS, Some(seqs[2]), Some(4))
    );
    let cf = only(&r, FailureKind::CheckpointRootMismatch);
    assert_eq!(cf.seq, Some(cp));
    assert_eq!(
        cf.checkpoint.and_then(|c| c.first_suspect_seq),
        Some(seqs[2])
    );
}

#[test]
fn messages_given_out_of_stream_order_are_out_of_order() {
    let (mut d, _, _) = busy();
    d.checkpoint_all();
    let agents = d.streams.get_mut(AGENTS).expect("agents");
    agents.swap(4, 5);
    let r = d.audit();
    invalid(&r);
    let f = only(&r, FailureKind::OutOfOrder);
    assert_eq!((f.stream.as_str(), f.seq), (AGENTS, Some(5)));
}

#[test]
fn a_deleted_event_is_missing_at_its_seq_and_breaks_its_chain() {
    let (mut d, alice, _) = busy();
    let cp = d.checkpoint(AGENTS);
    let seqs = chain_seqs(&d, &alice);
    let deleted = seqs[2];
    d.streams
        .get_mut(AGENTS)
        .expect("agents")
        .retain(|m| m.seq != deleted);
    let r = d.audit();
    invalid(&r);
    let f = only(&r, FailureKind::MissingEvent);
    assert_eq!(
        (f.stream.as_str(), f.seq, f.last_seq),
        (AGENTS, Some(deleted), None)
    );
    let gap = only(&r, FailureKind::SequenceGap);
    assert_eq!((gap.seq, gap.aggregate_seq), (Some(seqs[3]), Some(4)));
    let cf = only(&r, FailureKind::CheckpointRootMismatch);
    assert_eq!(cf.seq, Some(cp));
    assert_eq!(
        cf.checkpoint.and_then(|c| c.first_suspect_seq),
        Some(deleted)
    );
    assert_eq!(r.stream(AGENTS).expect("agents").missing, 1);
}

#[test]
fn a_truncated_tail_is_reported_at_the_checkpoint_with_what_is_missing() {
    let (mut d, _, _) = busy();
    let cp = d.checkpoint(AGENTS);
    let agents = d.streams.get_mut(AGENTS).expect("agents");
    let keep = agents.len() - 3;
    agents.truncate(keep);
    let r = d.audit();
    invalid(&r);
    let f = only(&r, FailureKind::TruncatedStream);
    assert_eq!((f.stream.as_str(), f.seq), (AUDIT, Some(cp)));
    let finding = f.checkpoint.expect("finding");
    assert_eq!(
        (
            finding.stream.as_str(),
            finding.missing_messages,
            finding.first_suspect_seq
        ),
        (AGENTS, Some(3), Some(keep as u64 + 1))
    );
    assert_eq!(
        r.stream(AGENTS).expect("agents").evidence,
        Evidence::Invalid
    );
    assert_eq!(
        r.failures.len(),
        1,
        "every remaining event is valid: {}",
        failures(&r)
    );
}

/// alice's chain rewritten with her own (stolen) key: same ids and
/// positions, other contents, every link recomputed.
fn rewrite_with_stolen_key(d: &mut Deployment, alice: &Identity) {
    let subject = alice.aggregate().subject();
    let mut prev: Option<(u64, [u8; 32])> = None;
    let agents = d.streams.get_mut(AGENTS).expect("agents");
    for m in agents.iter_mut().filter(|m| m.subject == subject) {
        let ev = VerifiedEvent::decode(&m.data).expect("event");
        if ev.aggregate_seq() > 1 {
            let (seq, hash) = prev.expect("previous event");
            let rewritten =
                EventDraft::action(alice.aggregate(), "funds.sent", "{\"to\":\"mallory\"}")
                    .after(seq, hash)
                    .id(ev.id)
                    .occurred_at(ev.body.occurred_at.expect("time"))
                    .sign(&alice.keys, &alice.id);
            m.data = rewritten.encode_to_vec();
        }
        prev = Some((ev.aggregate_seq(), amai_core::envelope::hash_bytes(&m.data)));
    }
}

#[test]
fn a_stream_rewritten_consistently_with_a_stolen_key_fails_at_its_first_checkpoint() {
    let (mut d, alice, _) = busy();
    let first = d.checkpoint(AGENTS);
    d.act(&alice, "task.more");
    let second = d.checkpoint(AGENTS);
    rewrite_with_stolen_key(&mut d, &alice);
    let r = d.audit();
    invalid(&r);
    assert!(
        r.failures
            .iter()
            .all(|f| f.kind == FailureKind::CheckpointRootMismatch),
        "every event verifies: {}",
        failures(&r)
    );
    let mismatches: Vec<&Failure> = r.failures_of(FailureKind::CheckpointRootMismatch).collect();
    assert_eq!(mismatches.len(), 2);
    assert_eq!(mismatches[0].seq, Some(first));
    assert_eq!(mismatches[1].seq, Some(second));
    let finding = mismatches[0].checkpoint.clone().expect("finding");
    assert_eq!(
        (finding.matching_size, finding.first_suspect_seq),
        (0, None)
    );
    assert_eq!(r.stream(AGENTS).expect("agents").events_invalid, 0);
}

#[test]
fn a_checkpoint_whose_note_is_signed_by_another_key_is_a_bad_checkpoint_signature() {
    let (mut d, _, _) = busy();
    let rogue = LogKey::new(
        amai_audit::origin(&d.deployment(), AGENTS),
        IdentityKeys::generate().signing_key().clone(),
    )
    .expect("log key");
    let size = d.streams[AGENTS].len() as u64;
    let cp = d.checkpoint_at(AGENTS, size, &rogue, |_| {});
    let r = d.audit();
    invalid(&r);
    let f = only(&r, FailureKind::CheckpointBadSignature);
    assert_eq!((f.stream.as_str(), f.seq), (AUDIT, Some(cp)));
    // It covers nothing; it does not implicate the stream itself.
    let agents = r.stream(AGENTS).expect("agents");
    assert_eq!((agents.checkpointed_size, agents.failures), (0, 0));
    assert!(r
        .partial_of(PartialKind::NotCovered)
        .any(|p| p.stream == AGENTS));
}

#[test]
fn a_checkpoint_of_another_origin_is_an_origin_mismatch() {
    let (mut d, _, _) = busy();
    let other = LogKey::new(
        "amai/0000000000000000/AMAI_AGENTS",
        d.audit.keys.signing_key().clone(),
    )
    .expect("log key");
    let size = d.streams[AGENTS].len() as u64;
    let cp = d.checkpoint_at(AGENTS, size, &other, |_| {});
    let r = d.audit();
    invalid(&r);
    assert_eq!(
        only(&r, FailureKind::CheckpointOriginMismatch).seq,
        Some(cp)
    );
}

#[test]
fn a_checkpoint_event_that_differs_from_its_note_is_a_field_mismatch() {
    let (mut d, _, _) = busy();
    let size = d.streams[AGENTS].len() as u64;
    let log = d.log_key(AGENTS);
    let cp = d.checkpoint_at(AGENTS, size, &log, |c| c.root_hash = vec![7; 32]);
    let r = d.audit();
    invalid(&r);
    assert_eq!(only(&r, FailureKind::CheckpointFieldMismatch).seq, Some(cp));
}

#[test]
fn a_checkpoint_on_a_stream_range_that_shrinks_is_reported() {
    let (mut d, _, _) = busy();
    let first = d.checkpoint(AGENTS);
    let size = d.streams[AGENTS].len() as u64;
    let log = d.log_key(AGENTS);
    let smaller = d.checkpoint_at(AGENTS, size - 2, &log, |_| {});
    let r = d.audit();
    invalid(&r);
    let f = only(&r, FailureKind::CheckpointShrank);
    assert_eq!((f.stream.as_str(), f.seq), (AUDIT, Some(smaller)));
    assert_ne!(f.seq, Some(first));
    assert_eq!(
        r.stream(AGENTS).expect("agents").checkpointed_size,
        size,
        "the first checkpoint still holds"
    );
}

#[test]
fn a_checkpoint_listing_a_present_message_as_a_gap_is_a_gap_mismatch() {
    let (mut d, _, _) = busy();
    let size = d.streams[AGENTS].len() as u64;
    let log = d.log_key(AGENTS);
    let cp = d.checkpoint_at(AGENTS, size, &log, |c| c.gaps = vec![2]);
    let r = d.audit();
    invalid(&r);
    let f = only(&r, FailureKind::CheckpointGapMismatch);
    assert_eq!(f.seq, Some(cp));
    assert_eq!(f.checkpoint.and_then(|c| c.first_suspect_seq), Some(2));
}

#[test]
fn a_checkpoint_signed_by_an_agent_is_invalid_at_its_event() {
    let (mut d, alice, _) = busy();
    let size = d.streams[AGENTS].len() as u64;
    let (root, _) = d.tree(AGENTS, size);
    let log = LogKey::new(
        amai_audit::origin(&d.deployment(), AGENTS),
        alice.keys.signing_key().clone(),
    )
    .expect("log key");
    let note = log
        .sign(&amai_checkpoint::Checkpoint::new(log.name(), size, root))
        .expect("note");
    let (alice_head, _) = d.head(&alice.aggregate());
    let forged = d
        .draft(
            Aggregate::new(AggregateKind::Audit, AGENTS).expect("agg"),
            Kind::AuditCheckpointed(proto::AuditCheckpointed {
                stream: AGENTS.into(),
                origin: log.name().into(),
                tree_size: size,
                root_hash: root.to_vec(),
                note: note.text().into(),
                log_signature: note.log_signature().to_vec(),
                gaps: vec![],
            }),
        )
        .signer_seq(alice_head)
        .sign(&alice.keys, &alice.id);
    let seq = d.append(forged);
    let r = d.audit();
    invalid(&r);
    let f = only(&r, FailureKind::NotPermitted);
    assert_eq!((f.stream.as_str(), f.seq), (AUDIT, Some(seq)));
    assert_eq!(
        r.counts.checkpoints, 0,
        "a forged checkpoint is no checkpoint"
    );
}

#[test]
fn two_events_with_one_id_in_a_stream_are_a_duplicate() {
    let (mut d, alice, _) = busy();
    let seqs = chain_seqs(&d, &alice);
    let first_id = id_at(&d.streams, AGENTS, seqs[1]);
    let (head, hash) = d.head(&alice.aggregate());
    let dup = EventDraft::action(alice.aggregate(), "task.again", "{}")
        .after(head, hash)
        .id(first_id.parse().expect("uuid"))
        .sign(&alice.keys, &alice.id);
    let seq = d.append(dup);
    d.checkpoint_all();
    let r = d.audit();
    invalid(&r);
    let f = only(&r, FailureKind::DuplicateEventId);
    assert_eq!(
        (f.seq, f.event_id.as_deref()),
        (Some(seq), Some(first_id.as_str()))
    );
}

#[test]
fn a_cause_that_is_no_event_dangles_in_a_complete_input_and_is_partial_otherwise() {
    let (mut d, alice, _) = busy();
    let trust = d.trust.clone();
    let seq = d.trust_result(&trust, &alice, "0190f2b4-1c2d-7e3f-8a4b-5c6d7e8f9a0b");
    d.checkpoint_all();
    let r = d.audit();
    invalid(&r);
    let f = only(&r, FailureKind::DanglingCausation);
    assert_eq!((f.stream.as_str(), f.seq), (TRUST, Some(seq)));

    let mut partial = complete(&d.streams);
    partial.retain(|(name, _, _)| name != "AMAI_LLM");
    let r = audit(d.trust_root(), &partial, None);
    assert_eq!(r.evidence, Evidence::Partial, "{}", failures(&r));
    let p: Vec<_> = r.partial_of(PartialKind::CausationOutsideInput).collect();
    assert_eq!((p.len(), p[0].first_seq), (1, Some(seq)));
}

#[test]
fn a_documented_gap_at_a_chain_end_is_partial() {
    let (mut d, alice, bob) = busy();
    let last = *chain_seqs(&d, &bob).last().expect("bob's events");
    d.streams
        .get_mut(AGENTS)
        .expect("agents")
        .retain(|m| m.seq != last);
    d.act(&alice, "task.after");
    d.checkpoint_all();
    let cp = d.checkpoint_payload(
        d.streams[AUDIT]
            .iter()
            .map(|m| m.seq)
            .find(|s| d.checkpoint_payload(*s).stream == AGENTS)
            .expect("agents checkpoint"),
    );
    assert_eq!(cp.gaps, vec![last], "the audit role lists the gap");
    let r = d.audit();
    assert_eq!(r.evidence, Evidence::Partial, "{}", failures(&r));
    let p: Vec<_> = r.partial_of(PartialKind::DocumentedGap).collect();
    assert_eq!((p.len(), p[0].first_seq, p[0].events), (1, Some(last), 1));
    assert_eq!(r.stream(AGENTS).expect("agents").documented_gaps, 1);
}

#[test]
fn a_poison_message_fails_once_and_the_reactor_record_citing_it_is_valid() {
    let (mut d, alice, _) = busy();
    let keys = IdentityKeys::generate();
    let operator = d.operator.clone();
    let e = crate::common::endorsement(&operator, &keys, "service", &["failure"]);
    let svc = d.register_keys(keys, "svc-identity", proto::IdentityKind::Service, Some(e));
    // Garbage published raw on alice's subject, then recorded by a reactor
    // as it names undecodable inputs: `<subject>#<stream seq>`.
    let mut poison = d.streams[AGENTS].last().expect("a message").clone();
    poison.seq += 1;
    poison.subject = alice.aggregate().subject();
    poison.data = b"\x0a\x03not an event".to_vec();
    let poison_seq = poison.seq;
    d.streams
        .get_mut(AGENTS)
        .expect("agents")
        .push(poison.clone());
    let cause = format!("{}#{poison_seq}", poison.subject);
    let (signer_seq, _) = d.head(&svc.aggregate());
    let record = d
        .draft(
            Aggregate::new(AggregateKind::Failure, "identity").expect("agg"),
            Kind::ReactorFailed(proto::ReactorFailed {
                role: "identity".into(),
                input_event_id: cause.clone(),
                input_subject: poison.subject.clone(),
                input_stream_seq: poison_seq,
                reason: "undecodable".into(),
                deliveries: 1,
            }),
        )
        .signer_seq(signer_seq)
        .causation(cause)
        .sign(&svc.keys, &svc.id);
    d.append(record);
    let r = d.audit();
    invalid(&r);
    assert_eq!(r.failures.len(), 1, "{}", failures(&r));
    let f = &r.failures[0];
    assert_eq!(
        (f.kind, f.stream.as_str(), f.seq),
        (FailureKind::Malformed, AGENTS, Some(poison_seq))
    );
}
