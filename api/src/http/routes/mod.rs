//! One router per resource, merged in `http::router`. Each is built through [`Routes`], which
//! records every endpoint it adds: [`endpoints`] is the API's own list, which tests walk (the
//! cross-tenant matrix, idempotent replays, NUL in every input), so a new endpoint cannot be left
//! out of them. A POST is a command that honours `Idempotency-Key` through the door
//! ([`crate::http::door`]), unless it is routed with [`Routes::post_secret`].

pub mod access_grants;
pub mod analytics;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod calls;
pub mod conversations;
pub mod dashboard;
pub mod docs;
pub mod experiences;
pub mod health;
pub mod invitations;
pub mod jobs;
pub mod messages;
pub mod notifications;
pub mod projections;
pub mod reactions;
pub mod roles;
pub mod spaces;
pub mod streams;
pub mod stripe;
pub mod users;
pub mod webhooks;

use axum::extract::Request;
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

use super::error::{ApiError, Code};
use super::openapi::Doc;
use super::state::AppState;

/// An endpoint as the router lists it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub method: Method,
    /// The full path, parameters as `{name}`.
    pub path: String,
    /// For POSTs: whether `Idempotency-Key` is honoured, or refused because the answer carries
    /// a secret.
    pub idempotency: IdempotencyKeys,
    /// What it says about itself in the OpenAPI document.
    pub doc: Option<Doc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdempotencyKeys {
    /// Not a POST: keys do not apply.
    NotApplicable,
    Honoured,
    /// 400 `idempotency_not_supported`: a stored answer would keep a secret.
    Refused,
    /// Authenticated by a signature, not a credential, and deduplicated by the sender's own
    /// message id (incoming webhooks).
    Signed,
}

/// A router that lists what it routes.
#[derive(Default)]
pub struct Routes {
    router: Router<AppState>,
    listed: Vec<Listed>,
}

struct Listed {
    method: Method,
    path: &'static str,
    idempotency: IdempotencyKeys,
    doc: Option<Doc>,
}

macro_rules! method {
    ($name:ident, $filter:ident, $method:ident) => {
        pub fn $name<H, T>(self, path: &'static str, handler: H) -> Self
        where
            H: Handler<T, AppState>,
            T: 'static,
        {
            self.add(Method::$method, MethodFilter::$filter, path, handler)
        }
    };
}

impl Routes {
    method!(get, GET, GET);
    method!(post, POST, POST);
    method!(put, PUT, PUT);
    method!(patch, PATCH, PATCH);
    method!(delete, DELETE, DELETE);

    /// A POST whose answer carries a secret (a token, a key): `Idempotency-Key` is refused
    /// before the handler runs, since the stored answer would keep the secret.
    pub fn post_secret<H, T>(mut self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let route = on(MethodFilter::POST, handler).layer(middleware::from_fn(refuse_idempotency_key));
        self.router = self.router.route(path, route);
        self.listed.push(Listed {
            method: Method::POST,
            path,
            idempotency: IdempotencyKeys::Refused,
            doc: None,
        });
        self
    }

    /// A POST authenticated by its signature (a webhook), not by a credential: it deduplicates
    /// by its own message id, so an Idempotency-Key does not apply.
    pub fn post_signed<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.route(Method::POST, path, on(MethodFilter::POST, handler), IdempotencyKeys::Signed)
    }

    fn add<H, T>(self, method: Method, filter: MethodFilter, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let keys =
            if method == Method::POST { IdempotencyKeys::Honoured } else { IdempotencyKeys::NotApplicable };
        self.route(method, path, on(filter, handler), keys)
    }

    fn route(
        mut self,
        method: Method,
        path: &'static str,
        route: MethodRouter<AppState>,
        keys: IdempotencyKeys,
    ) -> Self {
        // Routing a path again adds the method to it.
        self.router = self.router.route(path, route);
        self.listed.push(Listed { method, path, idempotency: keys, doc: None });
        self
    }

    /// Describes the endpoint added last, for the OpenAPI document.
    pub fn doc(mut self, doc: Doc) -> Self {
        if let Some(last) = self.listed.last_mut() {
            last.doc = Some(doc);
        }
        self
    }

    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.listed.extend(other.listed);
        self
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }

    fn listed(self, prefix: &str) -> impl Iterator<Item = Endpoint> + use<'_> {
        self.listed.into_iter().map(move |l| Endpoint {
            method: l.method,
            path: format!("{prefix}{}", l.path),
            idempotency: l.idempotency,
            doc: l.doc,
        })
    }
}

/// Refuses a request carrying `Idempotency-Key` (see [`Routes::post_secret`]).
async fn refuse_idempotency_key(req: Request, next: Next) -> Response {
    if req.headers().contains_key("idempotency-key") {
        return ApiError::new(
            Code::IdempotencyNotSupported,
            "this endpoint's answer carries a secret and is never stored: send it without Idempotency-Key",
        )
        .into_response();
    }
    next.run(req).await
}

/// The `/api/v1` resources (auth separately: it has its own rate-limit layer).
pub fn api() -> Routes {
    Routes::default()
        .merge(users::router())
        .merge(invitations::router())
        .merge(conversations::router())
        .merge(messages::router())
        .merge(audit::router())
        .merge(roles::router())
        .merge(api_keys::router())
        .merge(reactions::router())
        .merge(notifications::router())
        .merge(jobs::router())
        .merge(webhooks::router())
        .merge(calls::router())
        .merge(analytics::router())
        .merge(projections::router())
        .merge(spaces::router())
        .merge(experiences::router())
        .merge(streams::router())
        .merge(access_grants::router())
        .merge(stripe::router())
        .merge(docs::api())
}

/// Every endpoint, with its full path.
pub fn endpoints() -> Vec<Endpoint> {
    let mut all: Vec<Endpoint> = auth::router().listed("/api/v1").chain(api().listed("/api/v1")).collect();
    all.extend(health::router().listed(""));
    all.extend(dashboard::router().listed(""));
    all.extend(docs::router().listed(""));
    all
}

/// Every endpoint: method and full path, with path parameters as `{name}`.
pub fn list() -> Vec<(Method, String)> {
    endpoints().into_iter().map(|e| (e.method, e.path)).collect()
}
