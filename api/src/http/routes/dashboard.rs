//! `/dashboard`: the live operations page, served from the binary (HTML, CSS and JavaScript
//! compiled in; nothing fetched from elsewhere). It signs in with a token or an API key and
//! follows the account channel of the cable.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use super::Routes;

const INDEX: &str = include_str!("../dashboard/index.html");
const SCRIPT: &str = include_str!("../dashboard/app.js");
const STYLE: &str = include_str!("../dashboard/app.css");

pub fn router() -> Routes {
    Routes::default()
        .get("/dashboard", index)
        .get("/dashboard/app.js", script)
        .get("/dashboard/app.css", style)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
