//! What every request passes before any handler: input that no handler may see, and answers
//! that must tell the client how the connection goes on.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, Code};

/// Refuses a NUL character (`%00`) anywhere in the path or the query string with 400, before
/// routing: PostgreSQL cannot store or compare text holding one, so no handler must pass it on,
/// and none can forget to check. (Raw control bytes never get this far: they are not valid in a
/// URI.) Bodies are checked where JSON is parsed ([`super::extract::ApiJson`]).
///
/// A 413 answer says `Connection: close`: the server will not read the rest of that body, so
/// the connection cannot carry another request.
pub async fn edge(req: Request, next: Next) -> Response {
    let uri = req.uri();
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return ApiError::new(Code::BadRequest, "NUL characters are not allowed in paths or query strings")
            .into_response();
    }
    let mut response = next.run(req).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Whether percent-decoding `s` would yield a NUL.
fn has_nul(s: &str) -> bool {
    s.contains("%00") || s.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::has_nul;

    #[test]
    fn a_percent_encoded_nul_is_found_anywhere() {
        assert!(has_nul("/api/v1/users/%00"));
        assert!(has_nul("search=a%00b"));
        assert!(!has_nul("search=a%2000"));
        assert!(!has_nul("search=%0A"));
    }
}
