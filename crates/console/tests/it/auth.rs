//! Signing in: the token link, signed links (once, by an operator, fresh, for
//! this console), pages without a session, signing out.

use std::collections::BTreeMap;

use amai_bus::IdentityKeys;
use amai_console::{signed_login_link, LOGIN_DOMAIN};
use base64::Engine as _;

use crate::common::{csrf_of, now_ms, session_cookie, Env, TOKEN};

/// The path and query of a link made for this console.
fn path_of(env: &Env, link: &str) -> String {
    link.strip_prefix(&env.origin)
        .expect("link on origin")
        .to_string()
}

async fn open(env: &Env, link_path: &str) -> reqwest::Response {
    env.http.get(env.url(link_path)).send().await.expect("get")
}

#[tokio::test]
async fn the_token_link_sets_a_strict_http_only_session_cookie_and_wrong_tokens_do_not() {
    let env = Env::start().await;
    let resp = open(&env, &format!("/login?token={TOKEN}")).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/");
    let set_cookie = resp.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attr), "{attr} in {set_cookie}");
    }
    let cookie = session_cookie(&resp).expect("cookie");
    // 256 random bits, base64url: 43 characters.
    assert_eq!(cookie.len(), "amai_console=".len() + 43);
    let page = env.page("/", &cookie).await;
    assert!(page.contains("Overview"));

    for bad in [
        "/login".to_string(),
        "/login?token=".to_string(),
        format!("/login?token={}x", TOKEN),
        format!("/login?token={}", &TOKEN[..TOKEN.len() - 1]),
        "/login?token=wrong".to_string(),
    ] {
        let resp = open(&env, &bad).await;
        assert_eq!(resp.status(), 401, "{bad}");
        assert!(
            resp.headers().get("set-cookie").is_none(),
            "{bad} set no cookie"
        );
    }
    // A made-up session id is no session.
    let resp = env
        .get(
            "/",
            "amai_console=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/login");
    env.stop().await;
}

#[tokio::test]
async fn a_signed_link_works_once_and_its_replay_fails() {
    let env = Env::start().await;
    let link = signed_login_link(
        &env.origin,
        &env.operator,
        &env.operator.identity_id(),
        now_ms(),
    );
    let path = path_of(&env, &link);
    assert!(path.starts_with("/login/signed?c="));
    let resp = open(&env, &path).await;
    assert_eq!(resp.status(), 303);
    let cookie = session_cookie(&resp).expect("cookie");
    let page = env.page("/", &cookie).await;
    assert!(page.contains(&format!(
        "signed in by operator {}",
        env.operator.identity_id()
    )));

    let replay = open(&env, &path).await;
    assert_eq!(replay.status(), 401);
    assert!(replay.headers().get("set-cookie").is_none());
    assert!(replay.text().await.expect("body").contains("already used"));
    env.stop().await;
}

#[tokio::test]
async fn links_signed_by_an_agent_expired_for_another_origin_or_forged_fail() {
    let env = Env::start().await;
    let agent = env.agent("mallory", BTreeMap::new()).await;

    // An agent's own, validly signed link: not an operator.
    let link = signed_login_link(&env.origin, agent.keys(), agent.id(), now_ms());
    let resp = open(&env, &path_of(&env, &link)).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("set-cookie").is_none());
    assert!(resp.text().await.expect("body").contains("not an operator"));

    // The operator's id, signed by another key.
    let forger = IdentityKeys::generate();
    let link = signed_login_link(&env.origin, &forger, &env.operator.identity_id(), now_ms());
    let resp = open(&env, &path_of(&env, &link)).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.expect("body").contains("does not verify"));

    // Expired: issued six minutes ago.
    let link = signed_login_link(
        &env.origin,
        &env.operator,
        &env.operator.identity_id(),
        now_ms() - 6 * 60 * 1000,
    );
    let resp = open(&env, &path_of(&env, &link)).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.expect("body").contains("expired"));

    // From the future.
    let link = signed_login_link(
        &env.origin,
        &env.operator,
        &env.operator.identity_id(),
        now_ms() + 5 * 60 * 1000,
    );
    let resp = open(&env, &path_of(&env, &link)).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.expect("body").contains("future"));

    // For another console (another port, another host), opened on this one.
    for other in ["http://127.0.0.1:1", "http://evil.example"] {
        let link = signed_login_link(other, &env.operator, &env.operator.identity_id(), now_ms());
        let query = link.split_once("/login/signed").expect("path").1;
        let resp = open(&env, &format!("/login/signed{query}")).await;
        assert_eq!(resp.status(), 401, "{other}");
        assert!(resp
            .text()
            .await
            .expect("body")
            .contains("is for the console at"));
    }

    // Claims altered after signing.
    let link = signed_login_link(
        &env.origin,
        &env.operator,
        &env.operator.identity_id(),
        now_ms(),
    );
    let (c, s) = link
        .split_once("c=")
        .expect("c")
        .1
        .split_once("&s=")
        .expect("s");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(c).expect("b64")).expect("json");
    claims["issued_at_ms"] = serde_json::json!(now_ms() + 1);
    let forged = b64.encode(serde_json::to_vec(&claims).expect("json"));
    let resp = open(&env, &format!("/login/signed?c={forged}&s={s}")).await;
    assert_eq!(resp.status(), 401);

    // Malformed.
    for bad in [
        "/login/signed",
        "/login/signed?c=abc",
        "/login/signed?c=!!&s=!!",
    ] {
        let resp = open(&env, bad).await;
        assert_eq!(resp.status(), 401, "{bad}");
        assert!(resp.headers().get("set-cookie").is_none());
    }
    // The domain is the console-login one, never an event or request domain.
    assert_eq!(LOGIN_DOMAIN, "amai.console-login.v1");
    env.stop().await;
}

#[tokio::test]
async fn pages_and_streams_need_a_session_and_sign_out_ends_it() {
    let env = Env::start().await;
    for path in ["/", "/agents", "/jails", "/llm", "/events", "/audit"] {
        let resp = env.http.get(env.url(path)).send().await.expect("get");
        assert_eq!(resp.status(), 303, "{path}");
        assert_eq!(resp.headers()["location"], "/login", "{path}");
    }
    let resp = env
        .http
        .get(env.url("/events/stream?stream=AMAI_AGENTS"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 401);
    let resp = env
        .http
        .post(env.url("/audit/checkpoint"))
        .header("origin", &env.origin)
        .form(&[("stream", "AMAI_AGENTS"), ("csrf", "x")])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 401);

    let cookie = env.login().await;
    let page = env.page("/", &cookie).await;
    let csrf = csrf_of(&page);
    // A live stream open before signing out ends with the session.
    let open_stream = env.get("/events/stream?stream=AMAI_AGENTS", &cookie).await;
    assert_eq!(open_stream.status(), 200);
    // Sign-out is a same-origin POST with the token, like any action.
    let resp = env
        .post("/logout", &cookie, &[("origin", &env.origin)], &[])
        .await;
    assert_eq!(resp.status(), 403);
    let resp = env
        .post(
            "/logout",
            &cookie,
            &[("origin", &env.origin)],
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let cleared = resp.headers()["set-cookie"].to_str().expect("ascii");
    assert!(cleared.starts_with("amai_console=;") && cleared.contains("Max-Age=0"));
    let resp = env.get("/", &cookie).await;
    assert_eq!(resp.status(), 303, "the old cookie is no session any more");
    let mut body = open_stream.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut body)).await {
            Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None) | Ok(Some(Err(_))) => break,
            Err(_) => panic!("the live stream outlived its session: {text}"),
        }
    }
    assert!(text.contains("event: interrupted"), "{text}");
    env.stop().await;
}
