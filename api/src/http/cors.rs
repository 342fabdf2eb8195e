//! CORS for the browser origins of `PARLEY_ALLOWED_ORIGINS` (API.md, "CORS").
//!
//! `tower_http`'s [`CorsLayer`] does the work, but only for a request from an allowed origin:
//! on its own it answers every `OPTIONS` and adds the methods, headers and credentials headers
//! whatever the origin, and other origins must get no CORS headers at all. It is the outermost
//! layer, so every answer to an allowed origin carries the headers (401, 404, 429 and a panic's
//! 500 too, so a browser can read them), and a preflight is answered before the limits and
//! authentication see it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tower::{Layer, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Request headers a browser may send.
pub const ALLOWED_HEADERS: [&str; 5] =
    ["authorization", "content-type", "idempotency-key", "if-match", "x-min-position"];
/// Response headers a browser's script may read.
pub const EXPOSED_HEADERS: [&str; 5] =
    ["x-position", "etag", "idempotent-replayed", "retry-after", "x-request-id"];

/// The allowed origins and the layer that answers them.
#[derive(Clone)]
pub struct Cors {
    origins: Arc<[HeaderValue]>,
    layer: CorsLayer,
}

impl Cors {
    /// `None` when no origin is configured: then no request gets CORS headers.
    pub fn new(origins: &[String]) -> anyhow::Result<Option<Self>> {
        let origins = origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/'))
            .filter(|o| !o.is_empty())
            .map(|o| {
                HeaderValue::from_str(o)
                    .map_err(|_| anyhow::anyhow!("not an origin in PARLEY_ALLOWED_ORIGINS: {o:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if origins.is_empty() {
            return Ok(None);
        }
        let layer = CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.clone()))
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
            .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static));
        Ok(Some(Self { origins: origins.into(), layer }))
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        self.origins.iter().any(|o| o == origin)
    }
}

/// Middleware: a request from an allowed origin goes through [`CorsLayer`] (a preflight is
/// answered there); any other request passes untouched, its answer only saying that it varies
/// by `Origin` (a cache must not hand it to an allowed origin).
pub async fn cors(State(cors): State<Cors>, req: Request, next: Next) -> Response {
    let allowed = req.headers().get(header::ORIGIN).is_some_and(|o| cors.allows(o));
    if allowed {
        return match cors.layer.layer(next).oneshot(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
    }
    let mut response = next.run(req).await;
    response.headers_mut().append(header::VARY, HeaderValue::from_static("origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_origin_no_cors() {
        assert!(Cors::new(&[]).unwrap().is_none());
        assert!(Cors::new(&[String::new()]).unwrap().is_none());
        let cors = Cors::new(&["https://app.example.com/".into(), " https://b.example.com".into()])
            .unwrap()
            .unwrap();
        assert!(cors.allows(&HeaderValue::from_static("https://app.example.com")));
        assert!(cors.allows(&HeaderValue::from_static("https://b.example.com")));
        assert!(!cors.allows(&HeaderValue::from_static("https://evil.example.com")));
    }
}
