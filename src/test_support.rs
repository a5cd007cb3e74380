//! Test support for the binary's unit tests: re-running this test binary in a
//! child process, filtered to one "probe" test, with its own environment (for
//! tests that must set process-wide state such as env vars or signals).

use std::ffi::OsStr;

/// Runs the test `name` alone in a child process with `envs` set, and asserts it
/// ran and passed.
pub(crate) fn run_probe_child<K: AsRef<OsStr>, V: AsRef<OsStr>>(name: &str, envs: &[(K, V)]) {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "probe did not run:\n{stdout}");
}
