//! The permission taxonomy: canonical round trips, refusals an attacker
//! would try, and approval that can only narrow.

use amai_manifest::{approve, ApprovalErrorKind, Permission, PermissionErrorKind, PermissionSet};

fn canon(text: &str) -> String {
    text.parse::<Permission>()
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .to_string()
}

#[test]
fn canonical_round_trip() {
    let cases = [
        ("llm:openai", "llm:openai"),
        ("llm:anthropic", "llm:anthropic"),
        (
            "network:egress:API.Example.COM",
            "network:egress:api.example.com:443",
        ),
        (
            "network:egress:api.example.com:8443",
            "network:egress:api.example.com:8443",
        ),
        ("network:egress:10.1.2.3", "network:egress:10.1.2.3:443"),
        (
            "network:egress:[2001:DB8::1]",
            "network:egress:[2001:db8::1]:443",
        ),
        ("network:egress:[::1]:80", "network:egress:[::1]:80"),
        (
            "network:egress:xn--bcher-kva.example",
            "network:egress:xn--bcher-kva.example:443",
        ),
        ("fs:write:/workspace/out/**", "fs:write:/workspace/out/**"),
        ("fs:write:/tmp", "fs:write:/tmp"),
        ("fs:write:/tmp/*.log", "fs:write:/tmp/*.log"),
        ("messages:send", "messages:send"),
        ("jail:limits:cpus=2", "jail:limits:cpus=2"),
        ("jail:limits:cpus=0.250", "jail:limits:cpus=0.25"),
        ("jail:limits:memory=1073741824", "jail:limits:memory=1GiB"),
        ("jail:limits:memory=512M", "jail:limits:memory=512MiB"),
        (
            "jail:limits:disk=1000000000",
            "jail:limits:disk=1000000000B",
        ),
        ("jail:limits:pids=128", "jail:limits:pids=128"),
        ("jail:limits:timeout=90", "jail:limits:timeout=90s"),
        ("jail:limits:timeout=3600", "jail:limits:timeout=1h"),
        ("jail:limits:timeout=120s", "jail:limits:timeout=2m"),
    ];
    for (input, expected) in cases {
        let c = canon(input);
        assert_eq!(c, expected, "{input}");
        assert_eq!(canon(&c), c, "canonical form of {input} is stable");
    }
}

#[test]
fn refusals_name_the_problem() {
    use PermissionErrorKind as K;
    let cases: [(&str, K); 31] = [
        ("network:egress:*", K::Wildcard),
        ("network:egress:*.example.com", K::Wildcard),
        ("network:egress:api.*.com:443", K::Wildcard),
        ("network:egress:api?.example.com", K::Wildcard),
        ("network:egress:", K::BadEndpoint),
        ("network:egress:example.com:0", K::BadEndpoint),
        ("network:egress:example.com:65536", K::BadEndpoint),
        ("network:egress:example.com:0443", K::BadEndpoint),
        ("network:egress:example.com:443/path", K::BadEndpoint),
        ("network:egress:example.com:443:1", K::BadEndpoint),
        ("network:egress:2001:db8::1", K::BadEndpoint),
        ("network:egress:bücher.example", K::BadEndpoint),
        ("network:egress:example.com.", K::BadEndpoint),
        ("network:egress:user@example.com", K::BadEndpoint),
        ("network:egress:999.1.1.1", K::BadEndpoint),
        ("network:egress:[::1]x", K::BadEndpoint),
        ("fs:write:/etc/passwd", K::BadPath),
        ("fs:write:workspace/x", K::BadPath),
        ("fs:write:/workspace/../etc", K::BadPath),
        ("fs:write:/workspacex", K::BadPath),
        ("fs:write:/*/x", K::BadPath),
        ("fs:write:/", K::BadPath),
        ("jail:limits:cpus=65", K::BadLimit),
        ("jail:limits:cpus=0", K::BadLimit),
        ("jail:limits:cpus=1e3", K::BadLimit),
        ("jail:limits:pids=40000", K::BadLimit),
        ("jail:limits:timeout=25h", K::BadLimit),
        ("jail:limits:memory=1KiB", K::BadLimit),
        ("jail:limits:memory", K::BadLimit),
        ("llm:OpenAI", K::Unknown),
        ("messages:send\n", K::Unknown),
    ];
    for (input, kind) in cases {
        let err = input.parse::<Permission>().expect_err(input);
        assert_eq!(err.kind(), kind, "{input}: {err}");
        assert!(!err.to_string().is_empty());
    }
    let wildcard = "network:egress:*.example.com"
        .parse::<Permission>()
        .expect_err("wildcard");
    assert!(wildcard.to_string().contains("wildcard"), "{wildcard}");
    for junk in [
        "messages:send:extra",
        "messages:sendx",
        " llm:openai",
        "llm:openai ",
        "LLM:openai",
        "network:ingress:example.com",
        "fs:read:/workspace",
        "",
        "llm:",
        "messages:send\u{200b}",
    ] {
        assert!(junk.parse::<Permission>().is_err(), "{junk:?} parsed");
    }
    let unknown = "root:all".parse::<Permission>().expect_err("unknown");
    assert!(
        unknown.to_string().contains("messages:send"),
        "lists what is allowed: {unknown}"
    );
}

fn set(items: &[&str]) -> PermissionSet {
    PermissionSet::parse(items).expect("valid permissions")
}

#[test]
fn sets_are_sorted_unique_and_compare() {
    let a = set(&[
        "messages:send",
        "llm:openai",
        "network:egress:B.example",
        "network:egress:b.example:443",
    ]);
    assert_eq!(a.len(), 3, "the two egress spellings are one permission");
    assert_eq!(
        a.to_strings(),
        [
            "llm:openai",
            "network:egress:b.example:443",
            "messages:send"
        ]
    );
    let b = set(&["llm:openai"]);
    assert!(b.is_subset_of(&a));
    assert!(!a.is_subset_of(&b));
    assert_eq!(
        a.difference(&b).to_strings(),
        ["network:egress:b.example:443", "messages:send"]
    );
    assert_eq!(a.iter().count(), 3);
}

#[test]
fn approval_only_narrows() {
    let requested = set(&[
        "llm:openai",
        "network:egress:api.example.com",
        "jail:limits:memory=1GiB",
    ]);
    let ok = approve(&requested, &["network:egress:API.example.com:443".into()]).expect("subset");
    assert_eq!(ok.to_strings(), ["network:egress:api.example.com:443"]);
    assert!(approve(&requested, &[]).expect("empty").is_empty());

    let err = approve(
        &requested,
        &[
            "llm:openai".into(),
            "llm:anthropic".into(),
            "network:egress:api.example.com:8443".into(),
            "jail:limits:memory=2GiB".into(),
        ],
    )
    .expect_err("more than requested");
    assert_eq!(err.kind(), ApprovalErrorKind::NotRequested);
    let amai_manifest::ApprovalError::NotRequested { permissions } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        permissions,
        &[
            "llm:anthropic",
            "network:egress:api.example.com:8443",
            "jail:limits:memory=2GiB"
        ]
    );
    let invalid = approve(
        &requested,
        &["llm:openai".into(), "network:egress:*".into()],
    )
    .expect_err("invalid");
    assert_eq!(invalid.kind(), ApprovalErrorKind::Invalid);
    assert!(invalid.to_string().starts_with("approved[1]"), "{invalid}");
}
