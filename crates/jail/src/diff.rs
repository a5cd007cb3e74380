//! Filesystem snapshots of a jail's writable directories, the diff between two
//! of them, its normalised tar and the diff policy check. Everything here is
//! pure: the tars come from the engine's archive API (see [`crate::run`](mod@crate::run)).
//!
//! - [`Snapshot::from_tar`] reads a tar stream (as `GET /containers/{id}/archive`
//!   returns it for `/workspace` or `/tmp`) into path → [`FsEntry`], paths
//!   absolute (`/workspace/src/main.rs`). Owners and times are not recorded: the
//!   jail runs as one user and times are not reproducible.
//! - [`FsDiff::between`] lists added, modified and deleted paths, sorted.
//! - [`FsDiff::archive`] is the normalised tar of the diff: the added and
//!   modified entries with their content, each deleted path as an OCI whiteout
//!   (`.wh.<name>` next to it; only the topmost deleted path of a deleted tree),
//!   entries sorted by their tar path, mtime 0, uid/gid 0, no user or group
//!   names, GNU headers with the GNU long-name extension for long paths or link
//!   targets. Equal changes give equal bytes, so [`FsDiff::sha256`] identifies
//!   the diff.
//! - [`check_policy`] compares a diff with a spec's [`DiffPolicy`].

use std::collections::BTreeMap;
use std::io::Read;

use amai_jail_spec::DiffPolicy;
use sha2::{Digest, Sha256};

/// What kind of filesystem object an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    /// A regular file (hard links count as files with their target's content).
    File,
    /// A directory.
    Dir,
    /// A symbolic link (recorded, never followed).
    Symlink,
    /// Anything else (fifo, device): recorded with its mode only.
    Other,
}

/// One path of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsEntry {
    /// The kind.
    pub kind: EntryKind,
    /// The permission bits, setuid (`0o4000`), setgid (`0o2000`) and sticky
    /// (`0o1000`) included.
    pub mode: u32,
    /// The size in bytes (files; 0 otherwise).
    pub size: u64,
    /// SHA-256 of the content (files only).
    pub sha256: Option<[u8; 32]>,
    /// Where a symlink points, as written (symlinks only).
    pub link_target: Option<String>,
}

/// The writable directories of a jail at one moment: path → entry, and the
/// content of the files (kept only when built with contents).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    entries: BTreeMap<String, FsEntry>,
    contents: BTreeMap<String, Vec<u8>>,
}

/// Why a tar stream could not be read into a [`Snapshot`].
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The stream is not a readable tar.
    #[error("reading the tar stream of a jail directory failed (is it an uncompressed tar from the archive API?): {0}")]
    Tar(#[source] std::io::Error),
    /// A hard link points at a path the stream did not hold before it.
    #[error("hard link {path} points at {target}, which the archive did not contain before it")]
    DanglingHardLink {
        /// The hard link.
        path: String,
        /// Its target.
        target: String,
    },
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every entry of the tar stream `tar` (paths made absolute: `workspace/a`
    /// becomes `/workspace/a`). With `keep_contents` the files' bytes are kept
    /// too (needed for the "after" side of a diff's archive).
    pub fn add_tar(&mut self, tar: impl Read, keep_contents: bool) -> Result<(), SnapshotError> {
        let mut archive = tar::Archive::new(tar);
        for entry in archive.entries().map_err(SnapshotError::Tar)? {
            let mut entry = entry.map_err(SnapshotError::Tar)?;
            let path = absolute(&entry.path_bytes());
            let header = entry.header();
            let mode = header.mode().map_err(SnapshotError::Tar)? & 0o7777;
            let entry_type = header.entry_type();
            let fs_entry = if entry_type.is_file() || entry_type == tar::EntryType::Continuous {
                let mut content = Vec::new();
                entry
                    .read_to_end(&mut content)
                    .map_err(SnapshotError::Tar)?;
                let fs_entry = FsEntry {
                    kind: EntryKind::File,
                    mode,
                    size: content.len() as u64,
                    sha256: Some(Sha256::digest(&content).into()),
                    link_target: None,
                };
                if keep_contents {
                    self.contents.insert(path.clone(), content);
                }
                fs_entry
            } else if entry_type.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .map(|name| absolute(&name))
                    .unwrap_or_default();
                let Some(linked) = self.entries.get(&target).cloned() else {
                    return Err(SnapshotError::DanglingHardLink { path, target });
                };
                if keep_contents {
                    if let Some(content) = self.contents.get(&target).cloned() {
                        self.contents.insert(path.clone(), content);
                    }
                }
                FsEntry { mode, ..linked }
            } else if entry_type.is_dir() {
                FsEntry {
                    kind: EntryKind::Dir,
                    mode,
                    size: 0,
                    sha256: None,
                    link_target: None,
                }
            } else if entry_type.is_symlink() {
                let target = entry
                    .link_name_bytes()
                    .map(|name| String::from_utf8_lossy(&name).into_owned())
                    .unwrap_or_default();
                FsEntry {
                    kind: EntryKind::Symlink,
                    mode,
                    size: 0,
                    sha256: None,
                    link_target: Some(target),
                }
            } else if entry_type.is_pax_global_extensions()
                || entry_type.is_pax_local_extensions()
                || entry_type.is_gnu_longname()
                || entry_type.is_gnu_longlink()
            {
                // Consumed by the tar reader itself; never reached in practice.
                continue;
            } else {
                FsEntry {
                    kind: EntryKind::Other,
                    mode,
                    size: 0,
                    sha256: None,
                    link_target: None,
                }
            };
            self.entries.insert(path, fs_entry);
        }
        Ok(())
    }

    /// A snapshot of one tar stream; see [`Snapshot::add_tar`].
    pub fn from_tar(tar: impl Read, keep_contents: bool) -> Result<Self, SnapshotError> {
        let mut snapshot = Self::new();
        snapshot.add_tar(tar, keep_contents)?;
        Ok(snapshot)
    }

    /// Adds or replaces one entry (and its content, for files).
    pub fn insert(&mut self, path: impl Into<String>, entry: FsEntry, content: Option<Vec<u8>>) {
        let path = path.into();
        match content {
            Some(content) => {
                self.contents.insert(path.clone(), content);
            }
            None => {
                self.contents.remove(&path);
            }
        }
        self.entries.insert(path, entry);
    }

    /// The entries, sorted by path.
    pub fn entries(&self) -> &BTreeMap<String, FsEntry> {
        &self.entries
    }

    /// The entry at `path`.
    pub fn get(&self, path: &str) -> Option<&FsEntry> {
        self.entries.get(path)
    }

    /// The kept content of the file at `path`.
    pub fn content(&self, path: &str) -> Option<&[u8]> {
        self.contents.get(path).map(Vec::as_slice)
    }

    /// How many entries the snapshot holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the snapshot holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Entries only: contents can be megabytes.
impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("entries", &self.entries)
            .field("contents_kept", &self.contents.len())
            .finish()
    }
}

/// Entries only: contents can be megabytes.
impl std::fmt::Debug for FsDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsDiff")
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

/// `workspace/a/` → `/workspace/a` (lossy for non-UTF-8 names).
fn absolute(tar_path: &[u8]) -> String {
    let text = String::from_utf8_lossy(tar_path);
    let trimmed = text.trim_start_matches("./").trim_matches('/');
    format!("/{trimmed}")
}

/// How a path changed between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// Absent before, present after.
    Added,
    /// Present in both, with a different kind, mode, size, content or link target.
    Modified,
    /// Present before, absent after.
    Deleted,
}

/// One changed path of an [`FsDiff`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffEntry {
    /// The absolute path.
    pub path: String,
    /// How it changed.
    pub change: Change,
    /// The entry after the run (before it, for a deletion).
    pub entry: FsEntry,
}

/// The changes between two snapshots, sorted by path, with the content of the
/// added and modified files.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FsDiff {
    entries: Vec<DiffEntry>,
    contents: BTreeMap<String, Vec<u8>>,
}

impl FsDiff {
    /// The changes from `before` to `after`; contents are taken from `after`
    /// (build it with contents kept, or the archive holds empty files).
    pub fn between(before: &Snapshot, after: &Snapshot) -> Self {
        let mut entries = Vec::new();
        let mut contents = BTreeMap::new();
        for (path, entry) in &after.entries {
            let change = match before.entries.get(path) {
                None => Change::Added,
                Some(old) if old != entry => Change::Modified,
                Some(_) => continue,
            };
            if let Some(content) = after.contents.get(path) {
                contents.insert(path.clone(), content.clone());
            }
            entries.push(DiffEntry {
                path: path.clone(),
                change,
                entry: entry.clone(),
            });
        }
        for (path, entry) in &before.entries {
            if !after.entries.contains_key(path) {
                entries.push(DiffEntry {
                    path: path.clone(),
                    change: Change::Deleted,
                    entry: entry.clone(),
                });
            }
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Self { entries, contents }
    }

    /// The changed paths, sorted by path.
    pub fn entries(&self) -> &[DiffEntry] {
        &self.entries
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The change at `path`, if it changed.
    pub fn get(&self, path: &str) -> Option<&DiffEntry> {
        self.entries
            .binary_search_by(|entry| entry.path.as_str().cmp(path))
            .ok()
            .map(|index| &self.entries[index])
    }

    /// The sum of the sizes of the added and modified files.
    pub fn bytes_written(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.change != Change::Deleted && e.entry.kind == EntryKind::File)
            .map(|e| e.entry.size)
            .sum()
    }

    /// The normalised tar of the diff; see the module documentation.
    pub fn archive(&self) -> Vec<u8> {
        // Writing into a Vec cannot fail, and every path comes from a snapshot
        // (absolute, no `..`); an entry the tar crate still refuses is skipped
        // rather than aborting the whole archive.
        let mut items: Vec<(String, &DiffEntry)> = Vec::new();
        for entry in &self.entries {
            match entry.change {
                Change::Added | Change::Modified => {
                    items.push((entry.path.trim_start_matches('/').to_owned(), entry));
                }
                Change::Deleted => {
                    let parent_deleted = parent(&entry.path).is_some_and(|parent| {
                        self.get(parent)
                            .is_some_and(|p| p.change == Change::Deleted)
                    });
                    if !parent_deleted {
                        items.push((whiteout_path(&entry.path), entry));
                    }
                }
            }
        }
        items.sort_by(|a, b| a.0.cmp(&b.0));

        let mut builder = tar::Builder::new(Vec::new());
        for (tar_path, entry) in items {
            let appended = match entry.change {
                Change::Deleted => {
                    let mut header = normalised_header(tar::EntryType::Regular, 0, 0);
                    builder.append_data(&mut header, &tar_path, std::io::empty())
                }
                Change::Added | Change::Modified => append_entry(
                    &mut builder,
                    &tar_path,
                    &entry.entry,
                    self.contents.get(&entry.path).map(Vec::as_slice),
                ),
            };
            if let Err(error) = appended {
                tracing::warn!(path = %entry.path, %error, "a diff entry could not be written to the normalised tar");
            }
        }
        builder.into_inner().unwrap_or_default()
    }

    /// SHA-256 of [`FsDiff::archive`], in lowercase hex.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.archive()))
    }
}

fn append_entry(
    builder: &mut tar::Builder<Vec<u8>>,
    tar_path: &str,
    entry: &FsEntry,
    content: Option<&[u8]>,
) -> std::io::Result<()> {
    match entry.kind {
        EntryKind::File => {
            let content = content.unwrap_or_default();
            let mut header =
                normalised_header(tar::EntryType::Regular, entry.mode, content.len() as u64);
            builder.append_data(&mut header, tar_path, content)
        }
        EntryKind::Dir => {
            let mut header = normalised_header(tar::EntryType::Directory, entry.mode, 0);
            builder.append_data(&mut header, tar_path, std::io::empty())
        }
        EntryKind::Symlink => {
            let mut header = normalised_header(tar::EntryType::Symlink, entry.mode, 0);
            let target = entry.link_target.as_deref().unwrap_or_default();
            builder.append_link(&mut header, tar_path, target)
        }
        EntryKind::Other => {
            // Fifos and devices carry no content; recorded as a fifo with the mode.
            let mut header = normalised_header(tar::EntryType::Fifo, entry.mode, 0);
            builder.append_data(&mut header, tar_path, std::io::empty())
        }
    }
}

fn normalised_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    // new_gnu leaves user and group names empty.
    header
}

fn parent(path: &str) -> Option<&str> {
    let (parent, _) = path.rsplit_once('/')?;
    (!parent.is_empty()).then_some(parent)
}

/// `/workspace/a/b` → `workspace/a/.wh.b`.
fn whiteout_path(path: &str) -> String {
    let relative = path.trim_start_matches('/');
    match relative.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/.wh.{name}"),
        None => format!(".wh.{relative}"),
    }
}

/// One way a diff breaks its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyViolation {
    /// `outside_writable`, `setuid` or `max_changed_bytes`.
    pub rule: &'static str,
    /// The path (empty for `max_changed_bytes`).
    pub path: String,
    /// What is wrong, for people.
    pub detail: String,
}

/// A changed path no writable glob allows.
pub const RULE_OUTSIDE_WRITABLE: &str = "outside_writable";
/// An added or modified file with setuid or setgid while the policy forbids it.
pub const RULE_SETUID: &str = "setuid";
/// The added and modified files add up to more than the policy's cap.
pub const RULE_MAX_CHANGED_BYTES: &str = "max_changed_bytes";

/// Every way `diff` breaks `policy`, in path order (the byte cap last).
pub fn check_policy(diff: &FsDiff, policy: &DiffPolicy) -> Vec<PolicyViolation> {
    let mut violations = Vec::new();
    for entry in &diff.entries {
        if !policy.allows_write(&entry.path) {
            violations.push(PolicyViolation {
                rule: RULE_OUTSIDE_WRITABLE,
                path: entry.path.clone(),
                detail: format!(
                    "{:?} outside the writable globs {}",
                    entry.change,
                    policy.writable.join(", ")
                ),
            });
        }
        let setuid_bits = entry.entry.mode & 0o6000;
        if !policy.allow_setuid
            && entry.change != Change::Deleted
            && entry.entry.kind == EntryKind::File
            && setuid_bits != 0
        {
            violations.push(PolicyViolation {
                rule: RULE_SETUID,
                path: entry.path.clone(),
                detail: format!(
                    "file has mode {:04o} (setuid/setgid) and the policy does not allow_setuid",
                    entry.entry.mode
                ),
            });
        }
    }
    if let Some(max) = policy.max_changed_bytes {
        let written = diff.bytes_written();
        if written > max {
            violations.push(PolicyViolation {
                rule: RULE_MAX_CHANGED_BYTES,
                path: String::new(),
                detail: format!(
                    "added and modified files hold {written} bytes, over the cap of {max}"
                ),
            });
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry and its content.
    type Item = (FsEntry, Option<Vec<u8>>);

    fn file(mode: u32, content: &[u8]) -> Item {
        (
            FsEntry {
                kind: EntryKind::File,
                mode,
                size: content.len() as u64,
                sha256: Some(Sha256::digest(content).into()),
                link_target: None,
            },
            Some(content.to_vec()),
        )
    }

    fn dir(mode: u32) -> Item {
        (
            FsEntry {
                kind: EntryKind::Dir,
                mode,
                size: 0,
                sha256: None,
                link_target: None,
            },
            None,
        )
    }

    fn symlink(target: &str) -> Item {
        (
            FsEntry {
                kind: EntryKind::Symlink,
                mode: 0o777,
                size: 0,
                sha256: None,
                link_target: Some(target.to_owned()),
            },
            None,
        )
    }

    fn snapshot(items: &[(&str, Item)]) -> Snapshot {
        let mut snapshot = Snapshot::new();
        for (path, (entry, content)) in items {
            snapshot.insert(*path, entry.clone(), content.clone());
        }
        snapshot
    }

    /// (path, type, mode, uid, gid, mtime, size, link, content) of each entry.
    type TarRow = (String, u8, u32, u64, u64, u64, u64, Option<String>, Vec<u8>);

    fn tar_rows(bytes: &[u8]) -> Vec<TarRow> {
        let mut archive = tar::Archive::new(bytes);
        let mut rows = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let header = entry.header().clone();
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned());
            let mut content = Vec::new();
            entry.read_to_end(&mut content).expect("content");
            assert!(header.username_bytes().is_none_or(<[u8]>::is_empty));
            assert!(header.groupname_bytes().is_none_or(<[u8]>::is_empty));
            rows.push((
                path,
                header.entry_type().as_byte(),
                header.mode().expect("mode"),
                header.uid().expect("uid"),
                header.gid().expect("gid"),
                header.mtime().expect("mtime"),
                header.size().expect("size"),
                link,
                content,
            ));
        }
        rows
    }

    #[test]
    fn a_snapshot_reads_a_tar_stream() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o40755);
        header.set_size(0);
        builder
            .append_data(&mut header, "workspace/", std::io::empty())
            .expect("dir");
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o104755);
        header.set_size(2);
        header.set_mtime(1234);
        builder
            .append_data(&mut header, "workspace/a", &b"hi"[..])
            .expect("file");
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        builder
            .append_link(&mut header, "workspace/l", "/etc/passwd")
            .expect("link");
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Link);
        header.set_mode(0o644);
        header.set_size(0);
        builder
            .append_link(&mut header, "workspace/h", "workspace/a")
            .expect("hard link");
        let bytes = builder.into_inner().expect("tar");

        let snapshot = Snapshot::from_tar(bytes.as_slice(), true).expect("snapshot");
        let paths: Vec<&str> = snapshot.entries().keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            ["/workspace", "/workspace/a", "/workspace/h", "/workspace/l"]
        );
        assert_eq!(snapshot.get("/workspace").map(|e| e.mode), Some(0o755));
        let a = snapshot.get("/workspace/a").expect("a");
        assert_eq!((a.kind, a.mode, a.size), (EntryKind::File, 0o4755, 2));
        assert_eq!(a.sha256, Some(Sha256::digest(b"hi").into()));
        assert_eq!(snapshot.content("/workspace/a"), Some(&b"hi"[..]));
        let h = snapshot.get("/workspace/h").expect("h");
        assert_eq!(
            (h.kind, h.mode, h.sha256),
            (EntryKind::File, 0o644, a.sha256)
        );
        let l = snapshot.get("/workspace/l").expect("l");
        assert_eq!(l.kind, EntryKind::Symlink);
        assert_eq!(l.link_target.as_deref(), Some("/etc/passwd"));
    }

    #[test]
    fn between_classifies_every_change() {
        let before = snapshot(&[
            ("/workspace", dir(0o755)),
            ("/workspace/same", file(0o644, b"same")),
            ("/workspace/content", file(0o644, b"old")),
            ("/workspace/mode", file(0o644, b"m")),
            ("/workspace/gone", file(0o644, b"bye")),
            ("/workspace/link", symlink("a")),
        ]);
        let after = snapshot(&[
            ("/workspace", dir(0o755)),
            ("/workspace/same", file(0o644, b"same")),
            ("/workspace/content", file(0o644, b"new")),
            ("/workspace/mode", file(0o600, b"m")),
            ("/workspace/new", file(0o644, b"hello")),
            ("/workspace/link", symlink("b")),
        ]);
        let diff = FsDiff::between(&before, &after);
        let changes: Vec<(&str, Change)> = diff
            .entries()
            .iter()
            .map(|e| (e.path.as_str(), e.change))
            .collect();
        assert_eq!(
            changes,
            [
                ("/workspace/content", Change::Modified),
                ("/workspace/gone", Change::Deleted),
                ("/workspace/link", Change::Modified),
                ("/workspace/mode", Change::Modified),
                ("/workspace/new", Change::Added),
            ]
        );
        assert_eq!(diff.bytes_written(), 3 + 1 + 5);
        assert!(FsDiff::between(&after, &after).is_empty());
    }

    #[test]
    fn the_archive_is_normalised_with_whiteouts() {
        let before = snapshot(&[
            ("/workspace", dir(0o755)),
            ("/workspace/old", dir(0o755)),
            ("/workspace/old/inner", file(0o644, b"x")),
            ("/tmp/t", file(0o644, b"t")),
        ]);
        let after = snapshot(&[
            ("/workspace", dir(0o755)),
            ("/workspace/b", file(0o4755, b"bb")),
            ("/workspace/a", symlink("/etc/shadow")),
            ("/workspace/d", dir(0o700)),
        ]);
        let bytes = FsDiff::between(&before, &after).archive();
        let rows = tar_rows(&bytes);
        let summary: Vec<(&str, u8, u32)> = rows.iter().map(|r| (r.0.as_str(), r.1, r.2)).collect();
        assert_eq!(
            summary,
            [
                ("tmp/.wh.t", b'0', 0),
                ("workspace/.wh.old", b'0', 0),
                ("workspace/a", b'2', 0o777),
                ("workspace/b", b'0', 0o4755),
                ("workspace/d", b'5', 0o700),
            ],
            "the inner file of a deleted dir needs no whiteout of its own"
        );
        for row in &rows {
            assert_eq!((row.3, row.4, row.5), (0, 0, 0), "{row:?}");
        }
        assert_eq!(rows[2].7.as_deref(), Some("/etc/shadow"));
        assert_eq!(rows[3].8, b"bb");
    }

    #[test]
    fn the_archive_bytes_depend_only_on_the_changes() {
        let before = snapshot(&[("/workspace", dir(0o755))]);
        // Inserted in another order: same snapshot, same archive.
        let one = snapshot(&[
            ("/workspace", dir(0o755)),
            ("/workspace/x", file(0o644, b"1")),
            ("/workspace/y", file(0o644, b"2")),
        ]);
        let two = snapshot(&[
            ("/workspace/y", file(0o644, b"2")),
            ("/workspace/x", file(0o644, b"1")),
            ("/workspace", dir(0o755)),
        ]);
        let a = FsDiff::between(&before, &one);
        let b = FsDiff::between(&before, &two);
        assert_eq!(a.archive(), b.archive());
        assert_eq!(a.sha256(), b.sha256());
        assert_eq!(a.sha256().len(), 64);
        let other = snapshot(&[
            ("/workspace", dir(0o755)),
            ("/workspace/x", file(0o644, b"1")),
            ("/workspace/y", file(0o644, b"3")),
        ]);
        assert_ne!(a.sha256(), FsDiff::between(&before, &other).sha256());
        let mode = snapshot(&[
            ("/workspace", dir(0o755)),
            ("/workspace/x", file(0o600, b"1")),
            ("/workspace/y", file(0o644, b"2")),
        ]);
        assert_ne!(a.sha256(), FsDiff::between(&before, &mode).sha256());
    }

    #[test]
    fn long_names_and_link_targets_survive_the_archive() {
        let long_dir = "d".repeat(120);
        let long_path = format!("/workspace/{long_dir}/{}", "f".repeat(150));
        let long_target = format!("/{}", "t".repeat(200));
        let after = snapshot(&[
            (long_path.as_str(), file(0o644, b"long")),
            ("/workspace/l", symlink(&long_target)),
        ]);
        let diff = FsDiff::between(&Snapshot::new(), &after);
        let bytes = diff.archive();
        assert_eq!(bytes, diff.archive(), "deterministic");
        let rows = tar_rows(&bytes);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, long_path.trim_start_matches('/'));
        assert_eq!(rows[0].8, b"long");
        assert_eq!(rows[1].7.as_deref(), Some(long_target.as_str()));
        // Read back, the archive is the same snapshot.
        let back = Snapshot::from_tar(bytes.as_slice(), true).expect("read back");
        assert_eq!(back.entries(), after.entries());
    }

    #[test]
    fn whiteout_paths_sit_next_to_the_deleted_name() {
        assert_eq!(whiteout_path("/workspace/a/b"), "workspace/a/.wh.b");
        assert_eq!(whiteout_path("/workspace"), ".wh.workspace");
    }

    #[test]
    fn policy_flags_outside_writes_setuid_and_size() {
        let before = snapshot(&[("/workspace", dir(0o755))]);
        let after = snapshot(&[
            ("/workspace", dir(0o755)),
            ("/workspace/out", dir(0o755)),
            ("/workspace/out/ok", file(0o644, b"12345")),
            ("/workspace/x", file(0o2755, b"123")),
        ]);
        let diff = FsDiff::between(&before, &after);
        let policy = DiffPolicy {
            writable: vec!["/workspace/out/**".to_owned()],
            allow_setuid: false,
            max_changed_bytes: Some(7),
        };
        let violations = check_policy(&diff, &policy);
        let found: Vec<(&str, &str)> = violations
            .iter()
            .map(|v| (v.rule, v.path.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("outside_writable", "/workspace/x"),
                ("setuid", "/workspace/x"),
                ("max_changed_bytes", ""),
            ]
        );
        let lenient = DiffPolicy {
            writable: vec!["/workspace/**".to_owned()],
            allow_setuid: true,
            max_changed_bytes: Some(8),
        };
        assert!(check_policy(&diff, &lenient).is_empty());
    }
}
