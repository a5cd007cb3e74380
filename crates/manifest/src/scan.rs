//! Discovery of manifests without running anything.
//!
//! [`scan`] walks a directory tree and reads every file named
//! [`MANIFEST_FILE_NAME`]. It only reads: nothing is executed or built, no
//! symbolic link is followed (each one met is reported in
//! [`ScanReport::skipped`]), and the walk is bounded: [`MAX_DEPTH`]
//! directory levels, [`MAX_VISITED`] entries visited, manifests over
//! [`MAX_MANIFEST_BYTES`] skipped unread. A manifest with a build source is
//! checked against the disk: its context must exist, be a directory, and
//! resolve (symbolic links included) inside the manifest's directory; its
//! Dockerfile must not resolve outside the context.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::manifest::{
    IgnoredField, Manifest, ManifestError, ManifestErrors, Source, MAX_MANIFEST_BYTES,
};

/// The file name scans look for.
pub const MANIFEST_FILE_NAME: &str = "amai-manifest.json";
/// The deepest directory level visited (the root is level 0).
pub const MAX_DEPTH: usize = 32;
/// The most directory entries visited in one scan; past it the report is
/// [`ScanReport::truncated`].
pub const MAX_VISITED: usize = 10_000;

/// What a scan found.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Manifests, valid or not, in walk order (sorted by path within each
    /// directory).
    pub entries: Vec<ScanEntry>,
    /// What was not looked into, and why.
    pub skipped: Vec<Skipped>,
    /// Whether the walk stopped at [`MAX_VISITED`].
    pub truncated: bool,
}

impl ScanReport {
    /// The valid manifests.
    pub fn found(&self) -> impl Iterator<Item = &Found> {
        self.entries.iter().filter_map(|e| match e {
            ScanEntry::Found(f) => Some(f.as_ref()),
            ScanEntry::Invalid { .. } => None,
        })
    }

    /// The invalid manifests, with their errors.
    pub fn invalid(&self) -> impl Iterator<Item = (&Path, &ManifestErrors)> {
        self.entries.iter().filter_map(|e| match e {
            ScanEntry::Invalid { path, errors } => Some((path.as_path(), errors)),
            ScanEntry::Found(_) => None,
        })
    }
}

/// One manifest file.
#[derive(Debug)]
pub enum ScanEntry {
    /// A valid manifest.
    Found(Box<Found>),
    /// A manifest that does not parse or whose build paths are wrong.
    Invalid {
        /// Relative to the root.
        path: PathBuf,
        /// Every error, with JSON paths.
        errors: ManifestErrors,
    },
}

/// A valid manifest found by a scan.
#[derive(Debug)]
pub struct Found {
    /// Relative to the root.
    pub path: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
    /// Registry-derived fields it declared (dropped).
    pub ignored: Vec<IgnoredField>,
    /// Whether its build context exists (false for an image source).
    pub build_context_exists: bool,
    /// Whether its Dockerfile exists (false for an image source).
    pub dockerfile_exists: bool,
}

/// Why a path was not looked into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A symbolic link (never followed).
    Symlink,
    /// A manifest over the size limit.
    TooLarge(u64),
    /// Deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Not a regular file or directory (socket, FIFO, device).
    NotRegular,
    /// An I/O error.
    Io(String),
}

/// A path a scan did not look into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Relative to the root.
    pub path: PathBuf,
    /// Why.
    pub reason: SkipReason,
}

/// Scans `root` for manifests. Never fails: problems are in the report.
pub fn scan(root: &Path) -> ScanReport {
    let mut report = ScanReport::default();
    let mut visited = 0usize;
    // Depth-first, directories in sorted order, without recursion.
    let mut stack: Vec<(PathBuf, usize)> = vec![(PathBuf::new(), 0)];
    while let Some((rel, depth)) = stack.pop() {
        let dir = root.join(&rel);
        let mut children: Vec<(String, fs::FileType)> = match fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(|e| match e {
                    Ok(e) => e
                        .file_type()
                        .ok()
                        .map(|t| (e.file_name().to_string_lossy().into_owned(), t)),
                    Err(_) => None,
                })
                .collect(),
            Err(e) => {
                report.skipped.push(Skipped {
                    path: rel.clone(),
                    reason: SkipReason::Io(e.to_string()),
                });
                continue;
            }
        };
        children.sort_by(|a, b| a.0.cmp(&b.0));
        let mut subdirs = Vec::new();
        for (name, file_type) in children {
            visited += 1;
            if visited > MAX_VISITED {
                report.truncated = true;
                return report;
            }
            let child = rel.join(&name);
            // `DirEntry::file_type` does not follow symbolic links.
            if file_type.is_symlink() {
                report.skipped.push(Skipped {
                    path: child,
                    reason: SkipReason::Symlink,
                });
            } else if file_type.is_dir() {
                if depth + 1 > MAX_DEPTH {
                    report.skipped.push(Skipped {
                        path: child,
                        reason: SkipReason::TooDeep,
                    });
                } else {
                    subdirs.push(child);
                }
            } else if name == MANIFEST_FILE_NAME {
                if file_type.is_file() {
                    read_manifest(root, child, &mut report);
                } else {
                    report.skipped.push(Skipped {
                        path: child,
                        reason: SkipReason::NotRegular,
                    });
                }
            }
        }
        for sub in subdirs.into_iter().rev() {
            stack.push((sub, depth + 1));
        }
    }
    report
}

fn read_manifest(root: &Path, rel: PathBuf, report: &mut ScanReport) {
    let path = root.join(&rel);
    let bytes = match read_limited(&path) {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(size)) => {
            report.skipped.push(Skipped {
                path: rel,
                reason: SkipReason::TooLarge(size),
            });
            return;
        }
        Err(e) => {
            report.skipped.push(Skipped {
                path: rel,
                reason: SkipReason::Io(e.to_string()),
            });
            return;
        }
    };
    let parsed = match Manifest::from_json(&bytes) {
        Ok(p) => p,
        Err(errors) => {
            report
                .entries
                .push(ScanEntry::Invalid { path: rel, errors });
            return;
        }
    };
    let dir = path.parent().unwrap_or(root);
    let (build_context_exists, dockerfile_exists) = match &parsed.manifest.source {
        Source::Image(_) => (false, false),
        Source::Build {
            context,
            dockerfile,
        } => match check_build(dir, context, dockerfile) {
            Ok(dockerfile_exists) => (true, dockerfile_exists),
            Err(error) => {
                report.entries.push(ScanEntry::Invalid {
                    path: rel,
                    errors: ManifestErrors(vec![error]),
                });
                return;
            }
        },
    };
    report.entries.push(ScanEntry::Found(Box::new(Found {
        path: rel,
        manifest: parsed.manifest,
        ignored: parsed.ignored,
        build_context_exists,
        dockerfile_exists,
    })));
}

/// Reads at most [`MAX_MANIFEST_BYTES`]; `Ok(Err(size))` when larger.
fn read_limited(path: &Path) -> std::io::Result<Result<Vec<u8>, u64>> {
    let file = fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size > MAX_MANIFEST_BYTES as u64 {
        return Ok(Err(size));
    }
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Ok(Err(bytes.len() as u64));
    }
    Ok(Ok(bytes))
}

/// Checks a build source on disk: the context must resolve to a directory
/// inside `dir`, the Dockerfile (if present) inside the context. Returns
/// whether the Dockerfile exists. Resolving reads links; it follows none
/// into a walk and runs nothing.
fn check_build(dir: &Path, context: &str, dockerfile: &str) -> Result<bool, ManifestError> {
    let error = |path: &str, message: String| ManifestError {
        path: path.into(),
        message,
    };
    let base = fs::canonicalize(dir).map_err(|e| {
        error(
            "source.build.context",
            format!("the manifest's directory cannot be resolved: {e}"),
        )
    })?;
    let context_path = dir.join(context);
    let resolved = match fs::canonicalize(&context_path) {
        Ok(p) => p,
        Err(_) if fs::symlink_metadata(&context_path).is_ok() => {
            return Err(error(
                "source.build.context",
                format!("{context:?} is a dangling symbolic link"),
            ))
        }
        Err(_) => {
            return Err(error(
                "source.build.context",
                format!("{context:?} does not exist in the manifest's directory"),
            ))
        }
    };
    if !resolved.starts_with(&base) {
        return Err(error(
            "source.build.context",
            format!(
                "{context:?} resolves outside the manifest's directory (through a symbolic link)"
            ),
        ));
    }
    if !resolved.is_dir() {
        return Err(error(
            "source.build.context",
            format!("{context:?} is not a directory"),
        ));
    }
    let dockerfile_path = resolved.join(dockerfile);
    if fs::symlink_metadata(&dockerfile_path).is_err() {
        return Ok(false);
    }
    match fs::canonicalize(&dockerfile_path) {
        Ok(p) if p.starts_with(&resolved) => Ok(p.is_file()),
        Ok(_) => Err(error(
            "source.build.dockerfile",
            format!("{dockerfile:?} resolves outside the build context (through a symbolic link)"),
        )),
        Err(_) => Err(error(
            "source.build.dockerfile",
            format!("{dockerfile:?} is a dangling symbolic link"),
        )),
    }
}
