//! `amai audit witness`: follows one stream's checkpoints (its origin) through
//! the gateway, checks each new one against the last one it saw, and cosigns
//! only when they are consistent (C2SP tlog-cosignature v1 with the witness
//! identity's own key). Every cosignature is stored as an
//! `audit.checkpoint_cosigned` action on the witness's own chain, where the
//! audit role finds it and serves it with the checkpoint, so clients can
//! require k of n witnesses.
//!
//! A split view (two checkpoints of one size with different roots, a
//! checkpoint no consistency proof links to the last one seen, a smaller
//! checkpoint than one seen) is never cosigned: it is recorded as an
//! `audit.split_view_detected` action on the witness's chain, printed as an
//! alert, and the witness exits with [`EXIT_SPLIT_VIEW`].
//!
//! The witness's memory is a small JSON state file: the log's verifier key
//! (pinned at first contact, or given with `--log-vkey`) and the last
//! checkpoint seen (its whole note).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use amai_bus::envelope::EventDraft;
use amai_bus::keys::IdentityKeys;
use amai_bus::proto::{self, payload::Kind};
use amai_checkpoint::{SignedCheckpoint, VerifierKey, WitnessKey};
use amai_client::checkpoints::log_vkey;
use amai_client::{Agent, AmaiClient};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client_cmd::connect;
use crate::config::Settings;

/// Exit code of a split view.
pub(crate) const EXIT_SPLIT_VIEW: u8 = 3;

/// What the witness remembers between rounds (and runs).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WitnessState {
    /// The log's C2SP verifier key.
    log_vkey: Option<String>,
    /// The last checkpoint seen and cosigned: its whole note.
    last_note: Option<String>,
}

impl WitnessState {
    fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!("the witness state {} is not readable JSON", path.display())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// `amai audit witness` options.
#[derive(Debug, clap::Args)]
pub(crate) struct WitnessArgs {
    /// The stream whose checkpoints to follow.
    #[arg(long, default_value = "AMAI_AGENTS")]
    stream: String,
    /// The log's origin (`amai/<deployment>/<stream>`), instead of
    /// `--stream`: the stream is its last part, and the log key must be named
    /// after it.
    #[arg(long, conflicts_with = "stream")]
    origin: Option<String>,
    /// The witness identity's key file (a registered identity: it cosigns
    /// with this key and records on its own chain).
    #[arg(long, env = "AMAI_KEYS")]
    keys: PathBuf,
    /// The witness's key name in cosignatures (default: `witness/<identity id>`).
    #[arg(long)]
    name: Option<String>,
    /// The state file (default: `<data-dir>/witness-<stream>.json`).
    #[arg(long)]
    state: Option<PathBuf>,
    /// The log's verifier key (default: pinned from the deployment at first contact).
    #[arg(long, env = "AMAI_AUDIT_LOG_VKEY")]
    log_vkey: Option<String>,
    /// One round, then exit.
    #[arg(long)]
    once: bool,
    /// Seconds between rounds.
    #[arg(long, default_value_t = 5)]
    interval_secs: u64,
    /// Each round, before anything else, audit the whole history the log
    /// serves (`amai audit verify`, online): an invalid history is alerted
    /// like a split view and nothing is cosigned. The witness's key must read
    /// every stream (an operator, or a reader an operator granted them).
    #[arg(long)]
    audit: bool,
    /// Print one JSON object per round.
    #[arg(long)]
    json: bool,
}

/// What one round saw.
enum Round {
    /// Nothing new since the last checkpoint seen.
    Unchanged(u64),
    /// A new checkpoint, consistent, cosigned.
    Cosigned(u64),
    /// A split view, recorded.
    SplitView(proto::SplitViewKind, String),
}

struct Witness {
    client: AmaiClient,
    /// With `--audit`: the trust root the audits start from.
    audit: Option<ed25519_dalek::VerifyingKey>,
    agent: Agent,
    key: WitnessKey,
    stream: String,
    state_path: PathBuf,
    state: WitnessState,
    log: VerifierKey,
}

impl Witness {
    async fn round(&mut self) -> anyhow::Result<Round> {
        if let Some(root) = self.audit {
            let report = super::verify::audit_through(&self.client, |_| {
                Ok((
                    amai_audit::Auditor::new(root),
                    indicatif::ProgressBar::hidden(),
                ))
            })
            .await?;
            if report.evidence == amai_audit::Evidence::Invalid {
                let detail = format!(
                    "the history the log serves does not verify ({} failures), first: {}",
                    report.failures.len() as u64 + report.failures_omitted,
                    report
                        .failures
                        .first()
                        .map(|f| f.line())
                        .unwrap_or_default()
                );
                let seen = self.state.last_note.clone().unwrap_or_default();
                self.record_split_view(proto::SplitViewKind::InvalidHistory, &seen, "", &detail)
                    .await?;
                return Ok(Round::SplitView(
                    proto::SplitViewKind::InvalidHistory,
                    detail,
                ));
            }
        }
        let latest = self
            .client
            .verified_checkpoint(&self.stream, 0, &self.log)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let new = latest.note.checkpoint().clone();
        let Some(seen_note) = self.state.last_note.clone() else {
            self.cosign(&latest.note, latest.event.as_ref()).await?;
            return Ok(Round::Cosigned(new.size));
        };
        let seen = SignedCheckpoint::open(&seen_note, &self.log).context(
            "the witness state's last checkpoint no longer verifies against the log key",
        )?;
        let old = seen.checkpoint().clone();
        let split = |kind, detail: String| (kind, detail);
        let verdict = if new.size < old.size {
            Some(split(
                proto::SplitViewKind::Rollback,
                format!(
                    "the log now shows size {} after showing size {}",
                    new.size, old.size
                ),
            ))
        } else if new.size == old.size {
            (new.root != old.root).then(|| {
                split(
                    proto::SplitViewKind::SameSizeDifferentRoot,
                    format!(
                        "two checkpoints of size {} with roots {} and {}",
                        new.size,
                        hex::encode(old.root),
                        hex::encode(new.root)
                    ),
                )
            })
        } else {
            // The log's own checkpoint of the old size must be the one seen.
            let same_size = self
                .client
                .verified_checkpoint(&self.stream, old.size, &self.log)
                .await
                .ok()
                .map(|c| c.note.checkpoint().root);
            match same_size {
                Some(root) if root != old.root => Some(split(
                    proto::SplitViewKind::SameSizeDifferentRoot,
                    format!(
                        "the log now serves root {} for size {}, where it signed {}",
                        hex::encode(root),
                        old.size,
                        hex::encode(old.root)
                    ),
                )),
                _ => {
                    self.check_consistency(old.size, new.size, &old.root, &new.root)
                        .await?
                }
            }
        };
        match verdict {
            None if new.size == old.size => Ok(Round::Unchanged(new.size)),
            None => {
                self.cosign(&latest.note, latest.event.as_ref()).await?;
                Ok(Round::Cosigned(new.size))
            }
            Some((kind, detail)) => {
                self.record_split_view(kind, &seen_note, latest.note.text(), &detail)
                    .await?;
                Ok(Round::SplitView(kind, detail))
            }
        }
    }

    async fn check_consistency(
        &self,
        old_size: u64,
        new_size: u64,
        old_root: &[u8; 32],
        new_root: &[u8; 32],
    ) -> anyhow::Result<Option<(proto::SplitViewKind, String)>> {
        let p = match self
            .client
            .consistency_proof(&self.stream, old_size, new_size)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                return Ok(Some((
                    proto::SplitViewKind::Inconsistent,
                    format!(
                        "the log gives no consistency proof from {old_size} to {new_size}: {e}"
                    ),
                )))
            }
        };
        let proof: Result<Vec<[u8; 32]>, _> = p
            .proof
            .iter()
            .map(|h| <[u8; 32]>::try_from(h.as_slice()))
            .collect();
        let Ok(proof) = proof else {
            return Ok(Some((
                proto::SplitViewKind::Inconsistent,
                "the consistency proof holds a hash that is not 32 bytes".into(),
            )));
        };
        // The roots are the signed ones, never the proof's own fields.
        Ok(amai_merkle::verify_consistency(old_size, new_size, old_root, new_root, &proof)
            .err()
            .map(|e| {
                (
                    proto::SplitViewKind::Inconsistent,
                    format!("the checkpoint of size {new_size} is not consistent with the one of size {old_size} seen before: {e}"),
                )
            }))
    }

    async fn cosign(
        &mut self,
        note: &SignedCheckpoint,
        event: Option<&proto::StoredEvent>,
    ) -> anyhow::Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let line = self.key.cosign(note, now)?;
        let c = note.checkpoint();
        let checkpoint_event_id = event
            .and_then(|e| amai_bus::envelope::VerifiedEvent::decode(&e.raw).ok())
            .map(|ev| ev.body.id)
            .unwrap_or_default();
        let payload = proto::AuditCheckpointCosigned {
            origin: c.origin.clone(),
            tree_size: c.size,
            root_hash: c.root.to_vec(),
            cosignature: line.to_string(),
            witness_name: self.key.name().to_string(),
            witness_vkey: self.key.verifier().to_string(),
            time: now,
            checkpoint_event_id,
        };
        self.append(Kind::AuditCheckpointCosigned(payload)).await?;
        self.state.last_note = Some(note.text().to_string());
        self.state.save(&self.state_path)
    }

    async fn record_split_view(
        &self,
        kind: proto::SplitViewKind,
        seen: &str,
        new: &str,
        detail: &str,
    ) -> anyhow::Result<()> {
        let origin = self.log.name().to_string();
        self.append(Kind::AuditSplitViewDetected(
            proto::AuditSplitViewDetected {
                origin,
                kind: kind as i32,
                seen_note: seen.to_string(),
                new_note: new.to_string(),
                detail: detail.to_string(),
            },
        ))
        .await
    }

    async fn append(&self, payload: Kind) -> anyhow::Result<()> {
        let aggregate = self.agent.aggregate().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (keys, id) = (self.agent.keys().clone(), self.agent.id().to_string());
        self.agent
            .append_with_retry(|seq, hash| {
                EventDraft::new(aggregate.clone(), payload.clone())
                    .after(seq, hash)
                    .sign(&keys, &id)
            })
            .await
            .map_err(|e| anyhow::anyhow!("cannot record on the witness's chain: {e}"))?;
        Ok(())
    }
}

/// Runs `amai audit witness`.
pub(crate) async fn witness(
    settings: &Settings,
    mut args: WitnessArgs,
) -> anyhow::Result<ExitCode> {
    if let Some(origin) = &args.origin {
        match origin.rsplit_once('/') {
            Some((_, stream)) if !stream.is_empty() => args.stream = stream.to_string(),
            _ => bail!(
                "--origin {origin:?} is not a log origin such as amai/<deployment>/AMAI_AGENTS"
            ),
        }
    }
    let keys = IdentityKeys::load(&args.keys).with_context(|| {
        format!(
            "cannot load the witness's keys from {}",
            args.keys.display()
        )
    })?;
    let client = connect(settings)
        .await?
        .with_signer(keys.identity_id(), keys.clone());
    let agent = client.agent(keys.clone());
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("witness/{}", keys.identity_id()));
    let key = WitnessKey::new(name, keys.signing_key().clone())?;
    let state_path = args.state.clone().unwrap_or_else(|| {
        settings
            .data_dir
            .join(format!("witness-{}.json", args.stream))
    });
    let mut state = WitnessState::load(&state_path)?;
    let log = match (&args.log_vkey, &state.log_vkey) {
        (Some(v), Some(pinned)) if v != pinned => bail!(
            "--log-vkey {v} differs from the key pinned in {}: {pinned}; a log does not change keys silently (remove the state file to start over)",
            state_path.display()
        ),
        (Some(v), _) | (None, Some(v)) => v.parse().map_err(|e| anyhow::anyhow!("the log verifier key {v:?} does not parse: {e}"))?,
        (None, None) => {
            let status = client.audit_status().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            log_vkey(&status, &args.stream).map_err(|e| anyhow::anyhow!("{e}"))?
        }
    };
    if let Some(origin) = &args.origin {
        if log.name() != origin {
            bail!(
                "the log key {log} is named {:?}, not the origin {origin:?} you follow",
                log.name()
            );
        }
    }
    state.log_vkey = Some(log.to_string());
    state.save(&state_path)?;
    let audit = if args.audit {
        Some(super::verify::trust_root(settings)?)
    } else {
        None
    };
    let mut w = Witness {
        client,
        audit,
        agent,
        key,
        stream: args.stream.clone(),
        state_path,
        state,
        log,
    };
    loop {
        let round = w.round().await;
        match round {
            Ok(Round::Unchanged(size)) => report(
                args.json,
                json!({"stream": w.stream, "event": "unchanged", "tree_size": size}),
                format!("{}: checkpoint {size} already cosigned", w.stream),
            ),
            Ok(Round::Cosigned(size)) => report(
                args.json,
                json!({"stream": w.stream, "event": "cosigned", "tree_size": size}),
                format!("{}: checkpoint {size} is consistent; cosigned", w.stream),
            ),
            Ok(Round::SplitView(kind, detail)) => {
                let kind = kind.as_str_name();
                report(
                    args.json,
                    json!({"stream": w.stream, "event": "split_view", "kind": kind, "detail": detail}),
                    format!("ALERT {}: split view ({kind}): {detail}", w.stream),
                );
                eprintln!(
                    "amai audit witness: ALERT: split view of {} ({kind}): {detail}",
                    w.stream
                );
                return Ok(ExitCode::from(EXIT_SPLIT_VIEW));
            }
            Err(e) if args.once => return Err(e),
            Err(e) => eprintln!(
                "amai audit witness: {e:#}; retrying in {}s",
                args.interval_secs
            ),
        }
        if args.once {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_secs(args.interval_secs.max(1))).await;
    }
}

fn report(json_out: bool, value: serde_json::Value, text: String) {
    if json_out {
        println!("{value}");
    } else {
        println!("{text}");
    }
}
