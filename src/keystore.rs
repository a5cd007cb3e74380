//! The key files of a deployment run by `amai up`, under `<data_dir>/keys`
//! (directory mode 0700, files mode 0600):
//!
//! - `operator.json` — the deployment's first operator, its trust root;
//! - `service-<key>.json` — one service identity per worker role (the key
//!   name each role declares, see [`service_key_names`]), endorsed by the operator.
//!
//! Keys are generated on first use and loaded afterwards. If two processes race to
//! create the same key, the loser loads the winner's file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use amai_bus::keys::KeyFileError;
use amai_bus::IdentityKeys;
use anyhow::{bail, Context as _};

/// The service keys a deployment may hold: the one each registered role
/// declares, and the gateway's.
pub(crate) fn service_key_names() -> Vec<&'static str> {
    let mut names = amai_workers::roles::service_keys();
    names.push("gateway");
    names
}

/// The key directory of a data dir.
#[derive(Debug, Clone)]
pub(crate) struct Keystore {
    dir: PathBuf,
}

impl Keystore {
    /// Opens (creating if needed) `<data_dir>/keys` with mode 0700, tightening
    /// the mode of an existing directory that is more open.
    pub(crate) fn open(data_dir: &Path) -> anyhow::Result<Keystore> {
        let dir = data_dir.join("keys");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create key directory {}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&dir)
                .with_context(|| format!("cannot read key directory {}", dir.display()))?
                .permissions()
                .mode()
                & 0o777;
            if mode != 0o700 {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| {
                        format!("cannot set mode 0700 on key directory {}", dir.display())
                    })?;
            }
        }
        Ok(Keystore { dir })
    }

    /// Path of the operator key file.
    pub(crate) fn operator_path(&self) -> PathBuf {
        operator_path(&self.dir)
    }

    /// Path of a role's service key file; fails for a name not in [`service_key_names`].
    pub(crate) fn service_path(&self, role: &str) -> anyhow::Result<PathBuf> {
        let known = service_key_names();
        if !known.contains(&role) {
            bail!(
                "unknown service role {role:?} (expected one of {})",
                known.join(", ")
            );
        }
        Ok(self.dir.join(format!("service-{role}.json")))
    }

    /// The operator keys (the trust root), generated on first use.
    pub(crate) fn operator(&self) -> anyhow::Result<IdentityKeys> {
        let path = self.operator_path();
        let existed = path.exists();
        let keys = load_or_create(&path)?;
        if !existed {
            tracing::warn!(
                path = %path.display(),
                trust_root = %hex::encode(keys.public_key().as_bytes()),
                "generated a new operator key: it is the trust root of this deployment; \
                 every other process must use the same one (copy the file, or pass --trust-root)"
            );
        }
        Ok(keys)
    }

    /// A role's service keys, generated on first use.
    pub(crate) fn service(&self, role: &str) -> anyhow::Result<IdentityKeys> {
        load_or_create(&self.service_path(role)?)
    }
}

fn operator_path(keys_dir: &Path) -> PathBuf {
    keys_dir.join("operator.json")
}

/// Where `amai up` keeps the operator key of `data_dir` (for messages).
pub(crate) fn operator_key_path(data_dir: &Path) -> PathBuf {
    operator_path(&data_dir.join("keys"))
}

/// The operator's public key if `data_dir` holds it, without creating anything
/// (for client commands run next to `amai up`).
pub(crate) fn existing_operator_key(
    data_dir: &Path,
) -> anyhow::Result<Option<ed25519_dalek::VerifyingKey>> {
    let path = operator_path(&data_dir.join("keys"));
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(IdentityKeys::load(&path)?.public_key()))
}

/// `IdentityKeys::load_or_generate`, tolerating a concurrent creator: when our
/// `save` loses the race (the file appeared meanwhile), load theirs, retrying
/// briefly while they finish writing it.
fn load_or_create(path: &Path) -> anyhow::Result<IdentityKeys> {
    warn_if_open(path);
    if path.exists() {
        // Possibly created a moment ago by a concurrent opener still writing it.
        return load_written(path);
    }
    let keys = IdentityKeys::generate();
    match keys.save(path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), identity = %keys.identity_id(), "generated key");
            Ok(keys)
        }
        Err(KeyFileError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::AlreadyExists =>
        {
            load_written(path)
        }
        Err(e) => Err(anyhow::Error::new(e).context("cannot save a new key")),
    }
}

/// Loads a key file another opener may still be writing (it is created
/// exclusively, then written): retries briefly while it does not parse yet.
fn load_written(path: &Path) -> anyhow::Result<IdentityKeys> {
    let mut attempt = 0;
    loop {
        match IdentityKeys::load(path) {
            Ok(keys) => return Ok(keys),
            Err(e) if attempt < 25 => {
                tracing::debug!(error = %e, "key file being written by another process; retrying");
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Warns when a key file can be read by others than its owner.
fn warn_if_open(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "key file is readable by others; chmod 600 it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn creates_private_files_and_reloads_the_same_keys() {
        let data = tempfile::tempdir().expect("tempdir");
        let ks = Keystore::open(data.path()).expect("open");
        assert_eq!(mode(&data.path().join("keys")), 0o700);
        let operator = ks.operator().expect("operator");
        let names = service_key_names();
        let services: Vec<_> = names
            .iter()
            .map(|r| ks.service(r).expect("service"))
            .collect();

        assert_eq!(mode(&ks.operator_path()), 0o600);
        for role in names.iter().copied() {
            let path = data
                .path()
                .join("keys")
                .join(format!("service-{role}.json"));
            assert_eq!(ks.service_path(role).expect("path"), path);
            assert_eq!(mode(&path), 0o600, "{role}");
        }

        let again = Keystore::open(data.path()).expect("reopen");
        assert_eq!(
            again.operator().expect("operator").public_key(),
            operator.public_key()
        );
        for (role, keys) in names.iter().zip(&services) {
            assert_eq!(
                again.service(role).expect("service").public_key(),
                keys.public_key(),
                "{role}"
            );
        }
        let distinct: std::collections::HashSet<_> =
            services.iter().map(|k| k.public_key().to_bytes()).collect();
        assert_eq!(distinct.len(), names.len(), "every role has its own key");
    }

    #[test]
    fn tightens_an_open_key_dir() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = data.path().join("keys");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Keystore::open(data.path()).expect("open");
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn unknown_roles_are_rejected() {
        let data = tempfile::tempdir().expect("tempdir");
        let ks = Keystore::open(data.path()).expect("open");
        for role in ["", "../operator", "operator", "Trust"] {
            assert!(ks.service(role).is_err(), "{role:?}");
        }
    }

    #[test]
    fn concurrent_opens_agree_on_one_key() {
        let data = tempfile::tempdir().expect("tempdir");
        let keys: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        Keystore::open(data.path())
                            .and_then(|ks| ks.operator())
                            .expect("operator")
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("join").public_key())
                .collect()
        });
        assert!(
            keys.windows(2).all(|w| w[0] == w[1]),
            "all openers see the same operator key"
        );
    }
}
