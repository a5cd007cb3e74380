//! The python jail image against the real Docker Engine: built once (minutes, as
//! root, with debootstrap and PyPI) or found cached, then run hardened. Also image
//! name resolution. These tests never skip: without an engine they fail, saying
//! what to do.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use amai_jail::{
    build_python, list_images, resolve_image, resolve_image_with, run, BuildPhase, Engine,
    JailLimits, PythonRecipe, ResolveImageErrorKind, RunRequest,
};

async fn engine() -> Engine {
    match Engine::connect().await {
        Ok(engine) => engine,
        Err(error) => panic!("these tests need a Docker Engine: {error}"),
    }
}

#[tokio::test]
async fn python_image_has_the_pinned_sdks_and_is_cached() {
    let engine = engine().await;
    let phases = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let seen = Arc::clone(&phases);
    let image = build_python(&engine, move |phase| {
        eprintln!("python image build: {phase}");
        seen.lock().expect("phases").push(phase);
    })
    .await
    .unwrap_or_else(|error| panic!("the python image builds: {error}"));
    let phases = phases.lock().expect("phases").clone();
    eprintln!(
        "python image {} ({}): {} in {:?}",
        image.reference,
        image.image_id,
        if image.freshly_built {
            "built"
        } else {
            "found"
        },
        started.elapsed()
    );
    if image.freshly_built {
        assert_eq!(
            phases,
            [
                BuildPhase::Debootstrap,
                BuildPhase::Venv,
                BuildPhase::PipInstall,
                BuildPhase::Clean,
                BuildPhase::Tar,
                BuildPhase::Import,
            ]
        );
    } else {
        assert!(
            phases.is_empty(),
            "a cached image has no phases: {phases:?}"
        );
    }
    let recipe = PythonRecipe::for_host().expect("host recipe");
    assert_eq!(image.reference, recipe.reference());

    // Hardened as every jail: read-only root, nobody, no network.
    let request = RunRequest::new(
        format!("test-{}", uuid::Uuid::new_v4()),
        &image.reference,
        [
            "python",
            "-c",
            "import openai, anthropic; print(openai.__version__, anthropic.__version__)",
        ],
    )
    .limits(JailLimits::default());
    let outcome = run(&engine, request).await.expect("run succeeds");
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    assert_eq!(
        String::from_utf8_lossy(&outcome.stdout),
        format!(
            "{} {}\n",
            amai_jail::image::python::PY_OPENAI_VERSION,
            amai_jail::image::python::PY_ANTHROPIC_VERSION
        ),
        "stderr: {}",
        String::from_utf8_lossy(&outcome.stderr)
    );

    // The venv's python is the one on PATH, and the mount points exist.
    let request = RunRequest::new(
        format!("test-{}", uuid::Uuid::new_v4()),
        &image.reference,
        [
            "sh",
            "-c",
            "command -v python; id -u; pwd; touch /workspace/f /tmp/f && echo writable",
        ],
    );
    let outcome = run(&engine, request).await.expect("run succeeds");
    assert_eq!(
        String::from_utf8_lossy(&outcome.stdout),
        "/opt/amai/venv/bin/python\n65534\n/workspace\nwritable\n",
        "{outcome:?}"
    );

    // Built or found, the next call finds the same image without building.
    let again = build_python(&engine, |phase| panic!("no phase when cached: {phase}"))
        .await
        .expect("found");
    assert!(!again.freshly_built);
    assert_eq!(again.reference, image.reference);
    assert_eq!(again.image_id, image.image_id);

    // Resolution names the same image.
    let resolved = resolve_image(&engine, "python").await.expect("resolves");
    assert_eq!(resolved.reference, image.reference);
    assert_eq!(resolved.image_id, image.image_id);

    let listed = list_images(&engine).await.expect("list");
    let entry = listed
        .iter()
        .find(|listed| listed.image_id == image.image_id)
        .unwrap_or_else(|| panic!("{} not listed: {listed:?}", image.reference));
    assert!(entry.references.contains(&image.reference));
    let megabytes = entry.size_bytes / 1_000_000;
    eprintln!("python image size: {megabytes} MB");
    assert!(
        (50..=400).contains(&megabytes),
        "the python image is {megabytes} MB"
    );
}

#[tokio::test]
async fn resolve_busybox_builds_on_demand() {
    let engine = engine().await;
    let resolved = resolve_image(&engine, "busybox").await.expect("busybox");
    assert!(resolved.reference.starts_with("amai/busybox:"));
    assert!(resolved.image_id.starts_with("sha256:"));
    // Any name the engine has resolves to itself.
    let by_tag = resolve_image(&engine, &resolved.reference)
        .await
        .expect("by tag");
    assert_eq!(by_tag.image_id, resolved.image_id);
}

#[tokio::test]
async fn python_of_an_unbuilt_recipe_is_not_built() {
    let engine = engine().await;
    let mut recipe = PythonRecipe::new("bookworm");
    recipe.pip_requirements = vec![format!("openai==0.0.0+never-{}", uuid::Uuid::new_v4())];
    let error = resolve_image_with(&engine, "python", &recipe)
        .await
        .expect_err("no image of a recipe that cannot exist");
    assert_eq!(error.kind(), ResolveImageErrorKind::NotBuilt, "{error}");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn an_unknown_name_is_missing() {
    let engine = engine().await;
    let name = format!("amai-test/no-such-image:{}", uuid::Uuid::new_v4().simple());
    let error = resolve_image(&engine, &name)
        .await
        .expect_err("no such image");
    assert_eq!(error.kind(), ResolveImageErrorKind::Missing, "{error}");
    let error = resolve_image(&engine, "")
        .await
        .expect_err("the empty name");
    assert_eq!(error.kind(), ResolveImageErrorKind::Missing, "{error}");
}
