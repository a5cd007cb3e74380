//! `amai trust ...` end to end: the real binary's client commands against
//! `amai worker --role identity`, `amai worker --role trust` and `amai
//! gateway` processes.

use crate::util::*;

/// Starts `amai worker --role trust`.
async fn trust_worker(world: &World) -> Proc {
    trust_worker_with(world, "t1", &[]).await
}

/// Starts `amai worker --role trust --instance <instance>` with extra env.
async fn trust_worker_with(world: &World, instance: &str, env: &[(&str, &str)]) -> Proc {
    let mut a = world.globals();
    a.extend(args(&["worker", "--role", "trust", "--instance", instance]));
    let mut p = Proc::spawn_with_env(&format!("worker-trust-{instance}"), world.path(), &a, env);
    p.wait_for_log("trust role up", DEADLINE).await;
    p
}

/// Trust chains (event ids in order) of every agent, read from AMAI_TRUST.
async fn trust_chains(
    js: &async_nats::jetstream::Context,
) -> std::collections::BTreeMap<String, Vec<String>> {
    use prost::Message;
    let stream = js.get_stream("AMAI_TRUST").await.expect("stream");
    let last = stream.get_info().await.expect("info").state.last_sequence;
    let mut chains: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.expect("message");
        let signed = amai_bus::proto::SignedEvent::decode(m.payload.as_ref()).expect("signed");
        let body = amai_bus::proto::EventBody::decode(signed.body.as_slice()).expect("body");
        chains
            .entry(m.subject.to_string())
            .or_default()
            .push(body.id);
    }
    chains
}

/// Two trust workers share the feed; one is killed with SIGKILL mid-stream,
/// the other dies (AMAI_FAULT) right after storing the outputs of an input
/// and before acking it. Both come back on their own state: every endorsement
/// adjusts its agent's trust exactly once, and nothing is recorded as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_workers_killed_mid_stream_adjust_each_agent_exactly_once() {
    const AGENTS: usize = 12;
    let world = World::new();
    let _identity = world.worker("w1").await;
    let mut faulty =
        trust_worker_with(&world, "t1", &[("AMAI_FAULT", "crash-after-publish:3")]).await;
    let mut killed = trust_worker_with(&world, "t2", &[]).await;
    let (_gateway, client) = world.gateway().await;
    let js = world.jetstream().await;
    let operator = amai_bus::IdentityKeys::load(&world.data_dir().join("keys/operator.json"))
        .expect("operator key");
    let operator = client.agent(operator);

    let mut agents = Vec::new();
    for i in 0..AGENTS {
        agents.push(register_one(&client, &format!("trusted-{i}")).await);
    }
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let traffic = {
        let (operator, progress) = (operator.clone(), progress.clone());
        let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
        tokio::spawn(async move {
            for id in ids {
                wait_until("an endorsement", DEADLINE, || {
                    let (operator, id) = (operator.clone(), id.clone());
                    async move {
                        operator
                            .endorse(&id, "vetted")
                            .await
                            .map_err(|e| e.to_string())
                    }
                })
                .await;
                progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    wait_until("a third of the endorsements", DEADLINE, || async {
        let p = progress.load(std::sync::atomic::Ordering::SeqCst);
        if p >= AGENTS / 3 {
            Ok(())
        } else {
            Err(p)
        }
    })
    .await;
    killed.kill9();
    // It comes back on its own state (endorsements are refused, not lost,
    // while no trust worker answers: the traffic retries).
    let _killed = trust_worker_with(&world, "t2", &[]).await;
    let status = faulty.wait_exit(DEADLINE).await;
    assert_eq!(
        status.code(),
        Some(86),
        "the injected crash: {status:?}; log:\n{}",
        faulty.log()
    );
    let _faulty = trust_worker_with(&world, "t1", &[]).await;
    tokio::time::timeout(std::time::Duration::from_secs(120), traffic)
        .await
        .expect("traffic finishes")
        .expect("traffic task");

    let expected: Vec<String> = agents
        .iter()
        .map(|a| format!("amai.trust.{}", a.id))
        .collect();
    let chains = wait_until("every endorsement adjusted its agent", DEADLINE, || async {
        let chains = trust_chains(&js).await;
        let done = expected
            .iter()
            .all(|s| chains.get(s).map(Vec::len) >= Some(2));
        if done {
            Ok(chains)
        } else {
            Err(format!("{} chains", chains.len()))
        }
    })
    .await;
    // The publisher has nothing left in flight: the counts are final.
    wait_until("the trust publisher drained", DEADLINE, || async {
        let stream = js
            .get_stream("AMAI_TRUST_FEED")
            .await
            .map_err(|e| e.to_string())?;
        let mut c = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("trust-publisher")
            .await
            .map_err(|e| e.to_string())?;
        let info = c.info().await.map_err(|e| e.to_string())?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            Ok(())
        } else {
            Err(format!("{} pending", info.num_pending))
        }
    })
    .await;
    let after = trust_chains(&js).await;
    assert_eq!(
        after, chains,
        "nothing more arrived after the chains were complete"
    );
    for subject in &expected {
        let ids = &after[subject];
        assert_eq!(
            ids.len(),
            2,
            "{subject}: trust.initialized and one adjustment, got {ids:?}"
        );
        assert_ne!(ids[0], ids[1]);
    }
    assert_eq!(
        stream_messages(&js, "AMAI_FAILURES").await,
        0,
        "no reactor.failed"
    );
    for a in &agents {
        let summary = client.trust(&a.id).await.expect("trust");
        assert!(summary.score > 60.0, "{}: {}", a.name, summary.score);
        assert_eq!(summary.last_deltas.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_through_the_cli() {
    let world = World::new();
    let _identity = world.worker("w1").await;
    let _trust = trust_worker(&world).await;
    let (_gateway, _client) = world.gateway().await;
    let (alice_key, alice_id) = gen_keys(&world, "alice").await;
    let (bob_key, bob_id) = gen_keys(&world, "bob").await;
    for (key, name) in [(&alice_key, "alice"), (&bob_key, "bob")] {
        world
            .cli(&["agent", "register", "--keys", key, "--name", name])
            .await
            .ok();
    }

    // A fresh agent scores 60.0 (public: no keys), by name or id.
    let shown = wait_until("the trust role knows alice", DEADLINE, || async {
        let out = world.cli(&["trust", "show", "alice", "--json"]).await;
        if out.status.success() {
            Ok(out.json())
        } else {
            Err(out.stderr)
        }
    })
    .await;
    assert_eq!(shown["score"], 60.0);
    assert_eq!(shown["agent_id"], alice_id.as_str());
    let text = world.cli(&["trust", "show", &alice_id]).await.ok();
    assert!(text.contains("60.0"), "{text}");

    // Alice endorses bob by name; a second endorsement is refused once the
    // trust role has seen the first.
    let endorsed = world
        .cli(&[
            "trust",
            "endorse",
            "--keys",
            &alice_key,
            "bob",
            "--statement",
            "reviewed",
            "--json",
        ])
        .await
        .json();
    assert_eq!(endorsed["endorsee"], bob_id.as_str());
    assert_eq!(endorsed["duplicate"], false);
    let history = wait_until("bob's endorsed delta", DEADLINE, || async {
        let out = world
            .cli(&["trust", "history", "--keys", &bob_key, "--json"])
            .await;
        if !out.status.success() {
            return Err(out.stderr);
        }
        let page = out.json();
        match page["deltas"].as_array() {
            Some(d) if !d.is_empty() => Ok(page),
            _ => Err(page.to_string()),
        }
    })
    .await;
    let delta = history["deltas"][0]["event_id"]
        .as_str()
        .expect("delta id")
        .to_string();
    let again = world
        .cli(&["trust", "endorse", "--keys", &alice_key, &bob_id])
        .await;
    assert!(!again.status.success(), "{}", again.stdout);

    // Self-endorsement is refused.
    let own = world
        .cli(&["trust", "endorse", "--keys", &bob_key, "bob"])
        .await;
    assert!(!own.status.success(), "{}", own.stdout);

    // Bob explains his delta and reads his report; alice may not read bob's
    // history and is told what to do.
    let explained = world
        .cli(&["trust", "explain", "--keys", &bob_key, &delta, "--json"])
        .await
        .json();
    assert_eq!(explained["delta"]["event_id"], delta.as_str());
    let report = world
        .cli(&["trust", "report", "--keys", &bob_key, "--json"])
        .await
        .json();
    assert_eq!(report["agent_id"], bob_id.as_str());
    let refused = world
        .cli(&["trust", "history", "--keys", &alice_key, "bob"])
        .await;
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("--keys"), "{}", refused.stderr);
    let alerts = world
        .cli(&[
            "trust",
            "alerts",
            "--keys",
            &world.operator_key_file(),
            "--min-severity",
            "warning",
            "--since",
            "24h",
            "--json",
        ])
        .await
        .json();
    assert!(alerts["alerts"].is_array());
}
