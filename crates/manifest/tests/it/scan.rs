//! Discovery: found without running, symbolic links never followed, bounded.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use amai_manifest::manifest::MAX_MANIFEST_BYTES;
use amai_manifest::scan::{scan, ScanEntry, SkipReason, MANIFEST_FILE_NAME, MAX_DEPTH};
use serde_json::{json, Value};

use crate::common::{full, minimal, with};

fn write(dir: &Path, value: &Value) {
    fs::create_dir_all(dir).expect("mkdir");
    fs::write(dir.join(MANIFEST_FILE_NAME), value.to_string()).expect("write");
}

fn build(context: &str) -> Value {
    with(
        minimal(),
        "source",
        json!({ "build": { "context": context } }),
    )
}

/// Every file under `dir`, relative.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("readable").flatten() {
            let t = e.file_type().expect("type");
            out.push(e.path().strip_prefix(dir).expect("inside").to_owned());
            if t.is_dir() && !t.is_symlink() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn nested_manifests_are_found_and_invalid_ones_reported() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    write(r, &full());
    write(&r.join("agents/a"), &build("."));
    write(
        &r.join("agents/b/deeper"),
        &with(full(), "permissions", json!(["network:egress:*"])),
    );
    fs::write(r.join("agents/other.json"), "{}").expect("write");
    let report = scan(r);
    let found: Vec<&Path> = report.found().map(|f| f.path.as_path()).collect();
    assert_eq!(
        found,
        [
            Path::new(MANIFEST_FILE_NAME),
            Path::new("agents/a/amai-manifest.json")
        ]
    );
    let a = report.found().nth(1).expect("a");
    assert!(a.build_context_exists);
    assert!(!a.dockerfile_exists);
    let invalid: Vec<(&Path, Vec<&str>)> = report.invalid().map(|(p, e)| (p, e.paths())).collect();
    assert_eq!(
        invalid,
        [(
            Path::new("agents/b/deeper/amai-manifest.json"),
            vec!["permissions[0]"]
        )]
    );
    assert!(!report.truncated);
}

#[test]
fn build_contexts_are_checked_on_disk() {
    let root = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    // Missing context.
    write(&r.join("missing"), &build("nope"));
    // Context that is a symlink out of the manifest's directory.
    write(&r.join("escape"), &build("ctx"));
    symlink(outside.path(), r.join("escape/ctx")).expect("symlink");
    // Context that is a file.
    write(&r.join("file"), &build("ctx"));
    fs::write(r.join("file/ctx"), "x").expect("write");
    // Good context with a Dockerfile.
    write(&r.join("good"), &build("ctx"));
    fs::create_dir_all(r.join("good/ctx")).expect("mkdir");
    fs::write(r.join("good/ctx/Dockerfile"), "FROM busybox\n").expect("write");
    // Dockerfile that is a symlink out of the context.
    write(&r.join("dfesc"), &build("ctx"));
    fs::create_dir_all(r.join("dfesc/ctx")).expect("mkdir");
    fs::write(outside.path().join("Dockerfile"), "FROM busybox\n").expect("write");
    symlink(
        outside.path().join("Dockerfile"),
        r.join("dfesc/ctx/Dockerfile"),
    )
    .expect("symlink");

    let report = scan(r);
    let invalid: Vec<(String, Vec<String>)> = report
        .invalid()
        .map(|(p, e)| {
            (
                p.parent().expect("dir").display().to_string(),
                e.paths().into_iter().map(str::to_owned).collect(),
            )
        })
        .collect();
    assert_eq!(
        invalid,
        [
            (
                "dfesc".to_owned(),
                vec!["source.build.dockerfile".to_owned()]
            ),
            ("escape".to_owned(), vec!["source.build.context".to_owned()]),
            ("file".to_owned(), vec!["source.build.context".to_owned()]),
            (
                "missing".to_owned(),
                vec!["source.build.context".to_owned()]
            ),
        ]
    );
    let good: Vec<_> = report.found().collect();
    assert_eq!(good.len(), 1);
    assert!(good[0].build_context_exists && good[0].dockerfile_exists);
    // The walk itself did not enter the symlinked context.
    assert!(report
        .skipped
        .iter()
        .any(|s| s.path == Path::new("escape/ctx") && s.reason == SkipReason::Symlink));
}

#[test]
fn symlinks_are_not_followed_and_loops_do_not_hang() {
    let root = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    write(outside.path(), &full());
    let r = root.path();
    fs::create_dir_all(r.join("a/b")).expect("mkdir");
    symlink(r.join("a"), r.join("a/b/loop")).expect("symlink");
    symlink(r, r.join("a/root")).expect("symlink");
    symlink(outside.path(), r.join("out")).expect("symlink");
    symlink(
        outside.path().join(MANIFEST_FILE_NAME),
        r.join("a").join(MANIFEST_FILE_NAME),
    )
    .expect("symlink");
    let report = scan(r);
    assert_eq!(report.entries.len(), 0, "nothing behind a symlink was read");
    let mut skipped: Vec<&Path> = report
        .skipped
        .iter()
        .filter(|s| s.reason == SkipReason::Symlink)
        .map(|s| s.path.as_path())
        .collect();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            Path::new("a/amai-manifest.json"),
            Path::new("a/b/loop"),
            Path::new("a/root"),
            Path::new("out")
        ]
    );
}

#[test]
fn huge_manifests_are_skipped_unread() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("big");
    fs::create_dir_all(&dir).expect("mkdir");
    let file = fs::File::create(dir.join(MANIFEST_FILE_NAME)).expect("create");
    file.set_len(MAX_MANIFEST_BYTES as u64 + 1).expect("sparse");
    let report = scan(root.path());
    assert!(report.entries.is_empty());
    assert_eq!(
        report.skipped[0].reason,
        SkipReason::TooLarge(MAX_MANIFEST_BYTES as u64 + 1)
    );
}

#[test]
fn depth_is_bounded() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut deep = root.path().to_owned();
    for i in 0..=MAX_DEPTH {
        deep.push(format!("d{i}"));
    }
    write(&deep, &full());
    let report = scan(root.path());
    assert!(report.entries.is_empty());
    assert!(report
        .skipped
        .iter()
        .any(|s| s.reason == SkipReason::TooDeep));
}

#[test]
fn nothing_is_executed_or_built() {
    let root = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let marker = outside.path().join("pwned");
    let r = root.path();
    write(
        &r.join("agent"),
        &with(
            build("ctx"),
            "entrypoint",
            json!(["/bin/sh", "-c", format!("touch {}", marker.display())]),
        ),
    );
    fs::create_dir_all(r.join("agent/ctx")).expect("mkdir");
    fs::write(
        r.join("agent/ctx/Dockerfile"),
        format!(
            "FROM busybox\nRUN touch {0}\nRUN touch ./built\nCMD touch {0}\n",
            marker.display()
        ),
    )
    .expect("write");
    let before_root = tree(r);
    let before_outside = tree(outside.path());
    let report = scan(r);
    assert_eq!(report.found().count(), 1);
    assert!(matches!(report.entries[0], ScanEntry::Found(_)));
    assert!(!marker.exists());
    assert_eq!(tree(r), before_root, "scan wrote nothing in the root");
    assert_eq!(tree(outside.path()), before_outside, "nor anywhere else");
}

#[test]
fn visits_are_bounded() {
    use amai_manifest::scan::MAX_VISITED;
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    for i in 0..MAX_VISITED {
        fs::write(r.join(format!("f{i:05}")), "").expect("write");
    }
    write(&r.join("zz"), &full());
    let report = scan(r);
    assert!(report.truncated);
    assert!(report.entries.is_empty(), "the walk stopped before zz");
}
