//! `amai bench` (being written).

use std::process::ExitCode;

use crate::config::Settings;

/// `amai bench` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark.
pub(crate) async fn run(_settings: &Settings, args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("bench not built yet (json={})", args.json)
}
