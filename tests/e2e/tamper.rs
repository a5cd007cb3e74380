//! A rogue publisher with NATS admin rights against `amai audit verify`,
//! online (through the gateway) and offline (from `amai export`): an honest
//! deployment is authoritative; a flipped byte, a forged event inserted,
//! reordered events, a deleted event (deny_delete turned off), a truncated
//! tail and a whole stream rewritten consistently with a stolen agent key are
//! each invalid, at the exact event or checkpoint, with their precise kind.
//! (A witness's view of the last case is `witness.rs`.)

use amai_bus::envelope::{EventDraft, VerifiedEvent};
use amai_bus::subjects::Aggregate;
use amai_bus::IdentityKeys;
use bytes::Bytes;
use serde_json::Value;

use crate::util::*;

const AGENTS: &str = "AMAI_AGENTS";

struct Deployed {
    world: World,
    _identity: Proc,
    _audit: Proc,
    _gateway: Proc,
    alice_keys: IdentityKeys,
    alice_id: String,
}

async fn cli_nats(world: &World, list: &[&str]) -> CliOutput {
    let mut a = world.globals();
    a.extend(args(list));
    run_cli(&a).await
}

/// A deployment with history, every non-empty stream checkpointed.
async fn deployed() -> Deployed {
    let world = World::new();
    let identity = world.worker("w1").await;
    let audit = audit_worker(&world, "a1").await;
    let (gateway, client) = world.gateway().await;
    let alice_keys = IdentityKeys::generate();
    let alice = sdk_agent(&client, "alice", alice_keys.clone()).await;
    let bob = sdk_agent(&client, "bob", IdentityKeys::generate()).await;
    for i in 0..3 {
        alice
            .append_action("note.written", &format!("{{\"n\":{i}}}"))
            .await
            .expect("action");
        bob.append_action("note.read", &format!("{{\"n\":{i}}}"))
            .await
            .expect("action");
    }
    // One trust.initialized per identity: wait for them, then checkpoint.
    let js = world.jetstream().await;
    wait_until("trust initialised for everyone", DEADLINE, || async {
        let ids = stream_messages(&js, "AMAI_NAMES").await;
        if stream_messages(&js, "AMAI_TRUST").await >= ids {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    checkpoint_everything(&world).await;
    let alice_id = alice.id().to_string();
    Deployed {
        world,
        _identity: identity,
        _audit: audit,
        _gateway: gateway,
        alice_keys,
        alice_id,
    }
}

/// Checkpoints every non-empty stream once its audit tree holds it all.
async fn checkpoint_everything(world: &World) {
    let status = wait_until("the audit trees catch up", DEADLINE, || async {
        let out = world.cli(&["audit", "status", "--json"]).await;
        let v: Value = serde_json::from_str(out.stdout.trim()).map_err(|_| ())?;
        let js = world.jetstream().await;
        for s in v["streams"].as_array().ok_or(())? {
            let name = s["stream"].as_str().ok_or(())?;
            if s["tree_size"].as_u64() < Some(stream_messages(&js, name).await) {
                return Err(());
            }
        }
        Ok(v)
    })
    .await;
    for s in status["streams"].as_array().expect("streams") {
        if s["tree_size"].as_u64().unwrap_or(0) == 0 {
            continue;
        }
        let stream = s["stream"].as_str().expect("name");
        world
            .cli(&[
                "audit",
                "checkpoint",
                "--stream",
                stream,
                "--request",
                "--keys",
                &world.operator_key_file(),
                "--json",
            ])
            .await
            .ok();
    }
}

/// `amai audit verify` online: exit code and report.
async fn verify_online(world: &World) -> (i32, Value) {
    let out = world
        .cli(&[
            "audit",
            "verify",
            "--keys",
            &world.operator_key_file(),
            "--json",
        ])
        .await;
    let report = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}\n{}", out.stdout, out.stderr));
    (out.status.code().unwrap_or(-1), report)
}

/// `amai export` then `amai audit verify --file`: exit code and report.
async fn verify_offline(world: &World) -> (i32, Value) {
    let file = world
        .path()
        .join(format!("export-{}.amai", uuid::Uuid::new_v4()));
    let file = file.display().to_string();
    cli_nats(world, &["export", "--out", &file, "--json"])
        .await
        .ok();
    let out = world
        .cli(&["audit", "verify", "--file", &file, "--json"])
        .await;
    let report = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}\n{}", out.stdout, out.stderr));
    (out.status.code().unwrap_or(-1), report)
}

/// Whether the report has a failure of `kind` in `stream` (at `seq`, when given).
fn failure(report: &Value, kind: &str, stream: &str, seq: Option<u64>) -> bool {
    report["failures"].as_array().is_some_and(|fs| {
        fs.iter().any(|f| {
            f["kind"] == kind
                && f["stream"] == stream
                && seq.is_none_or(|s| f["seq"].as_u64() == Some(s))
        })
    })
}

/// An auditing witness (`--audit`, the operator's key, a fresh state) refuses
/// the history and alerts: exit 3, `SPLIT_VIEW_KIND_INVALID_HISTORY`.
async fn auditing_witness_alerts(world: &World) {
    let state = world
        .path()
        .join(format!("witness-{}.json", uuid::Uuid::new_v4()));
    let out = world
        .cli(&[
            "audit",
            "witness",
            "--keys",
            &world.operator_key_file(),
            "--state",
            &state.display().to_string(),
            "--audit",
            "--once",
            "--json",
        ])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}\n{}", out.stdout, out.stderr);
    let v: Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_eq!(v["kind"], "SPLIT_VIEW_KIND_INVALID_HISTORY", "{v}");
}

/// Both audits find the stream invalid with `kind` (at `seq`), and so does an
/// auditing witness.
async fn both_find(world: &World, kind: &str, stream: &str, seq: Option<u64>) {
    auditing_witness_alerts(world).await;
    for (how, (code, report)) in [
        ("online", verify_online(world).await),
        ("offline", verify_offline(world).await),
    ] {
        assert_eq!(code, 1, "{how}: invalid exits 1: {report}");
        assert_eq!(report["evidence"], "invalid", "{how}: {report}");
        assert!(
            failure(&report, kind, stream, seq),
            "{how}: expected {kind} in {stream} at {seq:?}: {}",
            report["failures"]
        );
    }
}

/// Every message of a stream: (subject, payload).
async fn messages(world: &World, stream: &str) -> Vec<(String, Bytes)> {
    let js = world.jetstream().await;
    let last = stream_messages(&js, stream).await;
    let s = js.get_stream(stream).await.expect("stream");
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = s.get_raw_message(seq).await.expect("message");
        out.push((m.subject.to_string(), m.payload));
    }
    out
}

/// The admin's rewrite: the stream deleted, recreated with its config, and
/// `messages` published in order.
async fn rewrite(world: &World, stream: &str, messages: Vec<(String, Bytes)>) {
    let js = world.jetstream().await;
    let config = js
        .get_stream(stream)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .config
        .clone();
    js.delete_stream(stream).await.expect("delete");
    js.create_stream(config).await.expect("recreate");
    for (subject, payload) in messages {
        js.publish(subject, payload)
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
}

/// The index (0-based) of alice's `n`-th action message.
fn alice_action(msgs: &[(String, Bytes)], alice: &str, n: usize) -> usize {
    let agg = Aggregate::agent(alice).expect("agg");
    msgs.iter()
        .enumerate()
        .filter(|(_, (_, p))| {
            VerifiedEvent::decode(p)
                .is_ok_and(|e| e.aggregate == agg && e.event_type() == "note.written")
        })
        .nth(n)
        .map(|(i, _)| i)
        .expect("alice's action")
}

#[tokio::test]
async fn an_honest_deployment_is_authoritative_online_and_offline() {
    let d = deployed().await;
    for (how, (code, report)) in [
        ("online", verify_online(&d.world).await),
        ("offline", verify_offline(&d.world).await),
    ] {
        assert_eq!(report["evidence"], "authoritative", "{how}: {report}");
        assert_eq!(code, 0, "{how}");
        assert!(
            report["counts"]["events_verified"].as_u64() > Some(10),
            "{how}: {report}"
        );
    }
    // Unusable input is exit 2, with what to do.
    let out = d
        .world
        .cli(&["audit", "verify", "--file", "/nonexistent.amai"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

#[tokio::test]
async fn a_flipped_byte_is_invalid_at_its_event_and_its_checkpoint() {
    let d = deployed().await;
    let mut msgs = messages(&d.world, AGENTS).await;
    let i = alice_action(&msgs, &d.alice_id, 1);
    let mut bytes = msgs[i].1.to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    msgs[i].1 = bytes.into();
    rewrite(&d.world, AGENTS, msgs).await;
    let seq = i as u64 + 1;
    let (_, report) = verify_online(&d.world).await;
    let at_event = ["bad_signature", "malformed"]
        .iter()
        .any(|k| failure(&report, k, AGENTS, Some(seq)));
    assert!(at_event, "the event at {seq} fails: {}", report["failures"]);
    both_find(&d.world, "checkpoint_root_mismatch", "AMAI_AUDIT", None).await;
}

#[tokio::test]
async fn a_forged_event_inserted_is_invalid_at_its_position() {
    let d = deployed().await;
    let mut msgs = messages(&d.world, AGENTS).await;
    let i = alice_action(&msgs, &d.alice_id, 1);
    let original = VerifiedEvent::decode(&msgs[i].1).expect("event");
    // Signed by a key that is not alice's, placed right before her action.
    let forger = IdentityKeys::generate();
    let forged = EventDraft::action(
        original.aggregate.clone(),
        "note.written",
        "{\"forged\":true}",
    )
    .after(original.aggregate_seq() - 1, original.prev_hash())
    .sign(&forger, &d.alice_id);
    msgs.insert(
        i,
        (
            msgs[i].0.clone(),
            prost::Message::encode_to_vec(&forged).into(),
        ),
    );
    rewrite(&d.world, AGENTS, msgs).await;
    both_find(&d.world, "unknown_key", AGENTS, Some(i as u64 + 1)).await;
}

#[tokio::test]
async fn reordered_events_break_their_chain_where_they_were_swapped() {
    let d = deployed().await;
    let mut msgs = messages(&d.world, AGENTS).await;
    let (a, b) = (
        alice_action(&msgs, &d.alice_id, 0),
        alice_action(&msgs, &d.alice_id, 1),
    );
    msgs.swap(a, b);
    rewrite(&d.world, AGENTS, msgs).await;
    let (_, report) = verify_online(&d.world).await;
    let broken = ["chain_broken", "sequence_gap"]
        .iter()
        .any(|k| failure(&report, k, AGENTS, Some(a as u64 + 1)));
    assert!(
        broken,
        "the first swapped event fails: {}",
        report["failures"]
    );
    both_find(&d.world, "checkpoint_root_mismatch", "AMAI_AUDIT", None).await;
}

#[tokio::test]
async fn a_deleted_event_is_missing_at_its_sequence() {
    let d = deployed().await;
    let msgs = messages(&d.world, AGENTS).await;
    let i = alice_action(&msgs, &d.alice_id, 1);
    let js = d.world.jetstream().await;
    // JetStream never turns deny_delete off on a stream: the admin recreates
    // it without, republishes everything (same sequences), then deletes one.
    let mut config = js
        .get_stream(AGENTS)
        .await
        .expect("s")
        .info()
        .await
        .expect("i")
        .config
        .clone();
    config.deny_delete = false;
    js.delete_stream(AGENTS).await.expect("delete stream");
    js.create_stream(config)
        .await
        .expect("recreate without deny_delete");
    for (subject, payload) in msgs {
        js.publish(subject, payload)
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    let deleted = js
        .get_stream(AGENTS)
        .await
        .expect("s")
        .delete_message(i as u64 + 1)
        .await
        .expect("delete");
    assert!(deleted);
    both_find(&d.world, "missing_event", AGENTS, Some(i as u64 + 1)).await;
}

#[tokio::test]
async fn a_truncated_tail_is_reported_at_the_checkpoint_that_covered_it() {
    let d = deployed().await;
    let mut msgs = messages(&d.world, AGENTS).await;
    let keep = msgs.len() - 2;
    msgs.truncate(keep);
    rewrite(&d.world, AGENTS, msgs).await;
    both_find(&d.world, "truncated_stream", "AMAI_AUDIT", None).await;
}

#[tokio::test]
async fn a_consistent_rewrite_with_a_stolen_key_contradicts_the_signed_checkpoint() {
    let d = deployed().await;
    let mut msgs = messages(&d.world, AGENTS).await;
    let i = alice_action(&msgs, &d.alice_id, 2);
    let original = VerifiedEvent::decode(&msgs[i].1).expect("event");
    // Alice's last action, replaced by one signed with her stolen key: every
    // chain still verifies.
    let forged = EventDraft::action(
        original.aggregate.clone(),
        "note.written",
        "{\"n\":\"rewritten\"}",
    )
    .after(original.aggregate_seq() - 1, original.prev_hash())
    .sign(&d.alice_keys, &d.alice_id);
    msgs[i].1 = prost::Message::encode_to_vec(&forged).into();
    rewrite(&d.world, AGENTS, msgs).await;
    let (_, report) = verify_online(&d.world).await;
    let event_failures: Vec<&Value> = report["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .filter(|f| f["stream"] == AGENTS)
        .collect();
    assert!(
        event_failures.is_empty(),
        "every event verifies: {event_failures:?}"
    );
    both_find(&d.world, "checkpoint_root_mismatch", "AMAI_AUDIT", None).await;
}

#[tokio::test]
async fn an_auditing_witness_cosigns_honest_history_and_alerts_on_a_flipped_byte() {
    let d = deployed().await;
    let op = d.world.operator_key_file();
    let state = d
        .world
        .path()
        .join("auditing-witness.json")
        .display()
        .to_string();
    let round = || async {
        d.world
            .cli(&[
                "audit", "witness", "--keys", &op, "--state", &state, "--audit", "--once", "--json",
            ])
            .await
    };
    let first = round().await;
    assert!(first.status.success(), "{}\n{}", first.stdout, first.stderr);
    let v: Value = serde_json::from_str(first.stdout.trim()).expect("json");
    assert_eq!(v["event"], "cosigned", "{v}");

    // The admin flips a byte of alice's action; the log's checkpoints do not
    // change (its tree is its own), the audit before cosigning sees it.
    let mut msgs = messages(&d.world, AGENTS).await;
    let i = alice_action(&msgs, &d.alice_id, 0);
    let mut bytes = msgs[i].1.to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    msgs[i].1 = bytes.into();
    rewrite(&d.world, AGENTS, msgs).await;
    let second = round().await;
    assert_eq!(
        second.status.code(),
        Some(3),
        "{}\n{}",
        second.stdout,
        second.stderr
    );
    let v: Value = serde_json::from_str(second.stdout.trim()).expect("json");
    assert_eq!(v["kind"], "SPLIT_VIEW_KIND_INVALID_HISTORY", "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("{AGENTS}:{}", i + 1)),
        "the alert names the event: {v}"
    );
}
