//! What every handler shares.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use super::auth::JwtKeys;
use crate::app::App;
use crate::live::Live;

#[derive(Clone)]
pub struct AppState {
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
