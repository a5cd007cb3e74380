//! Times trivial jail runs (`true`) end to end through `amai_jail::run` (volumes,
//! keeper, create and verify, before snapshot, attach, start, wait, stats, after
//! snapshot and diff, remove everything) against a raw `docker run --rm <image>
//! true` done through bollard (create, start, wait, remove), and the time until
//! `PreparedRun::start_with_background_cleanup` returns (keeper and volumes
//! removed afterwards). Prints figures only.
//!
//! `cargo run -p amai-jail --example trivial_run_timing [runs]`

use std::time::{Duration, Instant};

use amai_jail::{build_busybox, prepare, run, Engine, RunRequest};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use futures::StreamExt;

fn summary(name: &str, times: &mut [Duration]) -> Duration {
    times.sort();
    let total: Duration = times.iter().sum();
    let mean = total / times.len().max(1) as u32;
    let median = times[times.len() / 2];
    println!(
        "{name}: n={} min {:?} median {:?} mean {:?} max {:?}",
        times.len(),
        times[0],
        median,
        mean,
        times[times.len() - 1]
    );
    median
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let engine = Engine::connect().await?;
    let image = build_busybox(&engine).await?;
    let docker = bollard::Docker::connect_with_local_defaults()?;
    println!("image {}", image.reference);

    let mut raw = Vec::new();
    let mut jail = Vec::new();
    let mut background = Vec::new();
    // Interleaved, so load changes on the shared machine hit both alike.
    for index in 0..runs {
        let started = Instant::now();
        let config = ContainerCreateBody {
            image: Some(image.reference.clone()),
            cmd: Some(vec!["true".to_owned()]),
            ..Default::default()
        };
        let created = docker.create_container(None, config).await?;
        docker.start_container(&created.id, None).await?;
        let _ = docker.wait_container(&created.id, None).next().await;
        docker
            .remove_container(
                &created.id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await?;
        raw.push(started.elapsed());

        let started = Instant::now();
        let request = RunRequest::new(format!("timing-{index}"), &image.reference, ["true"]);
        let outcome = run(&engine, request).await?;
        let elapsed = started.elapsed();
        jail.push(elapsed);

        let started = Instant::now();
        let request = RunRequest::new(format!("timing-bg-{index}"), &image.reference, ["true"]);
        let (_, cleanup) = prepare(&engine, request)
            .await?
            .start_with_background_cleanup()
            .await?;
        let returned = started.elapsed();
        background.push(returned);
        // Not overlapped with the next iteration, so every figure is one run alone.
        cleanup.wait().await?;
        println!(
            "run {index}: raw {:?}, run() {elapsed:?} (start..stop {:?}, exit {}), background cleanup returns after {returned:?}, removed after {:?}",
            raw[index], outcome.duration, outcome.exit_code, started.elapsed()
        );
    }
    let raw_median = summary("raw docker run --rm", &mut raw);
    let jail_median = summary("amai_jail::run", &mut jail);
    let background_median = summary("start_with_background_cleanup", &mut background);
    println!(
        "ratio of medians: run() {:.2}, with background cleanup {:.2}",
        jail_median.as_secs_f64() / raw_median.as_secs_f64(),
        background_median.as_secs_f64() / raw_median.as_secs_f64()
    );
    Ok(())
}
