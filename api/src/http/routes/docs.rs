//! The API's description of itself: `/api/v1/openapi.json`, the WebSocket endpoint's entry in
//! it, and the `/docs` page that renders it.

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

use super::Routes;
use crate::http::cable;
use crate::http::openapi::schemas::any_object;
use crate::http::openapi::{self, Doc};

/// Under `/api/v1`.
pub fn api() -> Routes {
    Routes::default()
        .get("/openapi.json", openapi::openapi_json)
        .doc(
            Doc::new("This document: OpenAPI 3.1 of every /api/v1 endpoint")
                .public()
                .raw(200, "application/json", any_object()),
        )
        .get("/cable", cable::cable)
        .doc(
            Doc::new("The WebSocket feed (Parley's dialect, or Action Cable's with the actioncable-v1-json subprotocol)")
                .describe(
                    "Upgrade to a WebSocket with `?token=<access token or API key>`. Without an upgrade the \
                     answer is 400 `bad_request`. The frames of both dialects are described in the API guide.",
                )
                .public()
                .query::<cable::CableParams>()
                .raw(101, "application/octet-stream", RefOr::T(Schema::Object(ObjectBuilder::new().schema_type(Type::String).build())))
                .errors(&[crate::http::error::Code::Unauthorized]),
        )
}

/// At the root: the page.
pub fn router() -> Routes {
    Routes::default()
        .get("/docs", openapi::docs_root)
        .get("/docs/", openapi::docs_index)
        .get("/docs/{file}", openapi::docs_asset)
}
