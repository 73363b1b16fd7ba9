//! Authentication at connect: the app's `authenticate` hook sees the WebSocket upgrade request
//! (headers, cookies, query, peer address) before the socket opens, and either accepts it with
//! the connection's first session or refuses it with HTTP 401 or 403.

use std::net::SocketAddr;

use warp::http::{HeaderMap, StatusCode};

/// The HTTP request that asks to open a WebSocket, as the `authenticate` hook sees it.
#[derive(Debug, Clone)]
pub struct Handshake {
    headers: HeaderMap,
    query: Option<String>,
    peer: Option<SocketAddr>,
}

impl Handshake {
    pub(crate) fn new(headers: HeaderMap, query: Option<String>, peer: Option<SocketAddr>) -> Self {
        Handshake {
            headers,
            query,
            peer,
        }
    }

    /// Every request header.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// One header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// The value of cookie `name` (from every `Cookie` header).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(warp::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim_matches('"'))
    }

    /// The raw query string (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The client's address (the proxy's, behind a reverse proxy).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }
}

/// Why an `authenticate` hook refused a connection: answered with an HTTP status and the message
/// as the body, before the WebSocket opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// HTTP 401: no credentials, or credentials that do not check out (bad signature, expired).
    Unauthorized(String),
    /// HTTP 403: valid credentials that may not connect.
    Forbidden(String),
}

impl AuthError {
    /// HTTP 401 with `message`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        AuthError::Unauthorized(message.into())
    }

    /// HTTP 403 with `message`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        AuthError::Forbidden(message.into())
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            AuthError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }

    pub(crate) fn message(&self) -> &str {
        match self {
            AuthError::Unauthorized(m) | AuthError::Forbidden(m) => m,
        }
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status().as_u16(), self.message())
    }
}

impl std::error::Error for AuthError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_query_parameters() {
        let mut headers = HeaderMap::new();
        headers.append("cookie", "a=1; session=abc.def".parse().unwrap());
        headers.append("cookie", "b=\"2\"".parse().unwrap());
        let h = Handshake::new(headers, Some("token=x%2By&n=1".into()), None);
        assert_eq!(h.cookie("session"), Some("abc.def"));
        assert_eq!(h.cookie("b"), Some("2"));
        assert_eq!(h.cookie("c"), None);
        assert_eq!(h.query_param("token").as_deref(), Some("x+y"));
        assert_eq!(h.query_param("m"), None);
    }
}
