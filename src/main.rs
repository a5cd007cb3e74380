//! `amai`: the command-line entry point. CLI wiring only; the work lives in the
//! crates (`amai-bus`, `amai-projections`, `amai-workers`, `amai-gateway`,
//! `amai-client`) and in the process plumbing modules below.

mod audit_cmd;
mod bench;
mod catalog_cmd;
mod client_cmd;
mod config;
mod console_cmd;
mod export_cmd;
mod fault;
mod jail_cmd;
mod keystore;
mod llm_cmd;
mod metrics;
mod nats_supervisor;
mod replay_cmd;
mod server;
mod shutdown;
mod telemetry;
#[cfg(test)]
mod test_support;
mod trust_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{GlobalArgs, Settings};

/// The event-sourced backbone for autonomous AI agents.
#[derive(Debug, Parser)]
#[command(name = "amai", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything in one process: a supervised local nats-server (unless
    /// --nats-url), the streams, the identity role and the gateway.
    Up,
    /// Run the gRPC gateway against an existing NATS.
    Gateway,
    /// Run one instance of a worker role against an existing NATS.
    Worker(server::WorkerArgs),
    /// Projection maintenance.
    #[command(subcommand)]
    Projections(server::ProjectionsCommand),
    /// Stream administration (run with the NATS admin user).
    #[command(subcommand)]
    Streams(server::StreamsCommand),
    /// Key files.
    #[command(subcommand)]
    Keys(client_cmd::KeysCommand),
    /// Identities: register, show, rotate keys, revoke.
    #[command(subcommand)]
    Agent(client_cmd::AgentCommand),
    /// Sealed messages between identities.
    #[command(subcommand)]
    Message(client_cmd::MessageCommand),
    /// The event streams.
    #[command(subcommand)]
    Events(client_cmd::EventsCommand),
    /// Chain verification, as an auditor does it (client-side).
    #[command(subcommand)]
    Chain(client_cmd::ChainCommand),
    /// Counts of identities, events and messages.
    Stats(client_cmd::StatsArgs),
    /// LLM recording and replay sessions, keys, recordings, cassettes.
    #[command(subcommand)]
    Llm(llm_cmd::LlmCommand),
    /// Jails: run agents in hardened containers, inspect and reproduce runs.
    #[command(subcommand)]
    Jail(jail_cmd::JailCommand),
    /// Trust: scores, history, alerts, explanations, reports, endorsements.
    #[command(subcommand)]
    Trust(trust_cmd::TrustCommand),
    /// The operator console: a one-time sign-in link, or a console served
    /// against a running deployment.
    #[command(subcommand)]
    Console(console_cmd::ConsoleCommand),
    /// The catalogue of agent manifests: publish, scan a directory, sync a
    /// registry index, import an A2A Agent Card, search, show.
    #[command(subcommand)]
    Catalog(catalog_cmd::CatalogCommand),
    /// Verifiable history: checkpoints, proofs, witnesses, and offline
    /// checks of RFC 9162 Merkle proofs (any RFC 9162 log's).
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Rebuild the projections as of a point in history (a time or stream
    /// positions) into a scratch directory.
    Replay(replay_cmd::ReplayArgs),
    /// Export streams, aggregates or ranges (with their checkpoints and
    /// blobs) to a file, straight from NATS.
    Export(export_cmd::ExportArgs),
    /// Import an export file into a fresh deployment's NATS (same sequence
    /// numbers, same trust feed order).
    Import(export_cmd::ImportArgs),
    /// Measure the hot paths against raw baselines in one run.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::resolve(&cli.global, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("amai: configuration error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("amai: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let service_name = match &cli.command {
            Command::Up => "amai-up",
            Command::Gateway => "amai-gateway",
            Command::Worker(_) => "amai-worker",
            _ => "amai-cli",
        };
        let server_command = matches!(
            cli.command,
            Command::Up | Command::Gateway | Command::Worker(_)
        );
        // Client commands log only warnings unless asked, to keep their output clean.
        let level = if server_command
            || std::env::var_os("AMAI_LOG_LEVEL").is_some()
            || std::env::var_os("RUST_LOG").is_some()
        {
            settings.log_level.clone()
        } else {
            "warn".to_string()
        };
        let _telemetry = telemetry::init(
            settings.log_format,
            &level,
            settings.otlp_endpoint.as_deref(),
            service_name,
        )?;
        match cli.command {
            Command::Up => server::run_up(&settings).await,
            Command::Gateway => server::run_gateway(&settings).await,
            Command::Worker(args) => server::run_worker(&settings, &args).await,
            Command::Projections(cmd) => server::run_projections(&settings, cmd).await,
            Command::Streams(cmd) => server::run_streams(&settings, cmd).await,
            Command::Keys(cmd) => client_cmd::keys(cmd),
            Command::Agent(cmd) => client_cmd::agent(&settings, cmd).await,
            Command::Message(cmd) => client_cmd::message(&settings, cmd).await,
            Command::Events(cmd) => client_cmd::events(&settings, cmd).await,
            Command::Chain(cmd) => client_cmd::chain(&settings, cmd).await,
            Command::Stats(args) => client_cmd::stats(&settings, args).await,
            Command::Llm(cmd) => llm_cmd::llm(&settings, cmd).await,
            Command::Jail(cmd) => jail_cmd::jail(&settings, cmd).await,
            Command::Trust(cmd) => trust_cmd::trust(&settings, cmd).await,
            Command::Audit(cmd) => audit_cmd::audit(&settings, cmd).await,
            Command::Catalog(cmd) => catalog_cmd::catalog(&settings, cmd).await,
            Command::Console(cmd) => console_cmd::console(&settings, cmd).await,
            Command::Replay(args) => replay_cmd::replay(&settings, args).await,
            Command::Export(args) => export_cmd::export(&settings, args).await,
            Command::Import(args) => export_cmd::import(&settings, args).await,
            Command::Bench(args) => bench::run(&settings, args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("amai: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod cli_tests {
    use clap::CommandFactory;

    /// Clap's own consistency checks over every command and flag (duplicate
    /// names, conflicting defaults): a broken definition panics at run time
    /// only when its subcommand is used.
    #[test]
    fn every_command_and_flag_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
