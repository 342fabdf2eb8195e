//! What every handler shares.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use super::auth::JwtKeys;
use super::live::LiveFeed;
use crate::app::App;

#[derive(Clone)]
pub struct AppState {
    pub app: App,
    pub jwt: Arc<JwtKeys>,
    pub live: LiveFeed,
    /// The feed routed to each WebSocket connection by what it subscribed to.
    pub fanout: super::fanout::Fanout,
    /// Ended sessions: their tokens are refused without a database round trip.
    pub revocations: super::revocations::Revocations,
    /// Custom roles' permissions: a token's roles resolve without a database round trip.
    pub roles: super::roles::RoleDirectory,
    /// API keys: a `pk_...` bearer is checked without a database round trip once known.
    pub api_keys: super::api_keys::ApiKeyDirectory,
    /// Login protection.
    pub limits: super::limits::Limits,
    pub metrics: Option<PrometheusHandle>,
    /// Becomes `true` when the server shuts down: long-lived connections close.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}
