//! CSRF token and Origin checks on actions, the Host check, security headers.

use crate::common::{csrf_of, Env, TOKEN};

/// A refused request: what it is, its headers, its form, the reason expected.
type Case<'a> = (
    &'a str,
    Vec<(&'static str, &'a str)>,
    Vec<(&'a str, &'a str)>,
    &'a str,
);

#[tokio::test]
async fn a_checkpoint_request_needs_the_csrf_token_and_the_own_origin() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let page = env.page("/audit", &cookie).await;
    assert!(page.contains("request checkpoint"), "{page}");
    let csrf = csrf_of(&page);
    let before = env.audit_event_types().await;
    let checkpoints =
        |types: &[String]| types.iter().filter(|t| *t == "audit.checkpointed").count();
    let origin = env.origin.clone();

    let refused: Vec<Case<'_>> = vec![
        (
            "no CSRF token",
            vec![("origin", &origin)],
            vec![("stream", "AMAI_AGENTS")],
            "CSRF token is missing",
        ),
        (
            "a wrong CSRF token",
            vec![("origin", &origin)],
            vec![
                ("stream", "AMAI_AGENTS"),
                ("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            ],
            "does not match",
        ),
        (
            "another Origin",
            vec![("origin", "http://evil.example")],
            vec![("stream", "AMAI_AGENTS"), ("csrf", &csrf)],
            "cross-origin request refused",
        ),
        (
            "a null Origin",
            vec![("origin", "null")],
            vec![("stream", "AMAI_AGENTS"), ("csrf", &csrf)],
            "cross-origin request refused",
        ),
        (
            "no Origin and a foreign Referer",
            vec![("referer", "http://evil.example/page")],
            vec![("stream", "AMAI_AGENTS"), ("csrf", &csrf)],
            "Referer",
        ),
        (
            "neither Origin nor Referer",
            vec![],
            vec![("stream", "AMAI_AGENTS"), ("csrf", &csrf)],
            "neither an Origin nor a Referer",
        ),
    ];
    for (what, headers, form, reason) in refused {
        let resp = env
            .post("/audit/checkpoint", &cookie, &headers, &form)
            .await;
        assert_eq!(resp.status(), 403, "{what}");
        let body = resp.text().await.expect("body");
        assert!(body.contains(reason), "{what}: {body}");
    }
    assert_eq!(
        checkpoints(&env.audit_event_types().await),
        checkpoints(&before),
        "no refused request checkpointed"
    );

    // Both right: the action happens.
    let resp = env
        .post(
            "/audit/checkpoint",
            &cookie,
            &[("origin", &origin)],
            &[("stream", "AMAI_AGENTS"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/audit");
    let after = env.audit_event_types().await;
    assert_eq!(checkpoints(&after), checkpoints(&before) + 1, "{after:?}");
    let page = env.page("/audit", &cookie).await;
    assert!(
        page.contains("checkpoint of AMAI_AGENTS requested"),
        "{page}"
    );

    // A same-origin Referer without Origin is accepted too.
    let resp = env
        .post(
            "/audit/checkpoint",
            &cookie,
            &[("referer", &format!("{origin}/audit"))],
            &[("stream", "AMAI_AGENTS"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(resp.status(), 303);

    // Another session's token is no good for this one.
    let other = env.login().await;
    let other_csrf = csrf_of(&env.page("/audit", &other).await);
    assert_ne!(other_csrf, csrf);
    let resp = env
        .post(
            "/audit/checkpoint",
            &cookie,
            &[("origin", &origin)],
            &[("stream", "AMAI_AGENTS"), ("csrf", &other_csrf)],
        )
        .await;
    assert_eq!(resp.status(), 403);
    env.stop().await;
}

#[tokio::test]
async fn requests_for_another_host_are_refused() {
    let env = Env::start().await;
    let port = env.origin.rsplit(':').next().expect("port").to_string();
    let cookie = env.login().await;
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("127.0.0.1.evil.example:{port}"),
        "127.0.0.1:1".to_string(),
    ] {
        for path in ["/", &format!("/login?token={TOKEN}"), "/events/stream"] {
            let resp = env
                .http
                .get(env.url(path))
                .header("host", &host)
                .header("cookie", &cookie)
                .send()
                .await
                .expect("get");
            assert_eq!(resp.status(), 421, "{host} {path}");
            assert!(resp.headers().get("set-cookie").is_none());
        }
    }
    // The loopback names of the same port are this console.
    let resp = env
        .http
        .get(env.url("/"))
        .header("host", format!("localhost:{port}"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    env.stop().await;
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let env = Env::start().await;
    let cookie = env.login().await;
    let paths = ["/", "/audit", "/login", "/static/console.js", "/nope"];
    for path in paths {
        let resp = env.get(path, &cookie).await;
        let h = resp.headers();
        let csp = h["content-security-policy"].to_str().expect("ascii");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "same-origin", "{path}");
        assert_eq!(h["cache-control"], "no-store", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
    }
    // No inline script anywhere: the one script is a static file.
    let page = env.page("/events", &cookie).await;
    assert!(page.contains("<script src=\"/static/console.js\"></script>"));
    assert_eq!(page.matches("<script").count(), 1);
    env.stop().await;
}
