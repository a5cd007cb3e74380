//! Shared fixtures: a good manifest and the schemas.

use serde_json::{json, Value};

pub(crate) const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A manifest using every field.
pub(crate) fn full() -> Value {
    json!({
        "manifest_version": 1,
        "id": "com.example.summarizer",
        "name": "Summarizer",
        "version": "1.2.0",
        "description": "Summarises documents.",
        "publisher": { "name": "Example Corp", "url": "https://example.com", "email": "agents@example.com" },
        "source": { "image": format!("ghcr.io/example/summarizer:1.2.0@sha256:{DIGEST}") },
        "entrypoint": ["python", "-m", "summarizer"],
        "permissions": [
            "llm:anthropic",
            "network:egress:API.example.com",
            "fs:write:/workspace/out/**",
            "messages:send",
            "jail:limits:memory=1GiB"
        ],
        "capabilities": ["summarize", "translate"],
        "keywords": ["summary", "documents"],
        "resources": { "cpus": 1.5, "memory": "1GiB", "pids": 64, "disk": 10485760, "timeout": "10m" },
        "tools": [{
            "name": "summarize",
            "title": "Summarize a document",
            "description": "Summarises one document.",
            "inputSchema": { "type": "object", "properties": { "path": { "type": "string" } }, "required": ["path"] },
            "annotations": { "readOnlyHint": true }
        }]
    })
}

/// The smallest valid manifest.
pub(crate) fn minimal() -> Value {
    json!({
        "manifest_version": 1,
        "id": "org.example.tiny",
        "name": "Tiny",
        "version": "0.1.0-alpha.1+build.5",
        "publisher": { "name": "Me" },
        "source": { "build": { "context": "." } },
        "entrypoint": ["/app/run"]
    })
}

/// `base` with `key` set (a `null` removes it).
pub(crate) fn with(mut base: Value, key: &str, value: Value) -> Value {
    let map = base.as_object_mut().expect("an object");
    if value.is_null() {
        map.remove(key);
    } else {
        map.insert(key.into(), value);
    }
    base
}

fn load(path: &str) -> Value {
    let text = std::fs::read_to_string(path).expect("the schema file");
    serde_json::from_str(&text).expect("the schema is JSON")
}

pub(crate) fn manifest_schema() -> Value {
    load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/agent-manifest.schema.json"
    ))
}

pub(crate) fn card_schema() -> Value {
    load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/vendor/a2a-agent-card.schema.json"
    ))
}

/// The schema's errors for `instance`, as "message at path".
pub(crate) fn schema_errors(schema: &Value, instance: &Value) -> Vec<String> {
    let validator = jsonschema::draft202012::new(schema).expect("a valid 2020-12 schema");
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}
