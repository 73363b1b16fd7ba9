//! Per-connection limits: the Origin check and the message rate limiter.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::Config;

/// Open connections per client IP address.
#[derive(Default)]
pub(super) struct PerIp {
    open: parking_lot::Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its address until dropped.
pub(super) struct IpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// Counts a new connection from `ip`, or `None` if it already has `max` open (`0`: no
    /// limit).
    pub(super) fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut open = self.open.lock();
        let n = open.entry(ip).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            per_ip: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.per_ip.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The body of a 403 for a foreign origin: what to change.
pub(super) fn origin_hint(origin: Option<&str>) -> String {
    format!(
        "origin not allowed: a browser page from {} may not open this WebSocket. Serve the page \
         from this server, or list its origin in `Config::allowed_origins` \
         (`Omni::config(Config {{ allowed_origins: vec![\"{}\".into()], ..Default::default() }})`)",
        origin.unwrap_or("another origin"),
        origin.unwrap_or("http://localhost:5173"),
    )
}

/// Whether a WebSocket upgrade from `origin` may proceed (cross-site WebSocket hijacking guard).
pub(super) fn origin_allowed(allowed: &[String], origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin else { return true };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    if !allowed.is_empty() {
        return false;
    }
    // Same origin: the origin's host[:port] equals the Host header.
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin)
        .trim_end_matches('/');
    host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host))
}

/// A token bucket limiting one connection's message rate.
pub(super) struct RateLimit {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: tokio::time::Instant,
    warned: bool,
}

pub(super) enum RateVerdict {
    Ok,
    /// Over the limit: tell the client (once per excursion) and drop the message.
    Over {
        warn: bool,
    },
    /// Far over the limit: disconnect.
    Abuse,
}

impl RateLimit {
    pub(super) fn new(config: &Config) -> Self {
        let burst = f64::from(config.message_burst.max(1));
        RateLimit {
            tokens: burst,
            rate: f64::from(config.max_messages_per_second.max(1)),
            burst,
            last: tokio::time::Instant::now(),
            warned: false,
        }
    }

    pub(super) fn take(&mut self, n: usize) -> RateVerdict {
        let now = tokio::time::Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            self.warned = false;
            RateVerdict::Ok
        } else if self.tokens < -self.burst {
            RateVerdict::Abuse
        } else {
            let warn = !self.warned;
            self.warned = true;
            RateVerdict::Over { warn }
        }
    }
}
