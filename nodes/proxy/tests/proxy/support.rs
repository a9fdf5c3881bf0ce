//! Helpers shared by the proxy's test modules.

use std::time::Duration;

use larder_client::ClientConfig;
use larder_proxy::ProxyConfig;
use tokio::io::DuplexStream;

/// The tests' settings: a client that gives up on an unreachable cluster quickly.
pub fn config() -> ProxyConfig {
    ProxyConfig {
        client: ClientConfig {
            request_timeout: Duration::from_millis(100),
            attempts_max: 1,
            backoff: Duration::from_millis(1),
            ..ClientConfig::default()
        },
        ..ProxyConfig::default()
    }
}

/// A listener that fails its first `failures` accepts the way a process out of file
/// descriptors does, then hands out the in-memory streams it is sent.
pub struct FlakyListener {
    pub failures: usize,
    pub streams: tokio::sync::mpsc::Receiver<DuplexStream>,
}

impl larder_core::env::Listener for FlakyListener {
    type Stream = DuplexStream;

    async fn accept(&mut self) -> std::io::Result<DuplexStream> {
        if self.failures > 0 {
            self.failures -= 1;
            // EMFILE: "Too many open files".
            return Err(std::io::Error::from_raw_os_error(24));
        }
        self.streams
            .recv()
            .await
            .ok_or_else(|| std::io::Error::other("no more streams"))
    }
}
