//! Approved permissions to jail specs: exactly what was approved.

use amai_jail_spec::{Limits, LlmCreate, LlmMode, LlmSpec, LlmUpstreams, NetworkPolicy};
use amai_manifest::jail::{is_pinned, jail_spec, Confinement, PlanErrorKind};
use amai_manifest::{Manifest, PermissionSet};
use serde_json::json;

use crate::common::{full, with, DIGEST};

fn manifest(permissions: &[&str]) -> Manifest {
    let value = with(full(), "permissions", json!(permissions));
    Manifest::from_json(value.to_string().as_bytes())
        .expect("valid")
        .manifest
}

fn image() -> String {
    format!("ghcr.io/example/summarizer@sha256:{DIGEST}")
}

fn approved(items: &[&str]) -> PermissionSet {
    PermissionSet::parse(items).expect("valid")
}

const ALL: [&str; 9] = [
    "llm:openai",
    "llm:anthropic",
    "network:egress:api.example.com",
    "network:egress:10.0.0.1:8080",
    "fs:write:/workspace/out/**",
    "fs:write:/tmp/cache",
    "messages:send",
    "jail:limits:memory=1GiB",
    "jail:limits:timeout=30m",
];

fn create(upstream: LlmUpstreams) -> Option<LlmSpec> {
    Some(LlmSpec::Create(LlmCreate {
        mode: LlmMode::Record,
        upstream,
        replay_from: None,
    }))
}

#[test]
fn each_approval_gives_exactly_its_jail() {
    let m = manifest(&ALL);
    let defaults = Limits::default();
    type Case = (
        &'static [&'static str],
        &'static str,
        Option<LlmUpstreams>,
        &'static [&'static str],
        Limits,
    );
    let cases: Vec<Case> = vec![
        (&[], "none", None, &[], defaults),
        (&["messages:send"], "none", None, &[], defaults),
        (
            &["llm:openai"],
            "llm-only",
            Some(LlmUpstreams::OpenAi),
            &[],
            defaults,
        ),
        (
            &["llm:anthropic"],
            "llm-only",
            Some(LlmUpstreams::Anthropic),
            &[],
            defaults,
        ),
        (
            &["llm:openai", "llm:anthropic"],
            "llm-only",
            Some(LlmUpstreams::All),
            &[],
            defaults,
        ),
        (
            &["network:egress:api.example.com"],
            "api.example.com:443",
            None,
            &[],
            defaults,
        ),
        (
            &[
                "llm:anthropic",
                "network:egress:api.example.com",
                "network:egress:10.0.0.1:8080",
            ],
            "api.example.com:443,10.0.0.1:8080",
            Some(LlmUpstreams::Anthropic),
            &[],
            defaults,
        ),
        (
            &["fs:write:/workspace/out/**", "fs:write:/tmp/cache"],
            "none",
            None,
            &["/tmp/cache", "/workspace/out/**"],
            defaults,
        ),
        (
            &["jail:limits:memory=1GiB", "jail:limits:timeout=30m"],
            "none",
            None,
            &[],
            Limits {
                memory_bytes: 1 << 30,
                timeout_secs: 1800,
                ..defaults
            },
        ),
    ];
    for (perms, network, llm, writable, limits) in cases {
        let spec = jail_spec(&m, &image(), &approved(perms), Confinement::Normal)
            .unwrap_or_else(|e| panic!("{perms:?}: {e}"));
        let got_network = match &spec.network {
            NetworkPolicy::None => "none".to_owned(),
            NetworkPolicy::LlmOnly => "llm-only".to_owned(),
            NetworkPolicy::Allow(e) => e
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(","),
        };
        assert_eq!(got_network, network, "{perms:?}");
        assert_eq!(spec.llm, llm.and_then(create), "{perms:?}");
        assert_eq!(spec.diff_policy.writable, writable, "{perms:?}");
        assert!(!spec.diff_policy.allow_setuid);
        assert_eq!(spec.limits, limits, "{perms:?}");
        assert_eq!(spec.command, m.entrypoint);
        assert_eq!(spec.image, image());
        assert!(spec.env.is_empty() && spec.files.is_empty());
    }
}

#[test]
fn no_writable_approval_means_every_change_is_a_violation() {
    let m = manifest(&ALL);
    let spec = jail_spec(&m, &image(), &approved(&[]), Confinement::Normal).expect("plans");
    assert!(spec.diff_policy.writable.is_empty());
    assert!(!spec.diff_policy.allows_write("/workspace/x"));
    assert!(!spec.diff_policy.allows_write("/tmp/x"));
}

#[test]
fn manifest_resources_are_not_limits() {
    // The manifest asks for 1.5 CPUs and 64 pids; nothing approved them.
    let m = manifest(&ALL);
    assert_eq!(m.resources.and_then(|r| r.millicpus), Some(1500));
    let spec = jail_spec(&m, &image(), &approved(&[]), Confinement::Normal).expect("plans");
    assert_eq!(spec.limits, Limits::default());
}

#[test]
fn quarantine_removes_network_and_llm() {
    let m = manifest(&ALL);
    let spec = jail_spec(&m, &image(), &approved(&ALL), Confinement::Quarantined).expect("plans");
    assert_eq!(spec.network, NetworkPolicy::None);
    assert_eq!(spec.llm, None);
    assert_eq!(
        spec.diff_policy.writable,
        ["/tmp/cache", "/workspace/out/**"]
    );
    assert_eq!(spec.limits.memory_bytes, 1 << 30);
}

#[test]
fn unapproved_hosts_never_appear() {
    let m = manifest(&ALL);
    let spec = jail_spec(
        &m,
        &image(),
        &approved(&["network:egress:api.example.com"]),
        Confinement::Normal,
    )
    .expect("plans");
    let text = spec.to_json_value().to_string();
    assert!(text.contains("api.example.com:443"));
    assert!(!text.contains("10.0.0.1"), "{text}");
    assert!(spec.llm.is_none());
}

#[test]
fn approval_beyond_the_manifest_and_unpinned_images_are_refused() {
    let m = manifest(&["llm:openai"]);
    let err = jail_spec(
        &m,
        &image(),
        &approved(&["llm:openai", "network:egress:evil.example"]),
        Confinement::Normal,
    )
    .expect_err("not requested");
    assert_eq!(err.kind(), PlanErrorKind::NotRequested);
    assert!(err.to_string().contains("evil.example"));
    for unpinned in [
        "ghcr.io/example/summarizer:1.2.0",
        "busybox",
        "busybox@sha256:abc",
        "sha256:xyz",
    ] {
        let err = jail_spec(&m, unpinned, &approved(&[]), Confinement::Normal).expect_err(unpinned);
        assert_eq!(err.kind(), PlanErrorKind::ImageNotPinned, "{unpinned}");
    }
    assert!(is_pinned(&format!("sha256:{DIGEST}")));
    assert!(is_pinned(&format!("busybox:1@sha256:{DIGEST}")));
}
