//! The manifest format: good manifests pass the schema and the parser, bad
//! ones fail both, with the parser naming the JSON paths.

use amai_manifest::manifest::{MAX_MANIFEST_BYTES, REGISTRY_DERIVED_REASON};
use amai_manifest::{Manifest, Permission, Source};
use serde_json::{json, Value};

use crate::common::{full, manifest_schema, minimal, schema_errors, with, DIGEST};

fn parse(value: &Value) -> Result<amai_manifest::Parsed, amai_manifest::ManifestErrors> {
    Manifest::from_json(value.to_string().as_bytes())
}

#[test]
fn good_manifests_validate_and_parse() {
    let schema = manifest_schema();
    let mut goods = vec![full(), minimal()];
    goods.extend(
        schema["examples"]
            .as_array()
            .expect("examples")
            .iter()
            .cloned(),
    );
    goods.push(with(minimal(), "source", json!({ "image": "busybox" })));
    goods.push(with(
        minimal(),
        "source",
        json!({ "image": format!("localhost:5000/a/b__c/d-e:v1.0_rc@sha256:{DIGEST}") }),
    ));
    goods.push(with(
        minimal(),
        "permissions",
        json!([
            "network:egress:[2001:db8::1]:8443",
            "network:egress:10.0.0.1",
            "fs:write:/tmp",
            "jail:limits:cpus=0.5",
            "jail:limits:timeout=2h",
            "llm:openai"
        ]),
    ));
    for (i, good) in goods.iter().enumerate() {
        let errors = schema_errors(&schema, good);
        assert!(errors.is_empty(), "good[{i}] fails the schema: {errors:#?}");
        if let Err(e) = parse(good) {
            panic!("good[{i}] fails the parser:\n{e}");
        }
    }
}

#[test]
fn full_manifest_reads_as_written() {
    let m = parse(&full()).expect("valid").manifest;
    assert_eq!(m.id, "com.example.summarizer");
    assert_eq!(m.version, semver::Version::new(1, 2, 0));
    assert_eq!(m.publisher.url.as_deref(), Some("https://example.com"));
    assert!(matches!(m.source, Source::Image(ref i) if i.ends_with(DIGEST)));
    assert_eq!(m.entrypoint, ["python", "-m", "summarizer"]);
    assert!(m.permissions.contains(
        &"network:egress:api.example.com:443"
            .parse::<Permission>()
            .expect("parses")
    ));
    assert_eq!(m.permissions.len(), 5);
    let r = m.resources.expect("resources");
    assert_eq!(r.millicpus, Some(1500));
    assert_eq!(r.memory_bytes, Some(1 << 30));
    assert_eq!(r.timeout_secs, Some(600));
    assert_eq!(m.tools.len(), 1);
    assert_eq!(m.tools[0].name, "summarize");
    let min = parse(&minimal()).expect("valid").manifest;
    assert_eq!(
        min.source,
        Source::Build {
            context: ".".into(),
            dockerfile: "Dockerfile".into()
        }
    );
    assert!(min.permissions.is_empty() && min.tools.is_empty() && min.description.is_empty());
}

#[test]
fn normal_form_parses_back_and_digest_ignores_spelling() {
    for good in [full(), minimal()] {
        let m = parse(&good).expect("valid").manifest;
        let normal = m.to_json_value();
        assert!(schema_errors(&manifest_schema(), &normal).is_empty());
        let again = parse(&normal).expect("normal form parses").manifest;
        assert_eq!(again, m);
        assert_eq!(again.canonical_digest(), m.canonical_digest());
    }
    // Same meaning, different spelling: reordered permissions, default port
    // spelled out, sizes in bytes, keys in another order, whitespace.
    let a = parse(&full()).expect("valid").manifest;
    let mut b = with(
        full(),
        "permissions",
        json!([
            "jail:limits:memory=1073741824",
            "messages:send",
            "fs:write:/workspace/out/**",
            "network:egress:api.example.com:443",
            "llm:anthropic"
        ]),
    );
    b["resources"] =
        json!({ "timeout": 600, "disk": "10MiB", "pids": 64, "memory": 1073741824, "cpus": 1.5 });
    let text = serde_json::to_string_pretty(&b).expect("json");
    let b = Manifest::from_json(text.as_bytes())
        .expect("valid")
        .manifest;
    assert_eq!(a.canonical_digest_hex(), b.canonical_digest_hex());
    // A real change changes the digest.
    let c = parse(&with(full(), "version", json!("1.2.1")))
        .expect("valid")
        .manifest;
    assert_ne!(a.canonical_digest(), c.canonical_digest());
}

#[test]
fn registry_derived_fields_are_stripped_and_reported() {
    let mut smuggled = full();
    for (k, v) in [
        ("verified", json!(true)),
        ("trust_score", json!(0.99)),
        (
            "approved_permissions",
            json!(["llm:openai", "network:egress:evil.example"]),
        ),
        ("signatures", json!([{"sig": "x"}])),
        ("image_digest", json!(format!("sha256:{DIGEST}"))),
        ("publisher_verified", json!(true)),
    ] {
        smuggled[k] = v;
    }
    assert!(schema_errors(&manifest_schema(), &smuggled).is_empty());
    let parsed = parse(&smuggled).expect("still valid");
    let mut paths: Vec<&str> = parsed.ignored.iter().map(|i| i.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "approved_permissions",
            "image_digest",
            "publisher_verified",
            "signatures",
            "trust_score",
            "verified"
        ]
    );
    assert!(parsed
        .ignored
        .iter()
        .all(|i| i.reason == REGISTRY_DERIVED_REASON));
    // Nothing of them reaches the manifest: same digest as without them.
    let clean = parse(&full()).expect("valid").manifest;
    assert_eq!(parsed.manifest, clean);
    let normal = parsed.manifest.to_json_value();
    for k in [
        "verified",
        "trust_score",
        "approved_permissions",
        "signatures",
    ] {
        assert!(normal.get(k).is_none(), "{k} leaked into the normal form");
    }
    // The smuggled approval grants nothing.
    assert!(!parsed
        .manifest
        .permissions
        .iter()
        .any(|p| p.to_string().contains("evil")));
    // Nested, they are plain unknown fields.
    let nested = with(
        full(),
        "publisher",
        json!({ "name": "X", "verified": true }),
    );
    assert_eq!(
        parse(&nested).expect_err("unknown").paths(),
        ["publisher.verified"]
    );
}

/// Bad manifests: each fails the schema and the parser, the parser at the
/// expected paths.
#[test]
fn bad_manifests_fail_schema_and_parser_at_their_paths() {
    let long_name = "x".repeat(129);
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "version 2",
            with(full(), "manifest_version", json!(2)),
            vec!["manifest_version"],
        ),
        ("missing id", with(full(), "id", Value::Null), vec!["id"]),
        (
            "one-label id",
            with(full(), "id", json!("summarizer")),
            vec!["id"],
        ),
        (
            "uppercase id",
            with(full(), "id", json!("com.Example.x")),
            vec!["id"],
        ),
        (
            "id label ends with -",
            with(full(), "id", json!("com.example-.x")),
            vec!["id"],
        ),
        (
            "name too long",
            with(full(), "name", json!(long_name)),
            vec!["name"],
        ),
        (
            "name with control",
            with(full(), "name", json!("a\u{7}b")),
            vec!["name"],
        ),
        (
            "not semver",
            with(full(), "version", json!("1.2")),
            vec!["version"],
        ),
        (
            "leading zero semver",
            with(full(), "version", json!("01.2.3")),
            vec!["version"],
        ),
        (
            "http publisher url",
            with(
                full(),
                "publisher",
                json!({ "name": "X", "url": "http://example.com" }),
            ),
            vec!["publisher.url"],
        ),
        (
            "publisher without name",
            with(full(), "publisher", json!({ "url": "https://example.com" })),
            vec!["publisher.name"],
        ),
        (
            "image and build",
            with(
                full(),
                "source",
                json!({ "image": "busybox", "build": { "context": "." } }),
            ),
            vec!["source"],
        ),
        (
            "absolute build context",
            with(full(), "source", json!({ "build": { "context": "/etc" } })),
            vec!["source.build.context"],
        ),
        (
            "escaping build context",
            with(
                full(),
                "source",
                json!({ "build": { "context": "a/../../b" } }),
            ),
            vec!["source.build.context"],
        ),
        (
            "backslash build context",
            with(full(), "source", json!({ "build": { "context": "..\\x" } })),
            vec!["source.build.context"],
        ),
        (
            "escaping dockerfile",
            with(
                full(),
                "source",
                json!({ "build": { "context": ".", "dockerfile": "../Dockerfile" } }),
            ),
            vec!["source.build.dockerfile"],
        ),
        (
            "uppercase image path",
            with(full(), "source", json!({ "image": "Busybox" })),
            vec!["source.image"],
        ),
        (
            "short digest",
            with(full(), "source", json!({ "image": "busybox@sha256:abc" })),
            vec!["source.image"],
        ),
        (
            "empty entrypoint",
            with(full(), "entrypoint", json!([])),
            vec!["entrypoint"],
        ),
        (
            "shell-form entrypoint",
            with(full(), "entrypoint", json!("python -m x")),
            vec!["entrypoint"],
        ),
        (
            "duplicate permission",
            with(
                full(),
                "permissions",
                json!(["messages:send", "llm:openai", "messages:send"]),
            ),
            vec!["permissions[2]"],
        ),
        (
            "wildcard host",
            with(
                full(),
                "permissions",
                json!(["network:egress:*.example.com"]),
            ),
            vec!["permissions[0]"],
        ),
        (
            "fs write outside roots",
            with(
                full(),
                "permissions",
                json!(["messages:send", "fs:write:/etc/passwd"]),
            ),
            vec!["permissions[1]"],
        ),
        (
            "fs write escaping",
            with(full(), "permissions", json!(["fs:write:/workspace/../etc"])),
            vec!["permissions[0]"],
        ),
        (
            "unknown permission",
            with(full(), "permissions", json!(["root:everything"])),
            vec!["permissions[0]"],
        ),
        (
            "permission trailing junk",
            with(full(), "permissions", json!(["messages:send "])),
            vec!["permissions[0]"],
        ),
        (
            "unknown limit",
            with(full(), "permissions", json!(["jail:limits:gpus=1"])),
            vec!["permissions[0]"],
        ),
        (
            "bad capability",
            with(full(), "capabilities", json!(["Summarize"])),
            vec!["capabilities[0]"],
        ),
        (
            "too many keywords",
            with(
                full(),
                "keywords",
                json!((0..33).map(|i| format!("k{i}")).collect::<Vec<_>>()),
            ),
            vec!["keywords"],
        ),
        (
            "resources cpus zero",
            with(full(), "resources", json!({ "cpus": 0 })),
            vec!["resources.cpus"],
        ),
        (
            "resources unknown key",
            with(full(), "resources", json!({ "gpus": 1 })),
            vec!["resources.gpus"],
        ),
        (
            "tool schema not object",
            with(
                full(),
                "tools",
                json!([{ "name": "t", "description": "d", "inputSchema": { "type": "string" } }]),
            ),
            vec!["tools[0].inputSchema.type"],
        ),
        (
            "tool without inputSchema",
            with(
                full(),
                "tools",
                json!([{ "name": "t", "description": "d" }]),
            ),
            vec!["tools[0].inputSchema"],
        ),
        (
            "tool bad name",
            with(
                full(),
                "tools",
                json!([{ "name": "t/x", "description": "d", "inputSchema": { "type": "object" } }]),
            ),
            vec!["tools[0].name"],
        ),
        (
            "unknown top-level field",
            with(full(), "run_as_root", json!(true)),
            vec!["run_as_root"],
        ),
        ("not an object", json!(["manifest"]), vec![""]),
    ];
    assert!(cases.len() >= 15);
    let schema = manifest_schema();
    for (name, value, paths) in cases {
        let schema_errs = schema_errors(&schema, &value);
        assert!(!schema_errs.is_empty(), "{name}: the schema accepts it");
        let errors = parse(&value).expect_err(name);
        assert_eq!(errors.paths(), paths, "{name}: {errors}");
    }
}

#[test]
fn every_error_is_reported() {
    let mut bad = full();
    bad["id"] = json!("nodots");
    bad["version"] = json!("one");
    bad["permissions"] = json!(["llm:openai", "network:egress:*", "llm:openai"]);
    bad["source"] = json!({ "build": { "context": "../up" } });
    bad["tools"] = json!([
        { "name": "a", "description": "d", "inputSchema": { "type": "object" } },
        { "name": "a", "description": "d", "inputSchema": {} }
    ]);
    bad["extra"] = json!(1);
    let errors = parse(&bad).expect_err("invalid");
    assert_eq!(
        errors.paths(),
        [
            "extra",
            "id",
            "version",
            "source.build.context",
            "permissions[1]",
            "permissions[2]",
            "tools[1].inputSchema.type"
        ],
        "{errors}"
    );
}

#[test]
fn duplicate_keys_size_and_json_errors() {
    let text = r#"{"manifest_version":1,"id":"a.b","id":"c.d","name":"n","version":"1.0.0",
        "publisher":{"name":"p"},"source":{"image":"busybox"},"entrypoint":["x"]}"#;
    assert_eq!(
        Manifest::from_json(text.as_bytes())
            .expect_err("dup")
            .paths(),
        ["id"]
    );
    let mut huge = full();
    huge["description"] = json!("x".repeat(MAX_MANIFEST_BYTES));
    let errors = Manifest::from_json(huge.to_string().as_bytes()).expect_err("too large");
    assert_eq!(errors.paths(), [""]);
    assert!(errors.0[0].message.contains("limit"));
    assert_eq!(
        Manifest::from_json(b"{\"id\": ")
            .expect_err("not json")
            .paths(),
        [""]
    );
}

#[test]
fn tools_are_mcp_tools_and_unique() {
    let tools = json!([
        { "name": "search.web", "description": "Search", "inputSchema": { "type": "object" },
          "outputSchema": { "type": "object", "properties": { "hits": { "type": "array" } } },
          "annotations": { "title": "Web search", "openWorldHint": true } },
        { "name": "search.web", "description": "Again", "inputSchema": { "type": "object" } },
        { "name": "big", "description": "n", "inputSchema": { "type": "object", "maximum": 9007199254740993u64 } },
        { "name": "ann", "description": "n", "inputSchema": { "type": "object" }, "annotations": { "readOnlyHint": "yes" } }
    ]);
    let errors = parse(&with(full(), "tools", tools)).expect_err("invalid");
    assert_eq!(
        errors.paths(),
        [
            "tools[1].name",
            "tools[2].inputSchema.maximum",
            "tools[3].annotations.readOnlyHint"
        ],
        "{errors}"
    );
    let m = parse(&full()).expect("valid").manifest;
    let listed = m.tools[0].to_json_value();
    assert_eq!(
        listed,
        full()["tools"][0],
        "the tools/list JSON is what was declared"
    );
}
