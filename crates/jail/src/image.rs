//! The busybox image jails run in, built locally since there is no registry.
//!
//! The busybox binary comes from Debian's `busybox-static` package: `apt-get
//! download busybox-static` into `$HOME/.cache/amai/jail/`, then `dpkg-deb -x`
//! (no root needed, the host's `/bin` stays untouched). The extracted binary is
//! kept at `$HOME/.cache/amai/jail/busybox-static/bin/busybox` and reused.
//!
//! The root filesystem is a tar built here (the `tar` crate): `/bin/busybox`,
//! `/bin/sh` and every applet of `busybox --list` as symlinks to it, `/etc/passwd`
//! and `/etc/group` with `root` and `nobody` (65534), `/tmp` and `/workspace`. It is
//! imported like `docker import` and tagged `amai/busybox:<12 hex>`, the first 12
//! hex digits of SHA-256 over the busybox binary and the layout description; an
//! image already carrying that tag is reused.
//!
//! Submodules: [`python`] builds the python image (debootstrap, a venv with the
//! pinned SDKs); [`resolve`] turns an image name into an image the engine has and
//! lists Amai's images.

use std::path::{Path, PathBuf};

use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::engine::Engine;

pub mod python;
pub mod resolve;

/// The repository of the busybox image.
pub const BUSYBOX_REPOSITORY: &str = "amai/busybox";
/// The Debian package the busybox binary comes from.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";

/// Bumped whenever the layout below changes meaning without changing its text.
const LAYOUT_VERSION: &str = "amai-jail busybox layout v1";
const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";
/// Image config changes applied on import (`docker import --change`).
const IMAGE_CHANGES: &[&str] = &["ENV PATH=/bin", "WORKDIR /workspace", "CMD [\"/bin/sh\"]"];

/// A local image a jail can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `repository:tag`, e.g. `amai/busybox:0123456789ab`.
    pub reference: String,
    /// The engine's image id (`sha256:…`).
    pub image_id: String,
    /// Whether this call imported it (false: an image with the tag was reused).
    pub freshly_built: bool,
}

/// Why [`build_busybox`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildImageError {
    /// `$HOME` is unset, so there is no cache directory.
    #[error("HOME is not set: cannot place the busybox cache under $HOME/.cache/amai/jail")]
    NoHome,
    /// The `busybox-static` package could not be fetched or unpacked.
    #[error("cannot get the busybox binary from the Debian package {BUSYBOX_PACKAGE} ({step}): {detail}; install apt-get and dpkg-deb and make sure `apt-get download {BUSYBOX_PACKAGE}` works (apt-get update)")]
    Package {
        /// The step that failed.
        step: &'static str,
        /// What it said.
        detail: String,
    },
    /// Reading or running the extracted busybox binary failed.
    #[error("busybox binary {path}: {detail}")]
    Busybox {
        /// The binary.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// Writing the root filesystem tar failed.
    #[error("building the busybox root filesystem tar failed: {0}")]
    Tar(#[source] std::io::Error),
    /// The engine refused the import.
    #[error("importing {reference} into the Docker Engine failed: {source}")]
    Import {
        /// The tag being imported.
        reference: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
    /// The image could not be inspected (before or after the import).
    #[error("inspecting image {reference} failed: {source}")]
    Inspect {
        /// The tag inspected.
        reference: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
}

/// Builds (or reuses) the busybox image; see the module documentation.
///
/// Builds in one process are serialized, so concurrent callers import at most once.
pub async fn build_busybox(engine: &Engine) -> Result<ImageRef, BuildImageError> {
    static BUILDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _serialized = BUILDING.lock().await;
    let busybox_path = ensure_busybox_binary().await?;
    let busybox = tokio::fs::read(&busybox_path)
        .await
        .map_err(|e| BuildImageError::Busybox {
            path: busybox_path.clone(),
            detail: format!("cannot read: {e}"),
        })?;
    let applets = list_applets(&busybox_path).await?;
    let layout = layout_description(&applets);
    let tag = recipe_tag(&busybox, &layout);
    let reference = format!("{BUSYBOX_REPOSITORY}:{tag}");

    match engine.docker().inspect_image(&reference).await {
        Ok(image) => {
            return Ok(ImageRef {
                image_id: image.id.unwrap_or_default(),
                reference,
                freshly_built: false,
            })
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(source) => return Err(BuildImageError::Inspect { reference, source }),
    }

    let rootfs = rootfs_tar(&busybox, &applets).map_err(BuildImageError::Tar)?;
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(BUSYBOX_REPOSITORY)
        .tag(&tag)
        .changes(IMAGE_CHANGES.iter().map(|c| (*c).to_owned()).collect())
        .build();
    let mut progress =
        engine
            .docker()
            .create_image(Some(options), Some(bollard::body_full(rootfs.into())), None);
    while let Some(item) = progress.next().await {
        item.map_err(|source| BuildImageError::Import {
            reference: reference.clone(),
            source,
        })?;
    }
    let image = engine
        .docker()
        .inspect_image(&reference)
        .await
        .map_err(|source| BuildImageError::Inspect {
            reference: reference.clone(),
            source,
        })?;
    Ok(ImageRef {
        image_id: image.id.unwrap_or_default(),
        reference,
        freshly_built: true,
    })
}

/// The 12 hex digits of SHA-256 over the busybox binary and the layout description.
pub fn recipe_tag(busybox: &[u8], layout_description: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update((busybox.len() as u64).to_be_bytes());
    hasher.update(busybox);
    hasher.update(layout_description.as_bytes());
    let digest = hex::encode(hasher.finalize());
    digest[..12].to_owned()
}

/// A text naming everything the rootfs holds besides the binary itself.
fn layout_description(applets: &[String]) -> String {
    let mut description = format!(
        "{LAYOUT_VERSION}\ndirs: /bin /etc /tmp(1777) /workspace(65534:65534 0755) /proc /sys /dev /root\n\
         /bin/busybox 0755\n/bin/sh -> busybox\n/etc/passwd:\n{PASSWD}/etc/group:\n{GROUP}changes: {}\napplets:",
        IMAGE_CHANGES.join("; ")
    );
    for applet in applets {
        description.push(' ');
        description.push_str(applet);
    }
    description.push('\n');
    description
}

fn cache_dir() -> Result<PathBuf, BuildImageError> {
    let home = std::env::var_os("HOME").ok_or(BuildImageError::NoHome)?;
    Ok(PathBuf::from(home).join(".cache/amai/jail"))
}

/// The extracted busybox binary, fetching and unpacking the package when absent.
async fn ensure_busybox_binary() -> Result<PathBuf, BuildImageError> {
    let cache = cache_dir()?;
    let binary = cache.join("busybox-static/bin/busybox");
    if tokio::fs::metadata(&binary).await.is_ok() {
        return Ok(binary);
    }
    let package_error =
        |step: &'static str| move |detail: String| BuildImageError::Package { step, detail };
    // A private download directory so concurrent builders do not trip over each
    // other; the final rename is atomic.
    let work = cache.join(format!("download-{}", std::process::id()));
    tokio::fs::create_dir_all(&work).await.map_err(|e| {
        package_error("creating the cache directory")(format!("{}: {e}", work.display()))
    })?;
    run_tool(&work, "apt-get", &["download", BUSYBOX_PACKAGE])
        .await
        .map_err(package_error("apt-get download"))?;
    let deb = find_deb(&work)
        .await
        .map_err(package_error("finding the downloaded .deb"))?;
    let extracted = work.join("root");
    let deb_arg = deb.to_string_lossy().into_owned();
    let extracted_arg = extracted.to_string_lossy().into_owned();
    run_tool(&work, "dpkg-deb", &["-x", &deb_arg, &extracted_arg])
        .await
        .map_err(package_error("dpkg-deb -x"))?;
    let unpacked = extracted.join("bin/busybox");
    if tokio::fs::metadata(&unpacked).await.is_err() {
        return Err(package_error("locating bin/busybox in the package")(
            format!("{} is missing", unpacked.display()),
        ));
    }
    let final_dir = cache.join("busybox-static/bin");
    tokio::fs::create_dir_all(&final_dir)
        .await
        .map_err(|e| package_error("creating the cache directory")(e.to_string()))?;
    tokio::fs::rename(&unpacked, &binary)
        .await
        .map_err(|e| package_error("moving the binary into the cache")(e.to_string()))?;
    // Best effort: the download directory is only scratch.
    let _ = tokio::fs::remove_dir_all(&work).await;
    Ok(binary)
}

async fn run_tool(cwd: &Path, program: &str, args: &[&str]) -> Result<String, String> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .await
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{program} {} exited with {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn find_deb(dir: &Path) -> Result<PathBuf, String> {
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    while let Some(entry) = entries.next_entry().await.map_err(|e| e.to_string())? {
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "deb") {
            return Ok(path);
        }
    }
    Err(format!("no .deb in {}", dir.display()))
}

/// `busybox --list`, sorted, without `busybox` and `sh` (placed explicitly).
async fn list_applets(busybox: &Path) -> Result<Vec<String>, BuildImageError> {
    let cwd = busybox.parent().unwrap_or(Path::new("/"));
    let listing = run_tool(cwd, &busybox.to_string_lossy(), &["--list"])
        .await
        .map_err(|detail| BuildImageError::Busybox {
            path: busybox.to_owned(),
            detail,
        })?;
    let mut applets: Vec<String> = listing
        .lines()
        .map(str::trim)
        .filter(|name| {
            !name.is_empty()
                && *name != "busybox"
                && *name != "sh"
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '['))
        })
        .map(str::to_owned)
        .collect();
    applets.sort();
    applets.dedup();
    Ok(applets)
}

/// The root filesystem as an uncompressed tar, deterministic (mtime 0).
fn rootfs_tar(busybox: &[u8], applets: &[String]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let dirs: [(&str, u32, u64); 8] = [
        ("bin", 0o755, 0),
        ("etc", 0o755, 0),
        ("tmp", 0o1777, 0),
        ("workspace", 0o755, 65534),
        ("proc", 0o555, 0),
        ("sys", 0o555, 0),
        ("dev", 0o755, 0),
        ("root", 0o700, 0),
    ];
    for (path, mode, owner) in dirs {
        let mut header = tar_header(tar::EntryType::Directory, mode, owner, 0);
        builder.append_data(&mut header, path, std::io::empty())?;
    }
    let mut header = tar_header(tar::EntryType::Regular, 0o755, 0, busybox.len() as u64);
    builder.append_data(&mut header, "bin/busybox", busybox)?;
    for (path, text) in [("etc/passwd", PASSWD), ("etc/group", GROUP)] {
        let mut header = tar_header(tar::EntryType::Regular, 0o644, 0, text.len() as u64);
        builder.append_data(&mut header, path, text.as_bytes())?;
    }
    for applet in std::iter::once("sh").chain(applets.iter().map(String::as_str)) {
        let mut header = tar_header(tar::EntryType::Symlink, 0o777, 0, 0);
        builder.append_link(&mut header, format!("bin/{applet}"), "busybox")?;
    }
    builder.into_inner()
}

fn tar_header(kind: tar::EntryType, mode: u32, owner: u64, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(owner);
    header.set_gid(owner);
    header.set_mtime(0);
    header.set_size(size);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_tag_is_twelve_hex_and_depends_on_both_inputs() {
        let tag = recipe_tag(b"bin", "layout");
        assert_eq!(tag.len(), 12);
        assert!(tag.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(tag, recipe_tag(b"bin2", "layout"));
        assert_ne!(tag, recipe_tag(b"bin", "layout2"));
    }

    #[test]
    fn rootfs_holds_the_layout() {
        let applets = vec!["ls".to_owned(), "id".to_owned()];
        let tar_bytes = rootfs_tar(b"\x7fELF", &applets).expect("tar");
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut paths = Vec::new();
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            paths.push(entry.path().expect("path").to_string_lossy().into_owned());
        }
        for expected in [
            "bin/busybox",
            "bin/sh",
            "bin/ls",
            "bin/id",
            "etc/passwd",
            "etc/group",
            "tmp",
            "workspace",
        ] {
            assert!(
                paths.iter().any(|p| p.trim_end_matches('/') == expected),
                "{expected} missing from {paths:?}"
            );
        }
    }
}
