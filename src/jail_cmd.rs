//! `amai jail ...`: jails, thin wrappers over the SDK's [`amai_client::jail`],
//! and `amai jail image ...`, which builds and lists the local base images
//! on the Docker Engine directly (there is no registry to pull them from).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use amai_bus::proto::{self, JailState};
use amai_client::{AmaiClient, ClientError};
use anyhow::Context;
use serde_json::json;

use crate::client_cmd::{connect, print, Acting};
use crate::config::Settings;

/// Largest spec file `amai jail run` reads.
const MAX_SPEC_BYTES: u64 = 16 * 1024 * 1024;

/// `amai jail ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum JailCommand {
    /// Create a jail from a spec, run it and wait: prints the jail id, exit
    /// code, duration, usage and diff digest; exits with the jail's exit code.
    Run {
        #[command(flatten)]
        acting: Acting,
        /// The jail spec (JSON, schemas/jail-spec.schema.json).
        #[arg(long)]
        spec: PathBuf,
        /// Give up waiting after this many seconds (the jail keeps running).
        #[arg(long, default_value_t = 3600)]
        wait_secs: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a jail.
    Show {
        #[command(flatten)]
        acting: Acting,
        /// The jail id.
        jail: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a run's stdout (and its stderr on stderr).
    Logs {
        #[command(flatten)]
        acting: Acting,
        /// The jail id.
        jail: String,
        /// Wait for a running jail to end first.
        #[arg(long)]
        follow: bool,
    },
    /// The filesystem diff of a run: one line per path.
    Diff {
        #[command(flatten)]
        acting: Acting,
        /// The jail id.
        jail: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every connection and DNS query the run attempted, with its verdict.
    Network {
        #[command(flatten)]
        acting: Acting,
        /// The jail id.
        jail: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a jail's spec again (its LLM session replayed) and compare.
    Reproduce {
        #[command(flatten)]
        acting: Acting,
        /// The jail to reproduce.
        jail: String,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 3600)]
        wait_secs: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a jail: stop it, remove its container, network and rules (its
    /// events and blobs stay, verifiable).
    Rm {
        #[command(flatten)]
        acting: Acting,
        /// The jail id.
        jail: String,
        /// Why.
        #[arg(long, default_value = "deleted by owner")]
        reason: String,
    },
    /// List your jails (an operator key lists every jail).
    Ls {
        #[command(flatten)]
        acting: Acting,
        /// Include deleted jails.
        #[arg(long)]
        all: bool,
        /// Print JSON (one array).
        #[arg(long)]
        json: bool,
    },
    /// Base images on the local Docker Engine.
    #[command(subcommand)]
    Image(ImageCommand),
}

/// `amai jail image ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ImageCommand {
    /// Build a base image (cached by its recipe: rebuilt only when it changed).
    Build {
        /// `busybox` (tiny, instant) or `python` (debootstrap, python3 and the
        /// official openai and anthropic SDKs; minutes).
        #[arg(value_parser = ["busybox", "python"])]
        image: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Amai's images on the engine.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn state_name(state: i32) -> &'static str {
    match JailState::try_from(state).unwrap_or_default() {
        JailState::Unspecified => "unknown",
        JailState::Queued => "queued",
        JailState::Created => "created",
        JailState::Running => "running",
        JailState::Finished => "finished",
        JailState::Failed => "failed",
        JailState::Deleted => "deleted",
    }
}

fn failure_name(kind: i32) -> &'static str {
    proto::JailFailureKind::try_from(kind)
        .map(|k| k.as_str_name())
        .unwrap_or("JAIL_FAILURE_KIND_UNSPECIFIED")
}

pub(crate) fn jail_json(j: &proto::Jail) -> serde_json::Value {
    let finished = j.finished.as_ref().map(|f| {
        let usage = f.usage.unwrap_or_default();
        json!({
            "exit_code": f.exit_code,
            "duration_ms": f.duration_ms,
            "oom_killed": f.oom_killed,
            "timed_out": f.timed_out,
            "output_truncated": f.output_truncated,
            "stdout_sha256": hex::encode(&f.stdout_sha256),
            "stderr_sha256": hex::encode(&f.stderr_sha256),
            "diff_sha256": hex::encode(&f.diff_sha256),
            "paths_added": f.paths_added,
            "paths_modified": f.paths_modified,
            "paths_deleted": f.paths_deleted,
            "violations": f.violations.iter().map(|v| json!({"rule": v.rule, "path": v.path, "detail": v.detail})).collect::<Vec<_>>(),
            "connections_allowed": f.connections_allowed,
            "connections_denied": f.connections_denied,
            "usage": {
                "cpu_seconds": usage.cpu_seconds,
                "peak_memory_bytes": usage.peak_memory_bytes,
                "pids_peak": usage.pids_peak,
                "bytes_written": usage.bytes_written,
                "llm_calls": usage.llm_calls,
                "llm_input_tokens": usage.llm_input_tokens,
                "llm_output_tokens": usage.llm_output_tokens,
            },
        })
    });
    let failed = j
        .failed
        .as_ref()
        .map(|f| json!({"kind": failure_name(f.kind), "detail": f.detail}));
    let reproducibility = j.reproducibility.as_ref().map(|r| {
        json!({
            "original_jail_id": r.original_jail_id,
            "verdict": proto::JailVerdict::try_from(r.verdict).map(|v| v.as_str_name()).unwrap_or(""),
            "differences": r.differences.iter().map(|d| json!({"field": d.field, "original": d.original, "reproduction": d.reproduction})).collect::<Vec<_>>(),
            "llm_divergence": r.llm_divergence.as_ref().map(|d| json!({"session_id": d.session_id, "step": d.step, "method": d.method, "path": d.path, "diff": d.diff})),
            "detail": r.detail,
        })
    });
    json!({
        "jail_id": j.jail_id,
        "owner": j.owner,
        "state": state_name(j.state),
        "spec_sha256": hex::encode(&j.spec_sha256),
        "image_id": j.image_id,
        "llm_session_id": j.llm_session_id,
        "reproduces": j.reproduces,
        "finished": finished,
        "failed": failed,
        "reproducibility": reproducibility,
        "deleted_reason": j.deleted_reason,
    })
}

fn jail_text(j: &proto::Jail) -> String {
    let mut out = format!(
        "jail {} ({}) owner {}",
        j.jail_id,
        state_name(j.state),
        j.owner
    );
    if let Some(f) = &j.finished {
        out.push_str(&format!(
            "\n  exit {} in {} ms{}{}{}\n  diff {} (+{} ~{} -{})",
            f.exit_code,
            f.duration_ms,
            if f.timed_out { ", timed out" } else { "" },
            if f.oom_killed { ", OOM-killed" } else { "" },
            if f.output_truncated {
                ", output truncated"
            } else {
                ""
            },
            hex::encode(&f.diff_sha256),
            f.paths_added,
            f.paths_modified,
            f.paths_deleted,
        ));
        if let Some(u) = &f.usage {
            out.push_str(&format!(
                "\n  usage cpu {:.2}s, peak memory {} B, {} LLM calls ({} in / {} out tokens)",
                u.cpu_seconds,
                u.peak_memory_bytes,
                u.llm_calls,
                u.llm_input_tokens,
                u.llm_output_tokens
            ));
        }
        for v in &f.violations {
            out.push_str(&format!(
                "\n  policy violation {}: {} {}",
                v.rule, v.path, v.detail
            ));
        }
    }
    if let Some(f) = &j.failed {
        out.push_str(&format!(
            "\n  failed {}: {}",
            failure_name(f.kind),
            f.detail
        ));
    }
    if let Some(r) = &j.reproducibility {
        let verdict = proto::JailVerdict::try_from(r.verdict)
            .map(|v| v.as_str_name())
            .unwrap_or("");
        out.push_str(&format!("\n  reproduces {}: {verdict}", r.original_jail_id));
        if let Some(d) = r.differences.first() {
            out.push_str(&format!(
                "\n  first difference: {} ({} vs {})",
                d.field, d.original, d.reproduction
            ));
        }
        if let Some(d) = &r.llm_divergence {
            out.push_str(&format!(
                "\n  LLM diverged at step {}: {} {} {}",
                d.step,
                d.method,
                d.path,
                d.diff.join("; ")
            ));
        }
    }
    out
}

fn hint(e: ClientError) -> anyhow::Error {
    anyhow::Error::new(e)
}

/// Waits for a jail to end, with a progress line on stderr.
async fn wait_done(
    client: &AmaiClient,
    jail_id: &str,
    wait: Duration,
    what: &str,
) -> anyhow::Result<proto::Jail> {
    let started = Instant::now();
    let deadline = started + wait;
    loop {
        let step = Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now()));
        let jail = client.wait_jail(jail_id, step).await.map_err(hint)?;
        let done = matches!(
            JailState::try_from(jail.state),
            Ok(JailState::Finished | JailState::Failed | JailState::Deleted)
        ) && (jail.reproduces.is_empty()
            || jail.reproducibility.is_some()
            || jail.failed.is_some());
        if done || Instant::now() >= deadline {
            eprint!("\r\x1b[K");
            return Ok(jail);
        }
        eprint!(
            "\r{what} {jail_id}: {} {}s",
            state_name(jail.state),
            started.elapsed().as_secs()
        );
        let _ = std::io::stderr().flush();
    }
}

fn exit_code_of(jail: &proto::Jail) -> ExitCode {
    match (&jail.finished, &jail.failed) {
        (Some(f), _) => ExitCode::from(u8::try_from(f.exit_code.clamp(0, 255)).unwrap_or(255)),
        _ => ExitCode::FAILURE,
    }
}

fn read_spec(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the spec {}", path.display()))?;
    if meta.len() > MAX_SPEC_BYTES {
        anyhow::bail!("{} is larger than {MAX_SPEC_BYTES} bytes", path.display());
    }
    std::fs::read(path).with_context(|| format!("cannot read the spec {}", path.display()))
}

/// The acting identity's handle on the gateway.
async fn connect_as(settings: &Settings, acting: &Acting) -> anyhow::Result<amai_client::Agent> {
    acting.agent(&connect(settings).await?)
}

/// `amai jail ...`
pub(crate) async fn jail(settings: &Settings, cmd: JailCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JailCommand::Run {
            acting,
            spec,
            wait_secs,
            json,
        } => {
            let agent = connect_as(settings, &acting).await?;
            let spec = read_spec(&spec)?;
            let created = agent.create_jail(&spec, true).await.map_err(hint)?;
            let jail = wait_done(
                agent.client(),
                &created.jail_id,
                Duration::from_secs(wait_secs),
                "jail",
            )
            .await?;
            print(json, jail_json(&jail), jail_text(&jail));
            Ok(exit_code_of(&jail))
        }
        JailCommand::Show { acting, jail, json } => {
            let agent = connect_as(settings, &acting).await?;
            let j = agent.client().jail(&jail).await.map_err(hint)?;
            print(json, jail_json(&j), jail_text(&j));
            Ok(ExitCode::SUCCESS)
        }
        JailCommand::Logs {
            acting,
            jail,
            follow,
        } => {
            let agent = connect_as(settings, &acting).await?;
            let logs = agent
                .client()
                .jail_logs(&jail, follow)
                .await
                .map_err(hint)?;
            std::io::stdout().write_all(&logs.stdout)?;
            std::io::stderr().write_all(&logs.stderr)?;
            Ok(ExitCode::SUCCESS)
        }
        JailCommand::Diff { acting, jail, json } => {
            let agent = connect_as(settings, &acting).await?;
            let diff = agent.client().jail_diff(&jail).await.map_err(hint)?;
            let change = |c: i32| match proto::JailChange::try_from(c).unwrap_or_default() {
                proto::JailChange::Added => "added",
                proto::JailChange::Modified => "modified",
                proto::JailChange::Deleted => "deleted",
                proto::JailChange::Unspecified => "?",
            };
            let entries: Vec<_> = diff
                .entries
                .iter()
                .map(|e| json!({"path": e.path, "change": change(e.change), "mode": format!("{:o}", e.mode), "size": e.size, "sha256": hex::encode(&e.sha256), "link_target": e.link_target}))
                .collect();
            let mut text = format!("diff {}", hex::encode(&diff.diff_sha256));
            for e in &diff.entries {
                text.push_str(&format!(
                    "\n{:>8} {:o} {:>10} {}",
                    change(e.change),
                    e.mode,
                    e.size,
                    e.path
                ));
                if !e.link_target.is_empty() {
                    text.push_str(&format!(" -> {}", e.link_target));
                }
            }
            for v in &diff.violations {
                text.push_str(&format!(
                    "\npolicy violation {}: {} {}",
                    v.rule, v.path, v.detail
                ));
            }
            print(
                json,
                json!({"diff_sha256": hex::encode(&diff.diff_sha256), "entries": entries, "violations": diff.violations.iter().map(|v| json!({"rule": v.rule, "path": v.path, "detail": v.detail})).collect::<Vec<_>>()}),
                text,
            );
            Ok(ExitCode::SUCCESS)
        }
        JailCommand::Network { acting, jail, json } => {
            let agent = connect_as(settings, &acting).await?;
            let log = agent.client().jail_network_log(&jail).await.map_err(hint)?;
            let verdict = |v: i32| match proto::JailNetVerdict::try_from(v).unwrap_or_default() {
                proto::JailNetVerdict::Allowed => "allowed",
                proto::JailNetVerdict::Denied => "denied",
                proto::JailNetVerdict::Unspecified => "?",
            };
            let entries: Vec<_> = log
                .entries
                .iter()
                .map(|e| json!({"at": e.at.as_ref().map(|t| t.seconds), "protocol": e.protocol, "destination": e.destination, "verdict": verdict(e.verdict), "detail": e.detail}))
                .collect();
            let text = log
                .entries
                .iter()
                .map(|e| {
                    format!(
                        "{:>7} {:<4} {} {}",
                        verdict(e.verdict),
                        e.protocol,
                        e.destination,
                        e.detail
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            print(json, json!(entries), text);
            Ok(ExitCode::SUCCESS)
        }
        JailCommand::Reproduce {
            acting,
            jail,
            wait_secs,
            json,
        } => {
            let agent = connect_as(settings, &acting).await?;
            let original = agent.client().jail(&jail).await.map_err(hint)?;
            if original.spec_json.is_empty() {
                anyhow::bail!("jail {jail}'s spec is not inline; reproduce it with the SDK from the spec file");
            }
            let created = agent
                .reproduce_jail(&jail, &original.spec_json, None)
                .await
                .map_err(hint)?;
            let j = wait_done(
                agent.client(),
                &created.jail_id,
                Duration::from_secs(wait_secs),
                "reproduction",
            )
            .await?;
            print(json, jail_json(&j), jail_text(&j));
            let identical = j
                .reproducibility
                .as_ref()
                .is_some_and(|r| r.verdict == proto::JailVerdict::Identical as i32);
            Ok(if identical {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        JailCommand::Rm {
            acting,
            jail,
            reason,
        } => {
            let agent = connect_as(settings, &acting).await?;
            let j = agent
                .client()
                .delete_jail(&jail, &reason)
                .await
                .map_err(hint)?;
            println!("deleted jail {} ({})", j.jail_id, j.deleted_reason);
            Ok(ExitCode::SUCCESS)
        }
        JailCommand::Ls { acting, all, json } => {
            let agent = connect_as(settings, &acting).await?;
            let mut after = String::new();
            let mut jails = Vec::new();
            loop {
                let page = agent
                    .client()
                    .jails("", &after, 500, all)
                    .await
                    .map_err(hint)?;
                jails.extend(page.jails);
                if page.next_after.is_empty() {
                    break;
                }
                after = page.next_after;
            }
            let text = jails
                .iter()
                .map(|j| {
                    let outcome = match (&j.finished, &j.failed) {
                        (Some(f), _) => format!("exit {}", f.exit_code),
                        (_, Some(f)) => failure_name(f.kind).to_string(),
                        _ => String::new(),
                    };
                    format!("{} {:<9} {}", j.jail_id, state_name(j.state), outcome)
                })
                .collect::<Vec<_>>()
                .join("\n");
            print(
                json,
                json!(jails.iter().map(jail_json).collect::<Vec<_>>()),
                text,
            );
            Ok(ExitCode::SUCCESS)
        }
        JailCommand::Image(cmd) => image(cmd).await,
    }
}

async fn image(cmd: ImageCommand) -> anyhow::Result<ExitCode> {
    let engine = amai_jail::Engine::connect().await?;
    let (image, json) = match cmd {
        ImageCommand::Build { image, json } => (image, json),
        ImageCommand::Ls { json } => {
            let images = amai_jail::list_images(&engine).await?;
            let text = images
                .iter()
                .map(|i| {
                    format!(
                        "{} {} {} MB",
                        i.references.join(","),
                        i.image_id,
                        i.size_bytes / 1_000_000
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            let value = json!(images
                .iter()
                .map(|i| json!({"references": i.references, "image_id": i.image_id, "size_bytes": i.size_bytes, "created": i.created}))
                .collect::<Vec<_>>());
            print(json, value, text);
            return Ok(ExitCode::SUCCESS);
        }
    };
    let started = Instant::now();
    let built = match image.as_str() {
        "busybox" => amai_jail::build_busybox(&engine).await?,
        "python" => {
            amai_jail::build_python(&engine, |phase| {
                eprint!(
                    "\r\x1b[Kbuilding python: {phase} ({}s)",
                    started.elapsed().as_secs()
                );
                let _ = std::io::stderr().flush();
            })
            .await?
        }
        other => anyhow::bail!("no recipe for image {other:?}: busybox or python"),
    };
    eprint!("\r\x1b[K");
    print(
        json,
        json!({"image": image, "reference": built.reference, "image_id": built.image_id, "built": built.freshly_built, "seconds": started.elapsed().as_secs_f64()}),
        format!(
            "{} {} ({}, {:.1}s)",
            built.reference,
            built.image_id,
            if built.freshly_built {
                "built"
            } else {
                "cached"
            },
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(ExitCode::SUCCESS)
}
