//! Process-wide telemetry: the `tracing` subscriber (logs on stderr, text or
//! JSON, filtered by an `EnvFilter`), the W3C trace-context propagator, and —
//! only when an OTLP endpoint is configured — span export to OpenTelemetry.
//!
//! The W3C `TraceContextPropagator` is always installed as the global text-map
//! propagator: `amai_bus::trace` uses it to carry `traceparent` across NATS
//! headers. Without OTLP there is no OpenTelemetry layer, so spans carry no
//! OpenTelemetry context and nothing is injected (as `amai_bus::trace` documents).
//!
//! Only the binary calls [`init`]; libraries emit `tracing` events and never
//! install a subscriber.

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::{Layer, Layered, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Registry;

/// How long dropping the [`TelemetryGuard`] waits for buffered spans to be exported.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Log output format on stderr.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines (coloured when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Keeps telemetry alive; dropping it flushes and shuts down the OpenTelemetry
/// tracer provider (if OTLP export is on). Hold it until the end of `main`, and
/// drop it while the Tokio runtime is still running (the OTLP exporter needs it).
#[must_use = "dropping the guard shuts down trace export"]
#[derive(Debug)]
pub(crate) struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
                // The subscriber may already be half torn down; stderr is the safe place.
                eprintln!("amai: flushing OpenTelemetry spans failed: {e}");
            }
        }
    }
}

type Base = Layered<EnvFilter, Registry>;
type BoxedLayer = Box<dyn Layer<Base> + Send + Sync + 'static>;

/// Installs the global `tracing` subscriber and the W3C propagator.
///
/// * `format`, `level`: stderr log format and `EnvFilter` directives (`info`,
///   `amai=debug,async_nats=warn`, ...); the filter applies to exported spans too.
/// * `otlp_endpoint`: when set (e.g. `http://127.0.0.1:4317`), spans are exported
///   via OTLP/gRPC through a batch processor. This must then be called from within
///   a Tokio runtime, which the gRPC client runs on.
/// * `service_name`: the OpenTelemetry `service.name` resource attribute.
///
/// Fails if the filter is invalid, the exporter cannot be built, or a global
/// subscriber is already installed.
pub(crate) fn init(
    format: LogFormat,
    level: &str,
    otlp_endpoint: Option<&str>,
    service_name: &str,
) -> anyhow::Result<TelemetryGuard> {
    let filter =
        EnvFilter::try_new(level).with_context(|| format!("invalid log filter {level:?}"))?;

    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );

    let mut layers: Vec<BoxedLayer> = vec![fmt_layer(format)];
    let provider = match otlp_endpoint.filter(|e| !e.trim().is_empty()) {
        Some(endpoint) => {
            let provider = otlp_provider(endpoint, service_name)?;
            let tracer = provider.tracer(service_name.to_string());
            // Keep the exporter's own transport spans out of the export, or every
            // export would produce spans to export.
            let otel = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter_fn(|meta| !is_exporter_internal(meta.target())));
            layers.push(Box::new(otel));
            opentelemetry::global::set_tracer_provider(provider.clone());
            Some(provider)
        }
        None => None,
    };

    tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init()
        .context("a global tracing subscriber is already installed")?;

    if let Some(endpoint) = otlp_endpoint.filter(|_| provider.is_some()) {
        tracing::info!(
            endpoint,
            service = service_name,
            "exporting traces over otlp"
        );
    }
    Ok(TelemetryGuard { provider })
}

fn fmt_layer(format: LogFormat) -> BoxedLayer {
    let base = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true);
    match format {
        LogFormat::Text => Box::new(base.with_ansi(std::io::stderr().is_terminal())),
        LogFormat::Json => Box::new(
            base.json()
                .with_ansi(false)
                .with_current_span(true)
                .with_span_list(false),
        ),
    }
}

fn otlp_provider(endpoint: &str, service_name: &str) -> anyhow::Result<SdkTracerProvider> {
    tokio::runtime::Handle::try_current().map_err(|_| {
        anyhow!("OTLP export needs a Tokio runtime: call telemetry::init from within it")
    })?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("cannot build the OTLP exporter for {endpoint}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_string())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Targets of the crates the OTLP exporter itself runs on.
fn is_exporter_internal(target: &str) -> bool {
    const INTERNAL: [&str; 7] = [
        "opentelemetry",
        "tonic",
        "h2",
        "hyper",
        "hyper_util",
        "tower",
        "reqwest",
    ];
    INTERNAL.iter().any(|prefix| {
        target == *prefix
            || target
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with("::") || rest.starts_with('_'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporter_internal_targets() {
        assert!(is_exporter_internal("h2::codec"));
        assert!(is_exporter_internal("opentelemetry_sdk::trace"));
        assert!(is_exporter_internal("tonic"));
        assert!(!is_exporter_internal("amai::gateway"));
        assert!(!is_exporter_internal("h2o"));
    }

    #[test]
    fn log_format_parses_lowercase() {
        #[derive(serde::Deserialize)]
        struct W {
            f: LogFormat,
        }
        let w: W = toml::from_str("f = \"json\"").expect("parse");
        assert_eq!(w.f, LogFormat::Json);
        assert!(toml::from_str::<W>("f = \"Json\"").is_err());
    }

    #[test]
    fn invalid_filter_is_an_error() {
        assert!(init(LogFormat::Text, "amai=notalevel", None, "amai").is_err());
    }

    /// The only test that installs the global subscriber (one per process).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn init_with_otlp_installs_propagator_and_context() {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        // Nothing listens there: export fails in the background, which must not hurt.
        let guard = init(
            LogFormat::Json,
            "info",
            Some("http://127.0.0.1:9"),
            "amai-test",
        )
        .expect("init");
        assert!(guard.provider.is_some());
        let span = tracing::info_span!("request");
        let mut headers = std::collections::HashMap::new();
        let cx = span.context();
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut headers));
        let traceparent = headers.get("traceparent").expect("traceparent injected");
        assert!(
            traceparent.starts_with("00-") && traceparent.len() == 55,
            "{traceparent}"
        );
        drop(span);
        let started = std::time::Instant::now();
        drop(guard);
        assert!(started.elapsed() < SHUTDOWN_TIMEOUT + Duration::from_secs(2));
        assert!(
            init(LogFormat::Text, "info", None, "amai").is_err(),
            "second init must fail"
        );
    }
}
