//! A minimal HTTP endpoint for Prometheus and Kubernetes probes.
//!
//! `GET /metrics` answers the Prometheus text format, `GET /healthz` answers 200 when the
//! forwarder responds within the control timeout (503 otherwise). Anything else is 404 or
//! 405. One request per connection, `Connection: close`; the request head is capped at
//! 8 KiB and must arrive within [`HEAD_TIMEOUT`] in all, so a client trickling bytes cannot
//! hold a connection (and its file descriptor) open. A full HTTP stack would add more code
//! than this whole module for two GETs.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tracing::{debug, info, warn};

use super::{server::Handle, ACCEPT_BACKOFF};
use crate::metrics::render_prometheus;

const MAX_HEAD: usize = 8 * 1024;
/// For the whole request head, not each read.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until the task is aborted.
pub async fn serve(listener: TcpListener, handle: Handle) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "metrics and health endpoint listening");
    }
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let handle = handle.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &handle).await {
                        debug!(%peer, error = %e, "metrics connection failed");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "accept on the metrics endpoint failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Binds the endpoint.
///
/// # Errors
/// The address is in use or not local.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn connection(mut stream: TcpStream, handle: &Handle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
    let complete = loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if n == 0 {
            break false;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break true;
        }
        if head.len() > MAX_HEAD {
            break false;
        }
    };
    let request_line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut parts = request_line.split_whitespace();
    let (status, content_type, body) = match (complete, parts.next(), parts.next()) {
        (false, ..) => ("400 Bad Request", "text/plain", "bad request\n".to_owned()),
        (true, Some("GET"), Some("/metrics")) => match handle.status().await {
            Ok(s) => ("200 OK", "text/plain; version=0.0.4", render_prometheus(&s)),
            Err(e) => ("503 Service Unavailable", "text/plain", format!("{e}\n")),
        },
        (true, Some("GET"), Some("/healthz")) => match handle.status().await {
            Ok(_) => ("200 OK", "text/plain", "ok\n".to_owned()),
            Err(e) => ("503 Service Unavailable", "text/plain", format!("{e}\n")),
        },
        (true, Some("GET"), _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /healthz\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
