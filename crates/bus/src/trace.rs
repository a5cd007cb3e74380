//! W3C trace context across the bus: the current span's context is injected into
//! NATS headers (`traceparent`, `tracestate`) on publish and extracted on consume,
//! so one trace spans gateway -> stream -> worker -> result event. It uses the
//! globally installed OpenTelemetry propagator (the binary installs the W3C one);
//! without OpenTelemetry configured nothing is injected.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// Injects the current span's trace context into `headers`.
pub fn inject_current(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers))
    });
}

/// Makes `span` a child of the trace context carried by `headers`, if any.
pub fn set_parent_from(span: &tracing::Span, headers: Option<&HeaderMap>) {
    if let Some(h) = headers {
        if h.get("traceparent").is_some() {
            let cx =
                opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(h)));
            let _ = span.set_parent(cx);
        }
    }
}

/// The raw `traceparent` header, if present.
pub fn traceparent(headers: Option<&HeaderMap>) -> Option<String> {
    headers
        .and_then(|h| h.get("traceparent"))
        .map(|v| v.as_str().to_string())
}
