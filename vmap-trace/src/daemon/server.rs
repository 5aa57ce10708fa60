//! The HTTP endpoint: `GET /metrics` (OpenMetrics text) and a small index page.
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::exposition::CONTENT_TYPE;
use super::sampler::MetricsClient;

/// A scrape waits at most this long for the sampler (a map read takes milliseconds; this
/// only trips if the sampler is stuck, and then the scraper gets a 503 instead of hanging).
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bind now (before the slow probe attach), so a taken port or bad address fails fast.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => " (is another vmap-trace daemon or exporter running? choose another port with --listen)",
            std::io::ErrorKind::AddrNotAvailable => " (no local interface has this address)",
            std::io::ErrorKind::PermissionDenied => " (ports below 1024 need CAP_NET_BIND_SERVICE)",
            _ => "",
        };
        anyhow::anyhow!("cannot listen on {addr}: {e}{hint}")
    })?;
    listener
        .set_nonblocking(true)
        .context("cannot make the listening socket non-blocking")?;
    Ok(listener)
}

pub fn router(client: MetricsClient) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(index))
        .with_state(client)
}

async fn metrics(State(client): State<MetricsClient>) -> Response {
    match tokio::time::timeout(SCRAPE_TIMEOUT, client.metrics()).await {
        Ok(Ok(text)) => (
            [(header::CONTENT_TYPE, CONTENT_TYPE)],
            text.as_str().to_owned(),
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("vmap-trace: {e:#}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "vmap-trace: timed out reading the kernel maps\n",
        )
            .into_response(),
    }
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><head><title>vmap-trace</title></head><body><h1>vmap-trace daemon</h1>\
         <p><a href=\"/metrics\">/metrics</a>: vmap allocator activity and lock contention \
         (OpenMetrics text).</p></body></html>\n",
    )
}

/// Serve until `shutdown` resolves; in-flight requests finish first.
pub async fn serve(
    listener: std::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener =
        tokio::net::TcpListener::from_std(listener).context("cannot hand the socket to tokio")?;
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server failed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::exposition::MetricsOptions;
    use crate::daemon::log::{LogFormat, Logger};
    use crate::daemon::sampler::{tests::fake, Sampler, SamplerOptions};

    #[test]
    fn bind_errors_are_clear() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = bind(taken.local_addr().unwrap()).unwrap_err().to_string();
        assert!(
            err.contains("cannot listen on 127.0.0.1:") && err.contains("--listen"),
            "{err}"
        );
        // TEST-NET-1: not a local address.
        let err = bind("192.0.2.1:9464".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot listen on 192.0.2.1:9464"), "{err}");
    }

    #[test]
    fn serves_metrics_over_http() {
        let (source, _, _) = fake();
        let options = SamplerOptions {
            metrics: MetricsOptions::default(),
            recording: None,
        };
        let sampler =
            Sampler::spawn(move || Ok(source), options, Logger::new(LogFormat::Plain)).unwrap();
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(sampler.client());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(serve(listener, app, async {
                    let _ = stop_rx.await;
                }))
        });
        let http = reqwest::blocking::Client::new();
        let response = http.get(format!("http://{addr}/metrics")).send().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let body = response.text().unwrap();
        assert!(
            body.contains("vmap_trace_vmalloc_allocs_total 1000"),
            "{body}"
        );
        assert_eq!(
            http.get(format!("http://{addr}/nope"))
                .send()
                .unwrap()
                .status(),
            404
        );
        assert!(http
            .get(format!("http://{addr}/"))
            .send()
            .unwrap()
            .text()
            .unwrap()
            .contains("/metrics"));
        stop_tx.send(()).unwrap();
        server.join().unwrap().unwrap();
        sampler.shutdown().unwrap();
    }
}
