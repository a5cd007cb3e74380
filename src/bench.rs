//! `amai bench`: starts a nats-server for the run (unless `--nats-url` is
//! given) and runs the benchmark of the `amai-bench` crate against it.

use std::process::ExitCode;

use amai_bench::{BenchConfig, Progress};
use anyhow::Context as _;

use crate::config::Settings;
use crate::nats_supervisor::{ManagedNats, ManagedNatsConfig};

/// `amai bench` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Print one JSON object on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Smaller sizes, shorter latency windows and fewer jail runs.
    #[arg(long)]
    quick: bool,
    /// Events in the audited stream of the proof latency figures (default
    /// 1,000,000; 50,000 with --quick).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(2..))]
    audit_events: Option<u64>,
}

fn progress(line: &str) {
    eprintln!("bench: {line}");
}

/// Runs the benchmark; the table (or with `--json` one JSON object) goes to
/// stdout, progress to stderr.
pub(crate) async fn run(settings: &Settings, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let nats_dir = tempfile::Builder::new()
        .prefix("amai-bench-nats-")
        .tempdir()
        .context("cannot create a temporary directory for nats-server")?;
    let managed = match &settings.nats_url {
        Some(url) => {
            progress(&format!("using the NATS at {url}: the bench's identity role joins that deployment's identity consumers and query service while it runs; the audit phase is skipped (it would write junk into AMAI_FAILURES)"));
            None
        }
        None => {
            let mut cfg = ManagedNatsConfig::new(nats_dir.path());
            cfg.port = 0;
            cfg.binary = settings.nats_server.clone();
            cfg.server_name = "amai-bench".to_string();
            let nats = ManagedNats::start(cfg).await?;
            progress(&format!(
                "nats-server pid {} on port {}",
                nats.pid()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "?".into()),
                nats.port()
            ));
            Some(nats)
        }
    };
    let nats_url = settings
        .nats_url
        .clone()
        .or_else(|| managed.as_ref().map(|m| m.url().to_string()))
        .context("no NATS url")?;
    let result = amai_bench::run(BenchConfig {
        nats_url,
        quick: args.quick,
        store: crate::server::store_settings(settings),
        query_timeout: settings.query_timeout(),
        request_freshness: settings.request_freshness(),
        audit_events: args.audit_events,
        shared_nats: settings.nats_url.is_some(),
        progress: Progress::new(progress),
    })
    .await;
    // A restart in the middle would make the figures meaningless: report it.
    let nats_restarts = managed.as_ref().map(ManagedNats::restarts);
    if let Some(m) = managed {
        m.stop().await;
    }
    drop(nats_dir);
    let mut report = result?;
    report.set_nats_restarts(nats_restarts);
    if let Some(n) = nats_restarts.filter(|n| *n > 0) {
        progress(&format!("WARNING: nats-server restarted {n} times during the run; the figures are not representative"));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}
