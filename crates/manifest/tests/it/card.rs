//! A2A Agent Cards: export, schema, signatures, import.

use amai_manifest::card::{
    agent_card, card_to_manifest, sign_card, verify_card, well_known_card_path, CardVerdict,
    IDENTITY_EXTENSION_URI,
};
use amai_manifest::did::{did_key, resolve_did_key};
use amai_manifest::{CardErrorKind, Manifest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};

use crate::common::{card_schema, full, schema_errors, with};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn manifest() -> Manifest {
    Manifest::from_json(full().to_string().as_bytes())
        .expect("valid")
        .manifest
}

const URL: &str = "https://console.example.com/agents/com.example.summarizer/a2a";

fn signed_json(seed: u8) -> Value {
    let k = key(seed);
    let card = agent_card(&manifest(), &k.verifying_key(), Some(0.87), URL).expect("card");
    sign_card(&card, &k).to_json_value()
}

fn verdict(value: &Value) -> CardVerdict {
    verify_card(value.to_string().as_bytes())
}

#[test]
fn exported_card_validates_and_verifies() {
    let k = key(1);
    let card = agent_card(&manifest(), &k.verifying_key(), Some(0.87), URL).expect("card");
    let unsigned = card.to_json_value();
    let errors = schema_errors(&card_schema(), &unsigned);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(verdict(&unsigned), CardVerdict::Unsigned);

    let signed = sign_card(&card, &k).to_json_value();
    let errors = schema_errors(&card_schema(), &signed);
    assert!(errors.is_empty(), "{errors:#?}");
    let did = did_key(&k.verifying_key());
    assert_eq!(verdict(&signed), CardVerdict::Verified { did: did.clone() });

    // The mapping.
    assert_eq!(signed["name"], "Summarizer");
    assert_eq!(signed["version"], "1.2.0");
    assert_eq!(
        signed["provider"],
        json!({ "url": "https://example.com", "organization": "Example Corp" })
    );
    assert_eq!(signed["supportedInterfaces"][0]["url"], URL);
    assert_eq!(signed["supportedInterfaces"][0]["protocolVersion"], "1.0");
    assert_eq!(signed["capabilities"]["streaming"], false);
    let ext = &signed["capabilities"]["extensions"][0];
    assert_eq!(ext["uri"], IDENTITY_EXTENSION_URI);
    assert_eq!(ext["params"]["did"], did.as_str());
    assert_eq!(ext["params"]["trustScore"], 0.87);
    assert_eq!(ext["params"]["manifestId"], "com.example.summarizer");
    let skills: Vec<&str> = signed["skills"]
        .as_array()
        .expect("skills")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        skills,
        ["summarize", "translate"],
        "tools, then capabilities not already tools"
    );
    assert_eq!(signed["skills"][0]["tags"], json!(["summary", "documents"]));

    // The protected header A2A prescribes.
    let protected = signed["signatures"][0]["protected"]
        .as_str()
        .expect("protected");
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(protected).expect("b64")).expect("json");
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "JOSE");
    let kid = header["kid"].as_str().expect("kid");
    assert_eq!(kid, format!("{did}#{}", did.trim_start_matches("did:key:")));
    assert_eq!(resolve_did_key(kid).expect("resolves").1, k.verifying_key());
    assert_eq!(
        well_known_card_path("com.example.summarizer"),
        "/.well-known/agents/com.example.summarizer/agent-card.json"
    );
}

#[test]
fn one_changed_byte_breaks_the_signature() {
    let signed = signed_json(1);
    let text = signed.to_string();
    // Change one byte of the description.
    let changed = text.replacen("Summarises documents.", "Summarises documents!", 1);
    assert_ne!(changed, text);
    assert!(matches!(
        verify_card(changed.as_bytes()),
        CardVerdict::BadSignature { index: 0, .. }
    ));
    // Adding an unknown member is a change too.
    let mut added = signed.clone();
    added["iconUrl"] = json!("https://evil.example/icon.png");
    assert!(matches!(verdict(&added), CardVerdict::BadSignature { .. }));
    // So is raising the trust score in the extension.
    let mut raised = signed.clone();
    raised["capabilities"]["extensions"][0]["params"]["trustScore"] = json!(1.0);
    assert!(matches!(verdict(&raised), CardVerdict::BadSignature { .. }));
    // Flipping a signature bit.
    let mut flipped = signed.clone();
    let sig = flipped["signatures"][0]["signature"]
        .as_str()
        .expect("sig")
        .to_owned();
    let mut bytes = URL_SAFE_NO_PAD.decode(&sig).expect("b64");
    bytes[0] ^= 1;
    flipped["signatures"][0]["signature"] = json!(URL_SAFE_NO_PAD.encode(bytes));
    assert!(matches!(
        verdict(&flipped),
        CardVerdict::BadSignature { .. }
    ));
}

#[test]
fn reordering_and_whitespace_still_verify() {
    let signed = signed_json(2);
    let did = did_key(&key(2).verifying_key());
    let pretty = serde_json::to_string_pretty(&signed).expect("json");
    assert_eq!(
        verify_card(pretty.as_bytes()),
        CardVerdict::Verified { did: did.clone() }
    );
    // Members in reverse order, by hand.
    fn reversed(v: &Value) -> String {
        match v {
            Value::Object(m) => {
                let parts: Vec<String> = m
                    .iter()
                    .rev()
                    .map(|(k, v)| format!("{} :\n {}", Value::String(k.clone()), reversed(v)))
                    .collect();
                format!("{{ {} }}", parts.join(" ,\t"))
            }
            Value::Array(a) => {
                format!("[{}]", a.iter().map(reversed).collect::<Vec<_>>().join(","))
            }
            other => other.to_string(),
        }
    }
    let shuffled = reversed(&signed);
    assert_ne!(shuffled, signed.to_string());
    assert_eq!(
        verify_card(shuffled.as_bytes()),
        CardVerdict::Verified { did }
    );
}

#[test]
fn signature_over_another_canonicalisation_fails() {
    // Sign the serde_json (non-JCS) text of the card instead of its JCS.
    let k = key(3);
    let card = agent_card(&manifest(), &k.verifying_key(), Some(0.25), URL).expect("card");
    let mut value = card.to_json_value();
    let kid = format!(
        "{}#{}",
        did_key(&k.verifying_key()),
        did_key(&k.verifying_key()).trim_start_matches("did:key:")
    );
    let protected =
        URL_SAFE_NO_PAD.encode(json!({ "alg": "EdDSA", "kid": kid, "typ": "JOSE" }).to_string());
    let payload = serde_json::to_string_pretty(&value).expect("json");
    let input = format!("{protected}.{}", URL_SAFE_NO_PAD.encode(payload));
    let sig = URL_SAFE_NO_PAD.encode(k.sign(input.as_bytes()).to_bytes());
    value["signatures"] = json!([{ "protected": protected, "signature": sig }]);
    assert!(matches!(verdict(&value), CardVerdict::BadSignature { .. }));
}

#[test]
fn signed_by_another_key_is_a_key_mismatch() {
    let agent = key(4);
    let other = key(5);
    let card = agent_card(&manifest(), &agent.verifying_key(), None, URL).expect("card");
    let by_other = sign_card(&card, &other).to_json_value();
    assert_eq!(
        verdict(&by_other),
        CardVerdict::KeyMismatch {
            index: 0,
            signer: did_key(&other.verifying_key()),
            declared: did_key(&agent.verifying_key()),
        }
    );
    // Re-signing after swapping the declared did to the attacker's is
    // "verified by the attacker", never by the agent.
    let mut swapped = card.clone();
    swapped.capabilities.extensions[0]
        .params
        .as_mut()
        .expect("params")
        .insert("did".into(), json!(did_key(&other.verifying_key())));
    let v = verdict(&sign_card(&swapped, &other).to_json_value());
    assert_eq!(
        v,
        CardVerdict::Verified {
            did: did_key(&other.verifying_key())
        }
    );
    assert_ne!(
        v,
        CardVerdict::Verified {
            did: did_key(&agent.verifying_key())
        }
    );
    // The agent's own signature next to a stranger's still verifies.
    let both = sign_card(&sign_card(&card, &other), &agent).to_json_value();
    assert_eq!(
        verdict(&both),
        CardVerdict::Verified {
            did: did_key(&agent.verifying_key())
        }
    );
}

#[test]
fn unsupported_and_malformed_signatures() {
    let mut card = signed_json(6);
    let header = json!({ "alg": "HS256", "kid": "x", "typ": "JOSE" });
    card["signatures"][0]["protected"] = json!(URL_SAFE_NO_PAD.encode(header.to_string()));
    assert_eq!(
        verdict(&card),
        CardVerdict::UnsupportedAlgorithm {
            index: 0,
            alg: "HS256".into()
        }
    );
    let mut none = signed_json(6);
    none["signatures"][0]["protected"] =
        json!(URL_SAFE_NO_PAD.encode(json!({ "alg": "none" }).to_string()));
    assert!(matches!(
        verdict(&none),
        CardVerdict::UnsupportedAlgorithm { .. }
    ));
    let mut https_kid = signed_json(6);
    https_kid["signatures"][0]["protected"] = json!(URL_SAFE_NO_PAD.encode(
        json!({ "alg": "EdDSA", "kid": "https://evil.example/jwks#1", "jku": "https://evil.example/jwks" }).to_string()
    ));
    assert!(matches!(
        verdict(&https_kid),
        CardVerdict::BadSignature { .. }
    ));
    let mut empty = signed_json(6);
    empty["signatures"] = json!([]);
    assert_eq!(verdict(&empty), CardVerdict::Unsigned);
    assert!(matches!(
        verify_card(b"not json"),
        CardVerdict::Malformed { .. }
    ));
    assert!(matches!(
        verify_card(br#"{"name": "a", "name": "b", "signatures": []}"#),
        CardVerdict::Malformed { .. }
    ));
}

#[test]
fn imported_cards_are_drafts_without_permissions() {
    let k = key(7);
    let card = json!({
        "name": "Recipe Agent",
        "description": "Helps with recipes.",
        "supportedInterfaces": [{ "url": "https://Agents.Example.com/a2a/v1", "protocolBinding": "JSONRPC", "protocolVersion": "1.0" }],
        "provider": { "organization": "Example\u{7} Kitchens", "url": "https://example.com" },
        "version": "2.1.0",
        "capabilities": { "streaming": true },
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [
            { "id": "find-recipe", "name": "Find a recipe", "description": "Finds one.", "tags": ["cooking", "recipes"] },
            { "id": "find-recipe", "name": "Duplicate", "description": "d", "tags": [] },
            { "id": "plan meals/week", "name": "Plan", "description": "Plans.", "tags": ["cooking"], "permissions": ["network:egress:*"] }
        ],
        "permissions": ["fs:write:/workspace/**"]
    });
    assert!(
        !schema_errors(&card_schema(), &card).is_empty(),
        "a foreign member is not A2A"
    );
    let imported = card_to_manifest(card.to_string().as_bytes()).expect("imports");
    assert_eq!(imported.verdict, CardVerdict::Unsigned);
    assert_eq!(imported.missing, ["source", "entrypoint"]);
    let draft = &imported.manifest_draft;
    assert_eq!(draft["id"], "com.example.agents.recipe-agent");
    assert_eq!(
        draft["permissions"],
        json!([]),
        "a card never grants permissions"
    );
    assert_eq!(draft["publisher"]["name"], "Example Kitchens");
    assert_eq!(draft["keywords"], json!(["cooking", "recipes"]));
    let tools: Vec<&str> = draft["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    assert_eq!(tools, ["find-recipe", "plan_meals_week"]);
    assert_eq!(imported.notes.len(), 1, "{:?}", imported.notes);

    // With source and entrypoint supplied, the draft is a manifest.
    let mut complete = draft.clone();
    complete["source"] = json!({ "image": "ghcr.io/example/recipes:2.1.0" });
    complete["entrypoint"] = json!(["/app/agent"]);
    let m = Manifest::from_value(&complete).expect("valid").manifest;
    assert!(m.permissions.is_empty());
    assert_eq!(m.version.to_string(), "2.1.0");

    // A signed Amai card imports with its verdict; a card without a host
    // gets an imported. id; garbage is an error, not a panic.
    let ours = signed_json(7);
    let imported = card_to_manifest(ours.to_string().as_bytes()).expect("imports");
    assert_eq!(
        imported.verdict,
        CardVerdict::Verified {
            did: did_key(&k.verifying_key())
        }
    );
    assert_eq!(
        imported.manifest_draft["id"],
        "com.example.console.summarizer"
    );
    let hostless = with(
        card.clone(),
        "supportedInterfaces",
        json!([{ "url": "https://10.0.0.1/a2a" }]),
    );
    let imported = card_to_manifest(hostless.to_string().as_bytes()).expect("imports");
    assert_eq!(imported.manifest_draft["id"], "imported.recipe-agent");
    let bad_version = with(card.clone(), "version", json!("v2"));
    let imported = card_to_manifest(bad_version.to_string().as_bytes()).expect("imports");
    assert_eq!(imported.missing, ["source", "entrypoint", "version"]);
    let err = card_to_manifest(b"[1, 2]").expect_err("not a card");
    assert_eq!(err.kind(), CardErrorKind::Malformed);
    let err = card_to_manifest(br#"{"name": ""}"#).expect_err("no name");
    assert_eq!(err.kind(), CardErrorKind::Malformed);
}

#[test]
fn card_inputs_are_checked() {
    let k = key(8);
    let err = agent_card(&manifest(), &k.verifying_key(), None, "ftp://x").expect_err("url");
    assert_eq!(err.kind(), CardErrorKind::BadUrl);
    let err = agent_card(&manifest(), &k.verifying_key(), Some(f64::NAN), URL).expect_err("nan");
    assert_eq!(err.kind(), CardErrorKind::BadTrustScore);
    // A manifest with neither tools nor capabilities gets one skill.
    let bare = with(with(full(), "tools", json!([])), "capabilities", json!([]));
    let bare = Manifest::from_value(&bare).expect("valid").manifest;
    let card = agent_card(&bare, &k.verifying_key(), None, URL).expect("card");
    assert_eq!(card.skills.len(), 1);
    assert_eq!(card.skills[0].id, "com.example.summarizer");
    assert!(
        card.to_json_value()["capabilities"]["extensions"][0]["params"]
            .get("trustScore")
            .is_none()
    );
}

#[test]
fn did_key_round_trips_and_refuses_other_keys() {
    let k = key(9).verifying_key();
    let did = did_key(&k);
    assert!(did.starts_with("did:key:z6Mk"), "{did}");
    assert_eq!(resolve_did_key(&did).expect("resolves"), (did.clone(), k));
    let id = did.trim_start_matches("did:key:");
    for bad in [
        format!("{did}#z6MkOther"),
        format!("did:web:{id}"),
        "did:key:f00".to_owned(),
        // secp256k1 multicodec (0xe7 0x01), base58btc.
        format!(
            "did:key:{}",
            multibase::encode(multibase::Base::Base58Btc, [0xe7, 0x01, 1, 2, 3])
        ),
        format!(
            "did:key:{}",
            multibase::encode(multibase::Base::Base58Btc, [0xed, 0x01, 1, 2, 3])
        ),
    ] {
        assert!(resolve_did_key(&bad).is_err(), "{bad}");
    }
}
