//! `amai audit verify-inclusion|verify-consistency`: the real binary on the
//! RFC 6962 reference vectors of transparency-dev/merkle
//! (`testonly/constants.go`, `proof/verify_test.go`), valid and corrupted,
//! with plain RFC 9162 inputs and nothing running.

use crate::util::*;

/// `testonly.RootHashes()` for tree sizes 6 and 8.
const ROOT6: &str = "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef";
const ROOT8: &str = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328";
/// The leaf hash of leaf index 5 (`testonly.NodeHashes()[0][5]`).
const LEAF5: &str = "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658";
/// `inclusionProofs`: leaf 6 (1-based) of 8.
const INCLUSION_5_OF_8: [&str; 3] = [
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
];
/// `consistencyProofs`: 6 to 8.
const CONSISTENCY_6_TO_8: [&str; 3] = [
    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
];

async fn audit(args: &[&str]) -> CliOutput {
    let mut a = vec!["audit".to_string()];
    a.extend(args.iter().map(|s| s.to_string()));
    run_cli(&a).await
}

fn inclusion(index: &str, size: &str, root: &str, leaf: &str, proof: &[&str]) -> Vec<String> {
    let mut a = vec![
        "verify-inclusion",
        "--leaf-index",
        index,
        "--tree-size",
        size,
        "--root",
        root,
        "--leaf-hash",
        leaf,
        "--json",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    for p in proof {
        a.push("--proof".into());
        a.push(p.to_string());
    }
    a
}

async fn run(args: Vec<String>) -> CliOutput {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    audit(&refs).await
}

/// Exit code and parsed JSON verdict.
fn verdict(out: &CliOutput) -> (Option<i32>, serde_json::Value) {
    let v = serde_json::from_str(out.stdout.trim()).unwrap_or(serde_json::Value::Null);
    (out.status.code(), v)
}

#[tokio::test]
async fn inclusion_proofs_of_the_reference_vectors_verify_and_corruptions_do_not() {
    let ok = run(inclusion("5", "8", ROOT8, LEAF5, &INCLUSION_5_OF_8)).await;
    let (code, v) = verdict(&ok);
    assert_eq!(code, Some(0), "{}", ok.stderr);
    assert_eq!(v["valid"], true);
    // A C2SP checkpoint prints its root in base64: accepted as such.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(ROOT8).expect("hex"));
    let (code, _) = verdict(&run(inclusion("5", "8", &b64, LEAF5, &INCLUSION_5_OF_8)).await);
    assert_eq!(code, Some(0));

    for (args, kind) in [
        // Another root.
        (
            inclusion("5", "8", ROOT6, LEAF5, &INCLUSION_5_OF_8),
            "RootMismatch",
        ),
        // Another leaf.
        (
            inclusion("5", "8", ROOT8, INCLUSION_5_OF_8[0], &INCLUSION_5_OF_8),
            "RootMismatch",
        ),
        // Another index.
        (
            inclusion("4", "8", ROOT8, LEAF5, &INCLUSION_5_OF_8),
            "RootMismatch",
        ),
        // A truncated and an extended proof.
        (
            inclusion("5", "8", ROOT8, LEAF5, &INCLUSION_5_OF_8[..2]),
            "WrongProofLength",
        ),
        (
            inclusion(
                "5",
                "8",
                ROOT8,
                LEAF5,
                &[
                    INCLUSION_5_OF_8[0],
                    INCLUSION_5_OF_8[1],
                    INCLUSION_5_OF_8[2],
                    LEAF5,
                ],
            ),
            "WrongProofLength",
        ),
        // The index beyond the tree.
        (
            inclusion("8", "8", ROOT8, LEAF5, &INCLUSION_5_OF_8),
            "IndexBeyondSize",
        ),
    ] {
        let out = run(args.clone()).await;
        let (code, v) = verdict(&out);
        assert_eq!(code, Some(1), "{args:?}: {}", out.stdout);
        assert_eq!(v["valid"], false, "{args:?}");
        assert_eq!(v["kind"], kind, "{args:?}: {v}");
    }
    // Unusable input: exit 2, saying what is wrong.
    let out = run(inclusion("5", "8", &ROOT8[..62], LEAF5, &INCLUSION_5_OF_8)).await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("root"), "{}", out.stderr);
}

#[tokio::test]
async fn consistency_proofs_of_the_reference_vectors_verify_and_corruptions_do_not() {
    let consistency = |old: &str, new: &str, old_root: &str, new_root: &str, proof: &[&str]| {
        let mut a: Vec<String> = [
            "verify-consistency",
            "--old-size",
            old,
            "--new-size",
            new,
            "--old-root",
            old_root,
            "--new-root",
            new_root,
            "--json",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        // Comma-separated, the other way to pass a proof.
        a.push("--proof".into());
        a.push(proof.join(","));
        a
    };
    let (code, v) = verdict(&run(consistency("6", "8", ROOT6, ROOT8, &CONSISTENCY_6_TO_8)).await);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["valid"], true);
    for (args, kind) in [
        (
            consistency("6", "8", ROOT8, ROOT8, &CONSISTENCY_6_TO_8),
            "OldRootMismatch",
        ),
        (
            consistency("6", "8", ROOT6, ROOT6, &CONSISTENCY_6_TO_8),
            "NewRootMismatch",
        ),
        (
            consistency("6", "8", ROOT6, ROOT8, &CONSISTENCY_6_TO_8[1..]),
            "WrongProofLength",
        ),
        (
            consistency("8", "6", ROOT8, ROOT6, &CONSISTENCY_6_TO_8),
            "OldSizeBeyondNew",
        ),
        (
            consistency("0", "8", ROOT6, ROOT8, &CONSISTENCY_6_TO_8),
            "OldSizeZero",
        ),
    ] {
        let out = run(args.clone()).await;
        let (code, v) = verdict(&out);
        assert_eq!(code, Some(1), "{args:?}: {}", out.stdout);
        assert_eq!(v["kind"], kind, "{args:?}: {v}");
    }
}
