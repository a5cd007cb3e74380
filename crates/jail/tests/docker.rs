//! Jails against the real Docker Engine. These tests never skip: without an
//! engine they fail, saying what to do.

use std::collections::HashMap;
use std::time::Duration;

use amai_jail::{
    build_busybox, remove_managed, run, Engine, ImageRef, JailLimits, RunOutcome, RunRequest,
};

async fn engine() -> Engine {
    match Engine::connect().await {
        Ok(engine) => engine,
        Err(error) => panic!("these tests need a Docker Engine: {error}"),
    }
}

async fn busybox(engine: &Engine) -> ImageRef {
    build_busybox(engine).await.expect("busybox image builds")
}

fn jail_id() -> String {
    format!("test-{}", uuid::Uuid::new_v4())
}

/// Runs `script` with `sh -c` under `limits`, then checks no container of the jail
/// remains.
async fn run_sh(script: &str, limits: JailLimits) -> RunOutcome {
    let engine = engine().await;
    let image = busybox(&engine).await;
    let jail = jail_id();
    let request =
        RunRequest::new(&jail, &image.reference, ["/bin/sh", "-c", script]).limits(limits);
    let outcome = run(&engine, request).await.expect("run succeeds");
    assert_no_container_left(&engine, &jail).await;
    outcome
}

async fn assert_no_container_left(engine: &Engine, jail: &str) {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec!["amai.managed=true".to_owned(), format!("amai.jail={jail}")],
    )]);
    let left = bollard::Docker::connect_with_local_defaults()
        .expect("docker client")
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("list containers");
    assert!(left.is_empty(), "containers left for jail {jail}: {left:?}");
    // And the cleanup API agrees: nothing to remove.
    let removed = remove_managed(engine, Some(jail)).await.expect("cleanup");
    assert!(removed.container_ids.is_empty());
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn engine_preflight_reports_versions() {
    let engine = engine().await;
    let version = engine.version();
    assert!(!version.server_version.is_empty());
    assert!(!version.api_version.is_empty());
}

#[tokio::test]
async fn busybox_image_is_reused_the_second_time() {
    let engine = engine().await;
    let first = busybox(&engine).await;
    let second = busybox(&engine).await;
    assert!(first.reference.starts_with("amai/busybox:"));
    assert_eq!(first.reference.len(), "amai/busybox:".len() + 12);
    assert_eq!(first.reference, second.reference);
    assert_eq!(first.image_id, second.image_id);
    assert!(
        !second.freshly_built,
        "the second build must reuse the image"
    );
}

#[tokio::test]
async fn echo_exits_zero_with_its_output() {
    let outcome = run_sh("echo hello", JailLimits::default()).await;
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    assert_eq!(text(&outcome.stdout), "hello\n");
    assert!(outcome.stderr.is_empty());
    assert!(!outcome.timed_out && !outcome.oom_killed && !outcome.output_truncated);
}

#[tokio::test]
async fn stdout_and_stderr_are_separated() {
    let outcome = run_sh("echo out; echo err >&2", JailLimits::default()).await;
    assert_eq!(text(&outcome.stdout), "out\n");
    assert_eq!(text(&outcome.stderr), "err\n");
}

#[tokio::test]
async fn a_non_zero_exit_code_comes_back() {
    let outcome = run_sh("exit 42", JailLimits::default()).await;
    assert_eq!(outcome.exit_code, 42);
    assert!(!outcome.timed_out);
}

#[tokio::test]
async fn runs_as_nobody() {
    let outcome = run_sh("id -u; id -g", JailLimits::default()).await;
    assert_eq!(text(&outcome.stdout), "65534\n65534\n");
}

#[tokio::test]
async fn root_fs_is_read_only_and_workspace_and_tmp_are_writable() {
    let outcome = run_sh(
        "if echo x > /etc/x 2>/dev/null; then echo etc-writable; else echo etc-readonly; fi; \
         echo w > /workspace/f && cat /workspace/f; echo t > /tmp/f && cat /tmp/f; pwd",
        JailLimits::default(),
    )
    .await;
    assert_eq!(
        text(&outcome.stdout),
        "etc-readonly\nw\nt\n/workspace\n",
        "{outcome:?}"
    );
}

#[tokio::test]
async fn only_the_loopback_interface_exists() {
    let outcome = run_sh(
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
        JailLimits::default(),
    )
    .await;
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    assert_eq!(text(&outcome.stdout), "lo\n");
}

#[tokio::test]
async fn the_wall_clock_kills() {
    let limits = JailLimits::builder()
        .wall_clock(Duration::from_secs(1))
        .build();
    let outcome = run_sh("sleep 60", limits).await;
    assert!(outcome.timed_out, "{outcome:?}");
    assert_ne!(outcome.exit_code, 0);
}

#[tokio::test]
async fn the_pids_limit_stops_forking() {
    // An inner shell starts background sleeps, printing a count after each, until a
    // fork fails and it dies; the outer shell (pid 1, which needs no fork for
    // `echo`) reports the inner exit status. 16 pids: fewer than 16 sleeps start.
    let limits = JailLimits::builder().pids(16).build();
    let outcome = run_sh(
        "sh -c 'i=0; while :; do sleep 30 & i=$((i+1)); echo $i; done'; echo inner_exit=$?",
        limits,
    )
    .await;
    let stdout = text(&outcome.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let (last, counts) = lines
        .split_last()
        .unwrap_or_else(|| panic!("no output: {outcome:?}"));
    assert!(
        last.starts_with("inner_exit=") && *last != "inner_exit=0",
        "the inner shell must die of the failed fork: {outcome:?}"
    );
    let started: usize = counts.len();
    assert!(
        started < 16,
        "started {started} sleeps under pids=16: {outcome:?}"
    );
    assert!(
        text(&outcome.stderr).contains("can't fork"),
        "fork failure reported on stderr: {outcome:?}"
    );
    assert!(!outcome.timed_out);
}

#[tokio::test]
async fn the_output_cap_truncates_and_kills() {
    let cap = 10 * 1024;
    let limits = JailLimits::builder().output_bytes(cap).build();
    let outcome = run_sh("yes", limits).await;
    assert!(outcome.output_truncated, "{outcome:?}");
    assert!(outcome.stdout.len() as u64 <= cap);
    assert!(!outcome.timed_out);
}

#[tokio::test]
async fn exceeding_memory_is_oom_killed() {
    let limits = JailLimits::builder().memory_bytes(32 * 1024 * 1024).build();
    let outcome = run_sh(
        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
        limits,
    )
    .await;
    assert!(outcome.oom_killed, "{outcome:?}");
    assert_eq!(outcome.exit_code, 137, "{outcome:?}");
    assert!(!text(&outcome.stdout).contains("survived"), "{outcome:?}");
}

#[tokio::test]
async fn remove_managed_removes_a_jails_leftover_container() {
    let engine = engine().await;
    let image = busybox(&engine).await;
    let jail = jail_id();
    let config = RunRequest::new(&jail, &image.reference, ["true"]).container_config();
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker client");
    docker
        .create_container(None, config)
        .await
        .expect("create a leftover container");
    let removed = remove_managed(&engine, Some(&jail)).await.expect("cleanup");
    assert_eq!(removed.container_ids.len(), 1);
    assert_no_container_left(&engine, &jail).await;
}

#[tokio::test]
async fn a_dropped_run_still_removes_its_container() {
    let engine = engine().await;
    let image = busybox(&engine).await;
    let jail = jail_id();
    let request = RunRequest::new(&jail, &image.reference, ["sleep", "60"]);
    let gave_up = tokio::time::timeout(Duration::from_millis(1500), run(&engine, request)).await;
    assert!(
        gave_up.is_err(),
        "sleep 60 cannot finish in 1.5 s: {gave_up:?}"
    );
    // The removal is spawned on drop; give it a few seconds.
    for _ in 0..50 {
        if remove_managed_count(&jail).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the container of jail {jail} was not removed after the run was dropped");
}

async fn remove_managed_count(jail: &str) -> usize {
    let filters = HashMap::from([("label".to_owned(), vec![format!("amai.jail={jail}")])]);
    bollard::Docker::connect_with_local_defaults()
        .expect("docker client")
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("list containers")
        .len()
}
