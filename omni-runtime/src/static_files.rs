//! The static directory, with clear answers for paths no file can have.
//!
//! `warp::fs::dir` answers 500 when the file system refuses a path (a NUL byte, a name or path
//! too long for the OS). Those are the client's errors: this filter answers them first, with
//! 400 (a NUL byte, a malformed `%` escape or non-UTF-8 bytes), 414 (a path longer than
//! [`MAX_PATH`]) or 404 (a segment longer than any file name can be), and hands every other
//! request to `warp::fs::dir`.

use std::path::PathBuf;

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

/// The longest request path served, in bytes as sent (half of Linux's `PATH_MAX`, which the static directory's own path shares).
pub(crate) const MAX_PATH: usize = 2048;

/// The longest path segment that can name a file, in bytes once decoded (`NAME_MAX`).
const MAX_SEGMENT: usize = 255;

/// Serves `dir` at `/`.
pub(crate) fn dir(dir: PathBuf) -> BoxedFilter<(Response,)> {
    let guard = warp::path::full().and_then(|path: warp::path::FullPath| async move {
        match check(path.as_str()) {
            Some((status, reason)) => Ok(warp::reply::with_status(reason, status).into_response()),
            None => Err(warp::reject::not_found()),
        }
    });
    guard
        .or(warp::fs::dir(dir).map(Reply::into_response))
        .unify()
        .boxed()
}

/// The answer for a path no file can have, or `None` to look the path up.
fn check(path: &str) -> Option<(StatusCode, &'static str)> {
    if path.len() > MAX_PATH {
        return Some((StatusCode::URI_TOO_LONG, "path too long"));
    }
    for segment in path.split('/') {
        let Some(decoded) = percent_decode(segment) else {
            return Some((StatusCode::BAD_REQUEST, "malformed path"));
        };
        if decoded.contains(&0) || std::str::from_utf8(&decoded).is_err() {
            return Some((StatusCode::BAD_REQUEST, "malformed path"));
        }
        if decoded.len() > MAX_SEGMENT {
            return Some((StatusCode::NOT_FOUND, "not found"));
        }
    }
    None
}

/// Decodes `%XX` escapes; `None` for a malformed one.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_no_file_can_have_get_client_errors() {
        assert_eq!(check("/%00").map(|a| a.0), Some(StatusCode::BAD_REQUEST));
        assert_eq!(
            check("/index.html%00.txt").map(|a| a.0),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(check("/%zz").map(|a| a.0), Some(StatusCode::BAD_REQUEST));
        assert_eq!(check("/%ff").map(|a| a.0), Some(StatusCode::BAD_REQUEST));
        assert_eq!(check("/%4").map(|a| a.0), Some(StatusCode::BAD_REQUEST));
        let long = format!("/{}", "a".repeat(10_000));
        assert_eq!(check(&long).map(|a| a.0), Some(StatusCode::URI_TOO_LONG));
        let segment = format!("/{}", "a".repeat(256));
        assert_eq!(check(&segment).map(|a| a.0), Some(StatusCode::NOT_FOUND));
        assert_eq!(check("/"), None);
        assert_eq!(check("/index.html"), None);
        assert_eq!(check("/caf%C3%A9/a%20b.txt"), None);
    }
}
