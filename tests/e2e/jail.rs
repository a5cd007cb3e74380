//! Jails end to end with the real binary: a jail worker killed with SIGKILL in
//! the middle of a run leaves nothing behind once a new instance starts, and
//! the run is recorded as failed (orphaned), never run twice; `amai up`
//! without a Docker Engine runs everything else and says why the jail role
//! is unavailable.

use std::collections::BTreeMap;
use std::time::Duration;

use amai_bus::proto::{self, IdentityKind, JailState};
use amai_bus::IdentityKeys;

use crate::util::*;

/// Everything the engine holds for `jail_id` (containers, volumes, networks).
fn engine_objects(jail_id: &str) -> Vec<String> {
    let filter = format!("label=amai.jail={jail_id}");
    let mut out = Vec::new();
    for what in [
        vec!["ps", "-aq", "--filter", &filter],
        vec!["volume", "ls", "-q", "--filter", &filter],
        vec!["network", "ls", "-q", "--filter", &filter],
    ] {
        let listed = std::process::Command::new("docker")
            .args(&what)
            .output()
            .expect("docker");
        out.extend(
            String::from_utf8_lossy(&listed.stdout)
                .lines()
                .map(|l| format!("{} {l}", what[0])),
        );
    }
    out
}

async fn jail_worker(world: &World, instance: &str) -> Proc {
    let mut a = world.globals();
    a.extend(args(&["worker", "--role", "jail", "--instance", instance]));
    let mut p = Proc::spawn(&format!("jail-{instance}"), world.path(), &a);
    p.wait_for_log("jail role up", Duration::from_secs(60))
        .await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jail_worker_killed_mid_run_leaves_nothing_and_its_run_is_marked_orphaned() {
    let world = World::new();
    let _identity = world.worker("i1").await;
    let mut first = jail_worker(&world, "j1").await;
    let (_gateway, client) = world.gateway().await;
    let alice = client.agent(IdentityKeys::generate());
    alice
        .register("alice", IdentityKind::Agent, BTreeMap::new())
        .await
        .expect("register");
    let spec = br#"{"image": "busybox", "command": ["sleep", "300"], "network": "llm-only"}"#;
    let jail = alice.create_jail(spec, true).await.expect("create");
    let id = jail.jail_id.clone();
    wait_until("the jail runs", Duration::from_secs(60), || async {
        match client.jail(&id).await {
            Ok(j) if j.state == JailState::Running as i32 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    first.kill9();
    assert!(
        !engine_objects(&id).is_empty(),
        "a killed worker leaves its jail running"
    );

    // A new instance removes what the dead one left before it starts ...
    let _second = jail_worker(&world, "j2").await;
    assert_eq!(engine_objects(&id), Vec::<String>::new());
    // ... and, once JetStream hands it the unfinished run, records it as failed.
    let failed = wait_until(
        "the run is marked orphaned",
        Duration::from_secs(90),
        || async {
            match client.jail(&id).await {
                Ok(j) if j.state == JailState::Failed as i32 => Ok(j),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let failure = failed.failed.expect("failure");
    assert_eq!(failure.kind, proto::JailFailureKind::Orphaned as i32);
    assert!(failed.finished.is_none(), "the run never ran twice");
    // Exactly one start and one end on the jail's chain.
    let aggregate =
        amai_bus::Aggregate::new(amai_bus::subjects::AggregateKind::Jail, &id).expect("aggregate");
    let page = client.read_chain(&aggregate, 1, 100).await.expect("chain");
    let types: Vec<String> = page
        .events
        .iter()
        .map(|stored| {
            amai_bus::VerifiedEvent::decode(&stored.raw)
                .expect("event")
                .event_type()
                .to_string()
        })
        .collect();
    assert_eq!(
        types,
        ["jail.created", "jail.run_started", "jail.run_failed"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_without_a_docker_engine_runs_everything_but_the_jail_role_and_says_why() {
    let dir = tempfile::Builder::new()
        .prefix("amai-e2e-")
        .tempdir()
        .expect("temp dir");
    let data = dir.path().join("data").display().to_string();
    let gw = format!("127.0.0.1:{}", amai_testkit::free_port());
    let nats_bin = amai_testkit::nats_server_bin().display().to_string();
    let socket = dir.path().join("no-docker.sock");
    let mut up = Proc::spawn_with_env(
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
            "--llm-addr",
            "127.0.0.1:0",
            "--console-addr",
            "127.0.0.1:0",
        ]),
        &[("DOCKER_HOST", &format!("unix://{}", socket.display()))],
    );
    up.wait_for_log("amai up: gateway on", DEADLINE).await;
    let log = up.log();
    assert!(log.contains("role jail unavailable"), "{log}");
    assert!(log.contains("no Docker Engine answers"), "{log}");
    assert!(log.contains("(unavailable: jail)"), "{log}");
    // Everything else serves.
    let client = wait_gateway(&gw).await;
    let alice = client.agent(IdentityKeys::generate());
    alice
        .register("alice", IdentityKind::Agent, BTreeMap::new())
        .await
        .expect("register while the jail role is unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_a_jail_and_shows_its_logs_diff_network_and_reproduction() {
    let world = World::new();
    let _identity = world.worker("i1").await;
    let _jail = jail_worker(&world, "j1").await;
    let (_gateway, _client) = world.gateway().await;
    let (key, id) = gen_keys(&world, "alice").await;
    world
        .cli(&["agent", "register", "--keys", &key, "--name", "alice"])
        .await
        .ok();
    let spec = world.path().join("spec.json");
    std::fs::write(
        &spec,
        br#"{"image": "busybox",
             "command": ["sh", "-c", "echo made > /workspace/made.txt; echo out; exit 7"],
             "limits": {"timeout": "30s"}}"#,
    )
    .expect("spec");
    let spec = spec.display().to_string();

    // `jail run` waits, prints JSON and exits with the jail's exit code.
    let run = world
        .cli(&["jail", "run", "--keys", &key, "--spec", &spec, "--json"])
        .await;
    assert_eq!(run.status.code(), Some(7), "{}\n{}", run.stdout, run.stderr);
    let shown: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("json");
    assert_eq!(shown["state"], "finished");
    assert_eq!(shown["owner"], id.as_str());
    assert_eq!(shown["finished"]["exit_code"], 7);
    assert_eq!(shown["finished"]["paths_added"], 1);
    let jail = shown["jail_id"].as_str().expect("jail id").to_string();

    let logs = world
        .cli(&["jail", "logs", "--keys", &key, &jail])
        .await
        .ok();
    assert_eq!(logs, "out\n");
    let diff = world
        .cli(&["jail", "diff", "--keys", &key, &jail, "--json"])
        .await
        .json();
    assert_eq!(diff["diff_sha256"], shown["finished"]["diff_sha256"]);
    assert_eq!(diff["entries"][0]["path"], "/workspace/made.txt");
    assert_eq!(diff["entries"][0]["change"], "added");
    let network = world
        .cli(&["jail", "network", "--keys", &key, &jail, "--json"])
        .await
        .json();
    assert_eq!(
        network,
        serde_json::json!([]),
        "network none: nothing attempted"
    );
    let listed = world
        .cli(&["jail", "ls", "--keys", &key, "--json"])
        .await
        .json();
    assert_eq!(listed[0]["jail_id"], jail.as_str());

    // A deterministic run reproduces: exit 0 and IDENTICAL.
    let again = world
        .cli(&["jail", "reproduce", "--keys", &key, &jail, "--json"])
        .await;
    assert!(again.status.success(), "{}\n{}", again.stdout, again.stderr);
    let again: serde_json::Value = serde_json::from_str(again.stdout.trim()).expect("json");
    assert_eq!(
        again["reproducibility"]["verdict"],
        "JAIL_VERDICT_IDENTICAL"
    );

    // A bad spec is refused before anything is signed, naming the JSON path.
    std::fs::write(
        world.path().join("bad.json"),
        br#"{"image": "busybox", "command": [], "limits": {"pids": 0}}"#,
    )
    .expect("bad spec");
    let bad = world
        .cli(&[
            "jail",
            "run",
            "--keys",
            &key,
            "--spec",
            &world.path().join("bad.json").display().to_string(),
        ])
        .await;
    assert!(!bad.status.success());
    assert!(bad.stderr.contains("limits.pids"), "{}", bad.stderr);

    // The base images: busybox is already built (the runs built it), so the
    // build finds it; both listings show it.
    let built = world
        .cli(&["jail", "image", "build", "busybox", "--json"])
        .await
        .json();
    assert_eq!(built["built"], false, "{built}");
    assert_eq!(built["image_id"], shown["image_id"]);
    let images = world.cli(&["jail", "image", "ls", "--json"]).await.json();
    assert!(
        images
            .as_array()
            .expect("array")
            .iter()
            .any(|i| i["image_id"] == shown["image_id"]),
        "{images}"
    );

    let removed = world.cli(&["jail", "rm", "--keys", &key, &jail]).await.ok();
    assert!(removed.contains("deleted"), "{removed}");
    let listed = world
        .cli(&["jail", "ls", "--keys", &key, "--json"])
        .await
        .json();
    let ids: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|j| j["jail_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [again["jail_id"].as_str().expect("id")],
        "the deleted jail is not listed"
    );
}
