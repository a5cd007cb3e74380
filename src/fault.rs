//! Fault injection for tests and failure drills — **test-only, never set in
//! production**. `AMAI_FAULT=crash-after-publish:<n>` makes a worker process
//! exit with [`FAULT_EXIT_CODE`] right after the `n`-th input whose outputs it
//! stored, before that input is acknowledged: exactly the window a crash
//! between publish and ack hits by chance. Redelivery and deduplication are
//! then tested deterministically (`tests/e2e/crash.rs`).
//!
//! It uses the reactor's [`FaultHook`] (at [`FaultPoint::Ack`], after the
//! outputs are stored); unset, no hook is installed and nothing changes.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use amai_workers::reactor::{FaultHook, FaultPoint};
use anyhow::Context as _;

/// The environment variable read by worker processes (`amai up`, `amai worker`).
pub(crate) const FAULT_ENV: &str = "AMAI_FAULT";
/// The exit code of an injected crash.
pub(crate) const FAULT_EXIT_CODE: i32 = 86;

/// An injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Exit right after the `n`-th (1-based) input whose outputs were stored,
    /// before its ack.
    CrashAfterPublish(u64),
}

impl std::str::FromStr for Fault {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (name, arg) = s.split_once(':').unwrap_or((s, ""));
        match name {
            "crash-after-publish" => {
                let n: u64 = arg.parse().with_context(|| {
                    format!("{FAULT_ENV}={s:?}: expected crash-after-publish:<n>, n >= 1")
                })?;
                anyhow::ensure!(n >= 1, "{FAULT_ENV}={s:?}: n must be at least 1");
                Ok(Fault::CrashAfterPublish(n))
            }
            _ => anyhow::bail!("{FAULT_ENV}={s:?}: unknown fault (known: crash-after-publish:<n>)"),
        }
    }
}

/// The reactor hook `AMAI_FAULT` asks for, if it is set.
pub(crate) fn reactor_hook_from_env() -> anyhow::Result<Option<FaultHook>> {
    match std::env::var(FAULT_ENV) {
        Ok(spec) if !spec.is_empty() => {
            let fault: Fault = spec.parse()?;
            tracing::warn!(fault = %spec, "fault injection enabled ({FAULT_ENV}): for tests only");
            Ok(Some(reactor_hook(fault, exit_injected)))
        }
        _ => Ok(None),
    }
}

fn exit_injected(n: u64, input_id: &str) {
    tracing::error!(
        n,
        input = input_id,
        exit_code = FAULT_EXIT_CODE,
        "injected crash after publish, before ack ({FAULT_ENV})"
    );
    eprintln!("amai: injected crash after publish, before ack of input {input_id} ({FAULT_ENV})");
    std::process::exit(FAULT_EXIT_CODE);
}

/// The hook of `fault`, calling `crash(n, input_id)` where the process is to die.
fn reactor_hook(fault: Fault, crash: fn(u64, &str)) -> FaultHook {
    let Fault::CrashAfterPublish(n) = fault;
    // Inputs whose outputs are being appended: their ack follows the stored outputs.
    let published: Mutex<HashSet<String>> = Mutex::default();
    let count = AtomicU64::new(0);
    Arc::new(move |point, input_id| {
        let mut published = published.lock().unwrap_or_else(|p| p.into_inner());
        match point {
            FaultPoint::AppendOutput { .. } => {
                published.insert(input_id.to_string());
            }
            FaultPoint::Ack if published.remove(input_id) => {
                if count.fetch_add(1, Ordering::SeqCst) + 1 == n {
                    crash(n, input_id);
                }
            }
            FaultPoint::Ack | FaultPoint::RecordFailure => {}
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn specs_parse_or_say_what_is_expected() {
        assert_eq!(
            "crash-after-publish:2".parse::<Fault>().expect("valid"),
            Fault::CrashAfterPublish(2)
        );
        for bad in ["crash-after-publish", "crash-after-publish:0", "nope:1"] {
            assert!(bad.parse::<Fault>().is_err(), "{bad} is refused");
        }
    }

    static CRASHED: AtomicBool = AtomicBool::new(false);

    #[test]
    fn the_crash_comes_at_the_nth_ack_of_an_input_with_outputs() {
        fn crash(n: u64, input: &str) {
            assert_eq!((n, input), (2, "c"));
            CRASHED.store(true, Ordering::SeqCst);
        }
        let hook = reactor_hook(Fault::CrashAfterPublish(2), crash);
        let out = FaultPoint::AppendOutput { index: 0 };
        // An input without outputs does not count.
        hook(FaultPoint::Ack, "a").expect("no fault");
        hook(out, "b").expect("no fault");
        hook(FaultPoint::Ack, "b").expect("first: no crash");
        assert!(!CRASHED.load(Ordering::SeqCst));
        hook(out, "c").expect("no fault");
        hook(FaultPoint::Ack, "c").expect("second: crash");
        assert!(CRASHED.load(Ordering::SeqCst));
    }
}
