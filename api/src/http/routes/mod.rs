//! One router per resource, merged in `http::router`. Each is built through [`Routes`], which
//! records every (method, path) it adds: [`list`] is the API's own list of endpoints, which tests
//! walk (the cross-tenant matrix), so a new endpoint cannot be left out of them.

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod conversations;
pub mod health;
pub mod invitations;
pub mod messages;
pub mod notifications;
pub mod reactions;
pub mod roles;
pub mod users;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::Router;

use super::state::AppState;

/// A router that lists what it routes.
#[derive(Default)]
pub struct Routes {
    router: Router<AppState>,
    listed: Vec<(Method, &'static str)>,
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

    fn add<H, T>(mut self, method: Method, filter: MethodFilter, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        // Routing a path again adds the method to it.
        self.router = self.router.route(path, on(filter, handler));
        self.listed.push((method, path));
        self
    }

    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.listed.extend(other.listed);
        self
    }

    pub fn into_parts(self) -> (Router<AppState>, Vec<(Method, &'static str)>) {
        (self.router, self.listed)
    }
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
}

/// Every endpoint: method and full path, with path parameters as `{name}`.
pub fn list() -> Vec<(Method, String)> {
    let versioned = auth::router().into_parts().1.into_iter().chain(api().into_parts().1);
    let versioned = versioned.map(|(m, p)| (m, format!("/api/v1{p}")));
    let cable = std::iter::once((Method::GET, "/api/v1/cable".to_owned()));
    let operational = health::router().into_parts().1.into_iter().map(|(m, p)| (m, p.to_owned()));
    versioned.chain(cable).chain(operational).collect()
}
