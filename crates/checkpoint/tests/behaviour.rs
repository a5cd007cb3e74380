//! Round trips and every rejection, on keys made from fixed seeds.

use amai_checkpoint::{
    AddCosignatureErrorKind, Checkpoint, CheckpointError, CheckpointErrorKind, CosignErrorKind,
    CosignatureLine, CosignatureLineErrorKind, KeyNameErrorKind, LogKey, OpenErrorKind,
    SignErrorKind, SignatureType, SignedCheckpoint, VerifiedCosignature, VerifierKey,
    VerifierKeyErrorKind, WitnessErrorKind, WitnessKey, MAX_SIGNATURES,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};

const ORIGIN: &str = "amai.example/audit/orders";
const MAX_TIME: u64 = (1 << 63) - 1;

fn signing_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn log_key() -> LogKey {
    LogKey::new(ORIGIN, signing_key(1)).expect("valid name")
}

fn witness(n: u8) -> WitnessKey {
    WitnessKey::new(format!("witness.example/w{n}"), signing_key(100 + n)).expect("valid name")
}

fn checkpoint(size: u64) -> Checkpoint {
    Checkpoint::new(ORIGIN, size, [size as u8; 32])
}

fn signed(size: u64) -> SignedCheckpoint {
    log_key().sign(&checkpoint(size)).expect("signs")
}

/// A note signature line made without this crate: `— name base64(id || sig)`.
fn line_by_hand(name: &str, key_id: u32, sig: &[u8]) -> String {
    let mut bytes = key_id.to_be_bytes().to_vec();
    bytes.extend_from_slice(sig);
    format!("\u{2014} {name} {}\n", STANDARD.encode(bytes))
}

/// A note with one Ed25519 signature, made without this crate's signing.
fn note_by_hand(key: &SigningKey, name: &str, text: &str) -> String {
    let key_id = VerifierKey::ed25519(name, &key.verifying_key())
        .expect("name")
        .key_id();
    let sig = key.sign(text.as_bytes()).to_bytes();
    format!("{text}\n{}", line_by_hand(name, key_id, &sig))
}

/// Decodes the base64 of a signature line, changes it, encodes it back.
fn edit_line(line: &str, edit: impl FnOnce(&mut Vec<u8>)) -> String {
    let (head, b64) = line.trim_end().rsplit_once(' ').expect("two fields");
    let mut bytes = STANDARD.decode(b64).expect("base64");
    edit(&mut bytes);
    format!("{head} {}", STANDARD.encode(bytes))
}

fn open(note: &str) -> Result<SignedCheckpoint, amai_checkpoint::OpenError> {
    SignedCheckpoint::open(note, &log_key().verifier())
}

fn open_kind(note: &str) -> OpenErrorKind {
    open(note).expect_err("rejected").kind()
}

fn body_kind(text: &str) -> CheckpointErrorKind {
    Checkpoint::parse_body(text).expect_err(text).kind()
}

// --- checkpoint bodies ---

#[test]
fn checkpoint_body_round_trips() {
    let mut with_extensions = checkpoint(7);
    with_extensions.extensions = vec!["ext one".to_owned(), "two".to_owned()];
    let cases = [
        Checkpoint::new(ORIGIN, 0, amai_merkle::empty_root()),
        checkpoint(1),
        Checkpoint::new("any origin, even with spaces", u64::MAX, [0xff; 32]),
        with_extensions,
    ];
    for cp in cases {
        let body = cp.body();
        assert!(body.ends_with('\n'));
        assert_eq!(Checkpoint::parse_body(&body), Ok(cp.clone()));
        assert_eq!(cp.validate(), Ok(()));
    }
}

#[test]
fn checkpoint_body_has_the_spec_layout() {
    let cp = Checkpoint::new("example.com/log", 10, amai_merkle::empty_root());
    assert_eq!(
        cp.body(),
        "example.com/log\n10\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    );
}

#[test]
fn checkpoint_body_missing_lines() {
    assert_eq!(
        Checkpoint::parse_body(""),
        Err(CheckpointError::MissingLine {
            line: 1,
            field: "origin"
        })
    );
    assert_eq!(
        Checkpoint::parse_body("o\n"),
        Err(CheckpointError::MissingLine {
            line: 2,
            field: "tree size"
        })
    );
    assert_eq!(
        Checkpoint::parse_body("o\n5\n"),
        Err(CheckpointError::MissingLine {
            line: 3,
            field: "root hash"
        })
    );
}

#[test]
fn checkpoint_body_rejections() {
    let root = STANDARD.encode([3u8; 32]);
    let cases = [
        (format!("o\n5\n{root}"), CheckpointErrorKind::NoFinalNewline),
        (format!("\n5\n{root}\n"), CheckpointErrorKind::EmptyOrigin),
        (
            format!("o\r\n5\n{root}\n"),
            CheckpointErrorKind::ControlCharacter,
        ),
        (
            format!("o\n5\t\n{root}\n"),
            CheckpointErrorKind::ControlCharacter,
        ),
        (format!("o\nx\n{root}\n"), CheckpointErrorKind::BadSize),
        (format!("o\n\n{root}\n"), CheckpointErrorKind::BadSize),
        (format!("o\n-1\n{root}\n"), CheckpointErrorKind::BadSize),
        (format!("o\n+1\n{root}\n"), CheckpointErrorKind::BadSize),
        (format!("o\n 1\n{root}\n"), CheckpointErrorKind::BadSize),
        (
            format!("o\n18446744073709551616\n{root}\n"),
            CheckpointErrorKind::BadSize,
        ),
        (format!("o\n05\n{root}\n"), CheckpointErrorKind::LeadingZero),
        (format!("o\n00\n{root}\n"), CheckpointErrorKind::LeadingZero),
        (
            "o\n5\nnot base64!\n".to_owned(),
            CheckpointErrorKind::BadBase64,
        ),
        // URL-safe alphabet and missing padding are not standard base64.
        (
            format!("o\n5\n{}\n", root.replace('=', "")),
            CheckpointErrorKind::BadBase64,
        ),
        (
            format!("o\n5\n{}\n", STANDARD.encode([0xfb; 32]).replace('+', "-")),
            CheckpointErrorKind::BadBase64,
        ),
        (
            format!("o\n5\n{}\n", STANDARD.encode([3u8; 31])),
            CheckpointErrorKind::RootNot32Bytes,
        ),
        (
            format!("o\n5\n{}\n", STANDARD.encode([3u8; 33])),
            CheckpointErrorKind::RootNot32Bytes,
        ),
        (
            format!("o\n5\n{root}\n\n"),
            CheckpointErrorKind::EmptyExtension,
        ),
        (
            format!("o\n5\n{root}\next\n\nx\n"),
            CheckpointErrorKind::EmptyExtension,
        ),
    ];
    for (text, kind) in cases {
        assert_eq!(body_kind(&text), kind, "{text:?}");
    }
    // Size 0 is the one size written with a zero first.
    let zero = Checkpoint::parse_body(&format!("o\n0\n{root}\n")).expect("size 0");
    assert_eq!(zero.size, 0);
}

#[test]
fn checkpoint_errors_name_their_line() {
    let root = STANDARD.encode([3u8; 32]);
    assert_eq!(
        Checkpoint::parse_body(&format!("o\n5\n{root}\na\n\n")),
        Err(CheckpointError::EmptyExtension { line: 5 })
    );
    assert_eq!(
        Checkpoint::parse_body(&format!("o\n5\n{root}\na\r\n")),
        Err(CheckpointError::ControlCharacter {
            line: 4,
            code: 0x0d
        })
    );
}

#[test]
fn invalid_checkpoints_are_not_signed() {
    let log = log_key();
    let mut newline_in_origin = checkpoint(3);
    newline_in_origin.origin.push('\n');
    let mut empty_extension = checkpoint(3);
    empty_extension.extensions.push(String::new());
    let mut newline_in_extension = checkpoint(3);
    newline_in_extension.extensions.push("a\nb".to_owned());
    let cases = [
        (
            Checkpoint::new("", 3, [0; 32]),
            CheckpointErrorKind::EmptyOrigin,
        ),
        (newline_in_origin, CheckpointErrorKind::ControlCharacter),
        (empty_extension, CheckpointErrorKind::EmptyExtension),
        (newline_in_extension, CheckpointErrorKind::ControlCharacter),
    ];
    for (cp, kind) in cases {
        assert_eq!(cp.validate().expect_err("invalid").kind(), kind);
        match log.sign(&cp) {
            Err(amai_checkpoint::SignError::BadCheckpoint(e)) => assert_eq!(e.kind(), kind),
            other => panic!("{cp:?} gave {other:?}"),
        }
    }
}

// --- key names and verifier keys ---

#[test]
fn key_name_rules() {
    let key = signing_key(1).verifying_key();
    let cases = [
        ("", KeyNameErrorKind::Empty),
        ("a b", KeyNameErrorKind::Whitespace),
        ("a\u{a0}b", KeyNameErrorKind::Whitespace),
        ("a\u{3000}b", KeyNameErrorKind::Whitespace),
        ("a+b", KeyNameErrorKind::Plus),
        ("a\u{1}b", KeyNameErrorKind::ControlCharacter),
        ("a\nb", KeyNameErrorKind::ControlCharacter),
    ];
    for (name, kind) in cases {
        assert_eq!(
            VerifierKey::ed25519(name, &key).expect_err(name).kind(),
            kind
        );
        assert_eq!(
            VerifierKey::cosignature(name, &key).expect_err(name).kind(),
            kind
        );
        assert_eq!(
            LogKey::new(name, signing_key(1)).expect_err(name).kind(),
            kind
        );
        assert_eq!(
            WitnessKey::new(name, signing_key(1))
                .expect_err(name)
                .kind(),
            kind
        );
    }
    for name in ["a", "example.com/log", "oid/1.3.6.1.4.1", "ünïcode/名前"] {
        VerifierKey::ed25519(name, &key).expect(name);
    }
}

#[test]
fn verifier_keys_round_trip_as_text() {
    for seed in 0..8u8 {
        let log = LogKey::new(format!("log{seed}.example"), signing_key(seed)).expect("name");
        let witness = WitnessKey::new(format!("w{seed}.example"), signing_key(seed)).expect("name");
        for key in [log.verifier(), witness.verifier()] {
            let text = key.to_string();
            let parsed: VerifierKey = text.parse().expect("parses");
            assert_eq!(parsed, key);
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(log.verifier().signature_type(), SignatureType::Ed25519);
        assert_eq!(
            witness.verifier().signature_type(),
            SignatureType::CosignatureV1
        );
        assert_eq!(log.verifier().key_id(), log.key_id());
        assert_eq!(witness.verifier().key_id(), witness.key_id());
    }
}

#[test]
fn key_id_depends_on_name_type_and_key() {
    let key = signing_key(1).verifying_key();
    let base = VerifierKey::ed25519("a.example", &key).expect("name");
    let other_name = VerifierKey::ed25519("b.example", &key).expect("name");
    let other_type = VerifierKey::cosignature("a.example", &key).expect("name");
    let other_key =
        VerifierKey::ed25519("a.example", &signing_key(2).verifying_key()).expect("name");
    for other in [other_name, other_type, other_key] {
        assert_ne!(other.key_id(), base.key_id());
    }
}

#[test]
fn verifier_key_rejections() {
    let key = signing_key(1).verifying_key();
    let good = VerifierKey::ed25519("a.example", &key)
        .expect("name")
        .to_string();
    let (_, rest) = good.split_once('+').expect("+");
    let (id, data) = rest.split_once('+').expect("+");
    let typed = |type_byte: u8, key_bytes: &[u8]| {
        let mut bytes = vec![type_byte];
        bytes.extend_from_slice(key_bytes);
        STANDARD.encode(bytes)
    };
    // y = 2 is not the y coordinate of a curve point (no square root for x).
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    let cases = [
        ("a.example".to_owned(), VerifierKeyErrorKind::NotThreeFields),
        (
            format!("a.example+{id}"),
            VerifierKeyErrorKind::NotThreeFields,
        ),
        (format!("a b+{id}+{data}"), VerifierKeyErrorKind::BadName),
        (format!("+{id}+{data}"), VerifierKeyErrorKind::BadName),
        (
            format!("a.example+{}+{data}", &id[..7]),
            VerifierKeyErrorKind::BadKeyId,
        ),
        (
            format!("a.example+{id}0+{data}"),
            VerifierKeyErrorKind::BadKeyId,
        ),
        (
            format!("a.example+0x{}+{data}", &id[..6]),
            VerifierKeyErrorKind::BadKeyId,
        ),
        (
            format!("a.example+{id}+{data}!"),
            VerifierKeyErrorKind::BadBase64,
        ),
        (format!("a.example+{id}+"), VerifierKeyErrorKind::NoKey),
        (
            format!("a.example+{id}+{}", typed(0x02, key.as_bytes())),
            VerifierKeyErrorKind::UnknownSignatureType,
        ),
        (
            format!("a.example+{id}+{}", typed(0x01, &key.as_bytes()[..31])),
            VerifierKeyErrorKind::BadKeyLength,
        ),
        (
            format!(
                "a.example+{id}+{}",
                typed(0x01, &[key.as_bytes().as_slice(), &[0]].concat())
            ),
            VerifierKeyErrorKind::BadKeyLength,
        ),
        (
            format!("a.example+{id}+{}", typed(0x01, &not_a_point)),
            VerifierKeyErrorKind::NotAnEd25519Key,
        ),
        (
            format!("b.example+{id}+{data}"),
            VerifierKeyErrorKind::KeyIdMismatch,
        ),
        (
            format!("a.example+{id}+{}", typed(0x04, key.as_bytes())),
            VerifierKeyErrorKind::KeyIdMismatch,
        ),
    ];
    for (text, kind) in cases {
        let err = text.parse::<VerifierKey>().expect_err(&text);
        assert_eq!(err.kind(), kind, "{text}");
    }
    // Upper-case hex key ids are read, as Go's parser does.
    let upper = format!("a.example+{}+{data}", id.to_uppercase());
    assert_eq!(upper.parse::<VerifierKey>(), good.parse::<VerifierKey>());
}

// --- signing and opening ---

#[test]
fn sign_then_open_round_trips() {
    let log = log_key();
    let mut with_extensions = checkpoint(9);
    with_extensions.extensions.push("extension".to_owned());
    for cp in [checkpoint(0), checkpoint(1), with_extensions] {
        let signed = log.sign(&cp).expect("signs");
        assert_eq!(signed.checkpoint(), &cp);
        assert_eq!(
            signed.text(),
            format!(
                "{}\n{}",
                cp.body(),
                line_by_hand(ORIGIN, log.key_id(), &signed.log_signature())
            )
        );
        let opened = open(signed.text()).expect("opens");
        assert_eq!(opened, signed);
        assert_eq!(opened.checkpoint(), &cp);
        assert_eq!(opened.log_signature(), signed.log_signature());
    }
}

#[test]
fn log_signature_is_the_ed25519_signature_of_the_body() {
    let signed = signed(12);
    let signature = ed25519_dalek::Signature::from_bytes(&signed.log_signature());
    log_key()
        .verifier()
        .verifying_key()
        .verify_strict(signed.checkpoint().body().as_bytes(), &signature)
        .expect("verifies");
}

#[test]
fn note_made_by_hand_opens() {
    let note = note_by_hand(&signing_key(1), ORIGIN, &checkpoint(4).body());
    assert_eq!(open(&note).expect("opens").checkpoint(), &checkpoint(4));
}

#[test]
fn sign_rejects_another_origin_and_huge_notes() {
    let log = log_key();
    let err = log
        .sign(&Checkpoint::new("other.example", 1, [0; 32]))
        .expect_err("origin");
    assert_eq!(err.kind(), SignErrorKind::OriginMismatch);

    let mut huge = checkpoint(1);
    huge.extensions.push("x".repeat(1_000_000));
    assert_eq!(
        log.sign(&huge).expect_err("huge").kind(),
        SignErrorKind::TooLarge
    );
}

#[test]
fn flipped_bytes_in_body_or_signature_break_the_log_signature() {
    let signed = signed(42);
    let text = signed.text();
    let body = signed.checkpoint().body();
    let root_b64 = STANDARD.encode(signed.checkpoint().root);
    let mut flipped_root = signed.checkpoint().root;
    flipped_root[17] ^= 0x01;

    let log_line = &text[body.len() + 1..];
    let flipped_signature = edit_line(log_line, |b| b[4 + 20] ^= 0x80);

    let cases = [
        text.replacen("\n42\n", "\n43\n", 1),
        text.replacen("orders", "ordern", 1),
        text.replacen(&root_b64, &STANDARD.encode(flipped_root), 1),
        format!("{body}\n{flipped_signature}\n"),
    ];
    for note in cases {
        assert_ne!(note, text);
        assert_eq!(open_kind(&note), OpenErrorKind::BadSignature, "{note}");
    }
}

#[test]
fn a_note_signed_by_another_key_with_the_same_name_is_not_signed_by_the_log() {
    let impostor = LogKey::new(ORIGIN, signing_key(66)).expect("name");
    let forged = impostor.sign(&checkpoint(5)).expect("signs");
    assert_eq!(open_kind(forged.text()), OpenErrorKind::NotSignedByLog);
}

#[test]
fn a_forged_line_with_the_log_key_id_is_a_bad_signature() {
    // Another key, but the line claims the log's name and key id.
    let sig = signing_key(66)
        .sign(checkpoint(5).body().as_bytes())
        .to_bytes();
    let note = format!(
        "{}\n{}",
        checkpoint(5).body(),
        line_by_hand(ORIGIN, log_key().key_id(), &sig)
    );
    assert_eq!(open_kind(&note), OpenErrorKind::BadSignature);
}

#[test]
fn unknown_key_lines_are_ignored_and_the_first_log_line_decides() {
    let signed = signed(5);
    let body = signed.checkpoint().body();
    let log_line = &signed.text()[body.len() + 1..];
    let stranger = line_by_hand("stranger.example", 0x1234_5678, &[9; 64]);
    let bad_log_line = format!("{}\n", edit_line(log_line, |b| b[40] ^= 1));

    let with_stranger = format!("{body}\n{stranger}{log_line}{stranger}");
    assert_eq!(
        open(&with_stranger).expect("opens").checkpoint(),
        signed.checkpoint()
    );

    let bad_then_good = format!("{body}\n{bad_log_line}{log_line}");
    assert_eq!(open_kind(&bad_then_good), OpenErrorKind::BadSignature);

    let good_then_bad = format!("{body}\n{log_line}{bad_log_line}");
    open(&good_then_bad).expect("later lines of the log key are skipped, as in Go");
}

#[test]
fn signature_line_limit() {
    let signed = signed(5);
    let body = signed.checkpoint().body();
    let log_line = &signed.text()[body.len() + 1..];
    let strangers: String = (0..MAX_SIGNATURES as u32)
        .map(|i| line_by_hand("stranger.example", i, &[9; 64]))
        .collect();
    let lines: Vec<&str> = strangers.lines().collect();

    let at_limit = format!(
        "{body}\n{log_line}{}\n",
        lines[..MAX_SIGNATURES - 1].join("\n")
    );
    open(&at_limit).expect("100 lines are accepted");

    let over = format!("{body}\n{log_line}{strangers}");
    assert_eq!(open_kind(&over), OpenErrorKind::TooManySignatures);
}

#[test]
fn malformed_notes() {
    let signed = signed(5);
    let body = signed.checkpoint().body();
    let log_line = &signed.text()[body.len() + 1..];
    let cases = [
        String::new(),
        body.clone(),
        format!("{body}\n"),
        format!("{body}{log_line}"),
        format!("{body}\n{}", log_line.trim_end()),
        format!("{body}\n{log_line}trailing text\n"),
        format!("{body}\n{}", log_line.replace('\u{2014}', "--")),
        format!("{body}\n{}", log_line.replacen(' ', "  ", 1)),
        format!("{body}\n{}", log_line.replace(ORIGIN, "bad+name")),
        format!("{body}\n\u{2014} {ORIGIN}\n"),
        format!("{body}\n\u{2014} {ORIGIN} AAAA\n"),
        format!("{body}\n\u{2014} {ORIGIN} not*base64\n"),
        format!("\u{7}{body}\n{log_line}"),
        format!("{body}\n{log_line}").replace('\n', "\r\n"),
        format!("{}\n{log_line}", "x".repeat(1_000_001)),
    ];
    for note in cases {
        assert_eq!(open_kind(&note), OpenErrorKind::Malformed, "{note:?}");
    }
}

#[test]
fn malformed_note_message_names_the_line() {
    let signed = signed(5);
    let body = signed.checkpoint().body();
    let log_line = &signed.text()[body.len() + 1..];
    let note = format!("{body}\n{log_line}-- not a signature line\n");
    let err = open(&note).expect_err("malformed");
    assert_eq!(err.kind(), OpenErrorKind::Malformed);
    // Three body lines, the blank line, the log line: the bad one is line 6.
    assert!(err.to_string().contains("line 6"), "{err}");
}

#[test]
fn a_signed_text_that_is_not_a_checkpoint_is_a_bad_checkpoint() {
    let note = note_by_hand(&signing_key(1), ORIGIN, &format!("{ORIGIN}\n007\n"));
    match open(&note) {
        Err(amai_checkpoint::OpenError::BadCheckpoint(e)) => {
            assert_eq!(e.kind(), CheckpointErrorKind::LeadingZero)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn origin_must_be_the_log_key_name() {
    let other = Checkpoint::new("other.example", 5, [5; 32]);
    let note = note_by_hand(&signing_key(1), ORIGIN, &other.body());
    assert_eq!(open_kind(&note), OpenErrorKind::OriginMismatch);
}

#[test]
fn a_witness_key_is_not_a_log_key() {
    let signed = signed(5);
    let err = SignedCheckpoint::open(signed.text(), &witness(1).verifier()).expect_err("type");
    assert_eq!(err.kind(), OpenErrorKind::NotALogKey);
}

// --- cosignatures ---

fn cosigned(signed: &SignedCheckpoint, witnesses: &[(WitnessKey, u64)]) -> SignedCheckpoint {
    let mut note = signed.clone();
    for (w, time) in witnesses {
        let line = w.cosign(signed, *time).expect("cosigns");
        note = note.with_cosignature(&line).expect("adds");
    }
    note
}

fn verifiers(witnesses: &[WitnessKey]) -> Vec<VerifierKey> {
    witnesses.iter().map(WitnessKey::verifier).collect()
}

#[test]
fn cosign_add_open_verify_round_trip() {
    let signed = signed(8);
    let (w1, w2, w3) = (witness(1), witness(2), witness(3));
    let note = cosigned(&signed, &[(w1.clone(), 1000), (w2.clone(), 2000)]);
    let reopened = open(note.text()).expect("opens");
    assert_eq!(reopened, note);
    assert_eq!(reopened.log_signature(), signed.log_signature());

    let listed = verifiers(&[w1.clone(), w2.clone(), w3]);
    let expected = vec![
        VerifiedCosignature {
            name: w1.name().to_owned(),
            key_id: w1.key_id(),
            time: 1000,
        },
        VerifiedCosignature {
            name: w2.name().to_owned(),
            key_id: w2.key_id(),
            time: 2000,
        },
    ];
    assert_eq!(reopened.cosignatures(&listed), expected);
    assert_eq!(reopened.require_witnesses(&listed, 2), Ok(expected.clone()));
    let err = reopened.require_witnesses(&listed, 3).expect_err("2 of 3");
    assert_eq!(err.kind(), WitnessErrorKind::Quorum);
    assert_eq!(reopened.require_witnesses(&listed, 0), Ok(expected));
}

#[test]
fn cosignature_line_round_trips_and_holds_the_cosigned_message() {
    let signed = signed(8);
    let w = witness(1);
    for time in [0, 1, 1_700_000_000, MAX_TIME] {
        let line = w.cosign(&signed, time).expect("cosigns");
        assert_eq!(line.name(), w.name());
        assert_eq!(line.key_id(), w.key_id());
        assert_eq!(line.time(), time);
        let text = line.to_string();
        assert!(text.starts_with("\u{2014} witness.example/w1 "));
        assert_eq!(text.parse::<CosignatureLine>(), Ok(line.clone()));
        assert_eq!(
            format!("{text}\n").parse::<CosignatureLine>(),
            Ok(line.clone())
        );

        // The spec's message: header, time line, body.
        let message = format!(
            "cosignature/v1\ntime {time}\n{}",
            signed.checkpoint().body()
        );
        w.verifier()
            .verifying_key()
            .verify_strict(
                message.as_bytes(),
                &ed25519_dalek::Signature::from_bytes(line.signature()),
            )
            .expect("signs the cosignature/v1 message");
    }
}

#[test]
fn cosign_rejects_times_above_2_pow_63_minus_1() {
    let err = witness(1)
        .cosign(&signed(8), MAX_TIME + 1)
        .expect_err("time");
    assert_eq!(err.kind(), CosignErrorKind::TimeOutOfRange);
}

#[test]
fn cosignature_line_rejections() {
    let good = witness(1)
        .cosign(&signed(8), 5)
        .expect("cosigns")
        .to_string();
    let over_time = edit_line(&good, |b| {
        b[4..12].copy_from_slice(&(MAX_TIME + 1).to_be_bytes())
    });
    let cases = [
        (
            good.replace('\u{2014}', "-"),
            CosignatureLineErrorKind::NotASignatureLine,
        ),
        (
            good.replacen(' ', "", 1),
            CosignatureLineErrorKind::NotASignatureLine,
        ),
        (
            good.replacen("w1", "w+1", 1),
            CosignatureLineErrorKind::NotASignatureLine,
        ),
        (
            format!("{good}!"),
            CosignatureLineErrorKind::NotASignatureLine,
        ),
        (
            format!("{good}\n\n"),
            CosignatureLineErrorKind::NotASignatureLine,
        ),
        (
            edit_line(&good, |b| b.truncate(4 + 8 + 63)),
            CosignatureLineErrorKind::WrongLength,
        ),
        (
            edit_line(&good, |b| b.push(0)),
            CosignatureLineErrorKind::WrongLength,
        ),
        (
            edit_line(&good, |b| b.truncate(4 + 64)),
            CosignatureLineErrorKind::WrongLength,
        ),
        (over_time, CosignatureLineErrorKind::TimeOutOfRange),
    ];
    for (text, kind) in cases {
        let err = text.parse::<CosignatureLine>().expect_err(&text);
        assert_eq!(err.kind(), kind, "{text}");
    }
}

#[test]
fn a_cosignature_of_another_checkpoint_fails() {
    let w = witness(1);
    let line = w.cosign(&signed(5), 100).expect("cosigns");
    let note = signed(6).with_cosignature(&line).expect("adds");
    let listed = verifiers(&[w]);
    assert!(note.cosignatures(&listed).is_empty());
    let err = note
        .require_witnesses(&listed, 1)
        .expect_err("wrong checkpoint");
    assert_eq!(err.kind(), WitnessErrorKind::BadCosignature);
}

#[test]
fn a_cosignature_replayed_with_another_time_fails() {
    let signed = signed(5);
    let w = witness(1);
    let line = w.cosign(&signed, 100).expect("cosigns").to_string();
    let replayed: CosignatureLine =
        edit_line(&line, |b| b[4..12].copy_from_slice(&101u64.to_be_bytes()))
            .parse()
            .expect("still a line");
    assert_eq!(replayed.time(), 101);
    let note = signed.with_cosignature(&replayed).expect("adds");
    let err = note
        .require_witnesses(&verifiers(&[w]), 1)
        .expect_err("replayed");
    assert_eq!(err.kind(), WitnessErrorKind::BadCosignature);
}

#[test]
fn a_cosignature_of_another_witness_key_with_the_same_name_is_ignored() {
    let signed = signed(5);
    let real = witness(1);
    let impostor = WitnessKey::new(real.name(), signing_key(77)).expect("name");
    let note = cosigned(&signed, &[(impostor, 100)]);
    let listed = verifiers(&[real]);
    assert!(note.cosignatures(&listed).is_empty());
    let err = note.require_witnesses(&listed, 1).expect_err("impostor");
    assert_eq!(err.kind(), WitnessErrorKind::Quorum);
}

#[test]
fn duplicate_lines_of_one_witness_count_once() {
    let signed = signed(5);
    let w = witness(1);
    let line = w.cosign(&signed, 100).expect("cosigns").to_string();
    let note_text = format!("{}{line}\n{line}\n", signed.text());
    let note = open(&note_text).expect("opens");
    let listed = verifiers(&[w]);
    assert_eq!(note.cosignatures(&listed).len(), 1);
    let err = note.require_witnesses(&listed, 2).expect_err("one witness");
    assert_eq!(
        err,
        amai_checkpoint::WitnessError::Quorum {
            required: 2,
            verified: 1
        }
    );
}

#[test]
fn a_witness_listed_twice_counts_once() {
    let signed = signed(5);
    let w = witness(1);
    let note = cosigned(&signed, &[(w.clone(), 100)]);
    let listed = verifiers(&[w.clone(), w]);
    assert_eq!(note.cosignatures(&listed).len(), 1);
    let err = note.require_witnesses(&listed, 2).expect_err("one witness");
    assert_eq!(err.kind(), WitnessErrorKind::Quorum);
}

#[test]
fn one_key_listed_under_two_names_counts_once() {
    // The cosigned message does not hold the witness name, so a line can be
    // copied under another name of the same key (with that name's key id).
    let signed = signed(5);
    let w = witness(1);
    let alias =
        VerifierKey::cosignature("alias.example", w.verifier().verifying_key()).expect("name");
    let line = w.cosign(&signed, 100).expect("cosigns");
    let copied = edit_line(&line.to_string(), |b| {
        b[..4].copy_from_slice(&alias.key_id().to_be_bytes())
    })
    .replace(w.name(), alias.name());
    let note = open(&format!("{}{line}\n{copied}\n", signed.text())).expect("opens");

    let alias_only = [alias.clone()];
    assert_eq!(note.cosignatures(&alias_only).len(), 1, "the copy verifies");
    let listed = [w.verifier(), alias];
    assert_eq!(note.cosignatures(&listed).len(), 1);
    let err = note.require_witnesses(&listed, 2).expect_err("one key");
    assert_eq!(err.kind(), WitnessErrorKind::Quorum);
}

#[test]
fn k_of_n_with_one_absent_witness() {
    let signed = signed(5);
    let (w1, w2, w3) = (witness(1), witness(2), witness(3));
    let note = cosigned(&signed, &[(w1.clone(), 1), (w3.clone(), 3)]);
    let listed = verifiers(&[w1, w2, w3]);
    let verified = note.require_witnesses(&listed, 2).expect("2 of 3");
    let names: Vec<&str> = verified.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["witness.example/w1", "witness.example/w3"]);
}

#[test]
fn a_failing_cosignature_of_a_listed_witness_is_an_error_naming_it() {
    let signed = signed(5);
    let (w1, w2) = (witness(1), witness(2));
    let good = w1.cosign(&signed, 1).expect("cosigns");
    let bad: CosignatureLine =
        edit_line(&w2.cosign(&signed, 2).expect("cosigns").to_string(), |b| {
            b[30] ^= 1
        })
        .parse()
        .expect("line");
    let note = signed
        .with_cosignature(&good)
        .and_then(|n| n.with_cosignature(&bad))
        .expect("adds");
    let listed = verifiers(&[w1.clone(), w2.clone()]);
    // Lenient: the valid one only.
    assert_eq!(note.cosignatures(&listed).len(), 1);
    // Strict: an error naming w2, even though 1 of 2 would be met.
    assert_eq!(
        note.require_witnesses(&listed, 1),
        Err(amai_checkpoint::WitnessError::BadCosignature {
            name: w2.name().to_owned(),
            key_id: w2.key_id(),
        })
    );
    // Not listed, not looked at.
    assert_eq!(
        note.require_witnesses(&verifiers(&[w1]), 1)
            .map(|v| v.len()),
        Ok(1)
    );
}

#[test]
fn a_log_key_is_not_a_witness_key() {
    let signed = signed(5);
    let listed = [log_key().verifier()];
    assert!(signed.cosignatures(&listed).is_empty());
    let err = signed.require_witnesses(&listed, 0).expect_err("type");
    assert_eq!(err.kind(), WitnessErrorKind::NotACosignatureKey);
}

#[test]
fn cosigning_again_replaces_the_witness_line() {
    let signed = signed(5);
    let w = witness(1);
    let note = cosigned(
        &signed,
        &[(w.clone(), 100), (witness(2), 150), (w.clone(), 200)],
    );
    assert_eq!(note.text().matches(w.name()).count(), 1);
    let verified = note.cosignatures(&verifiers(&[w]));
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0].time, 200);
    open(note.text()).expect("opens");
}

#[test]
fn a_line_with_the_log_key_cannot_be_added() {
    let signed = signed(5);
    let log = log_key();
    let fake = line_by_hand(
        log.name(),
        log.key_id(),
        &[[0u8; 8].as_slice(), &[1; 64]].concat(),
    );
    let line: CosignatureLine = fake.parse().expect("well formed");
    let err = signed.with_cosignature(&line).expect_err("log key");
    assert_eq!(err.kind(), AddCosignatureErrorKind::SameKeyAsLog);
}

#[test]
fn adding_past_the_signature_limit_is_refused() {
    let signed = signed(5);
    let strangers: String = (0..MAX_SIGNATURES as u32 - 1)
        .map(|i| line_by_hand("stranger.example", i, &[9; 64]))
        .collect();
    let full = open(&format!("{}{strangers}", signed.text())).expect("100 lines");
    let line = witness(1).cosign(&full, 1).expect("cosigns");
    let err = full.with_cosignature(&line).expect_err("101 lines");
    assert_eq!(err.kind(), AddCosignatureErrorKind::TooManySignatures);
}

#[test]
fn adding_past_the_size_limit_is_refused() {
    let signed = signed(5);
    let long_name = "w".repeat(1_000_000);
    let line: CosignatureLine =
        line_by_hand(&long_name, 7, &[[0u8; 8].as_slice(), &[1; 64]].concat())
            .parse()
            .expect("well formed");
    let err = signed.with_cosignature(&line).expect_err("too large");
    assert_eq!(err.kind(), AddCosignatureErrorKind::TooLarge);
}

#[test]
fn cosignatures_survive_reopening_with_unknown_lines_around() {
    let signed = signed(5);
    let w = witness(1);
    let note = cosigned(&signed, &[(w.clone(), 9)]);
    let stranger = line_by_hand("stranger.example", 1, &[9; 76]);
    let text = format!("{}{stranger}", note.text());
    let reopened = open(&text).expect("opens");
    assert_eq!(
        reopened
            .require_witnesses(&verifiers(&[w]), 1)
            .map(|v| v[0].time),
        Ok(9)
    );
}
