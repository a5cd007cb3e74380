//! The page frame: head, navigation, sign-out form, and error pages. Every
//! value is spliced through maud, which escapes it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use crate::pages::NAV;
use crate::session::{Session, SignIn};

fn head(title: &str) -> Markup {
    html! {
        (DOCTYPE)
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Amai console" }
            link rel="stylesheet" href="/static/console.css";
        }
    }
}

/// A signed-in page: navigation with `active` highlighted, the pending flash
/// message, and `body`.
pub(crate) fn page(
    title: &str,
    active: &str,
    session: &Session,
    flash: Option<String>,
    body: Markup,
) -> Markup {
    let who = match &session.sign_in {
        SignIn::Token => "signed in with the login token".to_string(),
        SignIn::SignedBy(id) => format!("signed in by operator {id}"),
    };
    html! {
        (head(title))
        body {
            header {
                nav {
                    span.brand { "Amai" }
                    @for item in NAV {
                        @if item.path == active {
                            a.active href=(item.path) { (item.label) }
                        } @else {
                            a href=(item.path) { (item.label) }
                        }
                    }
                }
                form.logout method="post" action="/logout" {
                    span.who { (who) }
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" { "Sign out" }
                }
            }
            main {
                h1 { (title) }
                @if let Some(msg) = flash {
                    p.flash role="status" { (msg) }
                }
                (body)
            }
        }
    }
}

/// A page of its own (no navigation) with `status`.
pub(crate) fn error_page(status: StatusCode, title: &str, reason: &str) -> Response {
    let markup = html! {
        (head(title))
        body {
            main {
                h1 { (title) }
                p.problem { (reason) }
                p { a href="/" { "Back to the console" } }
            }
        }
    };
    (status, markup).into_response()
}

/// The sign-in page, explaining both ways in.
pub(crate) fn login_page(status: StatusCode, reason: &str) -> Response {
    let markup = html! {
        (head("Sign in"))
        body {
            main {
                h1 { "Sign in to the Amai console" }
                p.problem { (reason) }
                ul {
                    li { "Open the link " code { "amai up" } " printed when it started (" code { "/login?token=…" } ")." }
                    li { "Or make a one-time link signed with an operator's key: " code { "amai console" } " (" code { "/login/signed?c=…&s=…" } ", valid 5 minutes, works once)." }
                }
            }
        }
    };
    (status, markup).into_response()
}

/// A role that did not answer, or answered with an error.
pub(crate) fn role_problem(e: &crate::roles::RoleError) -> Markup {
    html! {
        p.problem.role-down { (e.to_string()) }
    }
}
