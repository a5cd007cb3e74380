//! The `python` jail image: a Debian root filesystem with python3 and a venv holding
//! the official `openai` and `anthropic` SDKs, built locally since there is no
//! registry.
//!
//! The build ([`build_python`]) needs root and `debootstrap`, and takes minutes:
//! 1. `debootstrap --variant=minbase --include=python3,python3-venv` of the host's
//!    Debian suite, from the mirror the host's apt is configured with;
//! 2. `python3 -m venv /opt/amai/venv` in a chroot;
//! 3. `pip install --only-binary=:all: openai==… anthropic==…` into the venv, with
//!    the versions pinned in [`PY_OPENAI_VERSION`] and [`PY_ANTHROPIC_VERSION`]
//!    (the same pins as `scripts/ensure-deps.sh`, checked by a test);
//! 4. apt and pip caches, apt lists, logs, man pages and docs (but the copyright
//!    files) removed, `/workspace` and `/tmp`
//!    created as mount points;
//! 5. the root filesystem tarred and imported like `docker import`, with `PATH`
//!    starting at the venv and `WORKDIR /workspace`.
//!
//! The work happens in a directory under `$HOME/.cache/amai/jail/` that is removed
//! afterwards, on failure too (mounts debootstrap left behind are unmounted first);
//! debootstrap keeps its downloaded packages in `$HOME/.cache/amai/jail/debootstrap-debs`.
//! A build took about 3.5 minutes here (debootstrap most of it) for a 230 MB image.
//!
//! Not covered by the digest, so two builds of one tag may differ: the Debian point
//! release of the suite (security updates are not applied) and the versions of the
//! SDKs' dependencies, which pip resolves at build time. The image is tagged `amai/python:<12 hex>`, the start
//! of [`PythonRecipe::digest`], which covers everything that decides what the image
//! holds (suite, architecture, packages, pins, the build script and image changes)
//! but not the mirror it was downloaded from. An image already carrying the tag is
//! returned without building.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::{cache_dir, ImageRef};
use crate::engine::Engine;

/// The repository of the python image.
pub const PYTHON_REPOSITORY: &str = "amai/python";
/// The `openai` SDK version installed in the image (also pinned in
/// `scripts/ensure-deps.sh` as `PY_OPENAI_VERSION`).
pub const PY_OPENAI_VERSION: &str = "3.57.0";
/// The `anthropic` SDK version installed in the image (also pinned in
/// `scripts/ensure-deps.sh` as `PY_ANTHROPIC_VERSION`).
pub const PY_ANTHROPIC_VERSION: &str = "2.16.0";
/// Where the venv lives in the image; its `bin` comes first on `PATH`.
pub const VENV_DIR: &str = "/opt/amai/venv";
/// The Debian packages added to the minbase system.
pub const APT_PACKAGES: &[&str] = &["python3", "python3-venv"];

/// Bumped whenever the recipe changes meaning without changing any hashed text.
const RECIPE_VERSION: &str = "amai-jail python recipe v1";
/// Image config changes applied on import (`docker import --change`).
const IMAGE_CHANGES: &[&str] = &[
    "ENV PATH=/opt/amai/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "ENV PYTHONDONTWRITEBYTECODE=1",
    "WORKDIR /workspace",
    "CMD [\"python3\"]",
];
/// Where the host's CA bundle is copied for pip during the build (removed after).
const BUILD_CA_BUNDLE: &str = "/etc/amai-build-ca.crt";
/// The prefix of the lines the build script prints when a phase starts.
const PHASE_MARKER: &str = "amai-phase: ";

/// The build script, run as root with `bash -c`. Arguments: rootfs, suite, mirror,
/// comma-separated apt packages, venv dir, debootstrap cache dir, output tar, the
/// path in the rootfs for the borrowed CA bundle, then the pip requirements. Its
/// text is part of the recipe digest.
const BUILD_SCRIPT: &str = r#"set -euo pipefail
exec 2>&1
rootfs=$1 suite=$2 mirror=$3 packages=$4 venv=$5 debs=$6 out=$7 ca=$8
shift 8
phase() { echo "amai-phase: $1"; }
in_root() {
    chroot "$rootfs" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 "$@"
}

phase debootstrap
mkdir -p "$debs"
debootstrap --variant=minbase --include="$packages" --cache-dir="$debs" "$suite" "$rootfs" "$mirror"

phase venv
in_root /usr/bin/python3 -m venv "$venv"

phase "pip install"
# pip resolves and downloads from the host's network: its resolver config and the
# host's CA bundle (which may hold a local CA) are lent to the chroot for this step.
cat /etc/resolv.conf > "$rootfs/etc/resolv.conf"
if [ -r "${PIP_CERT:-}" ]; then cat "$PIP_CERT" > "$rootfs$ca"
elif [ -r /etc/ssl/certs/ca-certificates.crt ]; then cat /etc/ssl/certs/ca-certificates.crt > "$rootfs$ca"
else ca=""; fi
pip_env=(PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1)
if [ -n "$ca" ]; then pip_env+=("PIP_CERT=$ca"); fi
for name in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_DEFAULT_TIMEOUT HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
    if [ -n "${!name:-}" ]; then pip_env+=("$name=${!name}"); fi
done
in_root "${pip_env[@]}" "$venv/bin/pip" install --only-binary=:all: "$@"

phase clean
if [ -n "$ca" ]; then rm -f "$rootfs$ca"; fi
: > "$rootfs/etc/resolv.conf"
in_root apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/log/* "$rootfs"/root/.cache "$rootfs"/tmp/* "$rootfs"/var/tmp/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
mkdir -p "$rootfs/workspace" "$rootfs/tmp"
chown 65534:65534 "$rootfs/workspace"
chmod 0755 "$rootfs/workspace"
chmod 1777 "$rootfs/tmp"

phase tar
tar --numeric-owner --one-file-system -C "$rootfs" -cf "$out" \
    --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* .
"#;

/// A phase of the python image build, reported as it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildPhase {
    /// `debootstrap` of the minbase system with python3 (the longest step).
    Debootstrap,
    /// `python3 -m venv` in the chroot.
    Venv,
    /// `pip install` of the pinned SDKs.
    PipInstall,
    /// Removing caches and creating the mount points.
    Clean,
    /// Writing the root filesystem tar.
    Tar,
    /// Importing the tar into the Docker Engine.
    Import,
}

impl BuildPhase {
    /// The phase's name as the CLI prints it (`debootstrap`, `pip install`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debootstrap => "debootstrap",
            Self::Venv => "venv",
            Self::PipInstall => "pip install",
            Self::Clean => "clean",
            Self::Tar => "tar",
            Self::Import => "import",
        }
    }

    fn from_marker(name: &str) -> Option<Self> {
        [
            Self::Debootstrap,
            Self::Venv,
            Self::PipInstall,
            Self::Clean,
            Self::Tar,
            Self::Import,
        ]
        .into_iter()
        .find(|phase| phase.as_str() == name)
    }
}

impl std::fmt::Display for BuildPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that decides what the python image holds; its [`digest`] names the
/// image.
///
/// [`digest`]: PythonRecipe::digest
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonRecipe {
    /// The Debian suite, e.g. `bookworm`.
    pub suite: String,
    /// The CPU architecture (Rust's name, e.g. `x86_64`).
    pub architecture: String,
    /// The Debian packages added to the minbase system.
    pub apt_packages: Vec<String>,
    /// The pip requirements, each pinned (`name==version`).
    pub pip_requirements: Vec<String>,
}

/// Why the host's Debian suite could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum HostSuiteError {
    /// `/etc/os-release` could not be read.
    #[error("cannot read /etc/os-release to learn the host's Debian suite: {0}; the python image is built with debootstrap on a Debian host")]
    OsRelease(#[source] std::io::Error),
    /// `/etc/os-release` names no `VERSION_CODENAME`.
    #[error("/etc/os-release has no VERSION_CODENAME: the python image is built with debootstrap of the host's Debian suite, so build it on a Debian host")]
    NoCodename,
}

impl PythonRecipe {
    /// The recipe for `suite` on this machine's architecture, with the packages and
    /// pins of this crate.
    pub fn new(suite: impl Into<String>) -> Self {
        Self {
            suite: suite.into(),
            architecture: std::env::consts::ARCH.to_owned(),
            apt_packages: APT_PACKAGES.iter().map(|p| (*p).to_owned()).collect(),
            pip_requirements: vec![
                format!("openai=={PY_OPENAI_VERSION}"),
                format!("anthropic=={PY_ANTHROPIC_VERSION}"),
            ],
        }
    }

    /// The recipe for the host's Debian suite (`VERSION_CODENAME` in
    /// `/etc/os-release`).
    pub fn for_host() -> Result<Self, HostSuiteError> {
        let os_release =
            std::fs::read_to_string("/etc/os-release").map_err(HostSuiteError::OsRelease)?;
        let suite = os_release_codename(&os_release).ok_or(HostSuiteError::NoCodename)?;
        Ok(Self::new(suite))
    }

    /// SHA-256 (hex) over the recipe version, suite, architecture, packages,
    /// requirements, venv dir, image changes and build script; not the mirror.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        let mut field = |name: &str, value: &str| {
            // Length-prefixed, so no two different recipes hash the same text.
            for part in [name, value] {
                hasher.update((part.len() as u64).to_be_bytes());
                hasher.update(part.as_bytes());
            }
        };
        field("recipe", RECIPE_VERSION);
        field("suite", &self.suite);
        field("architecture", &self.architecture);
        field("apt", &self.apt_packages.join(","));
        field("pip", &self.pip_requirements.join(" "));
        field("venv", VENV_DIR);
        field("changes", &IMAGE_CHANGES.join("\n"));
        field("script", BUILD_SCRIPT);
        hex::encode(hasher.finalize())
    }

    /// The image tag: the first 12 hex digits of [`PythonRecipe::digest`].
    pub fn tag(&self) -> String {
        self.digest()[..12].to_owned()
    }

    /// `amai/python:<tag>`.
    pub fn reference(&self) -> String {
        format!("{PYTHON_REPOSITORY}:{}", self.tag())
    }
}

fn os_release_codename(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|line| {
        let value = line.strip_prefix("VERSION_CODENAME=")?;
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// Why [`build_python`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildPythonError {
    /// The host's suite is unknown.
    #[error(transparent)]
    HostSuite(#[from] HostSuiteError),
    /// Not running as root.
    #[error("building the python image needs root (debootstrap and chroot), but this process runs as uid {uid}: run `amai jail image build python` as root (e.g. with sudo)")]
    NotRoot {
        /// The effective uid.
        uid: u32,
    },
    /// A tool the build runs is not installed.
    #[error("`{tool}` is not installed (not found on PATH or in /usr/sbin, /sbin): run scripts/ensure-deps.sh jail-images, or apt-get install {package}")]
    MissingTool {
        /// The missing program.
        tool: &'static str,
        /// The Debian package providing it.
        package: &'static str,
    },
    /// The host's apt sources name no mirror for the suite.
    #[error("no Debian mirror for suite {suite} found in /etc/apt/sources.list or /etc/apt/sources.list.d/: add a `deb` source for {suite} (main), or set AMAI_DEBIAN_MIRROR=http://…")]
    NoMirror {
        /// The suite looked for.
        suite: String,
    },
    /// `$HOME` is unset.
    #[error("HOME is not set: cannot place the build directory under $HOME/.cache/amai/jail")]
    NoHome,
    /// The build directory could not be created or read.
    #[error("build directory {path}: {source}")]
    BuildDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A step of the build script failed.
    #[error("the python image build failed during {phase}: {detail} (tracing at debug shows every line of the build)")]
    Step {
        /// The phase that was running.
        phase: BuildPhase,
        /// The exit status and the last lines of output.
        detail: String,
    },
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

/// What kind of failure a [`BuildPythonError`] is, to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildPythonErrorKind {
    /// [`BuildPythonError::HostSuite`].
    HostSuite,
    /// [`BuildPythonError::NotRoot`].
    NotRoot,
    /// [`BuildPythonError::MissingTool`].
    MissingTool,
    /// [`BuildPythonError::NoMirror`].
    NoMirror,
    /// [`BuildPythonError::NoHome`] or [`BuildPythonError::BuildDir`].
    BuildDir,
    /// [`BuildPythonError::Step`].
    Step,
    /// [`BuildPythonError::Import`] or [`BuildPythonError::Inspect`].
    Engine,
}

impl BuildPythonError {
    /// The kind of failure.
    pub fn kind(&self) -> BuildPythonErrorKind {
        match self {
            Self::HostSuite(_) => BuildPythonErrorKind::HostSuite,
            Self::NotRoot { .. } => BuildPythonErrorKind::NotRoot,
            Self::MissingTool { .. } => BuildPythonErrorKind::MissingTool,
            Self::NoMirror { .. } => BuildPythonErrorKind::NoMirror,
            Self::NoHome | Self::BuildDir { .. } => BuildPythonErrorKind::BuildDir,
            Self::Step { .. } => BuildPythonErrorKind::Step,
            Self::Import { .. } | Self::Inspect { .. } => BuildPythonErrorKind::Engine,
        }
    }

    /// Whether trying again unchanged may succeed (network and engine failures);
    /// the other kinds need the host fixed first.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind(),
            BuildPythonErrorKind::Step | BuildPythonErrorKind::Engine
        )
    }
}

/// Builds the python image of the host's recipe ([`PythonRecipe::for_host`]), or
/// returns the image already tagged with it; `progress` hears each phase as it
/// starts. See the module documentation.
pub async fn build_python(
    engine: &Engine,
    progress: impl FnMut(BuildPhase) + Send,
) -> Result<ImageRef, BuildPythonError> {
    let recipe = PythonRecipe::for_host()?;
    build_python_recipe(engine, &recipe, progress).await
}

/// Builds the image of `recipe`, or returns the image already tagged with it.
///
/// Builds in one process are serialized, so concurrent callers build at most once.
pub async fn build_python_recipe(
    engine: &Engine,
    recipe: &PythonRecipe,
    mut progress: impl FnMut(BuildPhase) + Send,
) -> Result<ImageRef, BuildPythonError> {
    static BUILDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _serialized = BUILDING.lock().await;
    let reference = recipe.reference();
    if let Some(image_id) = inspect_id(engine, &reference).await? {
        return Ok(ImageRef {
            reference,
            image_id,
            freshly_built: false,
        });
    }

    preflight(effective_uid(), find_program)?;
    let mirror = host_mirror(&recipe.suite)?;
    let cache = cache_dir().map_err(|_| BuildPythonError::NoHome)?;
    let work = BuildDir::create(&cache).await?;
    let started = Instant::now();
    tracing::info!(reference = %reference, mirror = %mirror, dir = %work.path.display(), "building the python image");
    let result = build_in(
        engine,
        recipe,
        &reference,
        &mirror,
        &cache,
        &work,
        &mut progress,
    )
    .await;
    work.remove().await;
    if result.is_ok() {
        tracing::info!(reference = %reference, elapsed = ?started.elapsed(), "built the python image");
    }
    result
}

async fn build_in(
    engine: &Engine,
    recipe: &PythonRecipe,
    reference: &str,
    mirror: &str,
    cache: &Path,
    work: &BuildDir,
    progress: &mut (impl FnMut(BuildPhase) + Send),
) -> Result<ImageRef, BuildPythonError> {
    let rootfs = work.path.join("rootfs");
    let tar_path = work.path.join("rootfs.tar");
    let debs = cache.join("debootstrap-debs");
    let mut args: Vec<String> = vec![
        "-c".to_owned(),
        BUILD_SCRIPT.to_owned(),
        "amai-python-build".to_owned(),
        rootfs.to_string_lossy().into_owned(),
        recipe.suite.clone(),
        mirror.to_owned(),
        recipe.apt_packages.join(","),
        VENV_DIR.to_owned(),
        debs.to_string_lossy().into_owned(),
        tar_path.to_string_lossy().into_owned(),
        BUILD_CA_BUNDLE.to_owned(),
    ];
    args.extend(recipe.pip_requirements.iter().cloned());
    run_script(&args, &work.path, progress).await?;

    progress(BuildPhase::Import);
    import(engine, reference, &tar_path).await?;
    let image_id =
        inspect_id(engine, reference)
            .await?
            .ok_or_else(|| BuildPythonError::Inspect {
                reference: reference.to_owned(),
                source: bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    message: "the image is missing right after its import".to_owned(),
                },
            })?;
    Ok(ImageRef {
        reference: reference.to_owned(),
        image_id,
        freshly_built: true,
    })
}

/// Runs the build script, streaming its output (stderr folded into stdout) to
/// tracing at debug and its phase markers to `progress`.
async fn run_script(
    args: &[String],
    cwd: &Path,
    progress: &mut (impl FnMut(BuildPhase) + Send),
) -> Result<(), BuildPythonError> {
    const TAIL_LINES: usize = 20;
    let mut phase = BuildPhase::Debootstrap;
    let mut phase_started = Instant::now();
    let step_error = |phase, detail| BuildPythonError::Step { phase, detail };
    let mut child = tokio::process::Command::new("bash")
        .args(args)
        .current_dir(cwd)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| step_error(phase, format!("cannot run bash: {e}")))?;
    let Some(stdout) = child.stdout.take() else {
        return Err(step_error(phase, "bash has no stdout pipe".to_owned()));
    };
    let mut stdout = BufReader::new(stdout);
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match stdout.read_until(b'\n', &mut buffer).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(step_error(phase, format!("reading the build output: {e}"))),
        }
        let line = String::from_utf8_lossy(&buffer);
        let line = line.trim_end();
        if let Some(next) = line
            .strip_prefix(PHASE_MARKER)
            .and_then(BuildPhase::from_marker)
        {
            tracing::info!(finished = %phase, elapsed = ?phase_started.elapsed(), next = %next, "python image build phase");
            phase = next;
            phase_started = Instant::now();
            progress(phase);
            continue;
        }
        tracing::debug!(phase = %phase, "{line}");
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.to_owned());
    }
    let status = child
        .wait()
        .await
        .map_err(|e| step_error(phase, format!("waiting for bash: {e}")))?;
    if status.success() {
        return Ok(());
    }
    let tail: Vec<String> = tail.into();
    Err(step_error(
        phase,
        format!("exited with {status}; last output:\n{}", tail.join("\n")),
    ))
}

/// Streams the tar at `tar_path` into the engine as `reference`.
async fn import(engine: &Engine, reference: &str, tar_path: &Path) -> Result<(), BuildPythonError> {
    let Some((repository, tag)) = reference.rsplit_once(':') else {
        return Err(BuildPythonError::Inspect {
            reference: reference.to_owned(),
            source: bollard::errors::Error::DockerResponseServerError {
                status_code: 400,
                message: "the reference has no tag".to_owned(),
            },
        });
    };
    let file =
        tokio::fs::File::open(tar_path)
            .await
            .map_err(|source| BuildPythonError::BuildDir {
                path: tar_path.to_owned(),
                source,
            })?;
    let chunks = futures::stream::try_unfold(file, |mut file| async move {
        let mut buffer = vec![0_u8; 1 << 20];
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            return Ok(None);
        }
        buffer.truncate(read);
        Ok(Some((bytes::Bytes::from(buffer), file)))
    });
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(repository)
        .tag(tag)
        .changes(IMAGE_CHANGES.iter().map(|c| (*c).to_owned()).collect())
        .build();
    let mut answers =
        engine
            .docker()
            .create_image(Some(options), Some(bollard::body_try_stream(chunks)), None);
    while let Some(item) = answers.next().await {
        let info = item.map_err(|source| BuildPythonError::Import {
            reference: reference.to_owned(),
            source,
        })?;
        tracing::debug!(status = ?info.status, "import");
    }
    Ok(())
}

/// The image id of `reference`, or `None` when the engine has no such image.
async fn inspect_id(engine: &Engine, reference: &str) -> Result<Option<String>, BuildPythonError> {
    match engine.docker().inspect_image(reference).await {
        Ok(image) => Ok(Some(image.id.unwrap_or_default())),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(source) => Err(BuildPythonError::Inspect {
            reference: reference.to_owned(),
            source,
        }),
    }
}

/// The tools the build runs, with the Debian packages providing them.
const TOOLS: &[(&str, &str)] = &[
    ("debootstrap", "debootstrap"),
    ("chroot", "coreutils"),
    ("tar", "tar"),
    ("bash", "bash"),
];

/// Refuses a build that cannot work: not root (`uid`), or a tool `find` cannot find.
fn preflight(
    uid: Option<u32>,
    find: impl Fn(&str) -> Option<PathBuf>,
) -> Result<(), BuildPythonError> {
    if uid != Some(0) {
        return Err(BuildPythonError::NotRoot {
            uid: uid.unwrap_or(u32::MAX),
        });
    }
    match TOOLS.iter().find(|(tool, _)| find(tool).is_none()) {
        Some(&(tool, package)) => Err(BuildPythonError::MissingTool { tool, package }),
        None => Ok(()),
    }
}

/// The effective uid, from `/proc/self/status`.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// `program` on `PATH` or in the sbin directories (often not on a user's `PATH`).
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The mirror for `suite`: `AMAI_DEBIAN_MIRROR`, else the first `deb` source of the
/// host's apt configuration that serves `suite` with component `main`.
fn host_mirror(suite: &str) -> Result<String, BuildPythonError> {
    if let Ok(mirror) = std::env::var("AMAI_DEBIAN_MIRROR") {
        if !mirror.is_empty() {
            return Ok(mirror);
        }
    }
    let mut texts = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(("sources.list".to_owned(), text));
    }
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for path in names {
            let name = path.to_string_lossy().into_owned();
            if name.ends_with(".list") || name.ends_with(".sources") {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    texts.push((name, text));
                }
            }
        }
    }
    texts
        .iter()
        .find_map(|(name, text)| {
            if name.ends_with(".sources") {
                deb822_mirror(text, suite)
            } else {
                one_line_mirror(text, suite)
            }
        })
        .ok_or_else(|| BuildPythonError::NoMirror {
            suite: suite.to_owned(),
        })
}

/// The first `deb URI suite … main …` line of a one-line-style sources list.
fn one_line_mirror(text: &str, suite: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        if words.next()? != "deb" {
            return None;
        }
        let mut word = words.next()?;
        if word.starts_with('[') {
            // Options: `[arch=amd64 signed-by=…]`, possibly several words.
            while !word.ends_with(']') {
                word = words.next()?;
            }
            word = words.next()?;
        }
        let uri = word;
        let line_suite = words.next()?;
        let mut components = words;
        (line_suite == suite && components.any(|c| c == "main")).then(|| uri.to_owned())
    })
}

/// The first URI of a deb822 `.sources` stanza with type `deb`, the suite and
/// component `main`.
fn deb822_mirror(text: &str, suite: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| -> Option<Vec<&str>> {
            stanza
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .find_map(|l| {
                    let (key, value) = l.split_once(':')?;
                    key.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| value.split_whitespace().collect())
                })
        };
        let enabled = field("Enabled").is_none_or(|v| v.first().is_none_or(|e| *e != "no"));
        let serves = enabled
            && field("Types")?.contains(&"deb")
            && field("Suites")?.contains(&suite)
            && field("Components")?.contains(&"main");
        serves.then(|| field("URIs")?.first().map(|u| (*u).to_owned()))?
    })
}

/// A build directory, removed by [`BuildDir::remove`] or, if the build future is
/// dropped, on drop. Mounts left under it (debootstrap mounts `/proc` and `/sys`
/// in the target) are unmounted first; while any remains, nothing is removed.
struct BuildDir {
    path: PathBuf,
    removed: bool,
}

impl BuildDir {
    async fn create(cache: &Path) -> Result<Self, BuildPythonError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path = cache.join(format!("build-python-{}-{nanos:09}", std::process::id()));
        tokio::fs::create_dir_all(&path)
            .await
            .map_err(|source| BuildPythonError::BuildDir {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            path,
            removed: false,
        })
    }

    async fn remove(mut self) {
        self.removed = true;
        let path = self.path.clone();
        let removal = tokio::task::spawn_blocking(move || remove_unmounted(&path)).await;
        if let Err(error) = removal {
            tracing::warn!(%error, dir = %self.path.display(), "removing the build directory panicked");
        }
    }
}

impl Drop for BuildDir {
    fn drop(&mut self) {
        if !self.removed {
            remove_unmounted(&self.path);
        }
    }
}

/// Unmounts what is mounted under `dir`, then removes it (logging failures: a
/// leftover directory is only disk space, a removal through a mount would not be).
fn remove_unmounted(dir: &Path) {
    for mount in mounts_under(dir).into_iter().rev() {
        let unmounted = std::process::Command::new("umount")
            .arg("-l")
            .arg(&mount)
            .status();
        tracing::debug!(mount = %mount.display(), ?unmounted, "unmounting a leftover mount");
    }
    let left = mounts_under(dir);
    if !left.is_empty() {
        tracing::warn!(dir = %dir.display(), mounts = ?left, "mounts remain under the build directory: not removing it");
        return;
    }
    if let Err(error) = std::fs::remove_dir_all(dir) {
        tracing::warn!(%error, dir = %dir.display(), "cannot remove the build directory");
    }
}

/// Mount points at or under `dir`, in mount order.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mountinfo
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(|point| PathBuf::from(point.replace("\\040", " ")))
        .filter(|point| point.starts_with(dir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_stable_and_the_tag_is_its_start() {
        let recipe = PythonRecipe::new("bookworm");
        assert_eq!(recipe.digest(), PythonRecipe::new("bookworm").digest());
        assert_eq!(recipe.digest().len(), 64);
        assert_eq!(recipe.tag(), recipe.digest()[..12]);
        assert_eq!(recipe.reference(), format!("amai/python:{}", recipe.tag()));
    }

    #[test]
    fn digest_changes_with_every_input() {
        let base = PythonRecipe::new("bookworm");
        let mut changed = Vec::new();
        changed.push(PythonRecipe::new("trixie"));
        let mut other = base.clone();
        other.architecture = "aarch64".to_owned();
        changed.push(other);
        let mut other = base.clone();
        other.apt_packages.push("ca-certificates".to_owned());
        changed.push(other);
        let mut other = base.clone();
        other.pip_requirements[0] = "openai==3.57.1".to_owned();
        changed.push(other);
        let mut other = base.clone();
        other.pip_requirements[1] = "anthropic==2.16.1".to_owned();
        changed.push(other);
        // Moving a word between two fields is a different recipe.
        let mut other = base.clone();
        other.apt_packages = vec!["python3".to_owned()];
        other.pip_requirements.insert(0, "python3-venv".to_owned());
        changed.push(other);
        for recipe in &changed {
            assert_ne!(base.digest(), recipe.digest(), "{recipe:?}");
        }
    }

    #[test]
    fn the_pins_are_the_ones_of_ensure_deps() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ensure-deps.sh");
        let text = std::fs::read_to_string(&script).expect("read scripts/ensure-deps.sh");
        let pin = |name: &str| -> String {
            let prefix = format!("{name}=");
            let values: Vec<&str> = text
                .lines()
                .filter_map(|line| line.strip_prefix(prefix.as_str()))
                .collect();
            assert_eq!(
                values.len(),
                1,
                "{name} assigned once in {}",
                script.display()
            );
            values[0].trim().to_owned()
        };
        assert_eq!(pin("PY_OPENAI_VERSION"), PY_OPENAI_VERSION);
        assert_eq!(pin("PY_ANTHROPIC_VERSION"), PY_ANTHROPIC_VERSION);
        let recipe = PythonRecipe::new("bookworm");
        assert!(recipe
            .pip_requirements
            .contains(&format!("openai=={PY_OPENAI_VERSION}")));
        assert!(recipe
            .pip_requirements
            .contains(&format!("anthropic=={PY_ANTHROPIC_VERSION}")));
    }

    #[test]
    fn the_build_script_announces_every_phase_but_import() {
        for phase in [
            BuildPhase::Debootstrap,
            BuildPhase::Venv,
            BuildPhase::PipInstall,
            BuildPhase::Clean,
            BuildPhase::Tar,
        ] {
            let marker = if phase.as_str().contains(' ') {
                format!("phase \"{phase}\"")
            } else {
                format!("phase {phase}")
            };
            assert!(BUILD_SCRIPT.contains(&marker), "{marker}");
            assert_eq!(BuildPhase::from_marker(phase.as_str()), Some(phase));
        }
        assert!(BUILD_SCRIPT.contains(PHASE_MARKER.trim_end()));
    }

    #[test]
    fn codename_comes_from_os_release() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_CODENAME=bookworm\n";
        assert_eq!(os_release_codename(text).as_deref(), Some("bookworm"));
        assert_eq!(os_release_codename("ID=alpine\n"), None);
    }

    #[test]
    fn mirrors_are_read_from_both_source_formats() {
        let deb822 = "Types: deb\n# http://snapshot.debian.org/archive/debian/x\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n";
        assert_eq!(
            deb822_mirror(deb822, "bookworm").as_deref(),
            Some("http://deb.debian.org/debian")
        );
        assert_eq!(deb822_mirror(deb822, "trixie"), None);
        let disabled =
            "Enabled: no\nTypes: deb\nURIs: http://a/debian\nSuites: bookworm\nComponents: main\n";
        assert_eq!(deb822_mirror(disabled, "bookworm"), None);
        let list = "# comment\ndeb-src http://src/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm main contrib\n";
        assert_eq!(
            one_line_mirror(list, "bookworm").as_deref(),
            Some("http://m/debian")
        );
        assert_eq!(
            one_line_mirror("deb http://m/debian bookworm contrib\n", "bookworm"),
            None
        );
    }

    #[test]
    fn preflight_needs_root_and_every_tool() {
        let everywhere = |tool: &str| Some(PathBuf::from("/usr/sbin").join(tool));
        assert!(preflight(Some(0), everywhere).is_ok());
        let error = preflight(Some(1000), everywhere).expect_err("not root");
        assert_eq!(error.kind(), BuildPythonErrorKind::NotRoot);
        assert!(!error.is_retryable());
        let error = preflight(None, everywhere).expect_err("uid unknown");
        assert_eq!(error.kind(), BuildPythonErrorKind::NotRoot);
        let no_debootstrap = |tool: &str| (tool != "debootstrap").then(|| PathBuf::from(tool));
        let error = preflight(Some(0), no_debootstrap).expect_err("no debootstrap");
        assert_eq!(error.kind(), BuildPythonErrorKind::MissingTool);
        let message = error.to_string();
        assert!(message.contains("debootstrap"), "{message}");
        assert!(
            message.contains("scripts/ensure-deps.sh jail-images"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_build_dir_is_removed_explicitly_or_on_drop() {
        let parent =
            std::env::temp_dir().join(format!("amai-jail-build-dir-test-{}", std::process::id()));
        let dir = BuildDir::create(&parent).await.expect("create");
        let path = dir.path.clone();
        std::fs::create_dir_all(path.join("rootfs/etc")).expect("mkdir");
        std::fs::write(path.join("rootfs/etc/passwd"), "x").expect("write");
        dir.remove().await;
        assert!(!path.exists(), "{} left", path.display());

        let dir = BuildDir::create(&parent).await.expect("create");
        let path = dir.path.clone();
        drop(dir);
        assert!(!path.exists(), "{} left after drop", path.display());
        std::fs::remove_dir_all(&parent).expect("remove the test parent");
    }

    #[test]
    fn mounts_under_an_unmounted_dir_are_none() {
        let dir = std::env::temp_dir().join("amai-jail-no-mounts-here");
        assert!(mounts_under(&dir).is_empty());
    }
}
