//! Scoped cleanup against the real Docker Engine and the real nft (needs root):
//! two deployments sharing the engine remove only their own jails. These tests
//! never skip: without an engine or nft they fail, saying what to do. No traffic
//! leaves the machine (the jails' networks allow nothing and the runs only echo).

use std::collections::BTreeSet;

use amai_jail::net::{CreateNetworkError, JailNetwork, JailNetworkNames, NetworkPlan};
use amai_jail::{
    build_busybox, prepare, remove_scope, Engine, PreparedRun, RemovedScope, RunRequest, Scope,
    SCOPE_LABEL,
};
use amai_jail_spec::NetworkPolicy;
use bollard::Docker;

async fn engine() -> Engine {
    match Engine::connect().await {
        Ok(engine) => engine,
        Err(error) => panic!("these tests need a Docker Engine: {error}"),
    }
}

fn docker() -> Docker {
    Docker::connect_with_local_defaults().expect("docker client")
}

/// A scope unique to this test (scopes of parallel tests never meet).
fn scope(name: &str) -> Scope {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    Scope::new(format!("test-{name}-{}", &unique[..12])).expect("valid scope")
}

fn jail_id() -> String {
    format!("test-{}", uuid::Uuid::new_v4())
}

async fn container_exists(id: &str) -> bool {
    match docker().inspect_container(id, None).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => false,
        Err(error) => panic!("inspecting container {id}: {error}"),
    }
}

async fn volume_exists(name: &str) -> bool {
    match docker().inspect_volume(name).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => false,
        Err(error) => panic!("inspecting volume {name}: {error}"),
    }
}

async fn network_exists(name: &str) -> bool {
    match docker().inspect_network(name, None).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => false,
        Err(error) => panic!("inspecting network {name}: {error}"),
    }
}

async fn nft_table(table: &str) -> Option<String> {
    let output = tokio::process::Command::new("nft")
        .args(["list", "table", "inet", table])
        .output()
        .await
        .expect("nft runs (install the nftables package)");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// One deployment's jail: a network and a prepared run on it, both scoped.
struct Deployment {
    scope: Scope,
    network: JailNetwork,
    run: PreparedRun,
}

impl Deployment {
    async fn prepare(engine: &Engine, image: &str, scope: Scope) -> Self {
        let jail = jail_id();
        let network = JailNetwork::create(
            engine,
            NetworkPlan::new(&jail, NetworkPolicy::Allow(Vec::new())).scope(scope.clone()),
        )
        .await
        .expect("jail network (needs root and nft)");
        let request = RunRequest::new(&jail, image, ["/bin/sh", "-c", "echo done"])
            .network(network.docker_network_name())
            .dns(network.dns_servers())
            .scope(scope.clone());
        let run = prepare(engine, request).await.expect("prepared");
        Self {
            scope,
            network,
            run,
        }
    }

    fn containers(&self) -> BTreeSet<String> {
        BTreeSet::from([
            self.run.container_id().to_owned(),
            self.run.keeper_id().to_owned(),
        ])
    }

    fn volumes(&self) -> BTreeSet<String> {
        let volumes = self.run.volumes();
        BTreeSet::from([volumes.workspace.clone(), volumes.tmp.clone()])
    }

    /// Whether each of its containers, volumes, network and table exists.
    async fn presence(&self) -> Vec<(String, bool)> {
        let mut presence = Vec::new();
        for id in self.containers() {
            presence.push((id.clone(), container_exists(&id).await));
        }
        for name in self.volumes() {
            presence.push((name.clone(), volume_exists(&name).await));
        }
        let names = self.network.names();
        presence.push((names.network.clone(), network_exists(&names.network).await));
        presence.push((names.table.clone(), nft_table(&names.table).await.is_some()));
        presence
    }

    async fn assert_all(&self, present: bool) {
        for (what, exists) in self.presence().await {
            assert_eq!(exists, present, "{what} of scope {}", self.scope);
        }
    }
}

#[tokio::test]
async fn remove_scope_removes_exactly_its_scopes_jails() {
    let engine = engine().await;
    let image = build_busybox(&engine)
        .await
        .expect("busybox image builds")
        .reference;
    let a = Deployment::prepare(&engine, &image, scope("a")).await;
    let b = Deployment::prepare(&engine, &image, scope("b")).await;
    // And a network without a scope.
    let unscoped = JailNetwork::create(
        &engine,
        NetworkPlan::new(jail_id(), NetworkPolicy::Allow(Vec::new())),
    )
    .await
    .expect("unscoped jail network");
    a.assert_all(true).await;
    b.assert_all(true).await;

    // The labels and the table comment carry the scope.
    let labels = docker()
        .inspect_container(a.run.container_id(), None)
        .await
        .expect("inspect")
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default();
    assert_eq!(labels.get(SCOPE_LABEL), Some(&a.scope.to_string()));
    let table = nft_table(&a.network.names().table)
        .await
        .unwrap_or_default();
    assert!(
        table.contains(&format!("amai.scope={}", a.scope)),
        "table comment: {table}"
    );

    let removed = remove_scope(&engine, &a.scope)
        .await
        .expect("scope A removed");
    assert_eq!(
        removed.containers.iter().cloned().collect::<BTreeSet<_>>(),
        a.containers()
    );
    assert_eq!(removed.containers.len(), 2);
    assert_eq!(
        removed.volumes.iter().cloned().collect::<BTreeSet<_>>(),
        a.volumes()
    );
    assert_eq!(removed.volumes.len(), 2);
    assert_eq!(removed.networks, vec![a.network.names().network.clone()]);
    assert_eq!(removed.tables, vec![a.network.names().table.clone()]);
    a.assert_all(false).await;
    b.assert_all(true).await;
    let unscoped_names = unscoped.names().clone();
    assert!(network_exists(&unscoped_names.network).await);
    assert!(nft_table(&unscoped_names.table).await.is_some());

    // B's run still starts and finishes on B's network.
    assert!(b.network.check_rules().await.is_ok());
    let Deployment {
        scope: scope_b,
        network: network_b,
        run: run_b,
    } = b;
    let names_b = network_b.names().clone();
    let outcome = run_b.start().await.expect("B's run");
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    assert_eq!(outcome.stdout, b"done\n");

    // A's handles find nothing left to remove.
    let Deployment {
        network: network_a,
        run: run_a,
        ..
    } = a;
    drop(run_a);
    network_a.close().await.expect("A's network already gone");

    // Scope B's cleanup removes the rest (its run removed its own containers and
    // volumes), and still not the unscoped network.
    let removed = remove_scope(&engine, &scope_b)
        .await
        .expect("scope B removed");
    assert_eq!(removed.containers, Vec::<String>::new());
    assert_eq!(removed.volumes, Vec::<String>::new());
    assert_eq!(removed.networks, vec![names_b.network.clone()]);
    assert_eq!(removed.tables, vec![names_b.table.clone()]);
    assert!(!network_exists(&names_b.network).await);
    assert!(nft_table(&names_b.table).await.is_none());
    network_b.close().await.expect("B's network already gone");
    assert!(network_exists(&unscoped_names.network).await);
    assert!(nft_table(&unscoped_names.table).await.is_some());
    unscoped.close().await.expect("unscoped network closed");
}

#[tokio::test]
async fn a_jail_id_too_long_for_the_scoped_table_comment_is_refused_before_anything_is_created() {
    let engine = engine().await;
    let scope = scope("long");
    // 128 - "amai.jail=" - "amai.scope=<scope> ".
    let max = 128 - 10 - (11 + scope.as_str().len() + 1);
    let jail = format!("test-{}", "x".repeat(max + 1 - 5));
    let refused = JailNetwork::create(
        &engine,
        NetworkPlan::new(&jail, NetworkPolicy::Allow(Vec::new())).scope(scope.clone()),
    )
    .await;
    match refused {
        Err(CreateNetworkError::JailIdTooLong { max: got, .. }) => assert_eq!(got, max),
        other => panic!("expected JailIdTooLong, got {other:?}"),
    }
    let names = JailNetworkNames::for_jail(&jail);
    assert!(!network_exists(&names.network).await);
    assert!(nft_table(&names.table).await.is_none());
    let removed = remove_scope(&engine, &scope)
        .await
        .expect("nothing to remove");
    assert_eq!(removed, RemovedScope::default());
}

#[tokio::test]
async fn a_scope_with_bad_characters_is_refused() {
    for bad in ["", "Upper", "with_underscore", "a.b", "a b", "a=b"] {
        let refused = Scope::new(bad).expect_err("refused");
        assert_eq!(refused.scope, bad);
    }
    let too_long = "a".repeat(amai_jail::scope::MAX_SCOPE_LEN + 1);
    assert!(Scope::new(too_long).is_err());
    assert!("0123456789abcdef".parse::<Scope>().is_ok());
}
