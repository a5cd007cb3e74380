//! Pages with the roles running and absent; attacker-controlled event data
//! escaped in pages and in the SSE output; unverifiable events flagged.

use std::collections::BTreeMap;

use crate::common::Env;

const XSS: &str = "<script>alert(1)</script>";

#[tokio::test]
async fn event_data_is_escaped_in_pages_and_in_the_event_stream() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let mut metadata = BTreeMap::new();
    metadata.insert("note".to_string(), XSS.to_string());
    let agent = env.agent("eve", metadata).await;
    agent
        .append_action(
            "note.written",
            &serde_json::json!({ "text": XSS, "attr": "\" onmouseover=\"alert(2)" }).to_string(),
        )
        .await
        .expect("action");

    // In a page: the identity's metadata.
    let page = env.page("/agents", &cookie).await;
    assert!(page.contains("eve"), "{page}");
    assert!(!page.contains(XSS), "raw markup in /agents");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );

    // Reflected filter values.
    let page = env
        .page(&format!("/events?type={}", urlencode(XSS)), &cookie)
        .await;
    assert!(!page.contains(XSS), "reflected markup in /events");
    assert!(page.contains("&lt;script&gt;"));

    // In the event stream: the whole chain of the agent, from the start.
    let query = format!("aggregate=agent/{}&start=all", agent.id());
    let text = env.sse_until(&query, &cookie, &["note.written"]).await;
    assert!(text.contains("event: ready"), "{text}");
    assert!(text.contains("event: amai"), "{text}");
    assert!(
        !text.contains('<') && !text.contains('>'),
        "markup characters in SSE: {text}"
    );
    assert!(text.contains("\\u003cscript\\u003e"), "{text}");
    // The event is verified (signature and the agent's key).
    let line = text
        .lines()
        .find(|l| l.starts_with("data:") && l.contains("note.written"))
        .expect("the action's event");
    let ev: serde_json::Value =
        serde_json::from_str(line.trim_start_matches("data:").trim()).expect("json");
    assert_eq!(ev["verified"], true, "{ev}");
    assert_eq!(ev["actor"], agent.id());
    assert_eq!(ev["aggregate"], format!("agent/{}", agent.id()));
    assert_eq!(ev["stream"], "AMAI_AGENTS");
    assert_eq!(ev["hash"].as_str().map(str::len), Some(64));
    env.stop().await;
}

#[tokio::test]
async fn an_event_that_fails_verification_is_flagged_never_trusted() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let agent = env.agent("victim", BTreeMap::new()).await;
    // A well-formed event signed by a key that is not the agent's.
    let stranger = amai_bus::IdentityKeys::generate();
    let head = env
        .client
        .chain_head(&agent.aggregate().expect("aggregate"))
        .await
        .expect("head");
    let forged =
        amai_bus::EventDraft::action(agent.aggregate().expect("aggregate"), "note.forged", "{}")
            .after(head.aggregate_seq, head.hash)
            .sign(&stranger, agent.id());
    env.js
        .publish(
            format!("amai.agent.{}", agent.id()),
            prost::Message::encode_to_vec(&forged).into(),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    // Bytes published around the event store, on the agent's subject: not a
    // signed event.
    env.js
        .publish(
            format!("amai.agent.{}", agent.id()),
            format!("forged {XSS}").into(),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");

    let query = format!("aggregate=agent/{}&start=all", agent.id());
    let text = env
        .sse_until(&query, &cookie, &["note.forged", "malformed"])
        .await;
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .filter(|v: &serde_json::Value| v.get("seq").is_some())
        .collect();
    let genesis = events
        .iter()
        .find(|e| e["type"] == "agent.registered")
        .expect("genesis");
    assert_eq!(genesis["verified"], true);
    let garbage = events
        .iter()
        .find(|e| {
            e["problem"]
                .as_str()
                .is_some_and(|p| p.contains("malformed"))
        })
        .expect("garbage event");
    assert_eq!(garbage["verified"], false);
    assert_eq!(
        garbage["actor"], "",
        "no actor is claimed for undecodable bytes"
    );
    let wrong_key = events
        .iter()
        .find(|e| e["type"] == "note.forged")
        .expect("forged event");
    assert_eq!(wrong_key["verified"], false, "{wrong_key}");
    assert!(wrong_key["problem"]
        .as_str()
        .is_some_and(|p| p.contains("not one of")));

    // An actor filter never matches an unverified event.
    let query = format!(
        "aggregate=agent/{}&start=all&actor={}&type=note.forged,agent.registered",
        agent.id(),
        agent.id()
    );
    let text = env.sse_until(&query, &cookie, &["agent.registered"]).await;
    assert!(!text.contains("note.forged"), "{text}");
    env.stop().await;
}

#[tokio::test]
async fn pages_show_the_roles_answers_and_name_the_roles_that_are_not_running() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let agent = env.agent("alice", BTreeMap::new()).await;
    agent
        .append_action("note.written", "{\"n\":1}")
        .await
        .expect("action");

    let page = env.page("/", &cookie).await;
    assert!(page.contains("AMAI_AGENTS"));
    assert!(page.contains("identities"));

    // The trust role knows the agent once it has consumed its genesis.
    let mut agents_page = String::new();
    for _ in 0..100 {
        agents_page = env.page("/agents", &cookie).await;
        if agents_page.contains("alice") && !agents_page.contains("<td>?</td>") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(agents_page.contains("alice"), "{agents_page}");
    assert!(agents_page.contains(agent.id()));
    assert!(!agents_page.contains("no trust worker answered"));

    // No jail or llm worker runs here.
    let jails = env.page("/jails", &cookie).await;
    assert!(
        jails.contains("no jail worker answered: start one with `amai worker --role jail`"),
        "{jails}"
    );
    let llm = env.page("/llm", &cookie).await;
    assert!(
        llm.contains("no llm worker answered: start one with `amai worker --role llm`"),
        "{llm}"
    );

    let audit = env.page("/audit", &cookie).await;
    assert!(audit.contains("AMAI_AGENTS") && audit.contains("request checkpoint"));

    // Bad filters are explained, not 500s.
    let page = env.page("/events?stream=NOPE", &cookie).await;
    assert!(page.contains("unknown stream"));
    let resp = env.get("/events/stream?start=soon", &cookie).await;
    assert_eq!(resp.status(), 400);
    env.stop().await;
}

#[tokio::test]
async fn the_catalogue_page_lists_and_searches_manifests_with_their_requested_permissions() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let publisher = env.agent("publisher", BTreeMap::new()).await;
    for (id, name, description) in [
        (
            "com.example.summarizer",
            "Summariser",
            "Summarises papers <script>alert(1)</script>",
        ),
        ("org.example.translator", "Translator", "Translates text"),
    ] {
        let manifest = serde_json::json!({
            "manifest_version": 1,
            "id": id,
            "name": name,
            "version": "1.0.0",
            "description": description,
            "publisher": {"name": "Example Labs"},
            "source": {"image": "busybox"},
            "entrypoint": ["sh"],
            "permissions": ["llm:openai", "network:egress:api.example.com"],
            "capabilities": ["summarize"]
        });
        let publication = amai_client::catalog::Publication::new(
            &serde_json::to_vec(&manifest).expect("json"),
            amai_bus::proto::CatalogSource::Publish,
        )
        .expect("valid manifest");
        publisher
            .publish_manifest(&publication)
            .await
            .expect("published");
    }
    let page = env.page("/catalog", &cookie).await;
    assert!(page.contains("com.example.summarizer@1.0.0"), "{page}");
    assert!(page.contains("org.example.translator@1.0.0"), "{page}");
    assert!(
        page.contains("network:egress:api.example.com:443"),
        "{page}"
    );
    assert!(page.contains("verified"), "{page}");
    assert!(
        !page.contains("<script>alert(1)</script>"),
        "escaped: {page}"
    );
    assert!(page.contains("&lt;script&gt;"), "{page}");
    let searched = env.page("/catalog?q=translat", &cookie).await;
    assert!(searched.contains("org.example.translator"), "{searched}");
    assert!(!searched.contains("com.example.summarizer"), "{searched}");
    env.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
