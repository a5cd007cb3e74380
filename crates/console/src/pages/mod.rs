//! The pages, one module each, and the navigation list.
//!
//! Adding a page (the lifecycle role's agents catalogue, approvals,
//! sanctions, ...) is a module here with a `routes()` function, one line in
//! [`NAV`] and one `.merge(..)` in [`router`]. Pages render with
//! [`crate::layout`], ask roles with [`crate::roles`], and take
//! [`crate::session::PageSession`] (pages) or
//! [`crate::session::ApiSession`] (streams and actions); state-changing
//! requests are POSTs checked with [`crate::security::check_post`].

pub mod agents;
pub mod audit;
pub mod catalog;
pub mod events;
pub mod jails;
pub mod llm;
pub mod overview;

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Router};

use crate::{security, AppState};

/// One entry of the navigation bar.
#[derive(Clone, Copy, Debug)]
pub struct NavItem {
    /// The page's path.
    pub path: &'static str,
    /// Its label.
    pub label: &'static str,
}

/// The navigation bar, in order.
pub const NAV: &[NavItem] = &[
    NavItem {
        path: "/",
        label: "Overview",
    },
    NavItem {
        path: "/agents",
        label: "Agents",
    },
    NavItem {
        path: "/catalog",
        label: "Catalogue",
    },
    NavItem {
        path: "/jails",
        label: "Jails",
    },
    NavItem {
        path: "/llm",
        label: "LLM sessions",
    },
    NavItem {
        path: "/events",
        label: "Events",
    },
    NavItem {
        path: "/audit",
        label: "Audit",
    },
];

/// The console's whole router: every page behind the Host check, every
/// response with the security headers.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(crate::login::routes())
        .merge(overview::routes())
        .merge(agents::routes())
        .merge(catalog::routes())
        .merge(jails::routes())
        .merge(llm::routes())
        .merge(events::routes())
        .merge(audit::routes())
        .route("/static/console.css", get(css))
        .route("/static/console.js", get(js))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security::check_host,
        ))
        .layer(middleware::from_fn(security::security_headers))
        .with_state(state)
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../static/console.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../static/console.js"),
    )
        .into_response()
}

async fn not_found() -> Response {
    crate::layout::error_page(StatusCode::NOT_FOUND, "Not found", "no such page")
}
