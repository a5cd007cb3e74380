//! `amai audit verify`: the auditor (`amai-audit`) on a deployment's history,
//! offline from an export file (`--file`) or online through the gateway
//! (every stream read to its current end with a bounded `Subscribe`, as an
//! operator or a reader granted the streams). Nothing the file or the gateway
//! says is trusted but the stored bytes: the trust root is the caller's
//! (`--trust-root`, or the operator key in the data dir), and a file made for
//! another deployment is refused.
//!
//! Output: the report (`--json`: schemas/audit-report.schema.json) or its
//! human summary, a progress bar on stderr. Exit codes: 0 authoritative, 1
//! invalid, 3 partial, 2 unusable input.

use std::path::PathBuf;
use std::process::ExitCode;

use amai_audit::{AuditReport, Auditor, Scope};
use amai_bus::proto;
use amai_checkpoint::VerifierKey;
use anyhow::{bail, Context};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::client_cmd::{connect, Reading};
use crate::config::Settings;

/// `amai audit verify` options.
#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// Verify this export file (offline); without it, the deployment behind
    /// the gateway (online).
    #[arg(long)]
    file: Option<PathBuf>,
    /// A trusted witness's C2SP verifier key (repeat the flag).
    #[arg(long = "witness-vkey")]
    witness_vkeys: Vec<String>,
    /// Cosignatures of this many distinct trusted witnesses are required for
    /// evidence to be authoritative.
    #[arg(long, default_value_t = 0)]
    require_witnesses: usize,
    #[command(flatten)]
    reading: Reading,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// The trust root the caller trusts.
pub(super) fn trust_root(settings: &Settings) -> anyhow::Result<ed25519_dalek::VerifyingKey> {
    if let Some(bytes) = settings.trust_root_bytes()? {
        return amai_bus::keys::verifying_key(&bytes)
            .context("--trust-root is not an Ed25519 public key");
    }
    crate::keystore::existing_operator_key(&settings.data_dir)?.context(
        "an audit needs the trust root you trust: pass --trust-root <hex> (AMAI_TRUST_ROOT), or run where the operator key is in the data dir",
    )
}

fn auditor(settings: &Settings, args: &VerifyArgs, pb: &ProgressBar) -> anyhow::Result<Auditor> {
    let keys: Vec<VerifierKey> = args
        .witness_vkeys
        .iter()
        .map(|v| {
            v.parse().map_err(|e| {
                anyhow::anyhow!("--witness-vkey {v:?} is not a C2SP verifier key: {e}")
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let pb = pb.clone();
    Ok(Auditor::new(trust_root(settings)?)
        .witnesses(keys, args.require_witnesses)?
        .on_progress(move |n| pb.set_position(n)))
}

/// Runs `amai audit verify`.
pub(crate) async fn verify(settings: &Settings, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let report = match &args.file {
        Some(path) => offline(settings, &args, path)?,
        None => online(settings, &args).await?,
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.human_summary());
    }
    Ok(ExitCode::from(report.exit_code()))
}

fn offline(settings: &Settings, args: &VerifyArgs, path: &PathBuf) -> anyhow::Result<AuditReport> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = amai_export::ExportReader::new(std::io::BufReader::new(file))
        .with_context(|| format!("{} is not a readable export", path.display()))?;
    let manifest = reader.manifest().clone();
    let pb = bar(manifest.messages(), "verifying");
    let mut auditor = auditor(settings, args, &pb)?;
    let trusted = hex::encode(trust_root(settings)?.as_bytes());
    if manifest.deployment.trust_root != trusted {
        bail!(
            "{} was exported from the deployment with trust root {}, not the one you trust ({trusted}); pass the right --trust-root",
            path.display(),
            manifest.deployment.trust_root
        );
    }
    let selected = !manifest.selection.aggregates.is_empty();
    for range in &manifest.streams {
        let scope = if selected {
            Scope::Selection
        } else if range.complete {
            Scope::Complete
        } else {
            Scope::Range
        };
        auditor.declare_stream(&range.stream, scope)?;
    }
    while let Some(record) = reader.next_record()? {
        if let amai_export::Record::Message(m) = record {
            auditor.push(m)?;
        }
    }
    for range in &manifest.streams {
        auditor.end_stream(&range.stream)?;
    }
    pb.finish_and_clear();
    Ok(auditor.finish())
}

async fn online(settings: &Settings, args: &VerifyArgs) -> anyhow::Result<AuditReport> {
    let client = args.reading.sign(connect(settings).await?, settings)?;
    let make = |total: u64| -> anyhow::Result<(Auditor, ProgressBar)> {
        let pb = bar(total, "verifying");
        let a = auditor(settings, args, &pb)?;
        Ok((a, pb))
    };
    audit_through(&client, make).await
}

/// Audits everything the gateway serves, read as `client` (an operator or a
/// reader granted every stream); `make` builds the auditor once the number
/// of messages is known.
pub(super) async fn audit_through(
    client: &amai_client::AmaiClient,
    make: impl FnOnce(u64) -> anyhow::Result<(Auditor, ProgressBar)>,
) -> anyhow::Result<AuditReport> {
    let status = client
        .audit_status()
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nhint: an online audit reads each stream's end from the audit role; run `amai up` or `amai worker --role audit`"))?;
    let ends: Vec<(String, u64)> = amai_audit::deployment_streams()
        .into_iter()
        .map(|s| {
            let end = if s == amai_bus::subjects::AggregateKind::Audit.stream() {
                status.audit_stream_last_seq
            } else {
                status
                    .streams
                    .iter()
                    .find(|a| a.stream == s)
                    .map_or(0, |a| a.stream_last_seq)
            };
            (s.to_string(), end)
        })
        .collect();
    let total = ends.iter().map(|(_, e)| e).sum();
    let (mut auditor, pb) = make(total)?;
    for (stream, end) in &ends {
        auditor.declare_stream(stream, Scope::Complete)?;
        if *end > 0 {
            let mut events = client
                .subscribe(proto::SubscribeRequest {
                    stream: stream.clone(),
                    start: Some(proto::subscribe_request::Start::StartSeq(1)),
                    end_seq: *end,
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("cannot read {stream}: {e}"))?;
            loop {
                // A deleted last message never comes: stop when nothing does.
                let next =
                    tokio::time::timeout(std::time::Duration::from_secs(5), events.next()).await;
                let Ok(Some(item)) = next else { break };
                let ev = item.map_err(|e| anyhow::anyhow!("reading {stream}: {e}"))?;
                let position = ev.position.clone().unwrap_or_default();
                auditor.push(proto::ExportedMessage {
                    stream: stream.clone(),
                    seq: position.seq,
                    subject: ev.subject.clone(),
                    published_at: ev.published_at,
                    data: ev.raw,
                    msg_id: String::new(),
                })?;
                if position.seq >= *end {
                    break;
                }
            }
        }
        auditor.end_stream(stream)?;
    }
    pb.finish_and_clear();
    Ok(auditor.finish())
}
