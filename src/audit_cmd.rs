//! `amai audit verify-inclusion|verify-consistency`: offline checks of RFC
//! 9162 (RFC 6962) Merkle proofs from plain inputs (leaf index, tree sizes,
//! roots, leaf hash, proof hashes), so they work on any RFC 9162 log's proofs,
//! not only Amai's. Hashes are given in hex or in base64 (as C2SP checkpoints
//! print roots). Nothing is contacted: no gateway, no NATS.
//!
//! Exit codes: 0 the proof verifies; 1 it does not (the reason's kind is
//! printed, and in `--json` output); 2 the inputs are unusable (a hash that is
//! not 32 bytes, a missing flag).

mod online;
mod verify;
mod witness;

use std::process::ExitCode;

use crate::config::Settings;

use amai_merkle::{verify_consistency, verify_inclusion, Hash};
use anyhow::{bail, Context};
use base64::Engine as _;
use serde_json::json;

/// `amai audit ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCommand {
    /// Verify that a leaf is in a tree: RFC 9162 §2.1.3.2.
    VerifyInclusion {
        /// 0-based index of the leaf.
        #[arg(long)]
        leaf_index: u64,
        /// Size of the tree the proof is for.
        #[arg(long)]
        tree_size: u64,
        /// The tree's root hash (hex or base64).
        #[arg(long)]
        root: String,
        /// The leaf hash, SHA-256(0x00 || leaf) (hex or base64).
        #[arg(long)]
        leaf_hash: String,
        /// The proof's hashes in order (hex or base64); repeat the flag, or
        /// separate them with commas. None for a tree of one leaf.
        #[arg(long = "proof", value_delimiter = ',')]
        proof: Vec<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Verify that a tree of `new-size` leaves extends one of `old-size`
    /// leaves: RFC 9162 §2.1.4.2.
    VerifyConsistency {
        /// Size of the older tree.
        #[arg(long)]
        old_size: u64,
        /// Size of the newer tree.
        #[arg(long)]
        new_size: u64,
        /// The older tree's root (hex or base64).
        #[arg(long)]
        old_root: String,
        /// The newer tree's root (hex or base64).
        #[arg(long)]
        new_root: String,
        /// The proof's hashes in order (hex or base64); repeat the flag, or
        /// separate them with commas.
        #[arg(long = "proof", value_delimiter = ',')]
        proof: Vec<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Every audited stream: tree size, latest checkpoint, gaps, and the
    /// audit service's log key (through the gateway).
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// A stream's latest checkpoint (or the one of `--size`), its note
    /// verified against the deployment's log key; `--request` makes the audit
    /// service checkpoint now (an operator's signed request: `--keys`).
    Checkpoint {
        /// The stream (e.g. AMAI_AGENTS).
        #[arg(long, default_value = "AMAI_AGENTS")]
        stream: String,
        /// The checkpoint of exactly this tree size (default: the latest).
        #[arg(long, default_value_t = 0)]
        size: u64,
        /// Checkpoint now (operators).
        #[arg(long)]
        request: bool,
        /// A witness's C2SP verifier key to trust (repeat the flag).
        #[arg(long = "witness-vkey")]
        witness_vkeys: Vec<String>,
        /// Require cosignatures of this many distinct trusted witnesses
        /// (exit 1 otherwise).
        #[arg(long, default_value_t = 0)]
        require_witnesses: usize,
        #[command(flatten)]
        reading: crate::client_cmd::Reading,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Verify a deployment's whole history: every signature, chain link,
    /// key, causation, checkpoint and witness; offline from an export file
    /// (`--file`) or online through the gateway. Exit 0 authoritative, 1
    /// invalid, 3 partial, 2 unusable input.
    Verify(verify::VerifyArgs),
    /// Follow a stream's checkpoints, cosign the consistent ones, raise a
    /// split view (exit 3).
    Witness(witness::WitnessArgs),
    /// An RFC 9162 proof from the audit service, printed as the inputs of
    /// `verify-inclusion` / `verify-consistency` (and checked here too).
    Proof {
        /// The stream.
        #[arg(long, default_value = "AMAI_AGENTS")]
        stream: String,
        /// Inclusion of the event at this stream sequence (leaf seq - 1).
        #[arg(long, conflicts_with = "old_size")]
        seq: Option<u64>,
        /// Consistency from this older tree size.
        #[arg(long)]
        old_size: Option<u64>,
        /// The tree size (default: the latest checkpoint's).
        #[arg(long, default_value_t = 0)]
        size: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Exit code of a proof that does not verify.
const EXIT_INVALID: u8 = 1;
/// Exit code of unusable inputs.
const EXIT_USAGE: u8 = 2;

/// A 32-byte hash in hex (64 digits) or base64 (standard or url-safe, padded
/// or not).
fn parse_hash(what: &str, s: &str) -> anyhow::Result<Hash> {
    let s = s.trim();
    let bytes = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(s).with_context(|| format!("{what}: not hex"))?
    } else {
        let engines = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        match engines.iter().find_map(|e| e.decode(s).ok()) {
            Some(b) => b,
            None => bail!("{what} {s:?} is neither 64 hex digits nor base64"),
        }
    };
    match <[u8; 32]>::try_from(bytes.as_slice()) {
        Ok(h) => Ok(h),
        Err(_) => bail!(
            "{what} is {} bytes; a SHA-256 hash is 32 bytes",
            bytes.len()
        ),
    }
}

fn parse_proof(proof: &[String]) -> anyhow::Result<Vec<Hash>> {
    proof
        .iter()
        .filter(|p| !p.trim().is_empty())
        .enumerate()
        .map(|(i, p)| parse_hash(&format!("proof hash {i}"), p))
        .collect()
}

/// Prints the verdict and returns the exit code.
fn verdict(json_out: bool, what: &str, result: Result<(), (String, String)>) -> ExitCode {
    match result {
        Ok(()) => {
            if json_out {
                println!("{}", json!({ "check": what, "valid": true }));
            } else {
                println!("{what}: valid");
            }
            ExitCode::SUCCESS
        }
        Err((kind, reason)) => {
            if json_out {
                println!(
                    "{}",
                    json!({ "check": what, "valid": false, "kind": kind, "reason": reason })
                );
            } else {
                println!("{what}: INVALID ({kind}): {reason}");
            }
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// Runs `amai audit ...`.
pub(crate) async fn audit(settings: &Settings, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Status { json } => online::status(settings, json).await,
        AuditCommand::Witness(args) => witness::witness(settings, args).await,
        AuditCommand::Verify(args) => match verify::verify(settings, args).await {
            Ok(code) => Ok(code),
            Err(e) => {
                eprintln!("amai audit verify: {e:#}");
                Ok(ExitCode::from(EXIT_USAGE))
            }
        },
        AuditCommand::Checkpoint {
            stream,
            size,
            request,
            witness_vkeys,
            require_witnesses,
            reading,
            json,
        } => {
            let witnesses = online::Witnesses {
                vkeys: witness_vkeys,
                required: require_witnesses,
            };
            online::checkpoint(settings, &stream, size, request, &witnesses, &reading, json).await
        }
        AuditCommand::Proof {
            stream,
            seq,
            old_size,
            size,
            json,
        } => online::proof(settings, &stream, seq, old_size, size, json).await,
        AuditCommand::VerifyInclusion {
            leaf_index,
            tree_size,
            root,
            leaf_hash,
            proof,
            json,
        } => offline(|| {
            let root = parse_hash("root", &root)?;
            let leaf = parse_hash("leaf hash", &leaf_hash)?;
            let proof = parse_proof(&proof)?;
            let r = verify_inclusion(&leaf, leaf_index, tree_size, &proof, &root)
                .map_err(|e| (format!("{:?}", e.kind()), e.to_string()));
            Ok(verdict(json, "inclusion", r))
        }),
        AuditCommand::VerifyConsistency {
            old_size,
            new_size,
            old_root,
            new_root,
            proof,
            json,
        } => offline(|| {
            let old_root = parse_hash("old root", &old_root)?;
            let new_root = parse_hash("new root", &new_root)?;
            let proof = parse_proof(&proof)?;
            let r = verify_consistency(old_size, new_size, &old_root, &new_root, &proof)
                .map_err(|e| (format!("{:?}", e.kind()), e.to_string()));
            Ok(verdict(json, "consistency", r))
        }),
    }
}

/// Runs an offline check: unusable inputs exit with [`EXIT_USAGE`].
fn offline(run: impl FnOnce() -> anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    match run() {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("amai audit: {e:#}");
            Ok(ExitCode::from(EXIT_USAGE))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_parse_from_hex_and_every_base64_and_nothing_else() {
        let h = [0xabu8; 32];
        let hex = hex::encode(h);
        assert_eq!(parse_hash("x", &hex).expect("hex"), h);
        assert_eq!(parse_hash("x", &hex.to_uppercase()).expect("HEX"), h);
        for engine in [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            assert_eq!(parse_hash("x", &engine.encode(h)).expect("b64"), h);
        }
        assert!(parse_hash("x", &hex[..62]).is_err());
        assert!(parse_hash("x", "not a hash!").is_err());
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 31]);
        let err = parse_hash("root", &short).expect_err("31 bytes");
        assert!(err.to_string().contains("31 bytes"), "{err}");
    }
}
