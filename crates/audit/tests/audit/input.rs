//! Unusable input is refused with a kind to match on (the CLI's exit code 2).

use amai_audit::{Auditor, ExportedMessage, InputErrorKind, Scope};
use amai_checkpoint::{LogKey, WitnessKey};
use ed25519_dalek::SigningKey;

fn root() -> ed25519_dalek::VerifyingKey {
    SigningKey::from_bytes(&[9; 32]).verifying_key()
}

fn message(stream: &str, seq: u64) -> ExportedMessage {
    ExportedMessage {
        stream: stream.into(),
        seq,
        subject: "amai.agent.x".into(),
        published_at: None,
        data: vec![],
        msg_id: String::new(),
    }
}

#[test]
fn streams_are_declared_once_before_their_messages_and_ended_once() {
    let mut a = Auditor::new(root());
    let e = a.push(message("AMAI_AGENTS", 1)).expect_err("undeclared");
    assert_eq!(e.kind(), InputErrorKind::UndeclaredStream);
    a.declare_stream("AMAI_AGENTS", Scope::Complete)
        .expect("declare");
    let e = a
        .declare_stream("AMAI_AGENTS", Scope::Complete)
        .expect_err("twice");
    assert_eq!(e.kind(), InputErrorKind::DeclaredTwice);
    a.push(message("AMAI_AGENTS", 1)).expect("push");
    a.end_stream("AMAI_AGENTS").expect("end");
    let e = a.push(message("AMAI_AGENTS", 2)).expect_err("ended");
    assert_eq!(e.kind(), InputErrorKind::StreamEnded);
    let e = a
        .declare_stream("agents", Scope::Complete)
        .expect_err("bad name");
    assert_eq!(e.kind(), InputErrorKind::BadStreamName);
    let e = a
        .add_stream(
            "AMAI_TRUST",
            Scope::Complete,
            vec![message("AMAI_NAMES", 1)],
        )
        .expect_err("another stream's message");
    assert_eq!(e.kind(), InputErrorKind::MessageOfAnotherStream);
}

#[test]
fn witness_policies_must_be_satisfiable_by_cosignature_keys() {
    let w = WitnessKey::new("w.example/1", SigningKey::from_bytes(&[3; 32])).expect("witness");
    let e = Auditor::new(root())
        .witnesses(vec![w.verifier()], 2)
        .expect_err("quorum");
    assert_eq!(e.kind(), InputErrorKind::QuorumUnreachable);
    let e = Auditor::new(root())
        .witnesses(vec![w.verifier(), w.verifier()], 2)
        .expect_err("one key listed twice is one witness");
    assert_eq!(e.kind(), InputErrorKind::QuorumUnreachable);
    let log = LogKey::new("amai/x/AMAI_AGENTS", SigningKey::from_bytes(&[4; 32])).expect("log");
    let e = Auditor::new(root())
        .witnesses(vec![log.verifier()], 1)
        .expect_err("a log key is no witness key");
    assert_eq!(e.kind(), InputErrorKind::NotACosignatureKey);
    assert!(Auditor::new(root())
        .witnesses(vec![w.verifier()], 1)
        .is_ok());
}

#[test]
fn garbage_is_malformed_not_a_crash() {
    let mut a = Auditor::new(root());
    a.declare_stream("AMAI_AGENTS", Scope::Complete)
        .expect("declare");
    let mut m = message("AMAI_AGENTS", 1);
    m.data = vec![0xff, 0xfe, 0x00];
    a.push(m).expect("push");
    let mut m = message("AMAI_AGENTS", 2);
    m.subject = "not.an.amai.subject".into();
    a.push(m).expect("push");
    let r = a.finish();
    assert_eq!(r.exit_code(), 1);
    assert_eq!(r.failures.len(), 2, "{}", r.human_summary());
    assert!(r
        .failures
        .iter()
        .all(|f| f.kind == amai_audit::FailureKind::Malformed));
}
