//! Reports validate against `schemas/audit-report.schema.json`, and the
//! schema's closed lists are the crate's.

use amai_audit::{AuditReport, Evidence, FailureKind, PartialKind};
use amai_core::keys::IdentityKeys;
use serde_json::Value;

use crate::common::{AGENTS, AUDIT};
use crate::honest::busy;

fn schema() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/audit-report.schema.json"
    );
    let text = std::fs::read_to_string(path).expect("the schema file");
    serde_json::from_str(&text).expect("the schema is JSON")
}

fn validate(report: &AuditReport) {
    let schema = schema();
    let validator = jsonschema::draft202012::new(&schema).expect("a valid 2020-12 schema");
    let json = report.to_json();
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{errors:#?}\n{}",
        serde_json::to_string_pretty(&json).unwrap_or_default()
    );
}

#[test]
fn authoritative_partial_and_invalid_reports_validate() {
    let (mut d, alice, _) = busy();
    d.checkpoint_all();
    let r = d.audit();
    assert_eq!(r.evidence, Evidence::Authoritative);
    validate(&r);

    d.act(&alice, "late");
    let r = d.audit();
    assert_eq!(r.evidence, Evidence::Partial);
    validate(&r);

    // Tampered: a deleted run, a truncated tail (checkpoint findings), a
    // bad signature.
    let cp = d.checkpoint(AGENTS);
    let agents = d.streams.get_mut(AGENTS).expect("agents");
    agents.retain(|m| m.seq != 4 && m.seq != 5);
    agents.pop();
    let last = agents.len() - 1;
    let n = agents[last].data.len();
    agents[last].data[n - 1] ^= 1;
    let r = d.audit();
    assert_eq!(r.evidence, Evidence::Invalid);
    assert!(r.failures.iter().any(|f| f.last_seq.is_some()));
    assert!(r
        .failures
        .iter()
        .any(|f| f.stream == AUDIT && f.seq == Some(cp) && f.checkpoint.is_some()));
    validate(&r);
}

#[test]
fn an_empty_audit_validates() {
    let r = amai_audit::Auditor::new(IdentityKeys::generate().public_key()).finish();
    assert_eq!(r.evidence, Evidence::Partial);
    validate(&r);
}

fn enum_of(schema: &Value, def: &str) -> Vec<String> {
    schema["$defs"][def]["enum"]
        .as_array()
        .expect("an enum")
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

#[test]
fn the_schema_lists_exactly_the_kinds_and_reasons_each_documented() {
    let schema = schema();
    let kinds: Vec<String> = FailureKind::ALL
        .iter()
        .map(|k| k.as_str().to_string())
        .collect();
    assert_eq!(enum_of(&schema, "failure_kind"), kinds);
    let reasons: Vec<String> = PartialKind::ALL
        .iter()
        .map(|k| k.as_str().to_string())
        .collect();
    assert_eq!(enum_of(&schema, "partial_kind"), reasons);
    assert_eq!(
        enum_of(&schema, "evidence"),
        vec!["authoritative", "partial", "invalid"]
    );
    for (def, names) in [("failure_kind", &kinds), ("partial_kind", &reasons)] {
        let doc = schema["$defs"][def]["description"]
            .as_str()
            .expect("documented");
        for name in names {
            assert!(
                doc.contains(&format!("{name}:")),
                "{name} is not documented in {def}"
            );
        }
    }
    for k in FailureKind::ALL {
        assert_eq!(FailureKind::parse(k.as_str()), Some(k));
    }
    for k in PartialKind::ALL {
        assert_eq!(PartialKind::parse(k.as_str()), Some(k));
    }
}

#[test]
fn the_human_summary_names_the_verdict_and_each_failure() {
    let (mut d, alice, _) = busy();
    d.checkpoint_all();
    let (head, hash) = d.head(&alice.aggregate());
    let forged = amai_core::envelope::EventDraft::action(alice.aggregate(), "x.y", "{}")
        .after(head, hash)
        .sign(&IdentityKeys::generate(), &alice.id);
    let seq = d.append(forged);
    let r = d.audit();
    let text = r.human_summary();
    assert!(text.starts_with("amai audit: INVALID (exit 1)"), "{text}");
    assert!(text.contains(&format!("{AGENTS}:{seq} ")), "{text}");
    assert!(text.contains("unknown_key"), "{text}");
}
