//! Request metrics of the gateway: per gRPC method, the number of requests, the
//! failures by status code, and a latency histogram (time until the response
//! headers), rendered in the Prometheus text format by whoever serves `/metrics`.
//! Collected by a tower layer around every service, so handlers stay thin.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

#[derive(Default)]
struct MethodStats {
    requests: u64,
    failures: BTreeMap<i32, u64>,
    buckets: [u64; BUCKETS.len()],
    sum_secs: f64,
}

/// Counters and latencies of gateway requests. Cheap to share (`Arc`).
#[derive(Default)]
pub struct GatewayMetrics {
    methods: Mutex<BTreeMap<String, MethodStats>>,
}

impl std::fmt::Debug for GatewayMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayMetrics").finish_non_exhaustive()
    }
}

impl GatewayMetrics {
    /// Records one request of `method` that took `elapsed`; `code` is the gRPC
    /// status code when it failed.
    pub fn observe(&self, method: &str, elapsed: Duration, code: Option<i32>) {
        // A poisoned lock still guards consistent counters (each update is whole).
        let mut methods = self.methods.lock().unwrap_or_else(|p| p.into_inner());
        let m = methods.entry(method.to_string()).or_default();
        m.requests += 1;
        let secs = elapsed.as_secs_f64();
        m.sum_secs += secs;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                m.buckets[i] += 1;
            }
        }
        if let Some(code) = code.filter(|c| *c != 0) {
            *m.failures.entry(code).or_default() += 1;
        }
    }

    /// Requests seen for `method` so far.
    pub fn requests(&self, method: &str) -> u64 {
        self.methods
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(method)
            .map_or(0, |m| m.requests)
    }

    /// Failures of `method` with gRPC status `code` so far.
    pub fn failures(&self, method: &str, code: i32) -> u64 {
        self.methods
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(method)
            .and_then(|m| m.failures.get(&code).copied())
            .unwrap_or(0)
    }

    /// The Prometheus text rendering.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let methods = self.methods.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE amai_gateway_requests_total counter");
        for (name, m) in methods.iter() {
            let _ = writeln!(
                out,
                "amai_gateway_requests_total{{method=\"{name}\"}} {}",
                m.requests
            );
        }
        let _ = writeln!(out, "# TYPE amai_gateway_failures_total counter");
        for (name, m) in methods.iter() {
            for (code, n) in &m.failures {
                let _ = writeln!(
                    out,
                    "amai_gateway_failures_total{{method=\"{name}\",code=\"{:?}\"}} {n}",
                    tonic::Code::from(*code)
                );
            }
        }
        let _ = writeln!(out, "# TYPE amai_gateway_request_seconds histogram");
        for (name, m) in methods.iter() {
            for (bound, n) in BUCKETS.iter().zip(m.buckets.iter()) {
                let _ = writeln!(
                    out,
                    "amai_gateway_request_seconds_bucket{{method=\"{name}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "amai_gateway_request_seconds_bucket{{method=\"{name}\",le=\"+Inf\"}} {}",
                m.requests
            );
            let _ = writeln!(
                out,
                "amai_gateway_request_seconds_sum{{method=\"{name}\"}} {}",
                m.sum_secs
            );
            let _ = writeln!(
                out,
                "amai_gateway_request_seconds_count{{method=\"{name}\"}} {}",
                m.requests
            );
        }
        out
    }
}

/// The tower layer that records [`GatewayMetrics`].
#[derive(Clone, Debug)]
pub struct MetricsLayer(pub Arc<GatewayMetrics>);

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// A service wrapped by [`MetricsLayer`].
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<GatewayMetrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            // Failures of unary calls come back "trailers-only": the status is in
            // the headers. A success carries its status in the trailers (absent here).
            let code = match &result {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse::<i32>().ok()),
                Err(_) => Some(tonic::Code::Internal as i32),
            };
            metrics.observe(&method, started.elapsed(), code);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_failures_counted_by_code() {
        let m = GatewayMetrics::default();
        m.observe(
            "/amai.v1.EventService/Append",
            Duration::from_micros(300),
            None,
        );
        m.observe(
            "/amai.v1.EventService/Append",
            Duration::from_millis(3),
            Some(9),
        );
        let text = m.render();
        assert!(
            text.contains("amai_gateway_requests_total{method=\"/amai.v1.EventService/Append\"} 2"),
            "{text}"
        );
        assert!(text.contains("le=\"0.00025\"} 0"), "{text}");
        assert!(text.contains("le=\"0.0005\"} 1"), "{text}");
        assert!(text.contains("le=\"0.005\"} 2"), "{text}");
        assert!(text.contains("code=\"FailedPrecondition\"} 1"), "{text}");
        assert_eq!(m.failures("/amai.v1.EventService/Append", 9), 1);
    }
}
