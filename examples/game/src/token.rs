//! Login tokens: `oid.expires.signature`, signed with HMAC-SHA256, so a page that reloads (or
//! reconnects to a restarted server with the same secret) stays logged in without sending the
//! password again. The `login` event issues one; the page keeps it in a cookie, which the
//! browser sends with the WebSocket upgrade, and the server's `authenticate` hook checks it
//! before the socket opens.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use omni_runtime::prelude::*;
use sha2::Sha256;

use crate::Player;

/// The cookie the page stores the token in.
pub const COOKIE: &str = "omni_game";

/// Issues and checks login tokens with one secret key.
#[derive(Clone)]
pub struct Tokens {
    key: Vec<u8>,
    ttl: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Tokens {
    /// Tokens signed with `key`, valid for `ttl` after they are issued.
    pub fn new(key: impl Into<Vec<u8>>, ttl: Duration) -> Self {
        Tokens {
            key: key.into(),
            ttl,
        }
    }

    /// Tokens signed with a random key (they stop working when the server restarts).
    pub fn random(ttl: Duration) -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system's random source");
        Tokens::new(key.to_vec(), ttl)
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(payload.as_bytes());
        mac
    }

    /// A token for `player`, issued at `now` (seconds since the Unix epoch).
    pub fn issue_at(&self, player: Oid<Player>, now: u64) -> String {
        let payload = format!("{}.{}", player.raw(), now + self.ttl.as_secs());
        let signature = self.mac(&payload).finalize().into_bytes();
        let hex: String = signature.iter().map(|b| format!("{b:02x}")).collect();
        format!("{payload}.{hex}")
    }

    /// The player a token names, if its signature checks out and it has not expired at `now`.
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Oid<Player>, AuthError> {
        let bad = || AuthError::unauthorized("invalid login token: log in again");
        let (payload, hex) = token.rsplit_once('.').ok_or_else(bad)?;
        let signature = decode_hex(hex).ok_or_else(bad)?;
        // Constant-time comparison.
        self.mac(payload)
            .verify_slice(&signature)
            .map_err(|_| bad())?;
        let (oid, expires) = payload.split_once('.').ok_or_else(bad)?;
        let expires: u64 = expires.parse().map_err(|_| bad())?;
        if expires <= now {
            return Err(AuthError::unauthorized(
                "the login token has expired: log in again",
            ));
        }
        let oid: u64 = oid.parse().map_err(|_| bad())?;
        Ok(Oid::from_raw(oid))
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_checks_out_until_it_expires_and_not_once_changed() {
        let tokens = Tokens::new(b"k".to_vec(), Duration::from_secs(60));
        let t = tokens.issue_at(Oid::from_raw(7), 1_000);
        assert_eq!(tokens.verify_at(&t, 1_059), Ok(Oid::from_raw(7)));
        assert!(tokens.verify_at(&t, 1_060).is_err(), "expired");
        let forged = t.replacen("7.", "8.", 1);
        assert!(tokens.verify_at(&forged, 1_000).is_err(), "another player");
        let other = Tokens::new(b"other".to_vec(), Duration::from_secs(60));
        assert!(other.verify_at(&t, 1_000).is_err(), "another key");
        assert!(tokens.verify_at("garbage", 1_000).is_err());
    }
}
