//! `amai audit status|checkpoint|proof`: the audit service's view through the
//! gateway. Checkpoint notes are verified here against the log key (the one
//! given with `--log-vkey`, else the one the deployment reports, which the
//! output says), and proofs are checked before they are printed.

use std::process::ExitCode;

use amai_checkpoint::VerifierKey;
use amai_client::checkpoints::log_vkey;
use amai_client::ClientError;
use amai_merkle::{verify_consistency, verify_inclusion};
use anyhow::Context;
use serde_json::json;

use crate::client_cmd::{connect, print, Reading};
use crate::config::Settings;

fn hint(e: ClientError) -> anyhow::Error {
    let text = e.to_string();
    anyhow::anyhow!(match e.kind() {
        amai_client::ErrorKind::WorkerUnavailable => format!(
            "{text}\nhint: no audit worker answered; run `amai up` (or `amai worker --role audit`)"
        ),
        amai_client::ErrorKind::NoCheckpoint => format!(
            "{text}\nhint: checkpoints are made every AMAI_AUDIT_CHECKPOINT_EVERY events or AMAI_AUDIT_CHECKPOINT_INTERVAL; an operator can ask for one now: `amai audit checkpoint --request --keys <operator key>`"
        ),
        _ => text,
    })
}

fn hashes(h: &[Vec<u8>]) -> Vec<String> {
    h.iter().map(hex::encode).collect()
}

fn to_hash(h: &[u8]) -> anyhow::Result<[u8; 32]> {
    <[u8; 32]>::try_from(h)
        .map_err(|_| anyhow::anyhow!("the gateway answered a hash of {} bytes", h.len()))
}

/// `amai audit status`.
pub(super) async fn status(settings: &Settings, json_out: bool) -> anyhow::Result<ExitCode> {
    let client = connect(settings).await?;
    let s = client.audit_status().await.map_err(hint)?;
    let rows: Vec<_> = s
        .streams
        .iter()
        .map(|st| {
            json!({
                "stream": st.stream, "origin": st.origin, "tree_size": st.tree_size,
                "checkpoint_size": st.checkpoint_size, "gaps": st.gaps, "diverged": st.diverged,
            })
        })
        .collect();
    let mut text = format!("audit log key: {}\n", hex::encode(&s.log_key));
    for st in &s.streams {
        text.push_str(&format!(
            "{:<18} tree {:>8}  checkpoint {:>8}{}{}\n",
            st.stream,
            st.tree_size,
            st.checkpoint_size,
            if st.gaps > 0 {
                format!("  GAPS {}", st.gaps)
            } else {
                String::new()
            },
            if st.diverged {
                "  DIVERGED (the stream was rewritten)"
            } else {
                ""
            },
        ));
    }
    print(
        json_out,
        json!({ "log_key": hex::encode(&s.log_key), "streams": rows }),
        text.trim_end().to_string(),
    );
    Ok(ExitCode::SUCCESS)
}

/// The log key: `--log-vkey` from the environment, else the deployment's.
async fn trusted_vkey(
    client: &amai_client::AmaiClient,
    stream: &str,
) -> anyhow::Result<(VerifierKey, &'static str)> {
    if let Ok(v) = std::env::var("AMAI_AUDIT_LOG_VKEY") {
        let key: VerifierKey = v
            .parse()
            .map_err(|e| anyhow::anyhow!("AMAI_AUDIT_LOG_VKEY is not a C2SP verifier key: {e}"))?;
        return Ok((key, "pinned by AMAI_AUDIT_LOG_VKEY"));
    }
    let status = client.audit_status().await.map_err(hint)?;
    Ok((
        log_vkey(&status, stream).map_err(hint)?,
        "as reported by this deployment; pin it with AMAI_AUDIT_LOG_VKEY",
    ))
}

/// The witnesses a checkpoint must carry.
pub(super) struct Witnesses {
    /// Trusted witness verifier keys (text).
    pub(super) vkeys: Vec<String>,
    /// How many distinct ones must have cosigned.
    pub(super) required: usize,
}

/// `amai audit checkpoint`.
pub(super) async fn checkpoint(
    settings: &Settings,
    stream: &str,
    size: u64,
    request: bool,
    witnesses: &Witnesses,
    reading: &Reading,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let trusted: Vec<VerifierKey> = witnesses
        .vkeys
        .iter()
        .map(|v| {
            v.parse().map_err(|e| {
                anyhow::anyhow!("--witness-vkey {v:?} is not a C2SP verifier key: {e}")
            })
        })
        .collect::<anyhow::Result<_>>()?;
    if witnesses.required > trusted.len() {
        anyhow::bail!(
            "--require-witnesses {} needs at least that many --witness-vkey flags ({} given)",
            witnesses.required,
            trusted.len()
        );
    }
    let client = connect(settings).await?;
    if request {
        let client = reading.sign(client.clone(), settings)?;
        client.request_checkpoint(stream).await.map_err(hint)?;
    }
    let (vkey, source) = trusted_vkey(&client, stream).await?;
    let size = if request { 0 } else { size };
    let c = client
        .verified_checkpoint(stream, size, &vkey)
        .await
        .map_err(hint)?;
    let body = c.note.checkpoint();
    let cosigned = c.note.cosignatures(&trusted);
    let witnessed = c.note.require_witnesses(&trusted, witnesses.required);
    let names: Vec<&str> = cosigned.iter().map(|w| w.name.as_str()).collect();
    print(
        json_out,
        json!({
            "stream": stream, "origin": body.origin, "tree_size": body.size,
            "root": hex::encode(body.root), "note": c.note.text(),
            "log_vkey": vkey.to_string(), "verified": true,
            "witnesses": names, "witnesses_required": witnesses.required,
            "witnessed": witnessed.is_ok(),
        }),
        format!(
            "{}\nverified against {vkey} ({source})\ncosigned by {} trusted witness(es){}{}",
            c.note.text().trim_end(),
            names.len(),
            if names.is_empty() {
                String::new()
            } else {
                format!(": {}", names.join(", "))
            },
            match &witnessed {
                Err(e) => format!("\nNOT WITNESSED as required: {e}"),
                Ok(_) => String::new(),
            }
        ),
    );
    Ok(if witnessed.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `amai audit proof`.
pub(super) async fn proof(
    settings: &Settings,
    stream: &str,
    seq: Option<u64>,
    old_size: Option<u64>,
    size: u64,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let client = connect(settings).await?;
    match (seq, old_size) {
        (Some(seq), _) => {
            let index = seq
                .checked_sub(1)
                .context("--seq is a stream sequence (1-based)")?;
            let p = client
                .inclusion_proof(stream, index, size)
                .await
                .map_err(hint)?;
            let proof: Vec<[u8; 32]> = p
                .proof
                .iter()
                .map(|h| to_hash(h))
                .collect::<Result<_, _>>()?;
            let verified = verify_inclusion(
                &to_hash(&p.leaf_hash)?,
                p.leaf_index,
                p.tree_size,
                &proof,
                &to_hash(&p.root_hash)?,
            )
            .is_ok();
            print(
                json_out,
                json!({
                    "stream": stream, "leaf_index": p.leaf_index, "tree_size": p.tree_size,
                    "leaf_hash": hex::encode(&p.leaf_hash), "root": hex::encode(&p.root_hash),
                    "proof": hashes(&p.proof), "verified": verified,
                }),
                format!(
                    "amai audit verify-inclusion --leaf-index {} --tree-size {} --root {} --leaf-hash {}{}\n(proof {})",
                    p.leaf_index,
                    p.tree_size,
                    hex::encode(&p.root_hash),
                    hex::encode(&p.leaf_hash),
                    hashes(&p.proof).iter().map(|h| format!(" --proof {h}")).collect::<String>(),
                    if verified { "verifies" } else { "DOES NOT VERIFY" }
                ),
            );
            Ok(if verified {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        (None, Some(old)) => {
            let p = client
                .consistency_proof(stream, old, size)
                .await
                .map_err(hint)?;
            let proof: Vec<[u8; 32]> = p
                .proof
                .iter()
                .map(|h| to_hash(h))
                .collect::<Result<_, _>>()?;
            let verified = verify_consistency(
                p.old_size,
                p.new_size,
                &to_hash(&p.old_root)?,
                &to_hash(&p.new_root)?,
                &proof,
            )
            .is_ok();
            print(
                json_out,
                json!({
                    "stream": stream, "old_size": p.old_size, "new_size": p.new_size,
                    "old_root": hex::encode(&p.old_root), "new_root": hex::encode(&p.new_root),
                    "proof": hashes(&p.proof), "verified": verified,
                }),
                format!(
                    "amai audit verify-consistency --old-size {} --new-size {} --old-root {} --new-root {}{}\n(proof {})",
                    p.old_size,
                    p.new_size,
                    hex::encode(&p.old_root),
                    hex::encode(&p.new_root),
                    hashes(&p.proof).iter().map(|h| format!(" --proof {h}")).collect::<String>(),
                    if verified { "verifies" } else { "DOES NOT VERIFY" }
                ),
            );
            Ok(if verified {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        (None, None) => {
            anyhow::bail!("say which proof: --seq N (inclusion) or --old-size N (consistency)")
        }
    }
}
