//! The metrics of incremental sync (`follow`, `sync --follow`) in the Prometheus text format
//! (`prometheus-client`), served over HTTP at `--metrics-addr` (`tiny_http`) for a scraper.
//!
//! What is served: counters and gauges only (commands applied, errors, lag in bytes and
//! seconds, the checkpoint's position), never data, keys or passwords. The server answers
//! `GET /metrics` (and `/`) on the address the user gave, to whoever reaches it there: bind it
//! to a loopback or private address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::error::{Error, Result};

/// The metrics of one run; cheap to clone (shared counters).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Commands acknowledged by the target.
    pub applied: Counter,
    /// Commands refused by the target, or by rdbferry before sending.
    pub errors: Counter,
    /// Bytes of the source written and not yet applied.
    pub lag_bytes: Gauge,
    /// Seconds between the source's newest timestamp and the last one applied (0 when
    /// caught up), when the source carries timestamps.
    pub lag_seconds: Gauge<f64, AtomicU64>,
    /// The position of the last checkpoint written (entries since the stream's start).
    pub checkpoint: Gauge,
    /// The applier's count of applied commands last added to `applied`.
    counted: Arc<AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Bring `applied` up to `total`, the applier's count of commands the target
    /// acknowledged (which grows when replies are read, not when commands are pushed).
    pub fn count_applied(&self, total: u64) {
        let before = self
            .counted
            .swap(total, std::sync::atomic::Ordering::Relaxed);
        self.applied.inc_by(total.saturating_sub(before));
    }

    /// A fresh set, registered under `rdbferry_sync_*`.
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("rdbferry_sync");
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            applied: Counter::default(),
            errors: Counter::default(),
            lag_bytes: Gauge::default(),
            lag_seconds: Gauge::default(),
            checkpoint: Gauge::default(),
            counted: Arc::default(),
        };
        r.register(
            "applied",
            "Commands applied to the target",
            m.applied.clone(),
        );
        r.register("errors", "Commands refused", m.errors.clone());
        r.register(
            "lag_bytes",
            "Bytes of the source not yet applied",
            m.lag_bytes.clone(),
        );
        r.register(
            "lag_seconds",
            "Seconds behind the source, by its timestamps",
            m.lag_seconds.clone(),
        );
        r.register(
            "checkpoint_position",
            "Entries applied and checkpointed",
            m.checkpoint.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = encode(&mut s, &self.registry);
        s
    }

    /// Serve the metrics at `addr` on a thread of its own, for the life of the process.
    pub fn serve(&self, addr: SocketAddr) -> Result<()> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| Error::Usage(format!("--metrics-addr {addr}: cannot listen: {e}")))?;
        let me = self.clone();
        std::thread::spawn(move || {
            for req in server.incoming_requests() {
                let ok = matches!(req.url(), "/metrics" | "/");
                let resp = if ok {
                    let h = tiny_http::Header::from_bytes(
                        &b"Content-Type"[..],
                        &b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..],
                    );
                    let mut r = tiny_http::Response::from_string(me.render());
                    if let Ok(h) = h {
                        r = r.with_header(h);
                    }
                    r
                } else {
                    tiny_http::Response::from_string("not found\n").with_status_code(404)
                };
                let _ = req.respond(resp);
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_counters() {
        let m = Metrics::new();
        m.applied.inc_by(5);
        m.lag_bytes.set(42);
        let text = m.render();
        assert!(text.contains("rdbferry_sync_applied_total 5"), "{text}");
        assert!(text.contains("rdbferry_sync_lag_bytes 42"), "{text}");
    }
}
