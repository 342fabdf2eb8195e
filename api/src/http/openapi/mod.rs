//! The API describes itself: an OpenAPI 3.1 document assembled from the router's own list of
//! endpoints ([`crate::http::routes::endpoints`]) and the [`Doc`] each route carries, served at
//! `GET /api/v1/openapi.json`, and rendered at `/docs` by Swagger UI compiled into the binary
//! (nothing is fetched from elsewhere).

mod doc;
pub mod document;
pub mod schemas;
pub mod shapes;

use std::sync::{Arc, LazyLock};

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::OpenApi;

pub use doc::{Access, Answer, Doc, Meta};

use super::error::{ApiError, Code};
use super::extract::ApiPath;

/// The document, built once per process from the router's list.
pub fn document() -> &'static OpenApi {
    static DOCUMENT: LazyLock<OpenApi> = LazyLock::new(|| document::build(&super::routes::endpoints()));
    &DOCUMENT
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi_json() -> Response {
    static JSON: LazyLock<Vec<u8>> = LazyLock::new(|| serde_json::to_vec(document()).unwrap_or_default());
    ([(CONTENT_TYPE, "application/json"), (CACHE_CONTROL, "no-cache")], JSON.as_slice()).into_response()
}

/// `GET /docs`: to `/docs/`, where Swagger UI's relative asset paths resolve.
pub async fn docs_root() -> Response {
    (StatusCode::PERMANENT_REDIRECT, [(LOCATION, "/docs/")]).into_response()
}

/// `GET /docs/`: Swagger UI's page.
pub async fn docs_index() -> Response {
    swagger_file("index.html")
}

/// `GET /docs/{file}`: Swagger UI's assets, and its initializer pointed at our document.
pub async fn docs_asset(ApiPath(file): ApiPath<String>) -> Response {
    swagger_file(&file)
}

fn swagger_file(file: &str) -> Response {
    static CONFIG: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> =
        LazyLock::new(|| Arc::new(utoipa_swagger_ui::Config::from("/api/v1/openapi.json")));
    match utoipa_swagger_ui::serve(file, CONFIG.clone()) {
        Ok(Some(found)) => {
            let mut response =
                ([(CONTENT_TYPE, found.content_type)], found.bytes.into_owned()).into_response();
            if found.gzpipped {
                response.headers_mut().insert(
                    axum::http::header::CONTENT_ENCODING,
                    axum::http::HeaderValue::from_static("gzip"),
                );
            }
            response
        }
        Ok(None) => ApiError::new(Code::NotFound, "no such file of the docs page").into_response(),
        Err(e) => ApiError::internal(&e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::routes::endpoints;

    /// Walks the router's own list: an `/api/v1` route the document does not describe fails.
    #[test]
    fn every_api_route_is_in_the_document() {
        let doc = serde_json::to_value(document()).expect("the document serialises");
        let mut missing = Vec::new();
        for endpoint in endpoints().iter().filter(|e| e.path.starts_with(document::PREFIX)) {
            let method = endpoint.method.as_str().to_lowercase();
            let operation = &doc["paths"][&endpoint.path][&method];
            if endpoint.doc.is_none() || !operation.is_object() {
                missing.push(format!("{} {}", endpoint.method, endpoint.path));
            }
        }
        assert!(missing.is_empty(), "routes the OpenAPI document does not describe: {missing:#?}");
    }

    /// And nothing is described that is not routed.
    #[test]
    fn the_document_describes_only_routes() {
        let doc = serde_json::to_value(document()).expect("the document serialises");
        let routed: Vec<(String, String)> =
            endpoints().into_iter().map(|e| (e.method.as_str().to_lowercase(), e.path)).collect();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                assert!(routed.contains(&(method.clone(), path.clone())), "{method} {path} is not routed");
            }
        }
    }

    #[test]
    fn every_operation_answers_success_and_documents_its_errors() {
        let doc = serde_json::to_value(document()).expect("the document serialises");
        assert_eq!(doc["openapi"], "3.1.0");
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                let statuses: Vec<&String> = op["responses"].as_object().expect("responses").keys().collect();
                assert!(
                    statuses.iter().any(|s| s.starts_with('2') || *s == "101"),
                    "{method} {path}: no success"
                );
                if path.contains('{') {
                    assert!(
                        statuses.iter().any(|s| *s == "404"),
                        "{method} {path}: an id in the path can be 404"
                    );
                }
                if op.get("requestBody").is_some() {
                    for status in ["400", "413", "415", "422"] {
                        assert!(
                            statuses.iter().any(|s| *s == status),
                            "{method} {path}: a body can be {status}"
                        );
                    }
                }
            }
        }
    }
}
