//! `amai catalog ...`: the catalogue of agent manifests, thin wrappers over
//! `amai-manifest` (parsing, scanning, registry indexes, Agent Cards) and the
//! SDK's [`amai_client::catalog`]. Nothing here builds or runs an agent:
//! `scan` and `sync` only read files. `publish`, `scan`, `sync` and
//! `import-card` sign `catalog.published` actions (`--keys`); `search` and
//! `show` are public. Every command takes `--json`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use amai_bus::proto::{self, CatalogSource};
use amai_client::catalog::Publication;
use amai_client::{Agent, ClientError, ErrorKind};
use amai_manifest::{CardVerdict, Manifest, ManifestErrors, Source};
use anyhow::Context;
use serde_json::json;

use crate::client_cmd::{connect, print, Acting};
use crate::config::Settings;

/// `amai catalog ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum CatalogCommand {
    /// Publish a manifest as its publisher (a `catalog.published` on your
    /// own chain; you then own its id).
    Publish {
        #[command(flatten)]
        acting: Acting,
        /// The manifest (JSON, schemas/agent-manifest.schema.json).
        manifest: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Find `amai-manifest.json` files under a directory and index them,
    /// without building or running anything (symbolic links are not followed).
    Scan {
        #[command(flatten)]
        acting: Acting,
        /// The directory to scan.
        dir: PathBuf,
        /// Only list what would be indexed.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Import a registry index (a JSON file or a directory of manifests),
    /// entry by entry, as untrusted input.
    Sync {
        #[command(flatten)]
        acting: Acting,
        /// The index file or directory.
        index: PathBuf,
        /// Only list what would be indexed.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Map an A2A Agent Card to a manifest (untrusted input; its signatures
    /// are verified and the verdict shown) and index it. A card says nothing
    /// about how to run the agent: give --image and, after `--`, the
    /// program and its arguments.
    ImportCard {
        #[command(flatten)]
        acting: Acting,
        /// The Agent Card (JSON).
        card: PathBuf,
        /// The image that runs the agent.
        #[arg(long)]
        image: Option<String>,
        /// The program and its arguments, after `--`
        /// (`... --image busybox -- sh -c 'echo hi'`).
        #[arg(last = true)]
        entrypoint: Vec<String>,
        /// Only show the mapping and the verdict.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Search the catalogue by text and filters (public).
    Search {
        /// Words that must all appear (id, name, description, keywords,
        /// capabilities, tool names).
        text: Vec<String>,
        /// Only entries with this capability.
        #[arg(long)]
        capability: Option<String>,
        /// Only entries with this keyword.
        #[arg(long)]
        keyword: Option<String>,
        /// Only entries of this owner id or declared publisher name.
        #[arg(long)]
        publisher: Option<String>,
        /// At most this many (at most 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Entries after this manifest id (paging).
        #[arg(long, default_value = "")]
        after: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One catalogue entry (public).
    Show {
        /// The manifest id, or `<id>@<version>` for a version other than the
        /// highest.
        manifest_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Adds what to do to a refusal.
fn hint(e: ClientError) -> anyhow::Error {
    let hint = match e.kind() {
        ErrorKind::InvalidManifest => Some("fix the manifest at the JSON paths above (schemas/agent-manifest.schema.json)"),
        ErrorKind::ManifestIdOwned => Some("another identity published this id first: choose your own reverse-DNS id"),
        ErrorKind::ManifestVersionExists => Some("a published version never changes: bump `version`"),
        ErrorKind::CatalogEntryNotFound => Some("search the catalogue with `amai catalog search`"),
        ErrorKind::WorkerUnavailable => Some(
            "the lifecycle worker is not answering: run `amai up`, or `amai worker --role lifecycle` next to the gateway; nothing was appended",
        ),
        ErrorKind::UnknownSigner => Some("the --keys identity is not registered on this deployment (`amai agent register`)"),
        _ => None,
    };
    match hint {
        Some(h) => anyhow::Error::new(e).context(h.to_string()),
        None => anyhow::Error::new(e),
    }
}

fn source_name(s: i32) -> &'static str {
    match CatalogSource::try_from(s).unwrap_or_default() {
        CatalogSource::Unspecified => "unspecified",
        CatalogSource::Publish => "publish",
        CatalogSource::Scan => "scan",
        CatalogSource::Sync => "sync",
        CatalogSource::Card => "card",
    }
}

fn verdict_name(v: &CardVerdict) -> String {
    match v {
        CardVerdict::Verified { did } => format!("verified ({did})"),
        CardVerdict::Unsigned => "unsigned".into(),
        CardVerdict::BadSignature { index, reason } => {
            format!("bad_signature (signature {index}: {reason})")
        }
        CardVerdict::UnsupportedAlgorithm { index, alg } => {
            format!("unsupported_algorithm (signature {index}: {alg})")
        }
        CardVerdict::KeyMismatch {
            index,
            signer,
            declared,
        } => format!("key_mismatch (signature {index} by {signer}, the card declares {declared})"),
        CardVerdict::Malformed { reason } => format!("malformed ({reason})"),
    }
}

fn entry_json(e: &proto::CatalogEntry) -> serde_json::Value {
    json!({
        "manifest_id": e.manifest_id, "version": e.version, "name": e.name,
        "description": e.description, "publisher_name": e.publisher_name,
        "owner_id": e.owner_id, "publisher_verified": e.publisher_verified,
        "source": source_name(e.source), "origin": e.origin,
        "manifest_sha256": hex::encode(&e.manifest_sha256),
        "capabilities": e.capabilities, "keywords": e.keywords,
        "permissions": e.permissions, "tools": e.tools, "versions": e.versions,
        "event_id": e.event_id, "published_by": e.published_by,
        "position": e.position.as_ref().map(|p| json!({"stream": p.stream, "seq": p.seq})),
        "build_context": e.build_context, "card_verdict": e.card_verdict,
        "manifest": serde_json::from_slice::<serde_json::Value>(&e.manifest_json).unwrap_or_default(),
    })
}

fn entry_line(e: &proto::CatalogEntry) -> String {
    let verified = if e.publisher_verified {
        "verified publisher"
    } else {
        "declared publisher"
    };
    format!(
        "{}@{}  {}  ({}: {}, {})",
        e.manifest_id,
        e.version,
        e.name,
        source_name(e.source),
        e.publisher_name,
        verified
    )
}

fn entry_text(e: &proto::CatalogEntry) -> String {
    let mut out = entry_line(e);
    if !e.description.is_empty() {
        out.push_str(&format!("\n  {}", e.description));
    }
    out.push_str(&format!("\n  owner {}", e.owner_id));
    out.push_str(&format!("\n  versions: {}", e.versions.join(", ")));
    for (label, list) in [
        ("permissions", &e.permissions),
        ("capabilities", &e.capabilities),
        ("keywords", &e.keywords),
        ("tools", &e.tools),
    ] {
        if !list.is_empty() {
            out.push_str(&format!("\n  {label}: {}", list.join(", ")));
        }
    }
    if !e.card_verdict.is_empty() {
        out.push_str(&format!("\n  card signature: {}", e.card_verdict));
    }
    out
}

fn errors_json(errors: &ManifestErrors) -> serde_json::Value {
    json!(errors
        .errors()
        .iter()
        .map(|e| json!({"path": e.path, "message": e.message}))
        .collect::<Vec<_>>())
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The outcome of publishing one manifest of a batch.
struct Outcome {
    label: String,
    result: Result<proto::CatalogEntry, String>,
}

async fn publish_all(agent: Option<&Agent>, batch: Vec<(String, Publication)>) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (label, publication) in batch {
        let result = match agent {
            None => Err("dry run: not published".to_string()),
            Some(agent) => agent
                .publish_manifest(&publication)
                .await
                .map_err(|e| format!("{:#}", hint(e))),
        };
        out.push(Outcome { label, result });
    }
    out
}

fn outcomes_json(outcomes: &[Outcome]) -> Vec<serde_json::Value> {
    outcomes
        .iter()
        .map(|o| match &o.result {
            Ok(e) => json!({"origin": o.label, "published": entry_json(e)}),
            Err(why) => json!({"origin": o.label, "refused": why}),
        })
        .collect()
}

fn outcomes_text(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .map(|o| match &o.result {
            Ok(e) => format!("indexed  {}  <- {}", entry_line(e), o.label),
            Err(why) => format!("refused  {}: {why}", o.label),
        })
        .collect()
}

/// Runs `amai catalog ...`.
pub(crate) async fn catalog(settings: &Settings, cmd: CatalogCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CatalogCommand::Publish {
            acting,
            manifest,
            json: json_out,
        } => {
            let bytes = read(&manifest)?;
            let publication = match Publication::new(&bytes, CatalogSource::Publish) {
                Ok(p) => p.origin(manifest.display().to_string()),
                Err(errors) => {
                    print(
                        json_out,
                        json!({"manifest": manifest.display().to_string(), "invalid": errors_json(&errors)}),
                        format!("{} is invalid:\n{errors}", manifest.display()),
                    );
                    return Ok(ExitCode::from(1));
                }
            };
            let client = connect(settings).await?;
            let agent = acting.agent(&client)?;
            let entry = agent.publish_manifest(&publication).await.map_err(hint)?;
            print(json_out, entry_json(&entry), entry_text(&entry));
            Ok(ExitCode::SUCCESS)
        }
        CatalogCommand::Scan {
            acting,
            dir,
            dry_run,
            json: json_out,
        } => {
            let root = dir
                .canonicalize()
                .with_context(|| format!("cannot open {}", dir.display()))?;
            let report = amai_manifest::scan(&root);
            let mut batch = Vec::new();
            for found in report.found() {
                let mut p = Publication::of(&found.manifest, CatalogSource::Scan)
                    .origin(found.path.display().to_string());
                if let Source::Build { context, .. } = &found.manifest.source {
                    let manifest_dir = root.join(&found.path);
                    let manifest_dir = manifest_dir.parent().unwrap_or(&root);
                    p = p.build_context(manifest_dir.join(context).display().to_string());
                }
                batch.push((found.path.display().to_string(), p));
            }
            let invalid: Vec<(String, &ManifestErrors)> = report
                .invalid()
                .map(|(p, e)| (p.display().to_string(), e))
                .collect();
            let skipped: Vec<String> = report
                .skipped
                .iter()
                .map(|s| format!("{} ({:?})", s.path.display(), s.reason))
                .collect();
            let agent = if dry_run {
                None
            } else {
                let client = connect(settings).await?;
                Some(acting.agent(&client)?)
            };
            let outcomes = publish_all(agent.as_ref(), batch).await;
            let refused = outcomes.iter().filter(|o| o.result.is_err()).count();
            let mut text = outcomes_text(&outcomes);
            for (path, errors) in &invalid {
                text.push(format!("invalid  {path}:\n{errors}"));
            }
            for s in &skipped {
                text.push(format!("skipped  {s}"));
            }
            if report.truncated {
                text.push("the scan stopped at its limit of visited entries".into());
            }
            text.push(format!(
                "{} manifest(s) found, {} invalid, {} skipped{}",
                outcomes.len(),
                invalid.len(),
                skipped.len(),
                if dry_run { " (dry run)" } else { "" }
            ));
            print(
                json_out,
                json!({
                    "root": root.display().to_string(),
                    "manifests": outcomes_json(&outcomes),
                    "invalid": invalid.iter().map(|(p, e)| json!({"path": p, "errors": errors_json(e)})).collect::<Vec<_>>(),
                    "skipped": skipped,
                    "truncated": report.truncated,
                    "dry_run": dry_run,
                }),
                text.join("\n"),
            );
            let failed = !invalid.is_empty() || (!dry_run && refused > 0);
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        CatalogCommand::Sync {
            acting,
            index,
            dry_run,
            json: json_out,
        } => {
            let report = amai_manifest::read_index(&index)
                .with_context(|| format!("cannot read the index {}", index.display()))?;
            let mut batch = Vec::new();
            let mut invalid = Vec::new();
            for entry in &report.entries {
                let origin = format!("{}#{}", index.display(), entry.path);
                match &entry.result {
                    Ok(parsed) => batch.push((
                        origin.clone(),
                        Publication::of(&parsed.manifest, CatalogSource::Sync).origin(origin),
                    )),
                    Err(errors) => invalid.push((origin, errors.clone())),
                }
            }
            let agent = if dry_run {
                None
            } else {
                let client = connect(settings).await?;
                Some(acting.agent(&client)?)
            };
            let outcomes = publish_all(agent.as_ref(), batch).await;
            let refused = outcomes.iter().filter(|o| o.result.is_err()).count();
            let mut text = outcomes_text(&outcomes);
            for (origin, errors) in &invalid {
                text.push(format!("invalid  {origin}:\n{errors}"));
            }
            for d in &report.duplicate_ids {
                text.push(format!("duplicate id {d:?}"));
            }
            print(
                json_out,
                json!({
                    "index": index.display().to_string(),
                    "manifests": outcomes_json(&outcomes),
                    "invalid": invalid.iter().map(|(o, e)| json!({"origin": o, "errors": errors_json(e)})).collect::<Vec<_>>(),
                    "duplicate_ids": report.duplicate_ids.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>(),
                    "dry_run": dry_run,
                }),
                text.join("\n"),
            );
            let failed = !invalid.is_empty() || (!dry_run && refused > 0);
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        CatalogCommand::ImportCard {
            acting,
            card,
            image,
            entrypoint,
            dry_run,
            json: json_out,
        } => {
            let bytes = read(&card)?;
            let imported = amai_manifest::card_to_manifest(&bytes)
                .with_context(|| format!("{} is not a usable Agent Card", card.display()))?;
            let verdict = verdict_name(&imported.verdict);
            let mut draft = imported.manifest_draft.clone();
            if let Some(image) = &image {
                draft["source"] = json!({"image": image});
            }
            if !entrypoint.is_empty() {
                draft["entrypoint"] = json!(entrypoint);
            }
            let missing: Vec<&String> = imported
                .missing
                .iter()
                .filter(|m| draft.get(m.as_str()).is_none())
                .collect();
            let parsed = if missing.is_empty() {
                Some(Manifest::from_value(&draft))
            } else {
                None
            };
            let manifest = match parsed {
                Some(Ok(p)) => p.manifest,
                other => {
                    let why = match other {
                        Some(Err(errors)) => format!("the mapped manifest is invalid:\n{errors}"),
                        _ => format!(
                            "the card does not say {}: pass {}",
                            missing
                                .iter()
                                .map(|m| m.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                            "--image IMAGE and, after `--`, the program and its arguments"
                        ),
                    };
                    print(
                        json_out,
                        json!({"card": card.display().to_string(), "verdict": verdict,
                            "manifest_draft": draft, "notes": imported.notes, "refused": why}),
                        format!("card signature: {verdict}\n{why}"),
                    );
                    return Ok(ExitCode::from(1));
                }
            };
            let publication = Publication::of(&manifest, CatalogSource::Card)
                .origin(card.display().to_string())
                .card_verdict(verdict.clone());
            if dry_run {
                print(
                    json_out,
                    json!({"card": card.display().to_string(), "verdict": verdict,
                        "manifest": manifest.to_json_value(), "notes": imported.notes, "dry_run": true}),
                    format!(
                        "card signature: {verdict}\n{}",
                        serde_json::to_string_pretty(&manifest.to_json_value())?
                    ),
                );
                return Ok(ExitCode::SUCCESS);
            }
            let client = connect(settings).await?;
            let agent = acting.agent(&client)?;
            let entry = agent.publish_manifest(&publication).await.map_err(hint)?;
            print(
                json_out,
                json!({"verdict": verdict, "notes": imported.notes, "published": entry_json(&entry)}),
                entry_text(&entry),
            );
            Ok(ExitCode::SUCCESS)
        }
        CatalogCommand::Search {
            text,
            capability,
            keyword,
            publisher,
            limit,
            after,
            json: json_out,
        } => {
            let client = connect(settings).await?;
            let page = client
                .catalog_search(proto::SearchCatalogRequest {
                    text: text.join(" "),
                    capability: capability.unwrap_or_default(),
                    keyword: keyword.unwrap_or_default(),
                    publisher: publisher.unwrap_or_default(),
                    limit,
                    after,
                    min_position: None,
                })
                .await
                .map_err(hint)?;
            let mut lines: Vec<String> = page.entries.iter().map(entry_line).collect();
            if lines.is_empty() {
                lines.push("no catalogue entry matches".into());
            }
            if !page.next_after.is_empty() {
                lines.push(format!("more: --after {}", page.next_after));
            }
            print(
                json_out,
                json!({"entries": page.entries.iter().map(entry_json).collect::<Vec<_>>(),
                    "next_after": page.next_after}),
                lines.join("\n"),
            );
            Ok(ExitCode::SUCCESS)
        }
        CatalogCommand::Show {
            manifest_id,
            json: json_out,
        } => {
            let (manifest_id, version) = manifest_id
                .split_once('@')
                .unwrap_or((manifest_id.as_str(), ""));
            let client = connect(settings).await?;
            let entry = client
                .catalog_entry(manifest_id, version)
                .await
                .map_err(hint)?;
            print(json_out, entry_json(&entry), entry_text(&entry));
            Ok(ExitCode::SUCCESS)
        }
    }
}
