//! `amai trust ...` end to end: the real binary's client commands against
//! `amai worker --role identity`, `amai worker --role trust` and `amai
//! gateway` processes.

use crate::util::*;

/// Starts `amai worker --role trust`.
async fn trust_worker(world: &World) -> Proc {
    let mut a = world.globals();
    a.extend(args(&["worker", "--role", "trust", "--instance", "t1"]));
    let mut p = Proc::spawn("worker-trust", world.path(), &a);
    p.wait_for_log("trust role up", DEADLINE).await;
    p
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
