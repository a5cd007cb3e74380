//! The Prometheus-style metrics endpoint (`GET /metrics` on `--metrics-addr`):
//! reactor counters, projection positions, stream heads and the lag between them,
//! integrity violations, and gateway request counts, failures and latencies. Values are read at scrape time; nothing is buffered.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use amai_workers::runtime::RoleMetrics;

/// What one process exposes.
#[derive(Clone)]
pub(crate) struct MetricsSources {
    /// JetStream, for stream heads.
    pub(crate) js: async_nats::jetstream::Context,
    /// The roles this process runs (counters, projections, health), labelled
    /// by role name: no per-role code here.
    pub(crate) roles: Vec<RoleMetrics>,
    /// The gateway's request counters and latencies, when this process runs one.
    pub(crate) gateway: Option<Arc<amai_gateway::metrics::GatewayMetrics>>,
}

async fn render(src: &MetricsSources) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# TYPE amai_role_live gauge\n# TYPE amai_role_ready gauge"
    );
    for r in &src.roles {
        let health = r.health.health();
        let _ = writeln!(
            out,
            "amai_role_live{{role=\"{}\"}} {}",
            r.role,
            u8::from(health.live)
        );
        let _ = writeln!(
            out,
            "amai_role_ready{{role=\"{}\"}} {}",
            r.role,
            u8::from(health.ready)
        );
    }
    let reactors: Vec<_> = src
        .roles
        .iter()
        .map(|r| (r.role, r.reactors.clone()))
        .collect();
    let _ = writeln!(out, "# TYPE amai_reactor_inputs_acked_total counter");
    for (role, s) in &reactors {
        let _ = writeln!(
            out,
            "amai_reactor_inputs_acked_total{{role=\"{role}\"}} {}",
            s.acked.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# TYPE amai_reactor_outputs_appended_total counter");
    for (role, s) in &reactors {
        let _ = writeln!(
            out,
            "amai_reactor_outputs_appended_total{{role=\"{role}\"}} {}",
            s.appended.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# TYPE amai_reactor_inputs_poisoned_total counter");
    for (role, s) in &reactors {
        let _ = writeln!(
            out,
            "amai_reactor_inputs_poisoned_total{{role=\"{role}\"}} {}",
            s.poisoned.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# TYPE amai_reactor_inputs_retried_total counter");
    for (role, s) in &reactors {
        let _ = writeln!(
            out,
            "amai_reactor_inputs_retried_total{{role=\"{role}\"}} {}",
            s.retried.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# TYPE amai_reactor_outputs_already_applied_total counter"
    );
    for (role, s) in &reactors {
        let _ = writeln!(
            out,
            "amai_reactor_outputs_already_applied_total{{role=\"{role}\"}} {}",
            s.already_applied.load(Ordering::Relaxed)
        );
    }
    let projections: Vec<_> = src
        .roles
        .iter()
        .flat_map(|r| r.projections.iter().map(move |p| (r.role, p)))
        .collect();
    let _ = writeln!(out, "# TYPE amai_projection_position gauge\n# TYPE amai_projection_lag gauge\n# TYPE amai_stream_last_seq gauge");
    for (role, p) in &projections {
        for pos in p.positions() {
            let last = match src.js.get_stream(&pos.stream).await {
                Ok(mut s) => s.info().await.map(|i| i.state.last_sequence).ok(),
                Err(_) => None,
            };
            let _ = writeln!(
                out,
                "amai_projection_position{{role=\"{role}\",projection=\"{}\",stream=\"{}\"}} {}",
                p.name(),
                pos.stream,
                pos.seq
            );
            if let Some(last) = last {
                let _ = writeln!(
                    out,
                    "amai_stream_last_seq{{stream=\"{}\"}} {last}",
                    pos.stream
                );
                let _ = writeln!(
                    out,
                    "amai_projection_lag{{role=\"{role}\",projection=\"{}\",stream=\"{}\"}} {}",
                    p.name(),
                    pos.stream,
                    last.saturating_sub(pos.seq)
                );
            }
        }
    }
    let _ = writeln!(out, "# TYPE amai_projection_integrity_violations gauge");
    for (role, p) in &projections {
        let _ = writeln!(
            out,
            "amai_projection_integrity_violations{{role=\"{role}\",projection=\"{}\"}} {}",
            p.name(),
            p.violation_count()
        );
    }
    if let Some(gateway) = &src.gateway {
        out.push_str(&gateway.render());
    }
    out
}

/// Serves `/metrics` until `shutdown`. A busy port is logged, not fatal (several
/// instances on one host: give each its own `--metrics-addr`).
pub(crate) async fn serve(
    addr: SocketAddr,
    sources: MetricsSources,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "metrics endpoint disabled: cannot bind (pass --metrics-addr)");
            return;
        }
    };
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let sources = sources.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    render(&sources).await,
                )
            }
        }),
    );
    tracing::info!(%addr, "metrics on /metrics");
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(error = %e, "metrics endpoint stopped");
    }
}
