//! `amai audit witness` and the audit role through the real binaries: a
//! witness cosigns a consistent log round after round, a client requires its
//! cosignature, and when an admin with NATS rights rewrites a stream
//! consistently (re-signing with a stolen agent key), drops the checkpoints
//! and has a fresh audit instance sign the rewritten history, the witness
//! raises a split view: exit 3 and `audit.split_view_detected` on its chain.

use amai_bus::envelope::{EventDraft, VerifiedEvent};
use amai_bus::subjects::Aggregate;
use amai_bus::IdentityKeys;
use amai_checkpoint::VerifierKey;

use crate::util::*;

const AGENTS: &str = "AMAI_AGENTS";

/// Waits until the audit tree of AMAI_AGENTS holds the whole stream, then
/// has the audit service checkpoint it (as the operator).
async fn checkpoint_all(world: &World) -> serde_json::Value {
    let js = world.jetstream().await;
    let last = stream_messages(&js, AGENTS).await;
    wait_until("the audit tree catches up", DEADLINE, || async {
        let s = world.cli(&["audit", "status", "--json"]).await;
        let v: serde_json::Value = serde_json::from_str(s.stdout.trim()).map_err(|_| ())?;
        let size = v["streams"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["stream"] == AGENTS))
            .and_then(|s| s["tree_size"].as_u64())
            .unwrap_or(0);
        if size >= last {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    world
        .cli(&[
            "audit",
            "checkpoint",
            "--stream",
            AGENTS,
            "--request",
            "--keys",
            &world.operator_key_file(),
            "--json",
        ])
        .await
        .json()
}

/// The log origin of AMAI_AGENTS in this world's deployment.
fn origin(world: &World) -> String {
    let operator = IdentityKeys::load(&world.data_dir().join("keys/operator.json")).expect("key");
    let deployment = amai_workers::role::PreflightContext {
        trust_root: Some(operator.public_key()),
    }
    .deployment();
    format!("amai/{deployment}/{AGENTS}")
}

async fn witness_once(world: &World, key_file: &str) -> CliOutput {
    let state = world
        .path()
        .join("witness-state.json")
        .display()
        .to_string();
    world
        .cli(&[
            "audit",
            "witness",
            "--origin",
            &origin(world),
            "--keys",
            key_file,
            "--state",
            &state,
            "--once",
            "--json",
        ])
        .await
}

#[tokio::test]
async fn a_witness_cosigns_a_consistent_log_and_raises_a_split_view_on_rewritten_history() {
    let world = World::new();
    let _identity = world.worker("w1").await;
    let mut audit = audit_worker(&world, "a1").await;
    let (_gw, client) = world.gateway().await;

    let (witness_key, witness_id) = gen_keys(&world, "witness").await;
    world
        .cli(&[
            "agent",
            "register",
            "--keys",
            &witness_key,
            "--name",
            "witness",
        ])
        .await
        .ok();
    let alice_keys = IdentityKeys::generate();
    let alice = sdk_agent(&client, "alice", alice_keys.clone()).await;
    alice
        .append_action("note.written", "{\"n\":1}")
        .await
        .expect("action");

    // A witness told to follow another origin refuses this log's key.
    let other = world
        .cli(&[
            "audit",
            "witness",
            "--origin",
            "amai/0000000000000000/AMAI_AGENTS",
            "--keys",
            &witness_key,
            "--state",
            &world.path().join("other.json").display().to_string(),
            "--once",
        ])
        .await;
    assert!(!other.status.success(), "{}", other.stdout);
    assert!(other.stderr.contains("not the origin"), "{}", other.stderr);

    // Round 1: the first checkpoint is cosigned.
    let first = checkpoint_all(&world).await;
    let out = witness_once(&world, &witness_key).await;
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let round: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_eq!(round["event"], "cosigned", "{round}");
    assert_eq!(round["tree_size"], first["tree_size"]);
    // Nothing new: nothing cosigned twice.
    let again: serde_json::Value =
        serde_json::from_str(witness_once(&world, &witness_key).await.ok().trim()).expect("json");
    assert_eq!(again["event"], "unchanged", "{again}");

    // Round 2: more history, a larger checkpoint, consistent: cosigned.
    alice
        .append_action("note.written", "{\"n\":2}")
        .await
        .expect("action");
    let second = checkpoint_all(&world).await;
    assert!(second["tree_size"].as_u64() > first["tree_size"].as_u64());
    let round: serde_json::Value =
        serde_json::from_str(witness_once(&world, &witness_key).await.ok().trim()).expect("json");
    assert_eq!(round["event"], "cosigned", "{round}");

    // A client that trusts this witness requires its cosignature.
    let witness_keys = IdentityKeys::load(std::path::Path::new(&witness_key)).expect("keys");
    let vkey =
        VerifierKey::cosignature(format!("witness/{witness_id}"), &witness_keys.public_key())
            .expect("vkey")
            .to_string();
    let js = world.jetstream().await;
    let size = second["tree_size"].as_u64().expect("size").to_string();
    wait_until("the cosignature is served", DEADLINE, || async {
        let out = world
            .cli(&[
                "audit",
                "checkpoint",
                "--stream",
                AGENTS,
                "--size",
                &size,
                "--witness-vkey",
                &vkey,
                "--require-witnesses",
                "1",
                "--json",
            ])
            .await;
        if out.status.success() {
            Ok(())
        } else {
            Err(out.stdout)
        }
    })
    .await;
    let stranger =
        VerifierKey::cosignature("witness/stranger", &IdentityKeys::generate().public_key())
            .expect("vkey")
            .to_string();
    let unwitnessed = world
        .cli(&[
            "audit",
            "checkpoint",
            "--stream",
            AGENTS,
            "--size",
            &size,
            "--witness-vkey",
            &stranger,
            "--require-witnesses",
            "1",
            "--json",
        ])
        .await;
    assert_eq!(unwitnessed.status.code(), Some(1), "{}", unwitnessed.stdout);

    // The attack: an admin stops the audit worker, rewrites AMAI_AGENTS with
    // alice's last action replaced by another one signed with her stolen key
    // (every chain still verifies), drops the checkpoints, and has a fresh
    // audit instance sign the rewritten history.
    audit.kill9();
    let config = js
        .get_stream(AGENTS)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .config
        .clone();
    let last = stream_messages(&js, AGENTS).await;
    let mut messages = Vec::new();
    {
        let s = js.get_stream(AGENTS).await.expect("stream");
        for seq in 1..=last {
            messages.push(s.get_raw_message(seq).await.expect("message"));
        }
    }
    let alice_agg = Aggregate::agent(alice.id()).expect("agg");
    let victim = messages
        .iter()
        .rposition(|m| {
            VerifiedEvent::decode(&m.payload)
                .is_ok_and(|e| e.aggregate == alice_agg && e.event_type() == "note.written")
        })
        .expect("alice's last action");
    let original = VerifiedEvent::decode(&messages[victim].payload).expect("event");
    let forged = EventDraft::action(alice_agg.clone(), "note.written", "{\"n\":\"rewritten\"}")
        .after(original.aggregate_seq() - 1, original.prev_hash())
        .sign(&alice_keys, alice.id());
    js.delete_stream(AGENTS).await.expect("delete stream");
    js.create_stream(config).await.expect("recreate stream");
    for (i, m) in messages.iter().enumerate() {
        let payload = if i == victim {
            prost::Message::encode_to_vec(&forged).into()
        } else {
            m.payload.clone()
        };
        js.publish(m.subject.to_string(), payload)
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    let audit_config = js
        .get_stream("AMAI_AUDIT")
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .config
        .clone();
    js.delete_stream("AMAI_AUDIT")
        .await
        .expect("drop checkpoints");
    js.create_stream(audit_config).await.expect("recreate");
    let _audit = audit_worker(&world, "a2").await;
    checkpoint_all(&world).await;

    // The witness refuses the new view: exit 3, the alert, and the record.
    let out = witness_once(&world, &witness_key).await;
    assert_eq!(out.status.code(), Some(3), "{}\n{}", out.stdout, out.stderr);
    let round: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_eq!(round["event"], "split_view", "{round}");
    assert!(
        [
            "SPLIT_VIEW_KIND_INCONSISTENT",
            "SPLIT_VIEW_KIND_SAME_SIZE_DIFFERENT_ROOT"
        ]
        .contains(&round["kind"].as_str().unwrap_or_default()),
        "{round}"
    );
    assert!(out.stderr.contains("ALERT"), "{}", out.stderr);
    let witness_agg = Aggregate::agent(&witness_id).expect("agg");
    let head = client.chain_head(&witness_agg).await.expect("head");
    let page = client
        .read_chain(&witness_agg, head.aggregate_seq, 1)
        .await
        .expect("read");
    let last = VerifiedEvent::decode(&page.events[0].raw).expect("event");
    assert_eq!(last.event_type(), "audit.split_view_detected");
}
