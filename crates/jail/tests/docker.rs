//! Jails against the real Docker Engine. These tests never skip: without an
//! engine they fail, saying what to do.

use std::collections::HashMap;
use std::time::Duration;

use amai_jail::{
    build_busybox, check_policy, prepare, remove_managed, run, Change, Engine, EntryKind, ImageRef,
    JailLimits, RunOutcome, RunRequest,
};
use amai_jail_spec::{DiffPolicy, InjectedFile};

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

/// Runs `script` with `sh -c` under `limits`, then checks no container or volume
/// of the jail remains.
async fn run_sh(script: &str, limits: JailLimits) -> RunOutcome {
    run_sh_with(script, |request| request.limits(limits)).await
}

/// Runs `script` with `sh -c`, the request adjusted by `adjust`, then checks no
/// container or volume of the jail remains.
async fn run_sh_with(script: &str, adjust: impl FnOnce(RunRequest) -> RunRequest) -> RunOutcome {
    let engine = engine().await;
    let image = busybox(&engine).await;
    let jail = jail_id();
    let request = adjust(RunRequest::new(
        &jail,
        &image.reference,
        ["/bin/sh", "-c", script],
    ));
    let outcome = run(&engine, request).await.expect("run succeeds");
    assert_no_container_left(&engine, &jail).await;
    outcome
}

fn file(path: &str, content: &[u8], mode: u32) -> InjectedFile {
    InjectedFile {
        path: path.to_owned(),
        content: content.to_vec(),
        mode,
    }
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
    let volumes = jail_volumes(jail).await;
    assert!(
        volumes.is_empty(),
        "volumes left for jail {jail}: {volumes:?}"
    );
    // And the cleanup API agrees: nothing to remove.
    let removed = remove_managed(engine, Some(jail)).await.expect("cleanup");
    assert!(removed.container_ids.is_empty(), "{removed:?}");
    assert!(removed.volume_names.is_empty(), "{removed:?}");
}

async fn jail_volumes(jail: &str) -> Vec<String> {
    let filters = HashMap::from([("label".to_owned(), vec![format!("amai.jail={jail}")])]);
    bollard::Docker::connect_with_local_defaults()
        .expect("docker client")
        .list_volumes(Some(
            bollard::query_parameters::ListVolumesOptionsBuilder::new()
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("list volumes")
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect()
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

/// Output written the moment the process starts comes back exactly once (an
/// attach that also replayed the log driver's copy repeated it under load).
#[tokio::test]
async fn early_output_comes_back_exactly_once() {
    let expected: String = (1..=2000).map(|i| format!("{i}\n")).collect();
    let runs = (0..4).map(|_| run_sh("seq 1 2000", JailLimits::default()));
    for outcome in futures::future::join_all(runs).await {
        assert_eq!(outcome.exit_code, 0, "{outcome:?}");
        assert_eq!(text(&outcome.stdout), expected);
    }
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
async fn remove_managed_removes_a_forgotten_prepared_runs_containers_and_volumes() {
    let engine = engine().await;
    let image = busybox(&engine).await;
    let jail = jail_id();
    let request = RunRequest::new(&jail, &image.reference, ["true"]);
    let prepared = prepare(&engine, request).await.expect("prepare");
    let expected_containers = {
        let mut ids = vec![
            prepared.container_id().to_owned(),
            prepared.keeper_id().to_owned(),
        ];
        ids.sort();
        ids
    };
    let mut expected_volumes = vec![
        prepared.volumes().workspace.clone(),
        prepared.volumes().tmp.clone(),
    ];
    expected_volumes.sort();
    // No drop, so no spawned cleanup: everything stays for remove_managed.
    std::mem::forget(prepared);
    assert_eq!(remove_managed_count(&jail).await, 2);
    let mut removed = remove_managed(&engine, Some(&jail)).await.expect("cleanup");
    removed.container_ids.sort();
    removed.volume_names.sort();
    assert_eq!(removed.container_ids, expected_containers);
    assert_eq!(removed.volume_names, expected_volumes);
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
        if remove_managed_count(&jail).await == 0 && jail_volumes(&jail).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the containers or volumes of jail {jail} were not removed after the run was dropped");
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

#[tokio::test]
async fn a_dropped_prepared_run_removes_its_containers_and_volumes() {
    let engine = engine().await;
    let image = busybox(&engine).await;
    let jail = jail_id();
    let request = RunRequest::new(&jail, &image.reference, ["true"]);
    let prepared = prepare(&engine, request).await.expect("prepare");
    assert_eq!(
        remove_managed_count(&jail).await,
        2,
        "the jail and its keeper"
    );
    assert_eq!(jail_volumes(&jail).await.len(), 2);
    drop(prepared);
    for _ in 0..50 {
        if remove_managed_count(&jail).await == 0 && jail_volumes(&jail).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the prepared run of jail {jail} was not removed after it was dropped");
}

#[tokio::test]
async fn a_prepared_run_shows_its_container_and_before_snapshot_then_runs() {
    let engine = engine().await;
    let image = busybox(&engine).await;
    let jail = jail_id();
    let request = RunRequest::new(&jail, &image.reference, ["cat", "/workspace/in.txt"])
        .files(vec![file("/workspace/in.txt", b"injected\n", 0o644)]);
    let prepared = prepare(&engine, request).await.expect("prepare");
    let container_id = prepared.container_id().to_owned();
    assert!(!container_id.is_empty());
    let before = prepared
        .before()
        .get("/workspace/in.txt")
        .expect("in before");
    assert_eq!(
        (before.kind, before.mode, before.size),
        (EntryKind::File, 0o644, 9)
    );
    assert_eq!(prepared.limits(), &JailLimits::default());
    let outcome = prepared.start().await.expect("start");
    assert_eq!(outcome.container_id, container_id);
    assert_eq!(text(&outcome.stdout), "injected\n");
    assert!(outcome.diff.is_empty(), "{:?}", outcome.diff);
    assert_no_container_left(&engine, &jail).await;
}

#[tokio::test]
async fn injected_files_are_visible_with_their_mode_and_owner() {
    let outcome = run_sh_with(
        "stat -c '%n %a %u:%g' /workspace/sub/dir/run.sh /workspace/sub /tmp/data.bin; \
         /workspace/sub/dir/run.sh; cat /tmp/data.bin",
        |request| {
            request.files(vec![
                file("/workspace/sub/dir/run.sh", b"#!/bin/sh\necho ran\n", 0o750),
                file("/tmp/data.bin", b"data", 0o600),
            ])
        },
    )
    .await;
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    assert_eq!(
        text(&outcome.stdout),
        "/workspace/sub/dir/run.sh 750 65534:65534\n/workspace/sub 755 65534:65534\n\
         /tmp/data.bin 600 65534:65534\nran\ndata",
        "{outcome:?}"
    );
    assert!(
        outcome.diff.is_empty(),
        "reading changes nothing: {:?}",
        outcome.diff
    );
}

#[tokio::test]
async fn the_diff_records_adds_modifications_deletions_links_and_modes() {
    let outcome = run_sh_with(
        "set -e; cd /workspace; echo changed > edit; chmod 600 mode; rm gone; rm -r olddir; \
         mkdir -p d1/d2; echo nested > d1/d2/n; echo added > add; \
         echo secret > locked; chmod 000 locked; \
         ln -s /etc/passwd out-link; ln -s add in-link; echo t > /tmp/t; \
         chmod 700 /workspace",
        |request| {
            request.files(vec![
                file("/workspace/keep", b"keep", 0o644),
                file("/workspace/edit", b"original", 0o644),
                file("/workspace/mode", b"m", 0o644),
                file("/workspace/gone", b"bye", 0o644),
                file("/workspace/olddir/inner", b"i", 0o644),
            ])
        },
    )
    .await;
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    let diff = &outcome.diff;
    let changes: Vec<(&str, Change)> = diff
        .entries()
        .iter()
        .map(|e| (e.path.as_str(), e.change))
        .collect();
    assert_eq!(
        changes,
        [
            ("/tmp/t", Change::Added),
            ("/workspace", Change::Modified),
            ("/workspace/add", Change::Added),
            ("/workspace/d1", Change::Added),
            ("/workspace/d1/d2", Change::Added),
            ("/workspace/d1/d2/n", Change::Added),
            ("/workspace/edit", Change::Modified),
            ("/workspace/gone", Change::Deleted),
            ("/workspace/in-link", Change::Added),
            ("/workspace/locked", Change::Added),
            ("/workspace/mode", Change::Modified),
            ("/workspace/olddir", Change::Deleted),
            ("/workspace/olddir/inner", Change::Deleted),
            ("/workspace/out-link", Change::Added),
        ],
        "{diff:?}"
    );
    let entry = |path: &str| diff.get(path).expect(path).entry.clone();
    assert_eq!(entry("/workspace").mode, 0o700);
    assert_eq!(entry("/workspace/edit").size, 8);
    assert_eq!(entry("/workspace/mode").mode, 0o600);
    let locked = entry("/workspace/locked");
    assert_eq!(
        (locked.kind, locked.mode, locked.size),
        (EntryKind::File, 0, 7)
    );
    assert!(locked.sha256.is_some(), "a chmod 000 file is still read");
    let out_link = entry("/workspace/out-link");
    assert_eq!(out_link.kind, EntryKind::Symlink);
    assert_eq!(out_link.link_target.as_deref(), Some("/etc/passwd"));
    assert_eq!(out_link.sha256, None, "the link is recorded, not followed");
    assert_eq!(
        entry("/workspace/in-link").link_target.as_deref(),
        Some("add")
    );
    assert_eq!(entry("/workspace/d1").kind, EntryKind::Dir);
    // edit (8) + add (6) + locked (7) + n (7) + t (2) + mode (1, chmod only)
    assert_eq!(diff.bytes_written(), 8 + 6 + 7 + 7 + 2 + 1);

    // The normalised tar holds the new contents and the whiteouts.
    let archive = diff.archive();
    let mut tar = tar::Archive::new(archive.as_slice());
    let mut paths = Vec::new();
    for entry in tar.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        if path == "workspace/edit" {
            let mut content = String::new();
            std::io::Read::read_to_string(&mut entry, &mut content).expect("content");
            assert_eq!(content, "changed\n");
        }
        paths.push(path);
    }
    assert!(
        paths.contains(&"workspace/.wh.gone".to_owned()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"workspace/.wh.olddir".to_owned()),
        "{paths:?}"
    );
    assert!(!paths.iter().any(|p| p.contains(".wh.inner")), "{paths:?}");
}

#[tokio::test]
async fn setuid_files_are_flagged_unless_the_policy_allows_them() {
    let outcome = run_sh("echo s > /workspace/s; chmod u+s /workspace/s; echo g > /workspace/g; chmod g+s /workspace/g", JailLimits::default()).await;
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    let s = &outcome.diff.get("/workspace/s").expect("s").entry;
    assert_eq!(s.mode & 0o4000, 0o4000, "{s:?}");
    let violations = check_policy(&outcome.diff, &DiffPolicy::default());
    let found: Vec<(&str, &str)> = violations
        .iter()
        .map(|v| (v.rule, v.path.as_str()))
        .collect();
    assert_eq!(
        found,
        [("setuid", "/workspace/g"), ("setuid", "/workspace/s")]
    );
    let allowing = DiffPolicy {
        allow_setuid: true,
        ..DiffPolicy::default()
    };
    assert!(check_policy(&outcome.diff, &allowing).is_empty());
}

#[tokio::test]
async fn writes_outside_the_writable_globs_and_over_the_byte_cap_are_flagged() {
    let outcome = run_sh(
        "mkdir /workspace/out; head -c 100 /dev/zero > /workspace/out/ok; echo x > /workspace/x",
        JailLimits::default(),
    )
    .await;
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    let policy = DiffPolicy {
        writable: vec!["/workspace/out/**".to_owned()],
        allow_setuid: false,
        max_changed_bytes: Some(50),
    };
    let violations = check_policy(&outcome.diff, &policy);
    let found: Vec<(&str, &str)> = violations
        .iter()
        .map(|v| (v.rule, v.path.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("outside_writable", "/workspace/x"),
            ("max_changed_bytes", "")
        ]
    );
    assert_eq!(outcome.diff.bytes_written(), 102);
    let roomy = DiffPolicy {
        writable: vec!["/workspace/**".to_owned()],
        allow_setuid: false,
        max_changed_bytes: Some(102),
    };
    assert!(check_policy(&outcome.diff, &roomy).is_empty());
}

#[tokio::test]
async fn writing_past_the_disk_limit_fails_inside_and_the_run_finishes() {
    let limits = JailLimits::builder().tmpfs_bytes(1024 * 1024).build();
    let outcome = run_sh(
        "dd if=/dev/zero of=/workspace/big bs=1024 count=2000 2>&1; echo rc=$?",
        limits,
    )
    .await;
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    let stdout = text(&outcome.stdout);
    assert!(stdout.ends_with("rc=1\n"), "{outcome:?}");
    assert!(stdout.contains("No space left on device"), "{outcome:?}");
    let big = &outcome.diff.get("/workspace/big").expect("big").entry;
    assert!(big.size <= 1024 * 1024 && big.size > 0, "{big:?}");
}

#[tokio::test]
async fn there_is_no_dev_shm() {
    let outcome = run_sh(
        "if [ -e /dev/shm ]; then echo present; else echo absent; fi; grep -c ' /dev/shm ' /proc/mounts",
        JailLimits::default(),
    )
    .await;
    assert_eq!(text(&outcome.stdout), "absent\n0\n", "{outcome:?}");
}

#[tokio::test]
async fn a_cpu_burning_run_reports_usage() {
    let outcome = run_sh(
        "timeout -s KILL 2 sh -c 'while :; do :; done'; echo burned",
        JailLimits::default(),
    )
    .await;
    assert_eq!(text(&outcome.stdout), "burned\n", "{outcome:?}");
    let usage = outcome.usage;
    assert!(usage.samples > 0, "{usage:?}");
    assert!(usage.cpu_seconds > 0.0, "{usage:?}");
    assert!(usage.peak_memory_bytes > 0, "{usage:?}");
    assert!(usage.peak_pids > 0, "{usage:?}");
}

#[tokio::test]
async fn the_same_changes_give_the_same_digest() {
    let script =
        "mkdir -p /workspace/a/b; echo one > /workspace/a/b/f; chmod 640 /workspace/a/b/f; \
                  ln -s f /workspace/a/b/l; rm /workspace/old; echo t > /tmp/t";
    let adjust = |request: RunRequest| request.files(vec![file("/workspace/old", b"old", 0o644)]);
    let first = run_sh_with(script, adjust).await;
    let second = run_sh_with(script, adjust).await;
    assert_eq!(first.exit_code, 0, "{first:?}");
    assert!(!first.diff.is_empty());
    assert_eq!(first.diff.archive(), second.diff.archive());
    assert_eq!(first.diff.sha256(), second.diff.sha256());
    let other = run_sh_with(&script.replace("echo one", "echo two"), adjust).await;
    assert_ne!(first.diff.sha256(), other.diff.sha256());
}

#[tokio::test]
async fn a_background_cleanup_removes_the_keeper_and_volumes() {
    let engine = engine().await;
    let image = busybox(&engine).await;
    let jail = jail_id();
    let request = RunRequest::new(
        &jail,
        &image.reference,
        ["/bin/sh", "-c", "echo hi > /tmp/x"],
    );
    let prepared = prepare(&engine, request).await.expect("prepare");
    let (outcome, cleanup) = prepared.start_with_background_cleanup().await.expect("run");
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    assert!(outcome.diff.get("/tmp/x").is_some(), "{outcome:?}");
    cleanup.wait().await.expect("cleanup");
    assert_no_container_left(&engine, &jail).await;
}

#[tokio::test]
async fn the_computed_before_snapshot_is_what_the_archive_shows() {
    let engine = engine().await;
    let image = busybox(&engine).await;
    let jail = jail_id();
    let request = RunRequest::new(&jail, &image.reference, ["true"]).files(vec![
        file("/workspace/a/b/c.txt", b"nested", 0o640),
        file("/workspace/top", b"", 0o644),
        file("/workspace/a/suid", b"s", 0o4755),
        file("/tmp/x/y", b"tmp", 0o600),
    ]);
    let prepared = prepare(&engine, request).await.expect("prepare");
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker client");
    let mut archived = amai_jail::Snapshot::new();
    for dir in ["/workspace", "/tmp"] {
        let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::new()
            .path(dir)
            .build();
        let mut stream = docker.download_from_container(prepared.keeper_id(), Some(options));
        let mut tar = Vec::new();
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            tar.extend_from_slice(&chunk.expect("archive chunk"));
        }
        archived.add_tar(tar.as_slice(), false).expect("tar");
    }
    assert_eq!(&archived, prepared.before());
    assert_eq!(archived.len(), 9, "{archived:?}");
    let outcome = prepared.start().await.expect("run");
    assert!(outcome.diff.is_empty(), "{:?}", outcome.diff);
    assert_no_container_left(&engine, &jail).await;
}
