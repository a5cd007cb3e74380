//! Registry indexes: many manifests at once, from a source that is not
//! trusted.
//!
//! An index is a JSON file holding an array of entries or
//! `{"manifests": [...]}`, or a directory of `*.json` files (one entry each,
//! not recursive, symbolic links skipped). An entry is a manifest, or
//! `{"manifest": {...}, ...registry fields...}`: the registry's own fields
//! (downloads, verification, ...) are never imported, only listed. Each
//! entry is parsed on its own, so one bad entry does not sink the others;
//! errors carry the entry's JSON path (`[3].permissions[0]`,
//! `manifests[3].manifest.id`). Ids given by more than one entry are
//! reported. Bounds: [`MAX_INDEX_BYTES`] per file, [`MAX_ENTRIES`] entries,
//! each entry at most [`MAX_MANIFEST_BYTES`].

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::json::{join, parse_with_duplicates};
use crate::manifest::{
    IgnoredField, Manifest, ManifestError, ManifestErrors, Parsed, MAX_MANIFEST_BYTES,
};

/// The largest index file read.
pub const MAX_INDEX_BYTES: u64 = 16 << 20;
/// The most entries an index may hold.
pub const MAX_ENTRIES: usize = 10_000;
/// Why a wrapper's registry fields are not imported.
pub const REGISTRY_FIELD_REASON: &str = "registry field of the index; never imported";

/// What kind of index could not be read at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexErrorKind {
    /// The file or directory could not be read.
    Io,
    /// Over [`MAX_INDEX_BYTES`].
    TooLarge,
    /// Over [`MAX_ENTRIES`].
    TooManyEntries,
    /// Not JSON.
    NotJson,
    /// JSON, but neither an array nor `{"manifests": [...]}`.
    WrongShape,
}

/// An index that could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct IndexError {
    kind: IndexErrorKind,
    path: PathBuf,
    message: String,
}

impl IndexError {
    fn new(kind: IndexErrorKind, path: &Path, message: impl Into<String>) -> Self {
        IndexError {
            kind,
            path: path.to_owned(),
            message: message.into(),
        }
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> IndexErrorKind {
        self.kind
    }

    /// Whether reading again could succeed (only I/O errors are worth it).
    pub fn is_retryable(&self) -> bool {
        self.kind == IndexErrorKind::Io
    }
}

/// An index, entry by entry.
#[derive(Debug, Default)]
pub struct IndexReport {
    /// Every entry, in index order (file-name order for a directory).
    pub entries: Vec<IndexEntry>,
    /// Ids given by more than one valid entry.
    pub duplicate_ids: Vec<DuplicateId>,
}

impl IndexReport {
    /// The valid manifests.
    pub fn manifests(&self) -> impl Iterator<Item = &Manifest> {
        self.entries
            .iter()
            .filter_map(|e| e.result.as_ref().ok().map(|p| &p.manifest))
    }
}

/// One entry of an index.
#[derive(Debug)]
pub struct IndexEntry {
    /// Its JSON path (`[3]`, `manifests[3]`); for a directory, `[i]` in
    /// file-name order.
    pub path: String,
    /// For a directory index, the file.
    pub file: Option<PathBuf>,
    /// The manifest, or every error with paths from the index's root.
    pub result: Result<Parsed, ManifestErrors>,
    /// Registry fields of the entry's wrapper, not imported.
    pub registry_fields: Vec<IgnoredField>,
}

/// An id given by several entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateId {
    /// The id.
    pub id: String,
    /// The entries' paths.
    pub entries: Vec<String>,
}

/// Reads an index file or directory.
pub fn read_index(path: &Path) -> Result<IndexReport, IndexError> {
    let meta =
        fs::metadata(path).map_err(|e| IndexError::new(IndexErrorKind::Io, path, e.to_string()))?;
    let mut report = if meta.is_dir() {
        read_dir_index(path)?
    } else {
        let bytes = read_limited(path, MAX_INDEX_BYTES)?;
        read_file_index(path, &bytes)?
    };
    let mut ids: Vec<(String, Vec<String>)> = Vec::new();
    for entry in &report.entries {
        if let Ok(parsed) = &entry.result {
            match ids.iter_mut().find(|(id, _)| *id == parsed.manifest.id) {
                Some((_, paths)) => paths.push(entry.path.clone()),
                None => ids.push((parsed.manifest.id.clone(), vec![entry.path.clone()])),
            }
        }
    }
    report.duplicate_ids = ids
        .into_iter()
        .filter(|(_, paths)| paths.len() > 1)
        .map(|(id, entries)| DuplicateId { id, entries })
        .collect();
    Ok(report)
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, IndexError> {
    let io = |e: std::io::Error| IndexError::new(IndexErrorKind::Io, path, e.to_string());
    let file = fs::File::open(path).map_err(io)?;
    let too_large = || {
        IndexError::new(
            IndexErrorKind::TooLarge,
            path,
            format!("over the limit of {limit} bytes"),
        )
    };
    if file.metadata().map_err(io)?.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

fn read_file_index(path: &Path, bytes: &[u8]) -> Result<IndexReport, IndexError> {
    let (value, duplicates) = parse_with_duplicates(bytes)
        .map_err(|m| IndexError::new(IndexErrorKind::NotJson, path, m))?;
    let (prefix, items) =
        match &value {
            Value::Array(items) => ("", items),
            Value::Object(map) => match (map.get("manifests"), map.len()) {
                (Some(Value::Array(items)), 1) => ("manifests", items),
                _ => return Err(IndexError::new(
                    IndexErrorKind::WrongShape,
                    path,
                    "an index is an array of manifests or {\"manifests\": [...]} and nothing else",
                )),
            },
            _ => {
                return Err(IndexError::new(
                    IndexErrorKind::WrongShape,
                    path,
                    "an index is an array of manifests or {\"manifests\": [...]}",
                ))
            }
        };
    if items.len() > MAX_ENTRIES {
        return Err(IndexError::new(
            IndexErrorKind::TooManyEntries,
            path,
            format!("{} entries, more than {MAX_ENTRIES}", items.len()),
        ));
    }
    let entries = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let entry_path = format!("{prefix}[{i}]");
            // Keys repeated inside this entry.
            let repeated: Vec<String> = duplicates
                .iter()
                .filter(|d| {
                    d.strip_prefix(&entry_path)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
                })
                .cloned()
                .collect();
            read_entry(entry_path, None, item, repeated)
        })
        .collect();
    Ok(IndexReport {
        entries,
        duplicate_ids: Vec::new(),
    })
}

fn read_dir_index(dir: &Path) -> Result<IndexReport, IndexError> {
    let io = |e: std::io::Error| IndexError::new(IndexErrorKind::Io, dir, e.to_string());
    let mut files: Vec<(String, fs::FileType)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") {
            files.push((name, entry.file_type().map_err(io)?));
            if files.len() > MAX_ENTRIES {
                return Err(IndexError::new(
                    IndexErrorKind::TooManyEntries,
                    dir,
                    format!("more than {MAX_ENTRIES} .json files"),
                ));
            }
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let entries = files
        .into_iter()
        .enumerate()
        .map(|(i, (name, file_type))| {
            let entry_path = format!("[{i}]");
            let file = Some(PathBuf::from(&name));
            let fail = |message: String| IndexEntry {
                path: entry_path.clone(),
                file: file.clone(),
                result: Err(ManifestErrors(vec![ManifestError {
                    path: entry_path.clone(),
                    message,
                }])),
                registry_fields: Vec::new(),
            };
            if !file_type.is_file() {
                return fail("not a regular file (symbolic links are not followed)".into());
            }
            let bytes = match read_limited(&dir.join(&name), MAX_MANIFEST_BYTES as u64) {
                Ok(b) => b,
                Err(e) => return fail(e.message),
            };
            match parse_with_duplicates(&bytes) {
                Ok((value, repeated)) => {
                    let repeated = repeated.iter().map(|d| join(&entry_path, d)).collect();
                    read_entry(entry_path.clone(), file.clone(), &value, repeated)
                }
                Err(m) => fail(m),
            }
        })
        .collect();
    Ok(IndexReport {
        entries,
        duplicate_ids: Vec::new(),
    })
}

/// One entry: a manifest, or `{"manifest": {...}, ...}`.
fn read_entry(
    path: String,
    file: Option<PathBuf>,
    item: &Value,
    repeated: Vec<String>,
) -> IndexEntry {
    let mut registry_fields = Vec::new();
    let (manifest_path, manifest) = match item {
        Value::Object(map)
            if map.contains_key("manifest") && !map.contains_key("manifest_version") =>
        {
            for key in map.keys().filter(|k| *k != "manifest") {
                registry_fields.push(IgnoredField {
                    path: crate::json::field(&path, key),
                    reason: REGISTRY_FIELD_REASON.into(),
                });
            }
            (crate::json::field(&path, "manifest"), &map["manifest"])
        }
        other => (path.clone(), other),
    };
    let mut errors: Vec<ManifestError> = repeated
        .into_iter()
        .map(|p| ManifestError {
            path: p,
            message: "given more than once".into(),
        })
        .collect();
    let size = serde_json::to_vec(manifest).map_or(usize::MAX, |v| v.len());
    if size > MAX_MANIFEST_BYTES {
        errors.push(ManifestError {
            path: manifest_path.clone(),
            message: format!("the manifest is over {MAX_MANIFEST_BYTES} bytes"),
        });
    }
    let result = if errors.is_empty() {
        Manifest::from_value(manifest)
            .map(|mut parsed| {
                for ignored in &mut parsed.ignored {
                    ignored.path = join(&manifest_path, &ignored.path);
                }
                parsed
            })
            .map_err(|ManifestErrors(errs)| {
                ManifestErrors(
                    errs.into_iter()
                        .map(|e| ManifestError {
                            path: join(&manifest_path, &e.path),
                            message: e.message,
                        })
                        .collect(),
                )
            })
    } else {
        // Still report the manifest's own errors alongside.
        if let Err(ManifestErrors(errs)) = Manifest::from_value(manifest) {
            errors.extend(errs.into_iter().map(|e| ManifestError {
                path: join(&manifest_path, &e.path),
                message: e.message,
            }));
        }
        Err(ManifestErrors(errors))
    };
    IndexEntry {
        path,
        file,
        result,
        registry_fields,
    }
}
