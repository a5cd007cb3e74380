//! Registry indexes: untrusted, entry by entry.

use std::fs;
use std::os::unix::fs::symlink;

use amai_manifest::registry::{read_index, IndexErrorKind, MAX_ENTRIES, MAX_INDEX_BYTES};
use serde_json::{json, Value};

use crate::common::{full, minimal, with};

fn write_index(value: &Value) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("index.json");
    fs::write(&path, value.to_string()).expect("write");
    (dir, path)
}

fn error_paths(report: &amai_manifest::IndexReport) -> Vec<Vec<String>> {
    report
        .entries
        .iter()
        .map(|e| match &e.result {
            Ok(_) => Vec::new(),
            Err(errors) => errors.paths().into_iter().map(str::to_owned).collect(),
        })
        .collect()
}

#[test]
fn array_index_with_bad_entries_and_wrappers() {
    let index = json!([
        full(),
        with(minimal(), "permissions", json!(["llm:openai", "network:egress:*"])),
        { "manifest": with(minimal(), "id", json!("org.example.other")), "downloads": 10, "verified": true },
        { "manifest": with(minimal(), "version", json!("x")), "rating": 5 },
        "not a manifest",
        with(full(), "trust_score", json!(1.0))
    ]);
    let (_dir, path) = write_index(&index);
    let report = read_index(&path).expect("readable");
    assert_eq!(report.entries.len(), 6);
    assert_eq!(
        error_paths(&report),
        [
            vec![],
            vec!["[1].permissions[1]".to_owned()],
            vec![],
            vec!["[3].manifest.version".to_owned()],
            vec!["[4]".to_owned()],
            vec![],
        ]
    );
    let wrapped = &report.entries[2];
    let mut fields: Vec<&str> = wrapped
        .registry_fields
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["[2].downloads", "[2].verified"]);
    let smuggled = report.entries[5].result.as_ref().expect("valid");
    assert_eq!(smuggled.ignored[0].path, "[5].trust_score");
    // Entries 0 and 5 have the same id.
    assert_eq!(report.duplicate_ids.len(), 1);
    assert_eq!(report.duplicate_ids[0].id, "com.example.summarizer");
    assert_eq!(report.duplicate_ids[0].entries, ["[0]", "[5]"]);
    assert_eq!(report.manifests().count(), 3);
}

#[test]
fn object_index_and_duplicate_keys_inside_an_entry() {
    let text = format!(
        r#"{{"manifests": [{}, {{"manifest_version": 1, "id": "a.b", "id": "c.d", "name": "n", "version": "1.0.0", "publisher": {{"name": "p"}}, "source": {{"image": "busybox"}}, "entrypoint": ["x"]}}]}}"#,
        minimal()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("index.json");
    fs::write(&path, text).expect("write");
    let report = read_index(&path).expect("readable");
    assert_eq!(
        error_paths(&report),
        [vec![], vec!["manifests[1].id".to_owned()]]
    );
}

#[test]
fn directory_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::write(d.join("a.json"), full().to_string()).expect("write");
    fs::write(d.join("b.json"), "{ not json").expect("write");
    fs::write(
        d.join("c.json"),
        with(minimal(), "id", json!("x")).to_string(),
    )
    .expect("write");
    fs::write(d.join("notes.txt"), "ignored").expect("write");
    fs::create_dir(d.join("sub.json")).expect("mkdir");
    let outside = tempfile::tempdir().expect("tempdir");
    fs::write(outside.path().join("m.json"), minimal().to_string()).expect("write");
    symlink(outside.path().join("m.json"), d.join("d.json")).expect("symlink");
    let report = read_index(d).expect("readable");
    let files: Vec<String> = report
        .entries
        .iter()
        .map(|e| e.file.as_ref().expect("file").display().to_string())
        .collect();
    assert_eq!(files, ["a.json", "b.json", "c.json", "d.json", "sub.json"]);
    assert_eq!(
        error_paths(&report),
        [
            vec![],
            vec!["[1]".to_owned()],
            vec!["[2].id".to_owned()],
            vec!["[3]".to_owned()],
            vec!["[4]".to_owned()],
        ]
    );
}

#[test]
fn whole_index_failures() {
    let (_d1, wrong) = write_index(&json!({ "manifests": [], "extra": 1 }));
    assert_eq!(
        read_index(&wrong).expect_err("shape").kind(),
        IndexErrorKind::WrongShape
    );
    let (_d2, scalar) = write_index(&json!(42));
    assert_eq!(
        read_index(&scalar).expect_err("shape").kind(),
        IndexErrorKind::WrongShape
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let not_json = dir.path().join("bad.json");
    fs::write(&not_json, "[{]").expect("write");
    assert_eq!(
        read_index(&not_json).expect_err("json").kind(),
        IndexErrorKind::NotJson
    );
    let big = dir.path().join("big.json");
    fs::File::create(&big)
        .expect("create")
        .set_len(MAX_INDEX_BYTES + 1)
        .expect("sparse");
    assert_eq!(
        read_index(&big).expect_err("size").kind(),
        IndexErrorKind::TooLarge
    );
    let many = dir.path().join("many.json");
    fs::write(&many, format!("[{}0]", "0,".repeat(MAX_ENTRIES))).expect("write");
    assert_eq!(
        read_index(&many).expect_err("entries").kind(),
        IndexErrorKind::TooManyEntries
    );
    let missing = read_index(&dir.path().join("nope.json")).expect_err("io");
    assert_eq!(missing.kind(), IndexErrorKind::Io);
    assert!(missing.is_retryable());
}
