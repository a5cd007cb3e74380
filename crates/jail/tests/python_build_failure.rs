//! A python image build that fails reports its phase and leaves no build directory
//! behind. A separate test binary, since it points `HOME` (where the build directory
//! goes) and `AMAI_DEBIAN_MIRROR` elsewhere for the process. No traffic leaves the
//! machine: debootstrap refuses the unknown suite before downloading, and the mirror
//! is a closed local port anyway.

use amai_jail::{build_python_recipe, BuildPhase, BuildPythonError, Engine, PythonRecipe};

#[tokio::test]
async fn a_failed_build_names_its_phase_and_removes_its_directory() {
    let home = std::env::temp_dir().join(format!(
        "amai-jail-build-failure-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&home).expect("temp HOME");
    std::env::set_var("HOME", &home);
    std::env::set_var("AMAI_DEBIAN_MIRROR", "http://127.0.0.1:9/debian");
    let engine = match Engine::connect().await {
        Ok(engine) => engine,
        Err(error) => panic!("this test needs a Docker Engine: {error}"),
    };
    let recipe = PythonRecipe::new(format!(
        "amai-no-such-suite-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let mut phases = Vec::new();
    let error = build_python_recipe(&engine, &recipe, |phase| phases.push(phase))
        .await
        .expect_err("no suite of that name");
    let root = std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(2) == Some("0"));
    if root {
        match &error {
            BuildPythonError::Step { phase, detail } => {
                assert_eq!(*phase, BuildPhase::Debootstrap, "{error}");
                assert!(detail.contains("No such script"), "{error}");
            }
            other => panic!("expected a failed debootstrap step: {other}"),
        }
        assert!(error.is_retryable());
        assert_eq!(phases, [BuildPhase::Debootstrap]);
    } else {
        assert_eq!(
            error.kind(),
            amai_jail::BuildPythonErrorKind::NotRoot,
            "{error}"
        );
    }
    let jail_cache = home.join(".cache/amai/jail");
    let left: Vec<String> = std::fs::read_dir(&jail_cache)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("build-python-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "build directories left: {left:?}");
    std::fs::remove_dir_all(&home).expect("remove the temp HOME");
}
