//! Times trivial jail runs (`true`), end to end through `amai_jail::run`: create,
//! inspect and verify, attach, start, wait, inspect, remove. Prints figures only.
//!
//! `cargo run -p amai-jail --example trivial_run_timing [runs]`

use std::time::Instant;

use amai_jail::{build_busybox, run, Engine, RunRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let engine = Engine::connect().await?;
    let image = build_busybox(&engine).await?;
    println!("image {}", image.reference);
    for index in 0..runs {
        let started = Instant::now();
        let request = RunRequest::new(format!("timing-{index}"), &image.reference, ["true"]);
        let outcome = run(&engine, request).await?;
        println!(
            "run {index}: total {:?} (start..stop {:?}), exit {}",
            started.elapsed(),
            outcome.duration,
            outcome.exit_code
        );
    }
    Ok(())
}
