//! Known-answer vectors from the specs and reference implementations, copied
//! here as data. Each constant names its source.

use amai_checkpoint::{
    CosignatureLine, CosignatureLineErrorKind, LogKey, OpenErrorKind, SignatureType,
    SignedCheckpoint, VerifierKey, VerifierKeyErrorKind, WitnessErrorKind,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};

// --- golang.org/x/mod/sumdb/note: note.go package doc and note_test.go ---

/// `TestNewVerifier`, `TestOpen`.
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
/// `TestNewSigner`, `TestSign`: `PRIVATE+KEY+PeterNeumann+c74f20a3+<base64(0x01 || seed)>`.
const PETER_SKEY_DATA: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
/// `TestVerifierList`, `TestOpen`.
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
/// `TestOpen`: the text both sign.
const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                       then you don't know what your problem is.\n";
/// `TestOpen`: PeterNeumann's signature line.
const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
/// `TestOpen`: EnochRoot's signature line.
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

// --- c2sp.org/signed-note, "Verifier keys" example (C2SP/C2SP signed-note.md
// at d4c16da5e7687a016619074e78dad84b2c7238cc) ---

const SPEC_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
const SPEC_NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

// --- golang/go src/cmd/go/internal/modfetch/key.go: the pinned sum.golang.org
// key, whose base64 holds '+' ---

const SUMDB_VKEY: &str = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";

// --- transparency-dev/formats note/note_cosigv1_test.go ---

/// `TestCoSigV1NewVerifier` "works: convert from algEd25519" (a type 0x01 key).
const FORMATS_TEST_VKEY: &str = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6";
/// `TestCoSigV1NewVerifier` "works: native algEd25519CosignatureV1 verifier"
/// (the public witness remora.n621.de).
const REMORA_VKEY: &str = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2";
/// `TestCoSigV1Timestamp` "works": a cosignature whose time is 1727964367.
const FORMATS_COSIG: &str = "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==";
/// `TestCoSigV1Timestamp` "wrong type of signature": a plain Ed25519 one.
const FORMATS_PLAIN_SIG: &str =
    "eQjRQm6eSKzFoiYalgwCPXu2y3ijtg68is9M46JKxuZB+dRfTmeQeDBoXnvxZx2ugnkyV+MUMLXpWs1hPb/W/4xkNQY=";

// --- c2sp.org/tlog-cosignature, the example cosigned checkpoint (no keys are
// published for it; its message example says `time 1679315147`) ---

const SPEC_WITNESS_LINE: &str = "\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==";

// --- A real checkpoint of the transparency.dev staging CT log
// arche2025h1.staging.ct.transparency.dev (its Ed25519 key and a static-ct
// RFC 6962 signature, type 0x05), cosigned by four public test witnesses, as
// quoted in the tests of the Python `tlog_scales` package
// (TestCheckpointSigning). Log key from the same tests; witness keys from the
// transparency.dev witness list and sigsum's test policy (hex keys, checked
// below against the vkey texts). ---

const ARCHE_VKEY: &str =
    "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f";
const ARCHE_NOTE: &str = "arche2025h1.staging.ct.transparency.dev
1432088532
U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=

\u{2014} arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=
\u{2014} arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=
\u{2014} transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==
\u{2014} witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ==
\u{2014} remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==
\u{2014} witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg==
";

/// (vkey text, name, hex public key from sigsum's test policy).
const ARCHE_WITNESSES: [(&str, &str, &str); 4] = [
    (
        "transparency.dev/DEV:witness-little-garden+d8042a87+BCtusOxINQNUTN5Oj8HObRkh2yHf/MwYaGX4CPdiVEPM",
        "transparency.dev/DEV:witness-little-garden",
        "2b6eb0ec483503544cde4e8fc1ce6d1921db21dffccc186865f808f7625443cc",
    ),
    (
        "witness1.smartit.nu/witness1+a48c820f+BPSFWg9G6KPiO7QPryYO5Xq4oYJJ+kAvLKLSimDhoxMO",
        "witness1.smartit.nu/witness1",
        "f4855a0f46e8a3e23bb40faf260ee57ab8a18249fa402f2ca2d28a60e1a3130e",
    ),
    (
        REMORA_VKEY,
        "remora.n621.de",
        "ebcdeb78e7fdb2ef9227b2c1ef11e94600b55b4d6d9a57877e31ee89e59adc36",
    ),
    (
        "witness.stagemole.eu+67f7aea0+BEqSG3yu9YrmcM3BHvQYTxwFj3uSWakQepafafpUqklv",
        "witness.stagemole.eu",
        "4a921b7caef58ae670cdc11ef4184f1c058f7b9259a9107a969f69fa54aa496f",
    ),
];

/// The time all four witnesses state (0x6a122120).
const ARCHE_COSIGNED_AT: u64 = 1_779_573_024;

fn vkey(text: &str) -> VerifierKey {
    text.parse().expect("vector vkey parses")
}

fn peter_log_key() -> LogKey {
    let data = STANDARD.decode(PETER_SKEY_DATA).expect("base64");
    assert_eq!(data[0], 0x01, "Ed25519 signer key");
    let seed: [u8; 32] = data[1..].try_into().expect("32-byte seed");
    LogKey::new("PeterNeumann", SigningKey::from_bytes(&seed)).expect("valid name")
}

#[test]
fn go_signer_key_gives_the_go_verifier_key_and_key_id() {
    let log = peter_log_key();
    assert_eq!(log.key_id(), 0xc74f_20a3);
    assert_eq!(log.verifier().to_string(), PETER_VKEY);
    assert_eq!(log.verifier(), vkey(PETER_VKEY));
}

#[test]
fn go_verifier_keys_parse_with_their_fields() {
    let peter = vkey(PETER_VKEY);
    assert_eq!(peter.name(), "PeterNeumann");
    assert_eq!(peter.key_id(), 0xc74f_20a3);
    assert_eq!(peter.signature_type(), SignatureType::Ed25519);
    assert_eq!(peter.to_string(), PETER_VKEY);

    let enoch = vkey(ENOCH_VKEY);
    assert_eq!(enoch.name(), "EnochRoot");
    assert_eq!(enoch.key_id(), 0xaf0c_fe78);
    assert_eq!(enoch.to_string(), ENOCH_VKEY);
}

/// Go's `TestNewVerifier`: every proper substring and every single-byte
/// increment of the key must be rejected.
#[test]
fn go_verifier_key_manglings_are_all_rejected() {
    let bytes = PETER_VKEY.as_bytes();
    for i in 0..=bytes.len() {
        for j in i + 1..=bytes.len() {
            if i == 0 && j == bytes.len() {
                continue;
            }
            let text = &PETER_VKEY[i..j];
            assert!(text.parse::<VerifierKey>().is_err(), "{text:?} accepted");
        }
    }
    for i in 0..bytes.len() {
        let mut mangled = bytes.to_vec();
        mangled[i] += 1;
        let text = String::from_utf8(mangled).expect("ASCII stays ASCII");
        assert!(text.parse::<VerifierKey>().is_err(), "{text:?} accepted");
    }
}

/// Go's `TestNewVerifier` keys with adjusted hashes: a key of the wrong
/// length and an unknown algorithm.
#[test]
fn go_bad_verifier_keys_are_rejected_for_their_reason() {
    // Go reads this as a 36-byte key; its base64 ends in "EY==", whose unused
    // low bits are not zero, which Go's decoder ignores and this crate's
    // (canonical base64 only) rejects first. The wrong length is tested with
    // canonical base64 in tests/behaviour.rs.
    let wrong_length = "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==";
    let err = wrong_length
        .parse::<VerifierKey>()
        .expect_err("wrong length");
    assert_eq!(err.kind(), VerifierKeyErrorKind::BadBase64);

    let unknown_alg = "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    let err = unknown_alg
        .parse::<VerifierKey>()
        .expect_err("unknown algorithm");
    assert_eq!(err.kind(), VerifierKeyErrorKind::UnknownSignatureType);
}

/// The Go notes verify: `open` gets past the signature check and stops at
/// the checkpoint body, since the text is a quote, not a checkpoint.
#[test]
fn go_notes_verify_and_are_not_checkpoints() {
    let both = format!("{GO_TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    for key in [PETER_VKEY, ENOCH_VKEY] {
        let err = SignedCheckpoint::open(&both, &vkey(key)).expect_err("not a checkpoint");
        assert_eq!(err.kind(), OpenErrorKind::BadCheckpoint, "{key}");
    }
    let peter_only = format!("{GO_TEXT}\n{PETER_SIG}");
    let err = SignedCheckpoint::open(&peter_only, &vkey(ENOCH_VKEY)).expect_err("no Enoch line");
    assert_eq!(err.kind(), OpenErrorKind::NotSignedByLog);
}

/// Go's `TestOpen` "Invalid signature": four base64 characters inserted.
#[test]
fn go_invalid_signature_is_rejected() {
    let bad = format!("{GO_TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    let err = SignedCheckpoint::open(&bad, &vkey(PETER_VKEY)).expect_err("bad signature");
    assert_eq!(err.kind(), OpenErrorKind::BadSignature);
}

/// Go's `TestOpen` "too many signatures": 101 copies of a valid line.
#[test]
fn go_too_many_signatures_are_rejected() {
    let note = format!("{GO_TEXT}\n{}", PETER_SIG.repeat(101));
    let err = SignedCheckpoint::open(&note, &vkey(PETER_VKEY)).expect_err("101 lines");
    assert_eq!(err.kind(), OpenErrorKind::TooManySignatures);
}

/// Go's `TestOpen` "Invalid encoded message syntax".
#[test]
fn go_malformed_notes_are_rejected() {
    let bad = [
        GO_TEXT.to_owned(),
        format!("{GO_TEXT}\n"),
        format!("{GO_TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
        format!("\u{1}{GO_TEXT}\n{PETER_SIG}"),
        format!("{GO_TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"),
        format!("{GO_TEXT}\n{PETER_SIG}Unexpected line.\n"),
    ];
    for note in bad {
        let err = SignedCheckpoint::open(&note, &vkey(PETER_VKEY)).expect_err("malformed");
        assert_eq!(err.kind(), OpenErrorKind::Malformed, "{note:?}");
    }
}

#[test]
fn spec_verifier_key_parses_and_its_note_verifies() {
    let key = vkey(SPEC_VKEY);
    assert_eq!(key.name(), "example.com/foo");
    assert_eq!(key.key_id(), 0x530d_903a);
    assert_eq!(key.signature_type(), SignatureType::Ed25519);
    assert_eq!(
        hex::encode(key.verifying_key().as_bytes()),
        "e932791ae6e7a840a46164c904786426d5e7821dd8b29a00d61cae72afdd4da4"
    );
    assert_eq!(key.to_string(), SPEC_VKEY);

    let err = SignedCheckpoint::open(SPEC_NOTE, &key).expect_err("not a checkpoint");
    assert_eq!(err.kind(), OpenErrorKind::BadCheckpoint);
    let tampered = SPEC_NOTE.replace("example message", "example massage");
    let err = SignedCheckpoint::open(&tampered, &key).expect_err("tampered");
    assert_eq!(err.kind(), OpenErrorKind::BadSignature);
}

#[test]
fn sumdb_key_with_plus_in_its_base64_parses_and_round_trips() {
    let key = vkey(SUMDB_VKEY);
    assert_eq!(key.name(), "sum.golang.org");
    assert_eq!(key.key_id(), 0x033d_e0ae);
    assert_eq!(key.to_string(), SUMDB_VKEY);
}

#[test]
fn transparency_dev_verifier_keys_parse() {
    let test = vkey(FORMATS_TEST_VKEY);
    assert_eq!(test.signature_type(), SignatureType::Ed25519);
    assert_eq!(test.key_id(), 0x7997_405c);
    assert_eq!(test.to_string(), FORMATS_TEST_VKEY);

    let remora = vkey(REMORA_VKEY);
    assert_eq!(remora.signature_type(), SignatureType::CosignatureV1);
    assert_eq!(remora.key_id(), 0xda77_ade7);
    assert_eq!(remora.to_string(), REMORA_VKEY);
    // The same key as a plain Ed25519 key has another key id.
    let plain = VerifierKey::ed25519("remora.n621.de", remora.verifying_key()).expect("name");
    assert_ne!(plain.key_id(), remora.key_id());

    // `TestCoSigV1NewVerifier` failures.
    let cases = [
        (
            "bananas.sigstore.dev+12344556",
            VerifierKeyErrorKind::NotThreeFields,
        ),
        (
            "rekor.sigstore.dev+12345678+THIS_IS_NOT_BASE64!",
            VerifierKeyErrorKind::BadBase64,
        ),
        (
            "rekor.sigstore.dev+12345678+AwEB",
            VerifierKeyErrorKind::UnknownSignatureType,
        ),
    ];
    for (text, kind) in cases {
        let err = text.parse::<VerifierKey>().expect_err(text);
        assert_eq!(err.kind(), kind, "{text}");
    }
}

#[test]
fn transparency_dev_cosignature_time_is_read() {
    let line: CosignatureLine = format!("\u{2014} w {FORMATS_COSIG}").parse().expect("line");
    assert_eq!(line.time(), 1_727_964_367);
    assert_eq!(line.key_id(), 0x6468_46b9);

    let err = format!("\u{2014} w {FORMATS_PLAIN_SIG}")
        .parse::<CosignatureLine>()
        .expect_err("plain Ed25519 signature");
    assert_eq!(err.kind(), CosignatureLineErrorKind::WrongLength);
}

#[test]
fn spec_cosignature_line_frames_key_id_time_and_signature() {
    let line: CosignatureLine = SPEC_WITNESS_LINE.parse().expect("line");
    assert_eq!(line.name(), "witness.example.com/w1");
    assert_eq!(line.key_id(), 0x8d66_cf3f);
    assert_eq!(line.time(), 1_679_315_147);
    assert_eq!(line.to_string(), SPEC_WITNESS_LINE);
}

fn arche_witnesses() -> Vec<VerifierKey> {
    ARCHE_WITNESSES
        .iter()
        .map(|(text, _, _)| vkey(text))
        .collect()
}

#[test]
fn witness_vkeys_match_their_hex_public_keys() {
    for (text, name, key_hex) in ARCHE_WITNESSES {
        let bytes: [u8; 32] = hex::decode(key_hex)
            .expect("hex")
            .try_into()
            .expect("32 bytes");
        let key = VerifyingKey::from_bytes(&bytes).expect("Ed25519 key");
        let built = VerifierKey::cosignature(name, &key).expect("name");
        assert_eq!(built.to_string(), text);
        assert_eq!(built, vkey(text));
    }
}

#[test]
fn real_checkpoint_opens_with_its_log_key() {
    let opened = SignedCheckpoint::open(ARCHE_NOTE, &vkey(ARCHE_VKEY)).expect("opens");
    let checkpoint = opened.checkpoint();
    assert_eq!(checkpoint.origin, "arche2025h1.staging.ct.transparency.dev");
    assert_eq!(checkpoint.size, 1_432_088_532);
    assert_eq!(
        STANDARD.encode(checkpoint.root),
        "U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro="
    );
    assert!(checkpoint.extensions.is_empty());
    assert_eq!(opened.text(), ARCHE_NOTE);

    let signature = ed25519_dalek::Signature::from_bytes(&opened.log_signature());
    vkey(ARCHE_VKEY)
        .verifying_key()
        .verify_strict(checkpoint.body().as_bytes(), &signature)
        .expect("log_signature is the log's signature over the body");
}

#[test]
fn real_checkpoint_has_four_valid_witness_cosignatures() {
    let opened = SignedCheckpoint::open(ARCHE_NOTE, &vkey(ARCHE_VKEY)).expect("opens");
    let witnesses = arche_witnesses();
    let verified = opened.require_witnesses(&witnesses, 4).expect("4 of 4");
    let names: Vec<&str> = verified.iter().map(|v| v.name.as_str()).collect();
    let expected: Vec<&str> = ARCHE_WITNESSES.iter().map(|(_, name, _)| *name).collect();
    assert_eq!(names, expected);
    assert!(verified.iter().all(|v| v.time == ARCHE_COSIGNED_AT));
    assert_eq!(opened.cosignatures(&witnesses), verified);
}

#[test]
fn real_checkpoint_with_another_size_fails_the_log_signature() {
    let clobbered = ARCHE_NOTE.replace("\n1432088532\n", "\n42\n");
    let err = SignedCheckpoint::open(&clobbered, &vkey(ARCHE_VKEY)).expect_err("size changed");
    assert_eq!(err.kind(), OpenErrorKind::BadSignature);
}

#[test]
fn real_cosignature_replayed_with_another_time_fails() {
    let remora_line = ARCHE_NOTE
        .lines()
        .find(|l| l.contains(" remora.n621.de "))
        .expect("remora line");
    let line: CosignatureLine = remora_line.parse().expect("line");
    let mut bytes = STANDARD
        .decode(remora_line.rsplit(' ').next().expect("base64"))
        .expect("base64");
    bytes[4..12].copy_from_slice(&(line.time() + 1).to_be_bytes());
    let replayed = format!("\u{2014} remora.n621.de {}", STANDARD.encode(&bytes));
    let note = ARCHE_NOTE.replace(remora_line, &replayed);

    let opened = SignedCheckpoint::open(&note, &vkey(ARCHE_VKEY)).expect("log line intact");
    let witnesses = arche_witnesses();
    let err = opened
        .require_witnesses(&witnesses, 3)
        .expect_err("remora fails");
    assert_eq!(err.kind(), WitnessErrorKind::BadCosignature);
    assert_eq!(opened.cosignatures(&witnesses).len(), 3);
}
