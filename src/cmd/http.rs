//! A tiny HTTP/1.1 responder for `/metrics`, `/healthz` and `/readyz` (GET only).
//!
//! Enough for Prometheus and kubelet probes; one request per connection, closed after the answer.
//! Must not: grow into a web framework or hold process logic (the caller passes the registry and
//! the readiness flag).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

/// What the responder serves.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub registry: Arc<Registry>,
    pub ready: Arc<AtomicBool>,
}

/// Bind `addr` and serve until the task is dropped/aborted.
pub async fn serve(addr: SocketAddr, endpoints: Endpoints) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    loop {
        let (stream, peer) = listener.accept().await?;
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &endpoints).await {
                debug!(%peer, error = %e, "HTTP connection failed");
            }
        });
    }
}

async fn handle(mut stream: TcpStream, endpoints: &Endpoints) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let read = async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??;
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("").split('?').next().unwrap_or("");
    let (status, content_type, body) = respond(method, path, endpoints);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn respond(
    method: &str,
    path: &str,
    endpoints: &Endpoints,
) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" {
        return ("405 Method Not Allowed", TEXT, "GET only\n".into());
    }
    match path {
        "/metrics" => {
            let mut out = String::new();
            match encode(&mut out, &endpoints.registry) {
                Ok(()) => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    out,
                ),
                Err(e) => ("500 Internal Server Error", TEXT, format!("{e}\n")),
            }
        }
        "/healthz" => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" => {
            if endpoints.ready.load(Ordering::Relaxed) {
                ("200 OK", TEXT, "ready\n".into())
            } else {
                ("503 Service Unavailable", TEXT, "not ready\n".into())
            }
        }
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_health_readiness_and_metrics() {
        let mut registry = Registry::default();
        let gauge = prometheus_client::metrics::gauge::Gauge::<i64>::default();
        gauge.set(1);
        registry.register("ferrolb_test_bool", "test", gauge);
        let ready = Arc::new(AtomicBool::new(false));
        let endpoints = Endpoints {
            registry: Arc::new(registry),
            ready: ready.clone(),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let server = tokio::spawn(serve(addr, endpoints));
        let get = |path: &'static str| async move {
            for _ in 0..50 {
                if let Ok(mut s) = TcpStream::connect(addr).await {
                    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                        .await
                        .unwrap();
                    let mut out = String::new();
                    s.read_to_string(&mut out).await.unwrap();
                    return out;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("server did not start");
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        ready.store(true, Ordering::Relaxed);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        let metrics = get("/metrics").await;
        assert!(metrics.contains("ferrolb_test_bool 1"), "{metrics}");
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
