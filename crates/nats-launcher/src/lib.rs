//! # amai-nats-launcher
//!
//! The one place that decides which `nats-server` binary Amai runs, shared by
//! `amai up` (its supervised dev server) and `amai-testkit` (test servers), so
//! both always pick the same binary.
//!
//! Resolution order ([`locate`]):
//! 1. an explicit path: the `--nats-server` flag, else `AMAI_NATS_SERVER`
//!    (it must be an executable file; no fallback hides a typo);
//! 2. `nats-server` on `PATH`;
//! 3. `~/.cache/amai/tools/nats-server` (where `scripts/ensure-deps.sh` puts the
//!    official build when the system one is too old);
//! 4. `/usr/sbin/nats-server` (Debian's location, often not on a user's `PATH`).
#![warn(missing_docs)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Environment variable naming the `nats-server` binary.
pub const NATS_SERVER_ENV: &str = "AMAI_NATS_SERVER";

/// Where `scripts/ensure-deps.sh` installs nats-server, relative to `$HOME`.
pub const CACHED_RELATIVE_TO_HOME: &str = ".cache/amai/tools/nats-server";

/// Debian's location of nats-server.
pub const SYSTEM_PATH: &str = "/usr/sbin/nats-server";

/// What the search looks at; [`SearchEnv::from_process`] reads the process's
/// environment, tests build one by hand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchEnv {
    /// `AMAI_NATS_SERVER`.
    pub amai_nats_server: Option<OsString>,
    /// `PATH`.
    pub path: Option<OsString>,
    /// `HOME`.
    pub home: Option<OsString>,
    /// Last-resort locations (default: [`SYSTEM_PATH`]).
    pub system: Vec<PathBuf>,
}

impl SearchEnv {
    /// The environment of this process.
    pub fn from_process() -> Self {
        Self {
            amai_nats_server: std::env::var_os(NATS_SERVER_ENV),
            path: std::env::var_os("PATH"),
            home: std::env::var_os("HOME"),
            system: vec![PathBuf::from(SYSTEM_PATH)],
        }
    }
}

/// Why no binary was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocateError {
    /// The explicitly named path is not an executable file.
    #[error("nats-server {path} (from {source_name}) is not an executable file: point --nats-server / {NATS_SERVER_ENV} at a nats-server (>= 2.10) binary, or run scripts/ensure-deps.sh")]
    NotExecutable {
        /// The path.
        path: PathBuf,
        /// `--nats-server` or `AMAI_NATS_SERVER`.
        source_name: &'static str,
    },
    /// Nothing was found anywhere.
    #[error("nats-server not found on PATH, in ~/{CACHED_RELATIVE_TO_HOME} or in {}: run scripts/ensure-deps.sh (or `make up` / `make test`), or set {NATS_SERVER_ENV}=/path/to/nats-server", .searched_system.join(", "))]
    NotFound {
        /// The last-resort locations searched.
        searched_system: Vec<String>,
    },
}

/// Finds the nats-server binary: `explicit` (the `--nats-server` flag), else
/// `AMAI_NATS_SERVER`, else `PATH`, else `~/.cache/amai/tools`, else the system
/// locations. An empty explicit value counts as unset.
pub fn locate(explicit: Option<&Path>, env: &SearchEnv) -> Result<PathBuf, LocateError> {
    let named = explicit
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| (p.to_path_buf(), "--nats-server"))
        .or_else(|| {
            env.amai_nats_server
                .as_ref()
                .filter(|v| !v.is_empty())
                .map(|v| (PathBuf::from(v), NATS_SERVER_ENV))
        });
    if let Some((path, source_name)) = named {
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(LocateError::NotExecutable { path, source_name })
        };
    }
    let on_path = env
        .path
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"));
    let cached = env
        .home
        .iter()
        .map(|home| PathBuf::from(home).join(CACHED_RELATIVE_TO_HOME));
    on_path
        .chain(cached)
        .chain(env.system.iter().cloned())
        .find(|p| is_executable(p))
        .ok_or_else(|| LocateError::NotFound {
            searched_system: env.system.iter().map(|p| p.display().to_string()).collect(),
        })
}

/// [`locate`] in this process's environment.
pub fn locate_from_process(explicit: Option<&Path>) -> Result<PathBuf, LocateError> {
    locate(explicit, &SearchEnv::from_process())
}

/// Whether `path` is a file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    match std::fs::metadata(path) {
        #[cfg(unix)]
        Ok(meta) => {
            use std::os::unix::fs::PermissionsExt as _;
            meta.is_file() && meta.permissions().mode() & 0o111 != 0
        }
        #[cfg(not(unix))]
        Ok(meta) => meta.is_file(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// Dirs for each location, each with an executable `nats-server`.
    struct Layout {
        _tmp: tempfile::TempDir,
        explicit: PathBuf,
        env_named: PathBuf,
        path_dir: PathBuf,
        home: PathBuf,
        system: PathBuf,
    }

    fn fake(path: &Path) -> PathBuf {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path.to_path_buf()
    }

    fn layout() -> Layout {
        let tmp = tempfile::tempdir().expect("tmp");
        let t = tmp.path();
        Layout {
            explicit: fake(&t.join("flag/nats-server")),
            env_named: fake(&t.join("env/nats-server")),
            path_dir: fake(&t.join("bin/nats-server"))
                .parent()
                .expect("dir")
                .to_path_buf(),
            home: {
                fake(&t.join("home").join(CACHED_RELATIVE_TO_HOME));
                t.join("home")
            },
            system: fake(&t.join("sbin/nats-server")),
            _tmp: tmp,
        }
    }

    fn env(l: &Layout) -> SearchEnv {
        SearchEnv {
            amai_nats_server: Some(l.env_named.clone().into()),
            path: Some(std::env::join_paths([l.path_dir.clone()]).expect("join")),
            home: Some(l.home.clone().into()),
            system: vec![l.system.clone()],
        }
    }

    #[test]
    fn the_order_is_flag_env_path_cache_system() {
        let l = layout();
        let mut e = env(&l);
        assert_eq!(locate(Some(&l.explicit), &e), Ok(l.explicit.clone()));
        assert_eq!(locate(None, &e), Ok(l.env_named.clone()));
        e.amai_nats_server = Some(OsString::new());
        assert_eq!(
            locate(Some(Path::new("")), &e),
            Ok(l.path_dir.join("nats-server"))
        );
        e.path = None;
        assert_eq!(locate(None, &e), Ok(l.home.join(CACHED_RELATIVE_TO_HOME)));
        e.home = None;
        assert_eq!(locate(None, &e), Ok(l.system.clone()));
        e.system.clear();
        assert!(matches!(
            locate(None, &e),
            Err(LocateError::NotFound { .. })
        ));
    }

    #[test]
    fn path_wins_over_the_cache_and_non_executables_are_skipped() {
        let l = layout();
        let mut e = env(&l);
        e.amai_nats_server = None;
        std::fs::set_permissions(
            l.path_dir.join("nats-server"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        assert_eq!(
            locate(None, &e),
            Ok(l.home.join(CACHED_RELATIVE_TO_HOME)),
            "a non-executable on PATH is skipped"
        );
    }

    #[test]
    fn an_explicit_path_that_is_not_executable_is_an_error_not_a_fallback() {
        let l = layout();
        let e = env(&l);
        let missing = l.home.join("nope");
        assert_eq!(
            locate(Some(&missing), &e),
            Err(LocateError::NotExecutable {
                path: missing.clone(),
                source_name: "--nats-server"
            })
        );
        let e = SearchEnv {
            amai_nats_server: Some(missing.clone().into()),
            ..e
        };
        assert!(matches!(
            locate(None, &e),
            Err(LocateError::NotExecutable {
                source_name: NATS_SERVER_ENV,
                ..
            })
        ));
    }
}
