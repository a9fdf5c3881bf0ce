//! The metrics endpoint: a process's [`Scrape`] served over plain HTTP/1.1 for Prometheus
//! (`GET /metrics`). It answers one request per connection and closes it, which is all a
//! scraper needs; no HTTP library is pulled in for that.
//!
//! Bounds: at most [`CONNECTIONS_MAX`] connections at once (the next is answered `503` and
//! closed), a request head of at most [`REQUEST_HEAD_MAX`] bytes (`431`), and
//! [`REQUEST_TIMEOUT`] to send it (then the connection is closed). The page carries no
//! secrets and no command reaches the cluster through it, so it is not authenticated; like
//! Redis's own exporters it should listen on loopback or a private address (the default).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use larder_core::metrics::{CONTENT_TYPE, Scrape};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Connections served at once.
pub const CONNECTIONS_MAX: usize = 16;
/// Longest request head (request line and headers) read.
pub const REQUEST_HEAD_MAX: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A running endpoint; dropping it stops it.
#[derive(Debug)]
pub struct MetricsEndpoint {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsEndpoint {
    /// Listens on `listen` (port 0: any free port) and serves `scrape` until dropped.
    pub async fn start(listen: SocketAddr, scrape: Scrape) -> std::io::Result<Self> {
        Self::start_timed(listen, scrape, REQUEST_TIMEOUT).await
    }

    /// [`MetricsEndpoint::start`], giving a client `request_timeout` to send its head.
    async fn start_timed(
        listen: SocketAddr,
        scrape: Scrape,
        request_timeout: Duration,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, scrape, request_timeout));
        Ok(MetricsEndpoint { address, task })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, scrape: Scrape, request_timeout: Duration) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors or a reset before accept: wait a moment, keep serving.
                tracing::debug!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let scrape = scrape.clone();
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(async move {
                    serve(stream, &scrape, request_timeout).await;
                    drop(slot);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let mut stream = stream;
                    respond(
                        &mut stream,
                        "503 Service Unavailable",
                        "text/plain",
                        "busy\n",
                    )
                    .await;
                });
            }
        }
    }
}

/// Reads one request head (within `request_timeout`) and answers it.
async fn serve(mut stream: TcpStream, scrape: &Scrape, request_timeout: Duration) {
    let head = match tokio::time::timeout(request_timeout, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            let body = format!("request head over {REQUEST_HEAD_MAX} bytes\n");
            respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                &body,
            )
            .await;
            return;
        }
        // Closed, failed or too slow: nothing to answer.
        Ok(Err(_)) | Err(_) => return,
    };
    let (status, content_type, body) = answer(&head, scrape);
    respond(&mut stream, status, content_type, &body).await;
}

/// The status line, content type and body for request head `head`.
fn answer(head: &str, scrape: &Scrape) -> (&'static str, &'static str, String) {
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => ("200 OK", CONTENT_TYPE, scrape.render()),
        ("GET", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "Larder: Prometheus metrics at /metrics\n".to_string(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
    }
}

/// The request head up to its blank line; `None` if it runs past [`REQUEST_HEAD_MAX`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if end > REQUEST_HEAD_MAX {
                return Ok(None);
            }
            head.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&head).into_owned()));
        }
        if head.len() > REQUEST_HEAD_MAX {
            return Ok(None);
        }
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buffer[..read]);
    }
}

async fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    // A client that went away misses its answer; nothing else to do.
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    async fn get(address: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(address).await.expect("connects");
        stream.write_all(request).await.expect("sends");
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply).await;
        reply
    }

    fn scrape_with_counter() -> (Scrape, Counter) {
        let scrape = Scrape::new();
        let mut registry = larder_core::metrics::role_registry("test", 7);
        let counter = Counter::<u64>::default();
        registry.register("hits", "Hits", counter.clone());
        scrape.add(registry);
        (scrape, counter)
    }

    #[tokio::test]
    async fn serves_the_page_and_refuses_what_it_should() {
        let (scrape, counter) = scrape_with_counter();
        let endpoint = MetricsEndpoint::start("127.0.0.1:0".parse().unwrap(), scrape)
            .await
            .expect("starts");
        let address = endpoint.address();
        counter.inc_by(3);
        let page = get(address, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(page.contains(CONTENT_TYPE), "{page}");
        assert!(
            page.contains("larder_test_hits_total{node=\"7\"} 3\n"),
            "{page}"
        );
        counter.inc();
        let page = get(address, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
        assert!(
            page.contains("larder_test_hits_total{node=\"7\"} 4\n"),
            "{page}"
        );

        let missing = get(address, b"GET /nothing HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = get(address, b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");

        // A head past the bound is refused, not buffered without end.
        let mut huge = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', REQUEST_HEAD_MAX + 10));
        huge.extend_from_slice(b"\r\n\r\n");
        let refused = get(address, &huge).await;
        assert!(refused.starts_with("HTTP/1.1 431"), "{refused}");
    }

    /// A client that connects and never finishes its head is closed at the request timeout,
    /// and gives its slot back.
    #[tokio::test]
    async fn a_client_silent_past_the_timeout_is_closed() {
        let (scrape, _) = scrape_with_counter();
        let timeout = Duration::from_millis(200);
        let endpoint =
            MetricsEndpoint::start_timed("127.0.0.1:0".parse().unwrap(), scrape, timeout)
                .await
                .expect("starts");
        let mut silent = TcpStream::connect(endpoint.address())
            .await
            .expect("connects");
        silent.write_all(b"GET /metr").await.expect("sends");
        let started = std::time::Instant::now();
        let mut reply = Vec::new();
        let read = tokio::time::timeout(timeout * 25, silent.read_to_end(&mut reply)).await;
        let waited = started.elapsed();
        assert!(read.is_ok(), "still open after {waited:?}");
        assert!(reply.is_empty(), "answered a half head: {reply:?}");
        assert!(waited >= timeout / 2, "closed before its time: {waited:?}");
    }

    #[tokio::test]
    async fn connections_past_the_bound_are_answered_busy() {
        let (scrape, _) = scrape_with_counter();
        let endpoint = MetricsEndpoint::start("127.0.0.1:0".parse().unwrap(), scrape)
            .await
            .expect("starts");
        let address = endpoint.address();
        // CONNECTIONS_MAX clients that connect and say nothing hold every slot…
        let mut idle = Vec::new();
        for _ in 0..CONNECTIONS_MAX {
            let stream = TcpStream::connect(address).await.expect("connects");
            idle.push(stream);
        }
        // …(let the endpoint accept them all)…
        let mut busy = String::new();
        for _ in 0..100 {
            busy = get(address, b"GET /metrics HTTP/1.1\r\n\r\n").await;
            if busy.starts_with("HTTP/1.1 503") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // …so the next is answered busy at once.
        assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
        // Closing them frees the slots.
        drop(idle);
        let mut page = String::new();
        for _ in 0..100 {
            page = get(address, b"GET /metrics HTTP/1.1\r\n\r\n").await;
            if page.starts_with("HTTP/1.1 200") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    }
}
