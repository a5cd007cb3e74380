use serde_json::{json, Value};

use super::parse::{
    DIFF_POLICY_FIELDS, FILE_FIELDS, LIMIT_FIELDS, LLM_CREATE_FIELDS, LLM_FIELDS, NETWORK_FIELDS,
    SPEC_FIELDS,
};
use super::*;

const SESSION: &str = "0123456789abcdef0123456789abcdef";
const OTHER_SESSION: &str = "fedcba9876543210fedcba9876543210";

/// Specs the parser accepts; the schema test checks them too.
fn accepted_examples() -> Vec<Value> {
    vec![
        json!({"image": "busybox", "command": ["true"]}),
        json!({
            "image": "python",
            "command": ["python3", "/workspace/agent.py", ""],
            "env": {"PYTHONUNBUFFERED": "1", "_X": "", "A1": "b=c"},
            "files": [
                {"path": "/workspace/agent.py", "content": "print('hi')\n", "mode": "0755"},
                {"path": "/tmp/data.bin", "content_base64": "AAEC/w==", "mode": 384},
                {"path": "/workspace/dir/x", "content": ""}
            ],
            "workdir": "/workspace/dir",
            "limits": {"cpus": 0.25, "memory": "256MiB", "pids": 64, "disk": "64M", "timeout": "5m", "output": 1024},
            "network": "llm-only",
            "llm": {"create": {"mode": "record", "upstream": "openai"}},
            "diff_policy": {"writable": ["/workspace/**", "/tmp/*.log"], "allow_setuid": true, "max_changed_bytes": "10 MB"}
        }),
        json!({
            "image": "registry.local:5000/team/agent@sha256:abc",
            "command": ["/bin/agent"],
            "network": {"allow": ["Example.COM:443", "10.0.0.1:80", "[::1]:8080"]},
            "llm": {"session": SESSION}
        }),
        json!({
            "image": "busybox",
            "command": ["sh"],
            "llm": {"create": {"mode": "replay", "replay_from": SESSION}},
            "limits": {"timeout": 86400, "memory": 8388608}
        }),
        json!({"image": "busybox", "command": ["sh"], "network": {"allow": []}, "diff_policy": {"writable": []}, "workdir": "/"}),
    ]
}

fn parse(value: Value) -> Result<JailSpec, SpecErrors> {
    JailSpec::from_json(value.to_string().as_bytes())
}

fn ok(value: Value) -> JailSpec {
    match parse(value) {
        Ok(spec) => spec,
        Err(errors) => panic!("refused:\n{errors}"),
    }
}

/// The errors of a spec the parser must refuse, as displayed lines.
fn errors(value: Value) -> Vec<String> {
    match parse(value) {
        Ok(spec) => panic!("accepted: {spec:?}"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

/// A minimal valid spec with `extra` merged in at the top level.
fn with(extra: Value) -> Value {
    let mut spec = json!({"image": "busybox", "command": ["true"]});
    for (k, v) in extra.as_object().expect("object") {
        spec[k] = v.clone();
    }
    spec
}

fn one_error(extra: Value) -> String {
    let errors = errors(with(extra));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().expect("one")
}

#[test]
fn every_example_parses() {
    for example in accepted_examples() {
        ok(example);
    }
}

#[test]
fn defaults_are_filled_in() {
    let spec = ok(json!({"image": "busybox", "command": ["true"]}));
    assert_eq!(spec.workdir, "/workspace");
    assert!(spec.env.is_empty());
    assert!(spec.files.is_empty());
    assert_eq!(spec.network, NetworkPolicy::None);
    assert_eq!(spec.llm, None);
    assert_eq!(
        spec.limits,
        Limits {
            millicpus: 1000,
            memory_bytes: 512 << 20,
            pids: 256,
            disk_bytes: 256 << 20,
            timeout_secs: 300,
            output_bytes: 16 << 20,
        }
    );
    assert_eq!(spec.limits.cpus(), 1.0);
    assert_eq!(spec.limits.nano_cpus(), 1_000_000_000);
    assert_eq!(spec.limits.timeout(), std::time::Duration::from_secs(300));
    assert_eq!(spec.diff_policy.writable, vec!["/tmp/**", "/workspace/**"]);
    assert!(!spec.diff_policy.allow_setuid);
    assert_eq!(spec.diff_policy.max_changed_bytes, None);
}

#[test]
fn the_full_example_is_read_as_written() {
    let spec = ok(accepted_examples()[1].clone());
    assert_eq!(spec.image, "python");
    assert_eq!(spec.command, vec!["python3", "/workspace/agent.py", ""]);
    assert_eq!(spec.env["A1"], "b=c");
    let paths: Vec<&str> = spec.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["/tmp/data.bin", "/workspace/agent.py", "/workspace/dir/x"]
    );
    assert_eq!(spec.files[0].content, vec![0, 1, 2, 255]);
    assert_eq!(spec.files[0].mode, 0o600);
    assert_eq!(spec.files[1].content, b"print('hi')\n");
    assert_eq!(spec.files[1].mode, 0o755);
    assert_eq!(spec.files[2].mode, DEFAULT_FILE_MODE);
    assert_eq!(spec.workdir, "/workspace/dir");
    assert_eq!(
        spec.limits,
        Limits {
            millicpus: 250,
            memory_bytes: 256 << 20,
            pids: 64,
            disk_bytes: 64 << 20,
            timeout_secs: 300,
            output_bytes: 1024,
        }
    );
    assert_eq!(spec.network, NetworkPolicy::LlmOnly);
    assert_eq!(
        spec.llm,
        Some(LlmSpec::Create(LlmCreate {
            mode: LlmMode::Record,
            upstream: LlmUpstreams::OpenAi,
            replay_from: None
        }))
    );
    assert!(spec.diff_policy.allow_setuid);
    assert_eq!(spec.diff_policy.max_changed_bytes, Some(10_000_000));
}

#[test]
fn unknown_fields_are_refused_everywhere_with_their_paths() {
    let errors = errors(json!({
        "image": "busybox",
        "command": ["true"],
        "imgae": "x",
        "odd key": 1,
        "files": [{"path": "/tmp/a", "content": "", "owner": 0}],
        "limits": {"cpu": 1},
        "network": {"allow": [], "deny": []},
        "llm": {"create": {"mode": "record", "model": "x"}},
        "diff_policy": {"writeable": []}
    }));
    assert_eq!(
        errors,
        vec![
            "imgae: unknown field (expected one of: image, command, env, files, workdir, limits, network, llm, diff_policy)",
            "[\"odd key\"]: unknown field (expected one of: image, command, env, files, workdir, limits, network, llm, diff_policy)",
            "files[0].owner: unknown field (expected one of: path, content, content_base64, mode)",
            "limits.cpu: unknown field (expected one of: cpus, memory, pids, disk, timeout, output)",
            "llm.create.model: unknown field (expected one of: mode, upstream, replay_from)",
            "network.deny: unknown field (expected one of: allow)",
            "diff_policy.writeable: unknown field (expected one of: writable, allow_setuid, max_changed_bytes)",
        ]
    );
}

#[test]
fn every_error_is_reported_not_only_the_first() {
    let errors = errors(json!({
        "command": [],
        "env": {"lower": "x", "AMAI_KEY": "y"},
        "files": [
            {"path": "/workspace/ok", "content": "x"},
            {"path": "relative", "content": "x"},
            {"path": "/etc/passwd", "content": "x"}
        ],
        "limits": {"memory": "12 bananas", "cpus": 0, "pids": 0, "timeout": "1d"},
        "network": "internet"
    }));
    assert_eq!(
        errors,
        vec![
            "image: required",
            "command: must name a program (at least one element)",
            "env.AMAI_KEY: AMAI_* variables are set by the jail",
            "env.lower: \"lower\" is not a variable name ([A-Z_][A-Z0-9_]*)",
            "files[1].path: must be absolute (start with /)",
            "files[2].path: must be under /workspace or /tmp",
            "limits.cpus: 0 is not a CPU count (more than 0, at most 64, in steps of 0.001)",
            "limits.memory: \"12 bananas\" is not a size (use bytes or 256MiB)",
            "limits.pids: 0 is not a pids limit (an integer from 1 to 32768)",
            "limits.timeout: \"1d\" is not a duration (use seconds or a string like 30s, 5m, 2h)",
            "network: \"internet\" is not a network policy (\"none\", \"llm-only\" or {\"allow\": [\"host:port\", ...]})",
        ]
    );
}

#[test]
fn errors_display_one_per_line() {
    let err = parse(json!({"image": "", "command": "true"})).expect_err("refused");
    assert_eq!(err.paths(), vec!["image", "command"]);
    assert_eq!(
        err.to_string(),
        "image: \"\" is not an image reference (busybox, python, or a name of [A-Za-z0-9._/:@-], at most 255 characters)\n\
         command: must be an array of strings, not a string"
    );
}

#[test]
fn documents_that_are_not_spec_objects_are_refused() {
    assert_eq!(
        JailSpec::from_json(b"[1]").expect_err("array").to_string(),
        "must be an object, not an array"
    );
    let not_json = JailSpec::from_json(b"{\"image\": ").expect_err("truncated");
    assert_eq!(not_json.0.len(), 1);
    assert!(not_json.to_string().starts_with("not JSON: "), "{not_json}");
    let huge = vec![b' '; MAX_SPEC_BYTES + 1];
    assert!(JailSpec::from_json(&huge)
        .expect_err("huge")
        .to_string()
        .contains("more than the limit"));
}

#[test]
fn image_refusals() {
    for image in [
        json!(""),
        json!("-rm"),
        json!("a b"),
        json!("x".repeat(256)),
        json!(7),
        json!("/abs"),
    ] {
        let error = one_error(json!({ "image": image }));
        assert!(error.starts_with("image: "), "{error}");
    }
    assert_eq!(
        one_error(json!({"image": null})),
        "image: must be a string, not null"
    );
    ok(with(json!({"image": "ghcr.io/org/img:1.2_3-rc@sha256:0a"})));
}

#[test]
fn command_refusals() {
    assert_eq!(
        one_error(json!({"command": ["", "x"]})),
        "command[0]: the program must not be empty"
    );
    assert_eq!(
        errors(with(json!({"command": ["sh", 1, null]}))),
        vec![
            "command[1]: must be a string, not a number",
            "command[2]: must be a string, not null"
        ]
    );
    assert_eq!(
        one_error(json!({"command": ["sh", "a\u{0}b"]})),
        "command[1]: must not contain NUL"
    );
    assert_eq!(
        errors(json!({"image": "busybox"})),
        vec!["command: required"]
    );
}

#[test]
fn env_refusals() {
    assert_eq!(
        one_error(json!({"env": {"1X": "a"}})),
        "env[\"1X\"]: \"1X\" is not a variable name ([A-Z_][A-Z0-9_]*)"
    );
    assert_eq!(
        one_error(json!({"env": {"A-B": "a"}})),
        "env[\"A-B\"]: \"A-B\" is not a variable name ([A-Z_][A-Z0-9_]*)"
    );
    assert_eq!(
        one_error(json!({"env": {"AMAI_SESSION_KEY": "a"}})),
        "env.AMAI_SESSION_KEY: AMAI_* variables are set by the jail"
    );
    assert_eq!(
        one_error(json!({"env": {"X": 1}})),
        "env.X: must be a string, not a number"
    );
    assert_eq!(
        one_error(json!({"env": ["X=1"]})),
        "env: must be an object of strings, not an array"
    );
    // The LLM variables are the jail's only when the spec has a session.
    ok(with(json!({"env": {"OPENAI_BASE_URL": "http://x"}})));
    assert_eq!(
        one_error(json!({"env": {"OPENAI_BASE_URL": "http://x"}, "llm": {"session": SESSION}})),
        "env.OPENAI_BASE_URL: set by the jail when the spec has an llm session"
    );
}

#[test]
fn file_refusals() {
    let cases = [
        (json!({"path": "/workspace/../etc/x", "content": ""}), "files[0].path: must not contain \".\" or \"..\" components"),
        (json!({"path": "/workspace/./x", "content": ""}), "files[0].path: must not contain \".\" or \"..\" components"),
        (json!({"path": "/workspace//x", "content": ""}), "files[0].path: must not contain empty components (\"//\" or a trailing \"/\")"),
        (json!({"path": "/workspace/x/", "content": ""}), "files[0].path: must not contain empty components (\"//\" or a trailing \"/\")"),
        (json!({"path": "/workspace", "content": ""}), "files[0].path: must be under /workspace or /tmp"),
        (json!({"path": "/workspacex/a", "content": ""}), "files[0].path: must be under /workspace or /tmp"),
        (json!({"path": "/etc/passwd", "content": ""}), "files[0].path: must be under /workspace or /tmp"),
        (json!({"path": "tmp/a", "content": ""}), "files[0].path: must be absolute (start with /)"),
        (json!({"content": ""}), "files[0].path: required"),
        (json!({"path": "/tmp/a"}), "files[0]: content or content_base64 is required"),
        (json!({"path": "/tmp/a", "content": "", "content_base64": ""}), "files[0]: give content or content_base64, not both"),
        (json!({"path": "/tmp/a", "content_base64": "!!"}), "files[0].content_base64: not base64: Invalid symbol 33, offset 0."),
        (json!({"path": "/tmp/a", "content_base64": 1}), "files[0].content_base64: must be a base64 string, not a number"),
        (json!({"path": "/tmp/a", "content": "", "mode": 4096}), "files[0].mode: 4096 is not a file mode (an integer up to 0o7777 = 4095, or an octal string like \"0644\")"),
        (json!({"path": "/tmp/a", "content": "", "mode": "0908"}), "files[0].mode: \"0908\" is not a file mode (an integer up to 0o7777 = 4095, or an octal string like \"0644\")"),
        (json!({"path": "/tmp/a", "content": "", "mode": -1}), "files[0].mode: -1 is not a file mode (an integer up to 0o7777 = 4095, or an octal string like \"0644\")"),
        ("x".into(), "files[0]: must be an object, not a string"),
    ];
    for (file, expected) in cases {
        assert_eq!(one_error(json!({ "files": [file] })), expected);
    }
    assert_eq!(
        one_error(json!({"files": {}})),
        "files: must be an array, not an object"
    );
}

#[test]
fn files_may_not_collide() {
    let errors = errors(with(json!({"files": [
        {"path": "/tmp/a", "content": "1"},
        {"path": "/tmp/b", "content": "2"},
        {"path": "/tmp/a", "content": "3"},
        {"path": "/tmp/b/c", "content": "4"},
        {"path": "/tmp", "content": "5"},
        {"path": "/workspace/d/e", "content": "6"},
        {"path": "/workspace/d", "content": "7"}
    ]})));
    assert_eq!(
        errors,
        vec![
            "files[2].path: \"/tmp/a\" is already given by files[0]",
            "files[3].path: \"/tmp/b/c\" is inside files[1], a file",
            "files[4].path: must be under /workspace or /tmp",
            "files[6].path: \"/workspace/d\" is a directory of files[5], not a file",
        ]
    );
}

#[test]
fn workdir_refusals() {
    assert_eq!(
        one_error(json!({"workdir": "work"})),
        "workdir: must be absolute (start with /)"
    );
    assert_eq!(
        one_error(json!({"workdir": "/a/../b"})),
        "workdir: must not contain \".\" or \"..\" components"
    );
    assert_eq!(
        one_error(json!({"workdir": 1})),
        "workdir: must be a string, not a number"
    );
    assert_eq!(ok(with(json!({"workdir": "/srv/app"}))).workdir, "/srv/app");
}

#[test]
fn limit_refusals() {
    let cases = [
        (json!({"cpus": -1}), "limits.cpus: -1 is not a CPU count (more than 0, at most 64, in steps of 0.001)"),
        (json!({"cpus": 64.5}), "limits.cpus: 64.5 is not a CPU count (more than 0, at most 64, in steps of 0.001)"),
        (json!({"cpus": 0.0001}), "limits.cpus: 0.0001 is not a CPU count (more than 0, at most 64, in steps of 0.001)"),
        (json!({"cpus": "2"}), "limits.cpus: \"2\" is not a CPU count (more than 0, at most 64, in steps of 0.001)"),
        (json!({"memory": "4MiB"}), "limits.memory: must be at least 8MiB"),
        (json!({"memory": 1.5}), "limits.memory: 1.5 is not a size (use bytes or 256MiB)"),
        (json!({"memory": -5}), "limits.memory: -5 is not a size (use bytes or 256MiB)"),
        (json!({"memory": true}), "limits.memory: must be a size (bytes or a string like 256MiB), not a boolean"),
        (json!({"memory": "99999999999999TiB"}), "limits.memory: \"99999999999999TiB\" is too large"),
        (json!({"pids": 32769}), "limits.pids: 32769 is not a pids limit (an integer from 1 to 32768)"),
        (json!({"pids": 1.5}), "limits.pids: 1.5 is not a pids limit (an integer from 1 to 32768)"),
        (json!({"disk": "512KiB"}), "limits.disk: must be at least 1MiB"),
        (json!({"disk": "lots"}), "limits.disk: \"lots\" is not a size (use bytes or 256MiB)"),
        (json!({"timeout": 0}), "limits.timeout: must be more than 0 seconds"),
        (json!({"timeout": "0s"}), "limits.timeout: must be more than 0 seconds"),
        (json!({"timeout": "25h"}), "limits.timeout: must be at most 24h"),
        (json!({"timeout": 86401}), "limits.timeout: must be at most 24h"),
        (json!({"timeout": 1.5}), "limits.timeout: 1.5 is not a duration (use seconds or a string like 30s, 5m, 2h)"),
        (json!({"timeout": "30 s"}), "limits.timeout: \"30 s\" is not a duration (use seconds or a string like 30s, 5m, 2h)"),
        (json!({"timeout": []}), "limits.timeout: must be a duration (seconds or a string like 30s, 5m, 2h), not an array"),
        (json!({"output": "-1"}), "limits.output: \"-1\" is not a size (use bytes or 256MiB)"),
    ];
    for (limits, expected) in cases {
        assert_eq!(one_error(json!({ "limits": limits })), expected);
    }
    assert_eq!(
        one_error(json!({"limits": 5})),
        "limits: must be an object, not a number"
    );
}

#[test]
fn limits_in_range_are_accepted() {
    let limits = ok(with(json!({"limits": {
        "cpus": 64, "memory": "8MiB", "pids": 32768, "disk": "1MiB", "timeout": "24h", "output": 0
    }})))
    .limits;
    assert_eq!(
        limits,
        Limits {
            millicpus: 64_000,
            memory_bytes: 8 << 20,
            pids: 32768,
            disk_bytes: 1 << 20,
            timeout_secs: 86400,
            output_bytes: 0
        }
    );
    assert_eq!(
        ok(with(json!({"limits": {"cpus": 0.001}})))
            .limits
            .millicpus,
        1
    );
    assert_eq!(
        ok(with(json!({"limits": {"cpus": 1.5}}))).limits.millicpus,
        1500
    );
    assert_eq!(
        ok(with(json!({"limits": {"timeout": 1}})))
            .limits
            .timeout_secs,
        1
    );
}

#[test]
fn sizes_parse_in_binary_and_decimal_units() {
    for (text, bytes) in [
        ("0", 0),
        ("17", 17),
        ("17B", 17),
        ("17 B", 17),
        ("1k", 1024),
        ("1K", 1024),
        ("1KiB", 1024),
        ("1KB", 1000),
        ("256MiB", 256 << 20),
        ("256 MiB", 256 << 20),
        ("256m", 256 << 20),
        ("2MB", 2_000_000),
        ("3GiB", 3 << 30),
        ("3g", 3 << 30),
        ("3GB", 3_000_000_000),
        ("1TiB", 1 << 40),
        ("1TB", 1_000_000_000_000),
    ] {
        assert_eq!(parse_size(text), Ok(bytes), "{text}");
    }
    for text in [
        "",
        "MiB",
        "1.5GiB",
        "1 GiB ",
        " 1",
        "1  MiB",
        "1mib",
        "1Mi",
        "12 bananas",
        "-1",
    ] {
        assert_eq!(
            parse_size(text),
            Err(format!(
                "{} is not a size (use bytes or 256MiB)",
                serde_json::Value::from(text)
            )),
            "{text}"
        );
    }
    assert_eq!(
        parse_size("18446744073709551616"),
        Err("\"18446744073709551616\" is too large".into())
    );
    assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
}

#[test]
fn sizes_format_back_to_what_they_parse_from() {
    for bytes in [0, 1, 1000, 1024, 1536, 8 << 20, 3 << 30, 5 << 40, u64::MAX] {
        assert_eq!(parse_size(&format_size(bytes)), Ok(bytes), "{bytes}");
    }
    assert_eq!(format_size(256 << 20), "256MiB");
    assert_eq!(format_size(1536), "1536B");
    assert_eq!(format_size(2048), "2KiB");
}

#[test]
fn durations_parse_in_seconds_minutes_and_hours() {
    for (text, secs) in [("30", 30), ("30s", 30), ("5m", 300), ("2h", 7200), ("0", 0)] {
        assert_eq!(parse_duration_secs(text), Ok(secs), "{text}");
    }
    for text in ["", "s", "1d", "1.5h", "5 m", "5M", "1ms", "-1s"] {
        assert!(parse_duration_secs(text).is_err(), "{text}");
    }
    assert_eq!(
        parse_duration_secs("99999999999999999999h"),
        Err("\"99999999999999999999h\" is too large".into())
    );
}

#[test]
fn network_policies() {
    assert_eq!(
        ok(with(json!({"network": "none"}))).network,
        NetworkPolicy::None
    );
    assert_eq!(
        ok(with(json!({"network": "llm-only"}))).network,
        NetworkPolicy::LlmOnly
    );
    let spec = ok(with(json!({"network": {"allow": [
        "API.Example.com:443", "10.0.0.1:80", "[::1]:8080", "api.example.com:443", "[0:0::1]:8080", "a-b.c1:1", "x:65535"
    ]}})));
    let NetworkPolicy::Allow(endpoints) = &spec.network else {
        panic!("{:?}", spec.network)
    };
    let shown: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        vec![
            "a-b.c1:1",
            "api.example.com:443",
            "x:65535",
            "10.0.0.1:80",
            "[::1]:8080"
        ]
    );
    assert_eq!(endpoints[3].host, Host::Ip("10.0.0.1".parse().expect("ip")));
}

#[test]
fn network_refusals() {
    let cases = [
        ("example.com", "network.allow[0]: \"example.com\" is not host:port"),
        ("example.com:0", "network.allow[0]: \"0\" is not a port (1..=65535)"),
        ("example.com:65536", "network.allow[0]: \"65536\" is not a port (1..=65535)"),
        ("example.com:http", "network.allow[0]: \"http\" is not a port (1..=65535)"),
        ("example.com:080", "network.allow[0]: \"080\" is not a port (1..=65535)"),
        ("example.com:", "network.allow[0]: \"\" is not a port (1..=65535)"),
        (":443", "network.allow[0]: \"\" is not a DNS name or an IP address"),
        ("*.example.com:443", "network.allow[0]: \"*.example.com\" is not a DNS name or an IP address"),
        ("-a.com:443", "network.allow[0]: \"-a.com\" is not a DNS name or an IP address"),
        ("a..com:443", "network.allow[0]: \"a..com\" is not a DNS name or an IP address"),
        ("1.2.3:443", "network.allow[0]: \"1.2.3\" is not a DNS name or an IP address"),
        ("256.1.1.1:443", "network.allow[0]: \"256.1.1.1\" is not a DNS name or an IP address"),
        ("::1:443", "network.allow[0]: \"::1:443\" is not host:port (IPv6 literals go in brackets: [::1]:443)"),
        ("[::g]:443", "network.allow[0]: \"::g\" is not an IPv6 address"),
        ("[::1]", "network.allow[0]: \"[::1]\" is not host:port"),
        ("http://a.com:443", "network.allow[0]: \"http://a.com:443\" is not host:port (IPv6 literals go in brackets: [::1]:443)"),
    ];
    for (entry, expected) in cases {
        assert_eq!(
            one_error(json!({"network": {"allow": [entry]}})),
            expected,
            "{entry}"
        );
    }
    let long_label = format!("{}.com:443", "a".repeat(64));
    assert!(one_error(json!({"network": {"allow": [long_label]}})).contains("is not a DNS name"));
    assert_eq!(
        one_error(json!({"network": {"allow": "a:1"}})),
        "network.allow: must be an array of \"host:port\" strings, not a string"
    );
    assert_eq!(one_error(json!({"network": {}})), "network.allow: required");
    assert_eq!(
        one_error(json!({"network": "all"})),
        "network: \"all\" is not a network policy (\"none\", \"llm-only\" or {\"allow\": [\"host:port\", ...]})"
    );
    assert_eq!(
        errors(with(json!({"network": {"allow": ["a:1", 5, "b"]}}))),
        vec![
            "network.allow[1]: must be a string, not a number",
            "network.allow[2]: \"b\" is not host:port"
        ]
    );
}

#[test]
fn llm_sessions() {
    let spec = ok(with(json!({"llm": {"session": SESSION}})));
    assert_eq!(spec.llm, Some(LlmSpec::Session(SESSION.into())));
    assert_eq!(
        spec.network,
        NetworkPolicy::LlmOnly,
        "llm-only by default with a session"
    );
    let spec = ok(with(
        json!({"llm": {"create": {"mode": "replay", "upstream": "all", "replay_from": SESSION}}}),
    ));
    assert_eq!(
        spec.llm,
        Some(LlmSpec::Create(LlmCreate {
            mode: LlmMode::Replay,
            upstream: LlmUpstreams::All,
            replay_from: Some(SESSION.into())
        }))
    );
    let spec = ok(with(
        json!({"llm": {"create": {"mode": "record"}}, "network": {"allow": ["pypi.org:443"]}}),
    ));
    assert!(matches!(
        spec.llm,
        Some(LlmSpec::Create(LlmCreate {
            upstream: LlmUpstreams::All,
            ..
        }))
    ));
    assert!(matches!(spec.network, NetworkPolicy::Allow(_)));
    assert_eq!(
        one_error(json!({"llm": null})),
        "llm: must be an object, not null"
    );
}

#[test]
fn llm_refusals() {
    let cases = [
        (json!({"session": "ABCDEF0123456789abcdef0123456789"}), "llm.session: \"ABCDEF0123456789abcdef0123456789\" is not a session id (32 lowercase hex characters)"),
        (json!({"session": "abc"}), "llm.session: \"abc\" is not a session id (32 lowercase hex characters)"),
        (json!({"session": 1}), "llm.session: must be a string, not a number"),
        (json!({"session": SESSION, "create": {"mode": "record"}}), "llm: give session or create, not both"),
        (json!({}), "llm: must be {\"session\": \"<id>\"} or {\"create\": {...}}"),
        (json!({"create": {}}), "llm.create.mode: required"),
        (json!({"create": {"mode": "live"}}), "llm.create.mode: \"live\" is not a mode (\"record\" or \"replay\")"),
        (json!({"create": {"mode": "record", "upstream": "gemini"}}), "llm.create.upstream: \"gemini\" is not an upstream (\"openai\", \"anthropic\" or \"all\")"),
        (json!({"create": {"mode": "replay"}}), "llm.create.replay_from: required in replay mode (a new session has no recordings of its own)"),
        (json!({"create": {"mode": "record", "replay_from": OTHER_SESSION}}), "llm.create.replay_from: only in replay mode"),
        (json!({"create": {"mode": "replay", "replay_from": "x"}}), "llm.create.replay_from: \"x\" is not a session id (32 lowercase hex characters)"),
        (json!("record"), "llm: must be an object, not a string"),
    ];
    for (llm, expected) in cases {
        assert_eq!(one_error(json!({ "llm": llm })), expected);
    }
    assert_eq!(
        one_error(json!({"llm": {"session": SESSION}, "network": "none"})),
        "llm: the LLM proxy is unreachable under network \"none\" (use \"llm-only\" or an allowlist)"
    );
}

#[test]
fn diff_policies() {
    let policy = ok(with(json!({"diff_policy": {
        "writable": ["/workspace/**", "/tmp/*.log", "/workspace/**", "/var/?/x"],
        "max_changed_bytes": 0
    }})))
    .diff_policy;
    assert_eq!(
        policy.writable,
        vec!["/tmp/*.log", "/var/?/x", "/workspace/**"]
    );
    assert_eq!(policy.max_changed_bytes, Some(0));
    assert!(policy.allows_write("/workspace"));
    assert!(policy.allows_write("/workspace/a/b/c"));
    assert!(policy.allows_write("/tmp/run.log"));
    assert!(!policy.allows_write("/tmp/sub/run.log"));
    assert!(!policy.allows_write("/tmp/run.txt"));
    assert!(policy.allows_write("/var/a/x"));
    assert!(!policy.allows_write("/var/ab/x"));
    assert!(!policy.allows_write("/etc/passwd"));
    assert!(!policy.allows_write("/workspacex"));
    let defaults = DiffPolicy::default();
    assert!(defaults.allows_write("/tmp/x") && defaults.allows_write("/workspace/y"));
    assert!(!defaults.allows_write("/root/.profile"));
}

#[test]
fn diff_policy_refusals() {
    let cases = [
        (json!({"writable": ["workspace/**"]}), "diff_policy.writable[0]: \"workspace/**\" is not a path glob: must be absolute (start with /)"),
        (json!({"writable": ["/workspace/../**"]}), "diff_policy.writable[0]: \"/workspace/../**\" is not a path glob: must not contain \".\" or \"..\" components"),
        (json!({"writable": ["/workspace/a**"]}), "diff_policy.writable[0]: \"/workspace/a**\" is not a path glob: ** must be a whole path component (/a/**/b)"),
        (json!({"writable": ["/workspace//x"]}), "diff_policy.writable[0]: \"/workspace//x\" is not a path glob: must not contain empty components (\"//\" or a trailing \"/\")"),
        (json!({"writable": [1]}), "diff_policy.writable[0]: must be a string, not a number"),
        (json!({"writable": "/workspace/**"}), "diff_policy.writable: must be an array of path globs, not a string"),
        (json!({"allow_setuid": "no"}), "diff_policy.allow_setuid: must be a boolean, not a string"),
        (json!({"max_changed_bytes": "much"}), "diff_policy.max_changed_bytes: \"much\" is not a size (use bytes or 256MiB)"),
    ];
    for (policy, expected) in cases {
        assert_eq!(one_error(json!({ "diff_policy": policy })), expected);
    }
}

#[test]
fn globs_match_components() {
    for (pattern, path, expected) in [
        ("/", "/", true),
        ("/**", "/anything/at/all", true),
        ("/a/**/b", "/a/b", true),
        ("/a/**/b", "/a/x/y/b", true),
        ("/a/**/b", "/a/x/y/c", false),
        ("/a/*", "/a/b", true),
        ("/a/*", "/a/b/c", false),
        ("/a/*.py", "/a/x.py", true),
        ("/a/*.py", "/a/.py", true),
        ("/a/?", "/a/é", true),
        ("/a/?", "/a/ab", false),
        ("/a/b", "/a/b", true),
        ("/a/b", "/a/bc", false),
    ] {
        assert_eq!(glob_match(pattern, path), expected, "{pattern} {path}");
    }
}

#[test]
fn the_normal_form_parses_back_to_the_same_spec() {
    for example in accepted_examples() {
        let spec = ok(example);
        let normal = spec.to_json_value();
        let again = ok(normal.clone());
        assert_eq!(again, spec);
        assert_eq!(again.to_json_value(), normal);
        assert_eq!(again.canonical_digest(), spec.canonical_digest());
        assert_eq!(serde_json::to_value(&spec).expect("serialize"), normal);
    }
}

#[test]
fn digests_are_stable_under_key_order_spacing_units_and_defaults() {
    let a = br#"{"image":"busybox","command":["sh","-c","x"],"limits":{"memory":"256MiB","timeout":"5m"},"env":{"B":"2","A":"1"}}"#;
    let b = br#"{
        "env": {"A": "1", "B": "2"},
        "limits": {"timeout": 300, "memory": 268435456, "cpus": 1, "pids": 256},
        "command": ["sh", "-c", "x"],
        "workdir": "/workspace",
        "network": "none",
        "diff_policy": {"allow_setuid": false, "writable": ["/workspace/**", "/tmp/**"]},
        "image": "busybox"
    }"#;
    let a = JailSpec::from_json(a).expect("a");
    let b = JailSpec::from_json(b).expect("b");
    assert_eq!(a, b);
    assert_eq!(a.canonical_digest(), b.canonical_digest());
    assert_eq!(a.canonical_digest_hex(), hex::encode(a.canonical_digest()));
    assert_eq!(a.canonical_digest_hex().len(), 64);
    // Text and base64 contents of the same bytes are the same file.
    let text = ok(with(
        json!({"files": [{"path": "/tmp/a", "content": "hi", "mode": 420}]}),
    ));
    let b64 = ok(with(
        json!({"files": [{"path": "/tmp/a", "content_base64": "aGk=", "mode": "644"}]}),
    ));
    assert_eq!(text.canonical_digest(), b64.canonical_digest());
}

#[test]
fn digests_change_with_anything_that_changes_the_run() {
    let base = ok(with(json!({})));
    let digest = base.canonical_digest();
    for change in [
        json!({"image": "python"}),
        json!({"command": ["false"]}),
        json!({"command": ["true", ""]}),
        json!({"env": {"A": ""}}),
        json!({"files": [{"path": "/tmp/a", "content": ""}]}),
        json!({"workdir": "/tmp"}),
        json!({"limits": {"cpus": 2}}),
        json!({"limits": {"memory": "1GiB"}}),
        json!({"limits": {"pids": 1}}),
        json!({"limits": {"disk": "1GiB"}}),
        json!({"limits": {"timeout": 1}}),
        json!({"limits": {"output": 1}}),
        json!({"network": "llm-only"}),
        json!({"network": {"allow": []}}),
        json!({"llm": {"session": SESSION}}),
        json!({"diff_policy": {"allow_setuid": true}}),
        json!({"diff_policy": {"max_changed_bytes": 1}}),
        json!({"diff_policy": {"writable": ["/**"]}}),
    ] {
        assert_ne!(
            ok(with(change.clone())).canonical_digest(),
            digest,
            "{change}"
        );
    }
}

#[test]
fn the_canonical_json_is_rfc_8785() {
    let spec = ok(with(json!({"limits": {"cpus": 0.5}})));
    let text = String::from_utf8(spec.canonical_json()).expect("utf-8");
    assert!(text.starts_with(r#"{"command":["true"],"diff_policy":{"allow_setuid":false,"writable":["/tmp/**","/workspace/**"]},"env":{},"files":[],"image":"busybox","limits":{"cpus":0.5,"disk":268435456,"memory":536870912,"output":16777216,"pids":256,"timeout":300},"network":"none","workdir":"/workspace"}"#), "{text}");
    let whole = ok(with(json!({})));
    assert!(String::from_utf8(whole.canonical_json())
        .expect("utf-8")
        .contains(r#""cpus":1,"#));
}

/// The schema names exactly the parser's fields, at every level, and every
/// object of every accepted example only uses fields the schema names (the
/// schema is not run by a validator here; see the crate's report).
#[test]
fn the_json_schema_names_the_parsers_fields() {
    let schema: Value =
        serde_json::from_str(include_str!("../../../schemas/jail-spec.schema.json"))
            .expect("schema");
    let names = |pointer: &str| -> Vec<String> {
        let mut keys: Vec<String> = schema
            .pointer(&format!("{pointer}/properties"))
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("{pointer}/properties"))
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    let sorted = |fields: &[&str]| -> Vec<String> {
        let mut fields: Vec<String> = fields.iter().map(|s| (*s).to_owned()).collect();
        fields.sort();
        fields
    };
    let levels: [(&str, &[&str]); 7] = [
        ("", &SPEC_FIELDS),
        ("/$defs/file", &FILE_FIELDS),
        ("/$defs/limits", &LIMIT_FIELDS),
        ("/properties/network/oneOf/1", &NETWORK_FIELDS),
        ("/$defs/llm", &LLM_FIELDS),
        ("/$defs/llm/properties/create", &LLM_CREATE_FIELDS),
        ("/$defs/diff_policy", &DIFF_POLICY_FIELDS),
    ];
    for (pointer, fields) in levels {
        assert_eq!(names(pointer), sorted(fields), "{pointer}");
        assert_eq!(
            schema.pointer(&format!("{pointer}/additionalProperties")),
            Some(&Value::Bool(false)),
            "{pointer} refuses unknown fields"
        );
    }
    let mut examples = accepted_examples();
    examples.extend(
        accepted_examples()
            .into_iter()
            .map(|e| ok(e).to_json_value()),
    );
    examples.extend(
        schema["examples"]
            .as_array()
            .expect("examples")
            .iter()
            .cloned(),
    );
    for example in &examples {
        ok(example.clone());
        let within = |value: &Value, pointer: &str| {
            if let Some(object) = value.as_object() {
                let known = names(pointer);
                for key in object.keys() {
                    assert!(known.contains(key), "{pointer}: {key} in {example}");
                }
            }
        };
        within(example, "");
        for file in example["files"].as_array().into_iter().flatten() {
            within(file, "/$defs/file");
        }
        within(&example["limits"], "/$defs/limits");
        within(&example["network"], "/properties/network/oneOf/1");
        within(&example["llm"], "/$defs/llm");
        within(&example["llm"]["create"], "/$defs/llm/properties/create");
        within(&example["diff_policy"], "/$defs/diff_policy");
    }
}

#[test]
fn keys_given_twice_are_refused_with_their_paths() {
    let err = JailSpec::from_json(
        br#"{"image":"busybox","command":["true"],"image":"python",
            "limits":{"memory":"8MiB","memory":"1GiB"},
            "files":[{"path":"/tmp/a","content":"x","path":"/tmp/b"}],
            "env":{"A":"1","A":"2"}}"#,
    )
    .expect_err("duplicates");
    assert_eq!(
        err.paths(),
        vec!["image", "limits.memory", "files[0].path", "env.A"]
    );
    assert_eq!(err.0[0].to_string(), "image: given more than once");
    // Duplicates and other errors are reported together.
    let err =
        JailSpec::from_json(br#"{"image":"busybox","image":"x","command":[]}"#).expect_err("both");
    assert_eq!(
        err.to_string(),
        "image: given more than once\ncommand: must name a program (at least one element)"
    );
    assert!(JailSpec::from_json(br#"{"image":"busybox","command":["true"]} x"#).is_err());
}

/// The schema's enums and defaults are the parser's.
#[test]
fn the_json_schema_states_the_parsers_enums_and_defaults() {
    let schema: Value =
        serde_json::from_str(include_str!("../../../schemas/jail-spec.schema.json"))
            .expect("schema");
    let at = |pointer: &str| -> &Value {
        schema
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{pointer}"))
    };
    assert_eq!(
        at("/properties/network/oneOf/0/enum"),
        &json!(["none", "llm-only"])
    );
    assert_eq!(
        at("/$defs/llm/properties/create/properties/mode/enum"),
        &json!(["record", "replay"])
    );
    assert_eq!(
        at("/$defs/llm/properties/create/properties/upstream/enum"),
        &json!(["openai", "anthropic", "all"])
    );
    let limits = Limits::default();
    let size = |pointer: &str| -> u64 {
        let value = at(pointer);
        value
            .as_u64()
            .or_else(|| value.as_str().and_then(|s| parse_size(s).ok()))
            .unwrap_or_else(|| panic!("{pointer}: {value}"))
    };
    assert_eq!(
        at("/$defs/limits/properties/cpus/default").as_f64(),
        Some(limits.cpus())
    );
    assert_eq!(
        size("/$defs/limits/properties/memory/default"),
        limits.memory_bytes
    );
    assert_eq!(
        at("/$defs/limits/properties/pids/default"),
        &json!(limits.pids)
    );
    assert_eq!(
        size("/$defs/limits/properties/disk/default"),
        limits.disk_bytes
    );
    assert_eq!(
        at("/$defs/limits/properties/timeout/default"),
        &json!(limits.timeout_secs)
    );
    assert_eq!(
        size("/$defs/limits/properties/output/default"),
        limits.output_bytes
    );
    assert_eq!(
        at("/$defs/limits/properties/pids/maximum"),
        &json!(MAX_PIDS)
    );
    assert_eq!(
        at("/$defs/limits/properties/timeout/oneOf/0/maximum"),
        &json!(MAX_TIMEOUT_SECS)
    );
    assert_eq!(at("/properties/workdir/default"), &json!(DEFAULT_WORKDIR));
    assert_eq!(
        at("/$defs/file/properties/mode/default"),
        &json!(DEFAULT_FILE_MODE)
    );
    assert_eq!(
        at("/$defs/diff_policy/properties/writable/default"),
        &json!(DEFAULT_WRITABLE)
    );
    assert_eq!(
        at("/$defs/diff_policy/properties/allow_setuid/default"),
        &json!(false)
    );
}
