//! Processes run separately never invent a trust root, and name what to pass;
//! `amai worker` only runs roles of the registry.

use crate::util::{args, run_cli};

/// `amai <command>` with a NATS that is never reached and a fresh data dir.
async fn run_in_empty_dir(command: &[&str]) -> (crate::util::CliOutput, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let mut a = args(&[
        "--nats-url",
        "nats://127.0.0.1:1",
        "--data-dir",
        &dir.path().display().to_string(),
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    a.extend(args(command));
    (run_cli(&a).await, dir)
}

#[tokio::test]
async fn gateway_and_worker_without_a_trust_root_fail_saying_what_to_pass() {
    for command in [&["gateway"][..], &["worker", "--role", "identity"][..]] {
        let (out, dir) = run_in_empty_dir(command).await;
        assert!(!out.status.success(), "{command:?} must fail: {out:?}");
        for needle in ["--trust-root <hex>", "AMAI_TRUST_ROOT", "operator.json"] {
            assert!(
                out.stderr.contains(needle),
                "{command:?}: {needle:?} missing from stderr: {}",
                out.stderr
            );
        }
        assert!(
            !dir.path().join("keys/operator.json").exists(),
            "{command:?} generated a trust root"
        );
    }
}

#[tokio::test]
async fn an_unknown_role_is_refused_listing_the_registry() {
    let (out, _dir) = run_in_empty_dir(&["worker", "--role", "no-such-role"]).await;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains("unknown role \"no-such-role\"") && out.stderr.contains("identity"),
        "{}",
        out.stderr
    );
}
