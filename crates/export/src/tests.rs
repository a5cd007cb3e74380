//! The format end to end: round trips, every reader error kind, every
//! writer refusal, and a changed byte anywhere in a file.

use std::io::Cursor;

use prost::Message;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::frame::length_prefix;
use crate::proto::{export_record, ExportRecord, ExportTrailer, ExportedBlob, ExportedMessage};
use crate::*;

fn message(stream: &str, seq: u64) -> ExportedMessage {
    ExportedMessage {
        stream: stream.into(),
        seq,
        subject: format!("amai.agent.s{seq}"),
        published_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000 + seq as i64,
            nanos: 123,
        }),
        data: format!("event {stream} {seq}").into_bytes(),
        msg_id: format!("id-{stream}-{seq}"),
    }
}

fn blob_data(i: u8) -> Vec<u8> {
    vec![i; 10 + i as usize]
}

fn range(stream: &str, first: u64, last: u64, messages: u64, complete: bool) -> StreamRange {
    StreamRange {
        stream: stream.into(),
        first_seq: first,
        last_seq: last,
        messages,
        complete,
    }
}

fn manifest() -> Manifest {
    Manifest::new(
        OffsetDateTime::UNIX_EPOCH,
        Deployment::from_trust_root(&[3u8; 32]),
        Selection::default(),
        vec![
            range("AMAI_AGENTS", 1, 3, 3, true),
            range("AMAI_AUDIT", 2, 5, 2, false),
            range("AMAI_LIFECYCLE", 0, 0, 0, true),
        ],
        2,
        Vec::new(),
    )
}

/// The messages of [`manifest`], streams interleaved.
fn messages() -> Vec<ExportedMessage> {
    vec![
        message("AMAI_AGENTS", 1),
        message("AMAI_AUDIT", 2),
        message("AMAI_AGENTS", 2),
        message("AMAI_AGENTS", 3),
        message("AMAI_AUDIT", 5),
    ]
}

/// The blobs of [`manifest`], in digest order.
fn blobs() -> Vec<([u8; 32], Vec<u8>)> {
    let mut b: Vec<_> = [1u8, 2]
        .into_iter()
        .map(|i| (Sha256::digest(blob_data(i)).into(), blob_data(i)))
        .collect();
    b.sort();
    b
}

fn written() -> (Vec<u8>, ExportSummary) {
    let mut out = Vec::new();
    let mut w = ExportWriter::new(&mut out, &manifest()).expect("writer");
    for m in messages() {
        w.message(&m).expect("message");
    }
    for (d, data) in blobs() {
        w.blob(&d, &data).expect("blob");
    }
    let summary = w.finish().expect("finish");
    (out, summary)
}

fn read_all(bytes: &[u8]) -> Result<(Manifest, Vec<Record>, ExportSummary), ExportError> {
    let mut r = ExportReader::new(Cursor::new(bytes))?;
    let mut records = Vec::new();
    while let Some(rec) = r.next_record()? {
        records.push(rec);
    }
    let summary = r.summary().cloned().expect("summary at the end");
    Ok((r.manifest().clone(), records, summary))
}

fn kind_of(bytes: &[u8]) -> ExportErrorKind {
    match read_all(bytes) {
        Ok(_) => panic!("the file was accepted"),
        Err(e) => e.kind(),
    }
}

/// Hand-made files: records framed as given, then (optionally) a trailer
/// whose digest is right for them.
struct Raw {
    bytes: Vec<u8>,
}

impl Raw {
    fn new() -> Self {
        Self { bytes: Vec::new() }
    }

    fn record(mut self, r: export_record::Record) -> Self {
        self.bytes.extend(frame(&ExportRecord { record: Some(r) }));
        self
    }

    fn manifest(self, m: &Manifest) -> Self {
        let json = serde_json::to_vec(m).expect("json");
        self.record(export_record::Record::Manifest(json))
    }

    fn manifest_json(self, v: serde_json::Value) -> Self {
        self.record(export_record::Record::Manifest(
            serde_json::to_vec(&v).expect("json"),
        ))
    }

    fn message(self, m: ExportedMessage) -> Self {
        self.record(export_record::Record::Message(m))
    }

    fn blob(self, sha256: Vec<u8>, data: Vec<u8>) -> Self {
        self.record(export_record::Record::Blob(ExportedBlob { sha256, data }))
    }

    fn trailer(self, messages: u64, blobs: u64) -> Vec<u8> {
        let sha256 = Sha256::digest(&self.bytes).to_vec();
        self.trailer_with(messages, blobs, sha256)
    }

    fn trailer_with(self, messages: u64, blobs: u64, sha256: Vec<u8>) -> Vec<u8> {
        let mut bytes = self.bytes;
        bytes.extend(frame(&ExportRecord {
            record: Some(export_record::Record::Trailer(ExportTrailer {
                messages,
                blobs,
                sha256,
            })),
        }));
        bytes
    }
}

fn frame(r: &ExportRecord) -> Vec<u8> {
    let body = r.encode_to_vec();
    let mut out = length_prefix(body.len());
    out.extend(body);
    out
}

/// A well-formed file of `manifest` and `messages`, no blobs.
fn small(m: &Manifest, msgs: Vec<ExportedMessage>) -> Vec<u8> {
    let n = msgs.len() as u64;
    let mut raw = Raw::new().manifest(m);
    for msg in msgs {
        raw = raw.message(msg);
    }
    raw.trailer(n, 0)
}

fn one_stream(first: u64, last: u64, messages: u64) -> Manifest {
    let mut m = manifest();
    m.streams = vec![range("AMAI_AGENTS", first, last, messages, false)];
    m.blobs = 0;
    m
}

#[test]
fn a_written_file_reads_back_record_for_record() {
    let (bytes, summary) = written();
    let (m, records, read_summary) = read_all(&bytes).expect("reads cleanly");
    assert_eq!(m, manifest());
    let mut expected: Vec<Record> = messages().into_iter().map(Record::Message).collect();
    expected.extend(blobs().into_iter().map(|(d, data)| {
        Record::Blob(ExportedBlob {
            sha256: d.to_vec(),
            data,
        })
    }));
    assert_eq!(records, expected);
    assert_eq!(read_summary, summary);
    assert_eq!(summary.bytes, bytes.len() as u64);
    assert_eq!((summary.messages, summary.blobs), (5, 2));
}

#[test]
fn the_trailer_digest_covers_every_byte_before_the_trailer() {
    let (bytes, summary) = written();
    // The trailer is the last record: find where it starts by reading.
    let mut r = ExportReader::new(Cursor::new(&bytes)).expect("reader");
    let mut before_trailer = r.offset();
    while r.next_located().expect("record").is_some() {
        if r.summary().is_none() {
            before_trailer = r.offset();
        }
    }
    assert_eq!(
        summary.sha256,
        <[u8; 32]>::from(Sha256::digest(&bytes[..before_trailer as usize]))
    );
}

#[test]
fn an_empty_export_reads_back() {
    let mut m = manifest();
    m.streams = vec![range("AMAI_AGENTS", 0, 0, 0, true)];
    m.blobs = 0;
    let mut out = Vec::new();
    let summary = ExportWriter::new(&mut out, &m)
        .expect("writer")
        .finish()
        .expect("finish");
    let (_, records, read) = read_all(&out).expect("reads");
    assert!(records.is_empty());
    assert_eq!(read, summary);
}

#[test]
fn records_can_be_read_again_at_their_location_and_a_changed_file_is_noticed() {
    let (bytes, _) = written();
    let mut r = ExportReader::new(Cursor::new(&bytes)).expect("reader");
    let mut located = Vec::new();
    while let Some(x) = r.next_located().expect("record") {
        located.push(x);
    }
    let mut file = Cursor::new(bytes.clone());
    for (loc, rec) in located.iter().rev() {
        assert_eq!(&read_record_at(&mut file, loc).expect("again"), rec);
    }
    let (loc, _) = &located[2];
    let mut changed = bytes.clone();
    changed[(loc.offset + loc.len - 1) as usize] ^= 1;
    let err = read_record_at(&mut Cursor::new(changed), loc).expect_err("changed");
    assert_eq!(err.kind(), ExportErrorKind::Changed);
    let err =
        read_record_at(&mut Cursor::new(&bytes[..loc.offset as usize + 1]), loc).expect_err("cut");
    assert_eq!(err.kind(), ExportErrorKind::Changed);
}

#[test]
fn every_cut_of_a_file_is_truncated() {
    let (bytes, _) = written();
    for len in 0..bytes.len() {
        assert_eq!(
            kind_of(&bytes[..len]),
            ExportErrorKind::Truncated,
            "cut at {len} of {}",
            bytes.len()
        );
    }
}

#[test]
fn bytes_after_the_trailer_are_refused() {
    let (mut bytes, _) = written();
    bytes.push(0);
    assert_eq!(kind_of(&bytes), ExportErrorKind::TrailingData);
    let (mut twice, _) = written();
    twice.extend(written().0);
    assert_eq!(kind_of(&twice), ExportErrorKind::TrailingData);
}

#[test]
fn a_wrong_trailer_digest_is_refused() {
    let file = Raw::new()
        .manifest(&one_stream(1, 1, 1))
        .message(message("AMAI_AGENTS", 1))
        .trailer_with(1, 0, vec![0; 32]);
    assert_eq!(kind_of(&file), ExportErrorKind::DigestMismatch);
}

#[test]
fn wrong_trailer_counts_are_refused() {
    let raw = || {
        Raw::new()
            .manifest(&one_stream(1, 1, 1))
            .message(message("AMAI_AGENTS", 1))
    };
    assert_eq!(
        kind_of(&raw().trailer(2, 0)),
        ExportErrorKind::CountMismatch
    );
    assert_eq!(
        kind_of(&raw().trailer(1, 1)),
        ExportErrorKind::CountMismatch
    );
}

#[test]
fn a_manifest_of_another_format_or_version_is_refused() {
    let mut v = serde_json::to_value(manifest()).expect("value");
    v["format"] = "other".into();
    let file = Raw::new().manifest_json(v).trailer(0, 0);
    assert_eq!(kind_of(&file), ExportErrorKind::UnknownFormat);

    let mut v = serde_json::to_value(manifest()).expect("value");
    v["version"] = 2.into();
    let file = Raw::new().manifest_json(v).trailer(0, 0);
    assert_eq!(kind_of(&file), ExportErrorKind::UnsupportedVersion);
}

#[test]
fn a_manifest_of_the_wrong_shape_is_refused() {
    let mut v = serde_json::to_value(manifest()).expect("value");
    v["streams"][0]["unknown"] = 1.into();
    let file = Raw::new().manifest_json(v).trailer(0, 0);
    assert_eq!(kind_of(&file), ExportErrorKind::InvalidManifest);
    let file = Raw::new()
        .record(export_record::Record::Manifest(b"[1, 2".to_vec()))
        .trailer(0, 0);
    assert_eq!(kind_of(&file), ExportErrorKind::InvalidManifest);
}

#[test]
fn records_that_disagree_with_the_manifest_are_refused() {
    // A stream the manifest does not list.
    let file = small(&one_stream(1, 1, 1), vec![message("AMAI_NAMES", 1)]);
    assert_eq!(kind_of(&file), ExportErrorKind::ManifestMismatch);
    // Outside the listed range.
    let file = small(&one_stream(1, 1, 1), vec![message("AMAI_AGENTS", 2)]);
    assert_eq!(kind_of(&file), ExportErrorKind::ManifestMismatch);
    // Fewer messages than listed (the trailer agrees with the records).
    let file = small(&one_stream(1, 2, 2), vec![message("AMAI_AGENTS", 1)]);
    assert_eq!(kind_of(&file), ExportErrorKind::ManifestMismatch);
    // Another blob count than listed.
    let mut m = one_stream(1, 1, 1);
    m.blobs = 1;
    let file = small(&m, vec![message("AMAI_AGENTS", 1)]);
    assert_eq!(kind_of(&file), ExportErrorKind::ManifestMismatch);
}

#[test]
fn a_record_over_the_cap_is_refused_before_it_is_read() {
    let (bytes, _) = written();
    // The manifest itself is over a tiny cap.
    let err = ExportReader::with_max_record_bytes(Cursor::new(&bytes), 16).expect_err("cap");
    assert_eq!(err.kind(), ExportErrorKind::RecordTooLarge);
    // A length prefix claiming 2^40 bytes: refused, nothing allocated.
    let mut file = Raw::new().manifest(&one_stream(1, 1, 1)).bytes;
    file.extend(length_prefix(1 << 40));
    assert_eq!(kind_of(&file), ExportErrorKind::RecordTooLarge);
    // The writer refuses what the reader would.
    let mut out = Vec::new();
    let mut w = ExportWriter::with_max_record_bytes(&mut out, &manifest(), 4096).expect("writer");
    let mut big = message("AMAI_AGENTS", 1);
    big.data = vec![0; 5000];
    assert_eq!(
        w.message(&big).expect_err("too large").kind(),
        ExportErrorKind::RecordTooLarge
    );
}

#[test]
fn undecodable_records_are_malformed() {
    let mut file = Raw::new().manifest(&one_stream(1, 1, 1)).bytes;
    file.extend([3, 0xff, 0xff, 0xff]);
    assert_eq!(kind_of(&file), ExportErrorKind::Malformed);
    let mut file = Raw::new().manifest(&one_stream(1, 1, 1)).bytes;
    file.extend([0xff; 11]);
    assert_eq!(kind_of(&file), ExportErrorKind::Malformed);
    let file = small(&one_stream(1, 1, 1), vec![message("AMAI_AGENTS", 0)]);
    assert_eq!(kind_of(&file), ExportErrorKind::Malformed);
}

#[test]
fn records_out_of_place_are_unexpected() {
    // Not starting with the manifest.
    let file = Raw::new().message(message("AMAI_AGENTS", 1)).trailer(1, 0);
    assert_eq!(kind_of(&file), ExportErrorKind::UnexpectedRecord);
    // A second manifest.
    let file = Raw::new()
        .manifest(&one_stream(1, 1, 1))
        .manifest(&one_stream(1, 1, 1))
        .trailer(0, 0);
    assert_eq!(kind_of(&file), ExportErrorKind::UnexpectedRecord);
    // A message after a blob.
    let mut m = one_stream(1, 1, 1);
    m.blobs = 1;
    let data = blob_data(1);
    let file = Raw::new()
        .manifest(&m)
        .blob(Sha256::digest(&data).to_vec(), data)
        .message(message("AMAI_AGENTS", 1))
        .trailer(1, 1);
    assert_eq!(kind_of(&file), ExportErrorKind::UnexpectedRecord);
    // An empty record.
    let mut file = Raw::new().manifest(&one_stream(1, 1, 1)).bytes;
    file.extend(frame(&ExportRecord { record: None }));
    assert_eq!(kind_of(&file), ExportErrorKind::UnexpectedRecord);
}

#[test]
fn messages_out_of_stream_order_and_blobs_out_of_digest_order_are_refused() {
    let file = small(
        &one_stream(1, 2, 2),
        vec![message("AMAI_AGENTS", 2), message("AMAI_AGENTS", 1)],
    );
    assert_eq!(kind_of(&file), ExportErrorKind::OutOfOrder);
    let file = small(
        &one_stream(1, 2, 2),
        vec![message("AMAI_AGENTS", 1), message("AMAI_AGENTS", 1)],
    );
    assert_eq!(kind_of(&file), ExportErrorKind::OutOfOrder);
    let mut m = one_stream(0, 0, 0);
    m.blobs = 2;
    let data = blob_data(1);
    let d = Sha256::digest(&data).to_vec();
    let file = Raw::new()
        .manifest(&m)
        .blob(d.clone(), data.clone())
        .blob(d, data)
        .trailer(0, 2);
    assert_eq!(kind_of(&file), ExportErrorKind::OutOfOrder);
}

#[test]
fn a_blob_whose_data_does_not_hash_to_its_digest_is_refused() {
    let mut m = one_stream(0, 0, 0);
    m.blobs = 1;
    let file = Raw::new()
        .manifest(&m)
        .blob(Sha256::digest(b"other").to_vec(), b"data".to_vec())
        .trailer(0, 1);
    assert_eq!(kind_of(&file), ExportErrorKind::BlobDigestMismatch);
}

#[test]
fn a_failing_read_is_an_io_error_and_the_reader_stays_failed() {
    struct Failing(Cursor<Vec<u8>>, usize);
    impl std::io::Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.position() as usize >= self.1 {
                return Err(std::io::Error::other("disk on fire"));
            }
            self.0.read(buf)
        }
    }
    let (bytes, _) = written();
    let after_manifest = ExportReader::new(Cursor::new(&bytes))
        .expect("reader")
        .offset() as usize;
    let mut r = ExportReader::new(Failing(Cursor::new(bytes), after_manifest + 20))
        .expect("manifest reads");
    let err = loop {
        match r.next_record() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("reached the end"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), ExportErrorKind::Io);
    assert!(err.is_retryable());
    assert_eq!(
        r.next_record().expect_err("still failed").kind(),
        ExportErrorKind::Io
    );
    assert!(r.next().is_none(), "the iterator ends after an error");
}

#[test]
fn a_changed_byte_anywhere_is_caught() {
    let (bytes, _) = written();
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut changed = bytes.clone();
            changed[i] ^= mask;
            assert!(
                read_all(&changed).is_err(),
                "byte {i} of {} xor {mask:#04x} was not noticed",
                bytes.len()
            );
        }
    }
}

#[test]
fn the_writer_refuses_what_the_reader_would() {
    fn new(out: &mut Vec<u8>) -> ExportWriter<&mut Vec<u8>> {
        let mut w = ExportWriter::new(out, &manifest()).expect("writer");
        w.message(&message("AMAI_AGENTS", 1)).expect("first");
        w
    }
    let mut out = Vec::new();
    let mut w = new(&mut out);
    assert_eq!(
        w.message(&message("AMAI_NAMES", 1))
            .expect_err("unlisted")
            .kind(),
        ExportErrorKind::ManifestMismatch
    );
    assert_eq!(
        w.message(&message("AMAI_AGENTS", 1))
            .expect_err("again")
            .kind(),
        ExportErrorKind::OutOfOrder
    );
    assert_eq!(
        w.blob(&[0; 32], b"x").expect_err("digest").kind(),
        ExportErrorKind::BlobDigestMismatch
    );
    let (d, data) = blobs().remove(1);
    w.blob(&d, &data).expect("blob");
    let (d0, data0) = blobs().remove(0);
    assert_eq!(
        w.blob(&d0, &data0).expect_err("order").kind(),
        ExportErrorKind::OutOfOrder
    );
    assert_eq!(
        w.message(&message("AMAI_AGENTS", 2))
            .expect_err("after blob")
            .kind(),
        ExportErrorKind::UnexpectedRecord
    );
    // The records do not match the manifest: no trailer is written.
    let mut short = Vec::new();
    let w = new(&mut short);
    assert_eq!(
        w.finish().expect_err("counts").kind(),
        ExportErrorKind::ManifestMismatch
    );
    assert_eq!(kind_of(&short), ExportErrorKind::Truncated);
    // An invalid manifest is refused before anything is written.
    let mut bad = manifest();
    bad.deployment.id = "nope".into();
    let mut out3 = Vec::new();
    assert_eq!(
        ExportWriter::new(&mut out3, &bad).err().map(|e| e.kind()),
        Some(ExportErrorKind::InvalidManifest)
    );
    assert!(out3.is_empty());
}

#[test]
fn every_kind_has_a_distinct_name() {
    let kinds = [
        ExportErrorKind::Io,
        ExportErrorKind::Truncated,
        ExportErrorKind::TrailingData,
        ExportErrorKind::DigestMismatch,
        ExportErrorKind::CountMismatch,
        ExportErrorKind::UnknownFormat,
        ExportErrorKind::UnsupportedVersion,
        ExportErrorKind::InvalidManifest,
        ExportErrorKind::ManifestMismatch,
        ExportErrorKind::RecordTooLarge,
        ExportErrorKind::Malformed,
        ExportErrorKind::UnexpectedRecord,
        ExportErrorKind::OutOfOrder,
        ExportErrorKind::BlobDigestMismatch,
        ExportErrorKind::Changed,
    ];
    let names: std::collections::BTreeSet<_> = kinds.iter().map(|k| k.as_str()).collect();
    assert_eq!(names.len(), kinds.len());
}
