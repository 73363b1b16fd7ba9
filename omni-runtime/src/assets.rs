//! The files the runtime serves besides the WebSocket: the generated client and the schema.
//!
//! In development mode they are served as generated, with `Cache-Control: no-cache`. Otherwise
//! the client is minified, served gzip-compressed to clients that accept it, and cached with an
//! `ETag` so a reload costs a `304`.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use omni_client_gen::schema::Schema;
use warp::http::{HeaderValue, StatusCode, header};

struct Asset {
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
    gzip: Option<Vec<u8>>,
    etag: String,
}

pub(crate) struct Assets {
    files: Vec<Asset>,
    development: bool,
}

fn etag_of(body: &[u8]) -> String {
    // FNV-1a: stable across runs and enough to tell versions of one file apart.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{hash:016x}\"")
}

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    enc.write_all(body).ok()?;
    enc.finish().ok()
}

impl Assets {
    pub(crate) fn build(schema: &Schema, development: bool) -> Self {
        let mut files = Vec::new();
        let mut add = |path: &str, content_type: &'static str, body: Vec<u8>| {
            let gzip = if development { None } else { gzip(&body) };
            files.push(Asset {
                path: path.to_owned(),
                content_type,
                etag: etag_of(&body),
                body,
                gzip,
            });
        };
        let schema_json = serde_json::to_vec_pretty(schema).unwrap_or_default();
        add("/omni/schema.json", "application/json", schema_json);
        for file in omni_client_gen::generate(schema, &omni_client_gen::Options { development }) {
            let content_type = if file.name.ends_with(".ts") {
                "application/typescript; charset=utf-8"
            } else {
                "text/javascript; charset=utf-8"
            };
            add(
                &format!("/{}", file.name),
                content_type,
                file.contents.into_bytes(),
            );
        }
        Assets { files, development }
    }

    pub(crate) fn respond(
        &self,
        path: &str,
        accept_encoding: Option<&str>,
        if_none_match: Option<&str>,
    ) -> Option<warp::reply::Response> {
        let asset = self.files.iter().find(|a| a.path == path)?;
        let cache = if self.development {
            "no-cache"
        } else {
            "public, max-age=3600, must-revalidate"
        };
        if if_none_match == Some(asset.etag.as_str()) {
            let mut resp = warp::reply::Reply::into_response(Vec::new());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            set(&mut resp, header::ETAG, &asset.etag);
            set(&mut resp, header::CACHE_CONTROL, cache);
            return Some(resp);
        }
        let wants_gzip = accept_encoding.is_some_and(accepts_gzip);
        let (body, gzipped) = match (&asset.gzip, wants_gzip) {
            (Some(gz), true) => (gz.clone(), true),
            _ => (asset.body.clone(), false),
        };
        let mut resp = warp::reply::Reply::into_response(body);
        set(&mut resp, header::CONTENT_TYPE, asset.content_type);
        set(&mut resp, header::ETAG, &asset.etag);
        set(&mut resp, header::CACHE_CONTROL, cache);
        set(&mut resp, header::VARY, "accept-encoding");
        if gzipped {
            set(&mut resp, header::CONTENT_ENCODING, "gzip");
        }
        Some(resp)
    }
}

/// Whether an `Accept-Encoding` header accepts gzip: `gzip` or `*` with a quality above 0
/// (`gzip;q=0` refuses it).
fn accepts_gzip(header: &str) -> bool {
    header.split(',').any(|part| {
        let mut params = part.split(';').map(str::trim);
        let coding = params.next().unwrap_or_default();
        if !coding.eq_ignore_ascii_case("gzip")
            && coding != "*"
            && !coding.eq_ignore_ascii_case("x-gzip")
        {
            return false;
        }
        let q = params
            .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok());
        q.is_some_and(|q| q > 0.0)
    })
}

fn set(resp: &mut warp::reply::Response, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::accepts_gzip;

    #[test]
    fn accept_encoding_qualities() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("br, gzip;q=0.5"));
        assert!(accepts_gzip("*"));
        assert!(accepts_gzip("deflate, GZIP ; q=1"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("gzip; q=0.0, br"));
        assert!(!accepts_gzip("gzipped"));
        assert!(!accepts_gzip("identity"));
    }
}
