//! The README walkthrough, once through the CLI against `amai up` (with its
//! managed nats-server) and once through the Rust SDK against separate
//! `amai worker` + `amai gateway` processes.

use std::collections::BTreeMap;

use amai_bus::proto::IdentityKind;
use amai_bus::{Aggregate, IdentityKeys};
use serde_json::Value;

use crate::util::*;

/// Client-command arguments for a deployment at `data_dir` / `gateway`.
fn client(data_dir: &str, gateway: &str, rest: &[&str]) -> Vec<String> {
    let mut a = args(&["--data-dir", data_dir, "--gateway-addr", gateway]);
    a.extend(args(rest));
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_cli() {
    let dir = tempfile::Builder::new()
        .prefix("amai-e2e-")
        .tempdir()
        .expect("temp dir");
    let data = dir.path().join("data").display().to_string();
    // Reads are signed: the CLI reads with the operator key `amai up` generated.
    let op_key = dir
        .path()
        .join("data/keys/operator.json")
        .display()
        .to_string();
    let gw = format!("127.0.0.1:{}", amai_testkit::free_port());
    let metrics = format!("127.0.0.1:{}", amai_testkit::free_port());
    let nats_bin = amai_testkit::nats_server_bin().display().to_string();

    // `amai up` with its own managed nats-server on a free port.
    let mut up = Proc::spawn(
        "up",
        dir.path(),
        &args(&[
            "up",
            "--nats-port",
            "0",
            "--nats-server",
            &nats_bin,
            "--data-dir",
            &data,
            "--gateway-addr",
            &gw,
            "--metrics-addr",
            &metrics,
            "--llm-addr",
            "127.0.0.1:0",
            "--console-addr",
            "127.0.0.1:0",
        ]),
    );
    up.wait_for_log("amai up: gateway on", DEADLINE).await;
    wait_gateway(&gw).await;
    let console = console_signs_in(&up.log()).await;
    let run = |rest: Vec<&str>| {
        let a = client(&data, &gw, &rest);
        async move { run_cli(&a).await }
    };
    // A one-time link signed with the operator key signs in once.
    let link = run(vec![
        "console", "link", "--keys", &op_key, "--origin", &console, "--json",
    ])
    .await
    .json();
    let link = link["link"].as_str().expect("link").to_string();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    let first = http.get(&link).send().await.expect("console answers");
    assert!(first.status().is_redirection(), "{}", first.status());
    assert!(first.headers().get(reqwest::header::SET_COOKIE).is_some());
    let replayed = http.get(&link).send().await.expect("console answers");
    assert_eq!(replayed.status(), reqwest::StatusCode::UNAUTHORIZED);

    // Keys.
    let alice_key = dir.path().join("alice.key").display().to_string();
    let bob_key = dir.path().join("bob.key").display().to_string();
    let alice_gen = run(vec!["keys", "generate", "--out", &alice_key, "--json"])
        .await
        .json();
    let bob_gen = run(vec!["keys", "generate", "--out", &bob_key, "--json"])
        .await
        .json();
    let alice_id = alice_gen["id"].as_str().expect("alice id").to_string();
    let bob_id = bob_gen["id"].as_str().expect("bob id").to_string();
    assert_ne!(alice_id, bob_id);
    assert!(alice_gen["did"]
        .as_str()
        .expect("did")
        .starts_with("did:key:"));

    // Register.
    let reg = run(vec![
        "agent",
        "register",
        "--keys",
        &alice_key,
        "--name",
        "alice",
        "--meta",
        "role=researcher",
        "--json",
    ])
    .await
    .json();
    assert_eq!(reg["id"], Value::from(alice_id.clone()));
    assert_eq!(reg["position"]["stream"], "AMAI_AGENTS");
    let reg = run(vec![
        "agent", "register", "--keys", &bob_key, "--name", "bob", "--json",
    ])
    .await
    .json();
    assert_eq!(reg["id"], Value::from(bob_id.clone()));

    // Show: the identity worker initialises the trust score to 60.0.
    let alice = wait_until("alice shows trust score 60.0", DEADLINE, || {
        let f = run(vec!["agent", "show", "alice", "--json"]);
        async move {
            let out = f.await;
            if !out.status.success() {
                return Err(out.stderr);
            }
            let v: Value = serde_json::from_str(out.stdout.trim()).map_err(|e| e.to_string())?;
            if v["trust_score"].as_f64() == Some(60.0) {
                Ok(v)
            } else {
                Err(format!("not yet: {v}"))
            }
        }
    })
    .await;
    assert_eq!(alice["id"], Value::from(alice_id.clone()));
    assert_eq!(alice["name"], "alice");
    assert_eq!(alice["kind"], "agent");
    assert_eq!(alice["metadata"]["role"], "researcher");
    assert_eq!(alice["revoked"], false);
    wait_until("bob is visible", DEADLINE, || {
        let f = run(vec!["agent", "show", "bob", "--json"]);
        async move {
            let out = f.await;
            if out.status.success() {
                Ok(())
            } else {
                Err(out.stderr)
            }
        }
    })
    .await;

    // A live tail (the default start: new events only) sees the message that
    // is sent next, and nothing from before it.
    let mut tail = Proc::spawn(
        "tail",
        dir.path(),
        &client(
            &data,
            &gw,
            &[
                "events", "tail", "--keys", &op_key, "--count", "1", "--json",
            ],
        ),
    );
    tail.wait_for_log("amai: following AMAI_AGENTS", DEADLINE)
        .await;

    // Message alice -> bob, read from bob's inbox.
    run(vec![
        "message",
        "send",
        "--keys",
        &alice_key,
        "--to",
        "bob",
        "the results are in",
    ])
    .await
    .ok();
    assert!(tail.wait_exit(DEADLINE).await.success(), "{}", tail.log());
    let live: Vec<Value> = tail
        .log()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(live.len(), 1, "{}", tail.log());
    assert_eq!(live[0]["type"], "agent.message_sent", "{}", tail.log());
    let inbox = wait_until("bob's inbox has alice's message", DEADLINE, || {
        let f = run(vec!["message", "inbox", "--keys", &bob_key, "--json"]);
        async move {
            let out = f.await;
            if !out.status.success() {
                return Err(out.stderr);
            }
            let v: Value = serde_json::from_str(out.stdout.trim()).map_err(|e| e.to_string())?;
            match v.as_array() {
                Some(list) if !list.is_empty() => Ok(list.clone()),
                _ => Err(format!("empty: {v}")),
            }
        }
    })
    .await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert_eq!(inbox[0]["from"], Value::from(alice_id.clone()));
    assert_eq!(inbox[0]["text"], "the results are in");

    // Events: operator, the identity, llm, jail, trust, audit and lifecycle
    // services, alice, bob registered + one message.
    let out = run(vec![
        "events",
        "tail",
        "--keys",
        &op_key,
        "--from-seq",
        "1",
        "--count",
        "10",
        "--json",
    ])
    .await
    .ok();
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect();
    assert_eq!(events.len(), 10, "{out}");
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types.iter().filter(|t| **t == "agent.registered").count(),
        9,
        "{types:?}"
    );
    let sent: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "agent.message_sent")
        .collect();
    assert_eq!(sent.len(), 1, "{types:?}");
    assert_eq!(sent[0]["actor"], Value::from(alice_id.clone()));
    assert_eq!(
        sent[0]["aggregate"],
        Value::from(format!("agent/{alice_id}"))
    );
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<u64>>());

    // Chain verification, client-side.
    let report = run(vec![
        "chain", "verify", "alice", "--keys", &alice_key, "--json",
    ])
    .await
    .json();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["events_checked"], 2, "genesis + message: {report}");
    assert_eq!(
        report["aggregate"],
        Value::from(format!("agent/{alice_id}"))
    );
    // The operator (trust root) and the endorsed service verify too: the CLI takes
    // the trust root from the data dir of the local `amai up`.
    for who in ["operator", "svc-identity"] {
        let report = run(vec!["chain", "verify", who, "--keys", &bob_key, "--json"])
            .await
            .json();
        assert_eq!(report["ok"], true, "{who}: {report}");
    }

    // The metrics endpoint reports the reactor's work, the projection's lag and
    // the gateway's requests.
    let text = wait_until("metrics show the registrations", DEADLINE, || {
        let metrics = metrics.clone();
        async move {
            let text = http_get(&metrics, "/metrics").await?;
            // One trust.initialized per registration: operator, six services, two agents.
            if text.contains("amai_reactor_outputs_appended_total{role=\"identity\"} 9") {
                Ok(text)
            } else {
                Err(text)
            }
        }
    })
    .await;
    assert!(
        text.contains(
            "amai_projection_lag{role=\"identity\",projection=\"identity\",stream=\"AMAI_AGENTS\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "amai_gateway_requests_total{method=\"/amai.v1.IdentityService/Register\"} 2"
        ),
        "{text}"
    );

    // Stats: operator, six services, alice and bob; one message.
    let stats = wait_until("stats count the message", DEADLINE, || {
        let f = run(vec!["stats", "--json"]);
        async move {
            let v = f.await.json();
            if v["messages"] == 1 {
                Ok(v)
            } else {
                Err(v)
            }
        }
    })
    .await;
    assert_eq!(stats["identities"], 9, "{stats}");
    assert_eq!(stats["per_kind"]["agent"], 2, "{stats}");
    assert_eq!(stats["per_kind"]["operator"], 1, "{stats}");
    // One service identity per role: identity, llm, jail, trust, audit and
    // lifecycle.
    assert_eq!(stats["per_kind"]["service"], 6, "{stats}");
    assert_eq!(stats["revoked"], 0, "{stats}");
    assert_eq!(stats["integrity_violations"], 0, "{stats}");

    // Key rotation, then revocation signed with the new key.
    let alice2_key = dir.path().join("alice2.key").display().to_string();
    run(vec!["keys", "generate", "--out", &alice2_key])
        .await
        .ok();
    let out = run(vec![
        "agent",
        "rotate-key",
        "--keys",
        &alice_key,
        "--new-keys",
        &alice2_key,
    ])
    .await
    .ok();
    assert!(out.contains("rotated"), "{out}");
    // The old key no longer signs for alice: an append with it is refused.
    let stale = run(vec![
        "agent", "revoke", "--keys", &alice_key, "--reason", "x",
    ])
    .await;
    assert!(
        !stale.status.success(),
        "a rotated-out key must not revoke: {stale:?}"
    );
    assert!(stale.stderr.contains("rotated out"), "{}", stale.stderr);
    run(vec![
        "agent",
        "revoke",
        "--keys",
        &alice2_key,
        "--id",
        &alice_id,
        "--reason",
        "retired",
    ])
    .await
    .ok();
    let alice = wait_until("alice shows as revoked", DEADLINE, || {
        let f = run(vec!["agent", "show", &alice_id, "--json"]);
        async move {
            let v = f.await.json();
            if v["revoked"] == true {
                Ok(v)
            } else {
                Err(v)
            }
        }
    })
    .await;
    assert_eq!(alice["revoked_reason"], "retired");
    assert_eq!(
        alice["chain_length"], 4,
        "genesis, message, rotation, revocation"
    );
    // A revoked identity cannot send any more.
    let refused = run(vec![
        "message",
        "send",
        "--keys",
        &alice2_key,
        "--id",
        &alice_id,
        "--to",
        "bob",
        "still here?",
    ])
    .await;
    assert!(
        !refused.status.success(),
        "a revoked identity must not send: {refused:?}"
    );
    assert!(refused.stderr.contains("was revoked"), "{}", refused.stderr);
    // The whole chain, across the rotation, still verifies.
    let report = run(vec![
        "chain", "verify", &alice_id, "--keys", &op_key, "--json",
    ])
    .await
    .json();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["events_checked"], 4, "{report}");
    let stats = run(vec!["stats", "--json"]).await.json();
    assert_eq!(stats["revoked"], 1, "{stats}");
    assert_eq!(stats["messages"], 1, "{stats}");

    // Graceful stop.
    up.sigterm();
    let status = up.wait_exit(DEADLINE).await;
    assert!(
        status.success(),
        "amai up exited with {status}:\n{}",
        up.log()
    );
    assert!(up.log().contains("stopped cleanly"), "{}", up.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_grpc() {
    let world = World::new();
    let _worker = world.worker("w1").await;
    let (_gateway, client) = world.gateway().await;

    let alice_keys = IdentityKeys::generate();
    let bob_keys = IdentityKeys::generate();
    let alice = client.agent(alice_keys.clone());
    let bob = client.agent(bob_keys.clone());
    let meta = BTreeMap::from([("role".to_string(), "researcher".to_string())]);
    let reg_a = alice
        .register("alice", IdentityKind::Agent, meta)
        .await
        .expect("register alice");
    assert_eq!(reg_a.agent_id, alice_keys.identity_id());
    assert_eq!(reg_a.did, alice_keys.did());
    let reg_b = bob
        .register("bob", IdentityKind::Agent, BTreeMap::new())
        .await
        .expect("register bob");

    // GetIdentity with the consistency token: the identity is there at once;
    // the trust score follows from the worker's reaction.
    let ident = identity_at(&client, alice.id(), reg_a.position.clone())
        .await
        .expect("alice at her registration position");
    assert_eq!(ident.name, "alice");
    assert_eq!(
        ident.metadata.get("role").map(String::as_str),
        Some("researcher")
    );
    identity_at(&client, bob.id(), reg_b.position.clone())
        .await
        .expect("bob at his registration position");
    let ident = wait_until("alice's trust score is 60.0", DEADLINE, || {
        let c = client.clone();
        async move {
            let i = c.get_identity("alice").await.map_err(|e| e.to_string())?;
            if i.trust_score == Some(60.0) {
                Ok(i)
            } else {
                Err(format!("trust score {:?}", i.trust_score))
            }
        }
    })
    .await;
    assert_eq!(ident.id, alice.id());
    assert_eq!(ident.chain_length, 1);
    assert!(!ident.revoked);

    // A sealed message; bob opens it and the sender is verified.
    let sent = alice
        .send_message("bob", b"the results are in")
        .await
        .expect("send");
    assert_eq!(sent.aggregate_seq, 2);
    assert!(!sent.duplicate);
    let inbox = wait_until("bob's inbox has the message", DEADLINE, || {
        let b = bob.clone();
        async move {
            let m = b.inbox(0, 100).await.map_err(|e| e.to_string())?;
            if m.is_empty() {
                Err("empty".to_string())
            } else {
                Ok(m)
            }
        }
    })
    .await;
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].plaintext, b"the results are in");
    assert_eq!(inbox[0].from, alice.id());
    assert_eq!(inbox[0].sender_key, alice_keys.public_key());
    assert_eq!(
        inbox[0].position.seq,
        sent.position.as_ref().expect("position").seq
    );

    // Auditor-style verification of both chains.
    let agg = Aggregate::agent(alice.id()).expect("aggregate");
    let report = client.verify_chain(&agg).await.expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events_checked, 2);
    let report = client
        .verify_chain(&Aggregate::agent(bob.id()).expect("aggregate"))
        .await
        .expect("verify");
    assert!(report.ok(), "{report:?}");
    // The trust chain (signed by the identity service) verifies too.
    let trust: Aggregate = format!("trust/{}", alice.id()).parse().expect("trust agg");
    let report = client.verify_chain(&trust).await.expect("verify trust");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events_checked, 1);

    // With the deployment's trust root (the operator key provisioned in the
    // data dir), the operator's and the service's chains verify.
    let operator_keys =
        IdentityKeys::load(&world.data_dir().join("keys/operator.json")).expect("operator key");
    let audited = client.clone().with_trust_root(operator_keys.public_key());
    for name in ["operator", "svc-identity"] {
        let ident = client.get_identity(name).await.expect("bootstrap identity");
        let agg = Aggregate::agent(&ident.id).expect("aggregate");
        let report = audited.verify_chain(&agg).await.expect("verify");
        assert!(report.ok(), "{name}: {report:?}");
    }
    assert_eq!(
        client.get_identity("operator").await.expect("operator").id,
        operator_keys.identity_id()
    );

    // Stats at the message's position.
    let stats = stats_at(&client, sent.position.clone())
        .await
        .expect("stats");
    assert_eq!(stats.identities, 4, "{stats:?}");
    assert_eq!(stats.messages, 1, "{stats:?}");
    assert_eq!(stats.integrity_violations, 0);
}

/// `amai up` printed the console's sign-in link: it signs in (a session
/// cookie and the console's pages), and a made-up token does not. Returns the
/// console's origin.
async fn console_signs_in(log: &str) -> String {
    let link = log
        .lines()
        .find_map(|l| l.split("sign in with ").nth(1))
        .unwrap_or_else(|| panic!("no console sign-in link in the log:\n{log}"))
        .trim()
        .to_string();
    assert!(link.starts_with("http://127.0.0.1:"), "{link}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    let signed_in = http.get(&link).send().await.expect("console answers");
    assert!(
        signed_in.status().is_redirection(),
        "{}",
        signed_in.status()
    );
    let cookie = signed_in
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let origin = link.split("/login").next().expect("origin");
    let home = http
        .get(format!("{origin}/"))
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await
        .expect("home page");
    assert_eq!(home.status(), reqwest::StatusCode::OK);
    let wrong = http
        .get(format!(
            "{origin}/login?token=not-the-token-at-all-not-the-token"
        ))
        .send()
        .await
        .expect("console answers");
    assert_eq!(wrong.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(reqwest::header::SET_COOKIE).is_none());
    origin.to_string()
}

/// Starts `amai up` (managed nats-server on a free port) in `data`.
async fn start_up(dir: &std::path::Path, data: &str, gw: &str) -> Proc {
    let nats_bin = amai_testkit::nats_server_bin().display().to_string();
    let mut up = Proc::spawn(
        "up",
        dir,
        &args(&[
            "up",
            "--nats-port",
            "0",
            "--nats-server",
            &nats_bin,
            "--data-dir",
            data,
            "--gateway-addr",
            gw,
            "--llm-addr",
            "127.0.0.1:0",
            "--console-addr",
            "127.0.0.1:0",
        ]),
    );
    up.wait_for_log("amai up: gateway on", DEADLINE).await;
    wait_gateway(gw).await;
    up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_restart_keeps_state() {
    let dir = tempfile::Builder::new()
        .prefix("amai-e2e-")
        .tempdir()
        .expect("temp dir");
    let data = dir.path().join("data").display().to_string();
    // Reads are signed: the CLI reads with the operator key `amai up` generated.
    let op_key = dir
        .path()
        .join("data/keys/operator.json")
        .display()
        .to_string();
    let gw = format!("127.0.0.1:{}", amai_testkit::free_port());
    let run = |rest: Vec<&str>| {
        let a = client(&data, &gw, &rest);
        async move { run_cli(&a).await }
    };
    let stats_with = |identities: u64| {
        let run = &run;
        move || async move {
            let out = run(vec!["stats", "--json"]).await;
            if !out.status.success() {
                return Err(out.stderr);
            }
            let v: Value = serde_json::from_str(out.stdout.trim()).map_err(|e| e.to_string())?;
            if v["identities"] == identities {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        }
    };

    let mut up = start_up(dir.path(), &data, &gw).await;
    let key = dir.path().join("carol.key").display().to_string();
    run(vec!["keys", "generate", "--out", &key]).await.ok();
    run(vec!["agent", "register", "--keys", &key, "--name", "carol"])
        .await
        .ok();
    // operator, the identity, llm, jail, trust, audit and lifecycle services, carol.
    wait_until("carol is counted", DEADLINE, stats_with(8)).await;
    up.sigterm();
    assert!(up.wait_exit(DEADLINE).await.success(), "{}", up.log());
    let operator_key =
        std::fs::read(dir.path().join("data/keys/operator.json")).expect("operator key");

    // Same data dir: same keys, same streams; the bootstrap is not repeated.
    let mut up = start_up(dir.path(), &data, &gw).await;
    let carol = wait_until("carol is still there", DEADLINE, || {
        let f = run(vec!["agent", "show", "carol", "--json"]);
        async move {
            let out = f.await;
            if out.status.success() {
                Ok(out.stdout)
            } else {
                Err(out.stderr)
            }
        }
    })
    .await;
    let carol: Value = serde_json::from_str(carol.trim()).expect("json");
    assert_eq!(carol["trust_score"], 60.0);
    assert_eq!(carol["chain_length"], 1);
    let stats = wait_until("stats answer", DEADLINE, stats_with(8)).await;
    assert_eq!(
        stats["per_kind"]["operator"], 1,
        "operator registered once: {stats}"
    );
    assert_eq!(
        stats["per_kind"]["service"], 6,
        "each service registered once: {stats}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("data/keys/operator.json")).expect("operator key"),
        operator_key,
        "the operator key is reused"
    );
    let report = run(vec![
        "chain", "verify", "carol", "--keys", &op_key, "--json",
    ])
    .await
    .json();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["events_checked"], 1, "{report}");
    up.sigterm();
    assert!(up.wait_exit(DEADLINE).await.success(), "{}", up.log());
    assert!(up.log().contains("stopped cleanly"));
}

/// Queries for things that do not exist answer NOT_FOUND (reason `NOT_FOUND`),
/// through the gateway and the worker; nothing is created.
#[tokio::test]
async fn queries_for_missing_things_are_not_found() {
    let world = World::new();
    let _worker = world.worker("w1").await;
    let (_gateway, client) = world.gateway().await;

    let nobody = IdentityKeys::generate().identity_id();
    let err = client.get_identity(&nobody).await.expect_err("no such id");
    let status = err.status().expect("a gRPC status");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert_eq!(err.kind(), amai_client::ErrorKind::NotFound, "{err}");

    let err = client
        .get_identity("no-such-name")
        .await
        .expect_err("no such name");
    let status = err.status().expect("a gRPC status");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert_eq!(err.kind(), amai_client::ErrorKind::NotFound, "{err}");

    let err = client.get_keys(&nobody).await.expect_err("no keys");
    assert_eq!(err.status().expect("status").code(), tonic::Code::NotFound);

    let err = client
        .get_event(amai_bus::Position::new("AMAI_AGENTS", 1_000_000))
        .await
        .expect_err("no event there");
    assert_eq!(err.status().expect("status").code(), tonic::Code::NotFound);

    let agg = amai_bus::Aggregate::agent(&nobody).expect("aggregate");
    let head = client
        .chain_head(&agg)
        .await
        .expect("an empty chain has a head");
    assert_eq!(head.aggregate_seq, 0, "asking created nothing");
    let err = client
        .verify_chain_on_server(&agg)
        .await
        .expect_err("nothing to verify");
    assert_eq!(err.status().expect("status").code(), tonic::Code::NotFound);
}

/// An auditor's `amai chain verify` exits 1 and names the first failure when an
/// event that never went through the store (here: a forged signature published
/// raw onto the subject) sits in a chain.
#[tokio::test]
async fn chain_verify_cli_reports_a_forged_event() {
    let world = World::new();
    let _worker = world.worker("w1").await;
    let (_gateway, client) = world.gateway().await;
    let mallory = register_one(&client, "mallory").await;
    let agg = amai_bus::Aggregate::agent(&mallory.id).expect("aggregate");
    let head = client.chain_head(&agg).await.expect("head");

    let ok = world
        .cli(&[
            "chain",
            "verify",
            "mallory",
            "--keys",
            &world.operator_key_file(),
            "--json",
        ])
        .await
        .json();
    assert_eq!(ok["ok"], true, "{ok}");

    let mut forged = amai_bus::EventDraft::action(agg.clone(), "task.forged", "{}")
        .after(head.aggregate_seq, head.hash)
        .sign(&mallory.keys, &mallory.id);
    forged.signature[0] ^= 0x55;
    let js = world.jetstream().await;
    js.publish(agg.subject(), prost::Message::encode_to_vec(&forged).into())
        .await
        .expect("publish")
        .await
        .expect("ack");

    let out = world
        .cli(&[
            "chain",
            "verify",
            "mallory",
            "--keys",
            &world.operator_key_file(),
            "--json",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", out.stderr);
    let report: Value = serde_json::from_str(out.stdout.trim()).expect("json report");
    assert_eq!(report["ok"], false);
    assert_eq!(
        report["failure"]["kind"], "CHAIN_FAILURE_KIND_BAD_SIGNATURE",
        "{report}"
    );
    assert_eq!(report["failure"]["aggregate_seq"], 2, "{report}");

    // The worker's projection refused it too, and says so.
    let violations = wait_until("the violation is listed", DEADLINE, || async {
        let v = world
            .cli(&["projections", "violations", "--json"])
            .await
            .json();
        if v["total"] == 1 {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
    .await;
    let v = &violations["violations"][0];
    assert_eq!(
        v["kind"], "CHAIN_FAILURE_KIND_BAD_SIGNATURE",
        "{violations}"
    );
    assert_eq!(v["aggregate"], Value::from(format!("agent/{}", mallory.id)));
    assert_eq!(v["aggregate_seq"], 2);
    let stats = world.cli(&["stats", "--json"]).await.json();
    assert_eq!(stats["integrity_violations"], 1, "{stats}");
}

/// A minimal HTTP/1.0 GET (the metrics endpoint is plain text).
async fn http_get(addr: &str, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    conn.read_to_string(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Ok(body)
}
