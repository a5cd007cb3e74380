//! `amai export` / `amai import` end to end: a deployment with content in
//! every projection is exported, imported into a fresh nats-server, and the
//! projections rebuilt there (no reactor, no bootstrap) have the digests of
//! the original's; every stream, the trust feed included, has the same
//! messages at the same sequence numbers. Refused imports publish nothing.

use std::collections::BTreeMap;

use crate::util::*;

/// Starts `amai worker --role trust --instance <instance>`.
async fn trust_worker(world: &World, instance: &str) -> Proc {
    let mut a = world.globals();
    a.extend(args(&["worker", "--role", "trust", "--instance", instance]));
    let mut p = Proc::spawn(&format!("worker-trust-{instance}"), world.path(), &a);
    p.wait_for_log("trust role up", DEADLINE).await;
    p
}

/// Every Amai stream, as `amai streams ensure` creates them.
fn streams() -> Vec<String> {
    amai_bus::streams::all_stream_configs(&Default::default())
        .into_iter()
        .map(|c| c.name)
        .collect()
}

/// One stored message: subject, bytes, JetStream's time and the
/// `Amai-Published-At` header (set by an import).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    subject: String,
    data: Vec<u8>,
    time: time::OffsetDateTime,
    published_at: Vec<String>,
}

/// Every message of every stream, by sequence (index = sequence - 1).
async fn read_all(js: &async_nats::jetstream::Context) -> BTreeMap<String, Vec<Stored>> {
    let mut out = BTreeMap::new();
    for name in streams() {
        let stream = js.get_stream(&name).await.expect("stream");
        let last = stream.get_info().await.expect("info").state.last_sequence;
        let mut messages = Vec::new();
        for seq in 1..=last {
            let m = stream.get_raw_message(seq).await.expect("message");
            messages.push(Stored {
                subject: m.subject.to_string(),
                data: m.payload.to_vec(),
                time: m.time,
                published_at: m
                    .headers
                    .get_all(amai_bus::store::HEADER_PUBLISHED_AT)
                    .map(|v| v.as_str().to_string())
                    .collect(),
            });
        }
        out.insert(name, messages);
    }
    out
}

/// Waits until nothing more will be written: every consumer of every stream
/// (the reactors' durables) has nothing pending or unacknowledged, and the
/// trust feed holds a copy of every message of its sources. Returns every
/// stream's last sequence.
async fn quiescent(js: &async_nats::jetstream::Context) -> BTreeMap<String, u64> {
    use futures::StreamExt;
    wait_until("the deployment is quiescent", DEADLINE, || async {
        let mut last = BTreeMap::new();
        for name in streams() {
            let mut stream = js.get_stream(&name).await.map_err(|e| e.to_string())?;
            let info = stream.info().await.map_err(|e| e.to_string())?;
            last.insert(name.clone(), info.state.last_sequence);
            let mut consumers = stream.consumers();
            while let Some(c) = consumers.next().await {
                let c = c.map_err(|e| e.to_string())?;
                if c.num_pending > 0 || c.num_ack_pending > 0 {
                    return Err(format!("{name}: consumer {} is busy", c.name));
                }
            }
        }
        let sourced: u64 = amai_bus::streams::TRUST_FEED_SOURCES
            .iter()
            .map(|k| last[k.stream()])
            .sum();
        if last["AMAI_TRUST_FEED"] != sourced {
            return Err(format!(
                "the feed holds {} of {sourced}",
                last["AMAI_TRUST_FEED"]
            ));
        }
        Ok(last)
    })
    .await
}

/// `amai projections digest --json` output, as (role/projection -> (sha256, entries, checkpoints)).
fn digests(out: CliOutput) -> BTreeMap<String, serde_json::Value> {
    let v = out.json();
    v["projections"]
        .as_array()
        .expect("projections")
        .iter()
        .map(|p| {
            (
                format!(
                    "{}/{}",
                    p["role"].as_str().expect("role"),
                    p["projection"].as_str().expect("projection")
                ),
                p.clone(),
            )
        })
        .collect()
}

/// Runs `amai <globals> <extra globals> <list>`.
async fn run_in(world: &World, extra: &[&str], list: &[&str]) -> CliOutput {
    let mut a = world.globals();
    a.extend(args(extra));
    a.extend(args(list));
    run_cli(&a).await
}

/// The error kind of a refused `amai import --json`, after checking it
/// published nothing.
fn refusal(out: CliOutput) -> (String, String) {
    assert!(
        !out.status.success(),
        "the import was accepted: {}",
        out.stdout
    );
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {} / {}", out.stdout, out.stderr));
    assert_eq!(v["published_anything"], false, "{v}");
    (
        v["error"]["kind"].as_str().expect("kind").to_string(),
        v["error"]["message"].as_str().expect("message").to_string(),
    )
}

/// Message counts of every stream.
async fn counts(js: &async_nats::jetstream::Context) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for name in streams() {
        out.insert(name.clone(), stream_messages(js, &name).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_into_a_fresh_deployment_reproduces_every_stream_and_projection() {
    // The original deployment: identity and trust workers, a gateway.
    let a = World::new();
    let mut identity = a.worker("w1").await;
    let mut trust = trust_worker(&a, "t1").await;
    let (_gateway, client) = a.gateway().await;
    let js_a = a.jetstream().await;
    let root = amai_bus::IdentityKeys::load(&a.data_dir().join("keys/operator.json"))
        .expect("operator key")
        .public_key();
    let root = hex::encode(root.as_bytes());

    // Agents, actions (one with a blob), a sealed message, an endorsement, a
    // key rotation: content in the identity and trust projections.
    let mut keys = BTreeMap::new();
    for name in ["alice", "bob", "carol"] {
        let (key, id) = gen_keys(&a, name).await;
        a.cli(&["agent", "register", "--keys", &key, "--name", name])
            .await
            .ok();
        keys.insert(name, (key, id));
    }
    wait_until("the trust role knows bob", DEADLINE, || async {
        let out = a.cli(&["trust", "show", "bob", "--json"]).await;
        if out.status.success() {
            Ok(())
        } else {
            Err(out.stderr)
        }
    })
    .await;
    let alice = client
        .agent(amai_bus::IdentityKeys::load(std::path::Path::new(&keys["alice"].0)).expect("keys"));
    let carol = client
        .agent(amai_bus::IdentityKeys::load(std::path::Path::new(&keys["carol"].0)).expect("keys"));
    alice
        .append_action("note.taken", r#"{"n":1}"#)
        .await
        .expect("action");
    let (blob, _) = alice
        .append_action_with_blob("report.filed", r#"{"kind":"report"}"#, vec![7u8; 100_000])
        .await
        .expect("action with a blob");
    carol
        .append_action("note.taken", r#"{"n":2}"#)
        .await
        .expect("action");
    a.cli(&[
        "message",
        "send",
        "--keys",
        &keys["alice"].0,
        "--to",
        "bob",
        "the results are in",
    ])
    .await
    .ok();
    a.cli(&[
        "trust",
        "endorse",
        "--keys",
        &keys["alice"].0,
        "bob",
        "--statement",
        "reviewed",
    ])
    .await
    .ok();
    let bob2 = a.path().join("bob2.key").display().to_string();
    a.cli(&["keys", "generate", "--out", &bob2]).await.ok();
    a.cli(&[
        "agent",
        "rotate-key",
        "--keys",
        &keys["bob"].0,
        "--new-keys",
        &bob2,
    ])
    .await
    .ok();

    // Nothing more will be written; the identity projection has it all.
    let last = quiescent(&js_a).await;
    for stream in ["AMAI_AGENTS", "AMAI_NAMES", "AMAI_TRUST"] {
        let at = amai_bus::proto::Position {
            stream: stream.into(),
            seq: last[stream],
        };
        stats_at(&client, Some(at))
            .await
            .expect("identity caught up");
    }
    identity.sigterm();
    assert!(identity.wait_exit(DEADLINE).await.success());
    trust.sigterm();
    assert!(trust.wait_exit(DEADLINE).await.success());
    let original = read_all(&js_a).await;

    // The workers' own stores, read offline, and a rebuild from the streams
    // have the same digests.
    let rebuilt_a = digests(run_in(&a, &[], &["projections", "digest", "--json"]).await);
    for (role, state) in [("identity", "identity-w1"), ("trust", "trust-t1")] {
        let live = digests(
            a.cli(&[
                "projections",
                "digest",
                "--role",
                role,
                "--state",
                state,
                "--json",
            ])
            .await,
        );
        let key = format!("{role}/{role}");
        assert_eq!(
            live[&key], rebuilt_a[&key],
            "{key}: the worker's store vs a rebuild"
        );
        let checkpoints = live[&key]["checkpoints"].as_object().expect("checkpoints");
        for (stream, seq) in checkpoints {
            assert_eq!(
                seq,
                &serde_json::json!(last[stream]),
                "{key} applied all of {stream}"
            );
        }
    }
    for role in ["identity/identity", "trust/trust", "llm/llm", "jail/jail"] {
        assert!(rebuilt_a.contains_key(role), "{role} in {rebuilt_a:?}");
        assert!(
            rebuilt_a[role]["entries"].as_u64() > Some(1),
            "{role} has content"
        );
    }

    // Export everything.
    let file = a.path().join("everything.amai-export");
    let file_arg = file.display().to_string();
    let exported = run_in(&a, &[], &["export", "--out", &file_arg, "--json"])
        .await
        .json();
    let total: u64 = last.values().sum();
    assert_eq!(exported["messages"], total, "{exported}");
    assert_eq!(exported["blobs"], 1, "{exported}");
    assert_eq!(exported["missing_blobs"], serde_json::json!([]));
    for s in exported["streams"].as_array().expect("streams") {
        let name = s["stream"].as_str().expect("stream");
        assert_eq!(s["complete"], true, "{s}");
        assert_eq!(s["messages"], last[name], "{s}");
    }
    assert!(!a.path().join("everything.amai-export.partial").exists());

    // A fresh deployment. Its data dir holds another operator key: the import
    // refuses to put a history there that its processes would refuse.
    let b = World::new();
    let (kind, _) = refusal(run_in(&b, &[], &["import", &file_arg, "--json"]).await);
    assert_eq!(kind, "trust_root_mismatch");
    let js_b = b.jetstream().await;
    let imported = run_in(
        &b,
        &["--trust-root", &root],
        &["import", &file_arg, "--json"],
    )
    .await
    .json();
    assert_eq!(imported["blobs"], 1, "{imported}");
    assert_eq!(
        imported["feed"]["messages"], last["AMAI_TRUST_FEED"],
        "{imported}"
    );
    assert_eq!(
        imported["feed"]["in_export_order"], last["AMAI_TRUST_FEED"],
        "{imported}"
    );

    // Every stream, the trust feed included, holds the same messages at the
    // same sequences, and every message keeps its original publish time.
    let copy = read_all(&js_b).await;
    for (stream, messages) in &original {
        let theirs = &copy[stream];
        assert_eq!(theirs.len(), messages.len(), "{stream}: message count");
        for (i, (o, c)) in messages.iter().zip(theirs).enumerate() {
            assert_eq!(
                (&o.subject, &o.data),
                (&c.subject, &c.data),
                "{stream}:{} differs",
                i + 1
            );
            let mut headers = async_nats::HeaderMap::new();
            for p in &c.published_at {
                headers.append(amai_bus::store::HEADER_PUBLISHED_AT, p.as_str());
            }
            let published = amai_bus::reads::published_time(stream, c.time, Some(&headers));
            assert_eq!(
                published,
                o.time,
                "{stream}:{} publish time ({:?})",
                i + 1,
                c.published_at
            );
        }
    }
    let bucket = js_b
        .get_object_store(amai_bus::blob::BLOB_BUCKET)
        .await
        .expect("blob bucket");
    assert!(
        bucket.info(hex::encode(&blob.sha256)).await.is_ok(),
        "the referenced blob was imported"
    );

    // Projections rebuilt from the imported streams (no reactor, no
    // bootstrap) have the original deployment's digests.
    let rebuilt_b = digests(
        run_in(
            &b,
            &["--trust-root", &root],
            &["projections", "digest", "--json"],
        )
        .await,
    );
    assert_eq!(rebuilt_b, rebuilt_a);
    assert_eq!(counts(&js_b).await, last, "the digest added nothing");

    // A second import into the now non-empty deployment is refused.
    let (kind, message) = refusal(
        run_in(
            &b,
            &["--trust-root", &root],
            &["import", &file_arg, "--json"],
        )
        .await,
    );
    assert_eq!(kind, "target_not_empty", "{message}");
    assert!(message.contains("AMAI_AGENTS"), "{message}");
    assert_eq!(counts(&js_b).await, last, "nothing published");

    // A truncated file and a file with one changed byte are refused by a
    // fresh deployment whose streams stay empty.
    let c = World::new();
    run_in(&c, &[], &["streams", "ensure"]).await.ok();
    let js_c = c.jetstream().await;
    let bytes = std::fs::read(&file).expect("read the export");
    let truncated = c.path().join("truncated.amai-export");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).expect("write");
    let (kind, _) = refusal(
        run_in(
            &c,
            &["--trust-root", &root],
            &["import", &truncated.display().to_string(), "--json"],
        )
        .await,
    );
    assert_eq!(kind, "truncated");
    // One byte flipped inside the stored bytes of a message: only the
    // trailer's digest can tell.
    let event = &original["AMAI_AGENTS"][0].data;
    let at = bytes
        .windows(event.len())
        .position(|w| w == event.as_slice())
        .expect("the first event is in the file")
        + event.len() / 2;
    let mut flipped = bytes.clone();
    flipped[at] ^= 0x01;
    let flipped_file = c.path().join("flipped.amai-export");
    std::fs::write(&flipped_file, &flipped).expect("write");
    let (kind, _) = refusal(
        run_in(
            &c,
            &["--trust-root", &root],
            &["import", &flipped_file.display().to_string(), "--json"],
        )
        .await,
    );
    assert_eq!(kind, "digest_mismatch");
    assert!(
        counts(&js_c).await.values().all(|n| *n == 0),
        "every stream of the target is still empty"
    );
}

/// Raw messages on three of the feed's source streams, published one at a
/// time so the feed interleaves them: publishing the export stream by stream
/// would give another feed. The import reproduces the feed message for
/// message (the messages are not events: export and import move stored
/// messages, they do not judge them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trust_feeds_interleaving_of_its_sources_is_reproduced() {
    let a = World::new();
    run_in(&a, &[], &["streams", "ensure"]).await.ok();
    let js = a.jetstream().await;
    let feed = js.get_stream("AMAI_TRUST_FEED").await.expect("feed");
    let order = [
        "agent", "llm", "agent", "jail", "llm", "llm", "agent", "jail", "agent", "llm",
    ];
    for (i, kind) in order.iter().enumerate() {
        js.publish(format!("amai.{kind}.x"), format!("message {i}").into())
            .await
            .expect("publish")
            .await
            .expect("stored");
        wait_until("the feed took it", DEADLINE, || {
            let mut feed = feed.clone();
            async move {
                let n = feed.info().await.map_err(|e| e.to_string())?.state.messages;
                if n == (i + 1) as u64 {
                    Ok(())
                } else {
                    Err(format!("{n} messages"))
                }
            }
        })
        .await;
    }
    let original = read_all(&js).await;
    let feed_subjects: Vec<&str> = original["AMAI_TRUST_FEED"]
        .iter()
        .map(|m| m.subject.as_str())
        .collect();
    let expected: Vec<String> = order.iter().map(|k| format!("amai.{k}.x")).collect();
    assert_eq!(feed_subjects, expected, "the original feed interleaves");

    // A partial export (one aggregate, a sequence range) reads back as
    // partial and is not importable.
    let root = hex::encode(
        amai_bus::IdentityKeys::load(&a.data_dir().join("keys/operator.json"))
            .expect("operator key")
            .public_key()
            .as_bytes(),
    );
    let partial = a.path().join("partial.amai-export");
    let partial_arg = partial.display().to_string();
    let out = run_in(
        &a,
        &[],
        &[
            "export",
            "--out",
            &partial_arg,
            "--aggregate",
            "llm/x",
            "--from-seq",
            "2",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(out["messages"], 3, "LLM messages 2..=4: {out}");
    let llm = &out["streams"][0];
    assert_eq!(llm["stream"], "AMAI_LLM");
    assert_eq!(
        (&llm["first_seq"], &llm["last_seq"], &llm["complete"]),
        (
            &serde_json::json!(2),
            &serde_json::json!(4),
            &serde_json::json!(false)
        )
    );
    assert_eq!(
        out["streams"][1]["stream"], "AMAI_AUDIT",
        "its audit chain, empty here"
    );
    let b = World::new();
    let (kind, message) = refusal(
        run_in(
            &b,
            &["--trust-root", &root],
            &["import", &partial_arg, "--json"],
        )
        .await,
    );
    assert_eq!(kind, "not_importable", "{message}");
    assert!(message.contains("AMAI_LLM"), "{message}");

    // The whole export, imported: the same feed, message for message.
    let file = a.path().join("all.amai-export");
    let file_arg = file.display().to_string();
    run_in(&a, &[], &["export", "--out", &file_arg]).await.ok();
    let imported = run_in(
        &b,
        &["--trust-root", &root],
        &["import", &file_arg, "--json"],
    )
    .await
    .json();
    assert_eq!(
        imported["feed"]["in_export_order"],
        order.len(),
        "{imported}"
    );
    let copy = read_all(&b.jetstream().await).await;
    for (stream, messages) in &original {
        let theirs: Vec<_> = copy[stream].iter().map(|m| (&m.subject, &m.data)).collect();
        let ours: Vec<_> = messages.iter().map(|m| (&m.subject, &m.data)).collect();
        assert_eq!(theirs, ours, "{stream}");
    }
}

/// An import that fails after it started publishing says how far it got:
/// here the second message of AMAI_NAMES is larger than NATS accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_import_says_exactly_how_far_it_got() {
    use amai_export::proto::ExportedMessage;
    let b = World::new();
    let root = amai_bus::IdentityKeys::load(&b.data_dir().join("keys/operator.json"))
        .expect("operator key")
        .public_key();
    let message = |seq: u64, len: usize| ExportedMessage {
        stream: "AMAI_NAMES".into(),
        seq,
        subject: format!("amai.name.n{seq}"),
        published_at: None,
        data: vec![b'x'; len],
        msg_id: format!("id-{seq}"),
    };
    let manifest = amai_export::Manifest::new(
        time::OffsetDateTime::now_utc(),
        amai_export::Deployment::from_trust_root(root.as_bytes()),
        Default::default(),
        vec![amai_export::StreamRange {
            stream: "AMAI_NAMES".into(),
            first_seq: 1,
            last_seq: 2,
            messages: 2,
            complete: true,
        }],
        0,
        Vec::new(),
    );
    let file = b.path().join("too-large.amai-export");
    let mut out = std::fs::File::create(&file).expect("create");
    let mut w = amai_export::ExportWriter::new(&mut out, &manifest).expect("writer");
    w.message(&message(1, 10)).expect("first");
    w.message(&message(2, 2 * 1024 * 1024)).expect("second");
    w.finish().expect("finish");
    drop(out);

    let out = run_in(&b, &[], &["import", &file.display().to_string(), "--json"]).await;
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    assert_eq!(v["error"]["kind"], "publish_failed", "{v}");
    assert_eq!(v["published_anything"], true, "{v}");
    let names = &v["progress"]["streams"][0];
    assert_eq!(
        (&names["stream"], &names["published"], &names["total"]),
        (
            &serde_json::json!("AMAI_NAMES"),
            &serde_json::json!(1),
            &serde_json::json!(2)
        ),
        "{v}"
    );
    let message = v["error"]["message"].as_str().expect("message");
    assert!(message.contains("AMAI_NAMES:2"), "{message}");
    assert!(message.contains("partial import"), "{message}");
    assert_eq!(stream_messages(&b.jetstream().await, "AMAI_NAMES").await, 1);
}
