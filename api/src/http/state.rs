//! What every handler shares.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use super::auth::JwtKeys;
use crate::app::App;
use crate::live::Live;

/// A handle on [`Shared`]: axum clones the state for every extractor of every request, so it is
/// one reference count, not the node's dozens of handles (each an atomic count, some a deep
/// copy: the connect options' strings and maps). Cloning the handles themselves took a third of
/// a node's CPU per post.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub app: App,
    pub jwt: Arc<JwtKeys>,
    /// The node's followers of the log: the feed and its fan-out, the credential directories.
    pub live: Live,
    /// Login protection.
    pub limits: super::limits::Limits,
    /// Requests per user or API key.
    pub api_limiter: super::api_limit::ApiLimiter,
    pub metrics: Option<PrometheusHandle>,
    /// LiveKit (stream join tokens) and Stripe (paid checkouts), when configured.
    pub integrations: Arc<crate::integrations::Integrations>,
}
