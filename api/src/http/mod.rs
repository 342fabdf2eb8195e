//! The HTTP and WebSocket API (API.md): one router per resource, the envelope and error table,
//! authentication, read-your-writes, idempotency, the live feed.

pub mod api_keys;
pub mod auth;
pub mod cable;
pub mod consistency;
pub mod error;
pub mod extract;
pub mod fanout;
pub mod limits;
pub mod live;
pub mod respond;
pub mod revocations;
pub mod roles;
pub mod routes;
pub mod state;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use self::auth::{load_secret, JwtKeys};
use self::error::{ApiError, Code};
use self::live::LiveFeed;
use self::state::AppState;
use crate::app::App;
use crate::workers::Workers;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY: usize = 1024 * 1024;

pub fn router(state: AppState) -> Router {
    let (auth, _) = routes::auth::router().into_parts();
    let auth = auth.layer(middleware::from_fn_with_state(state.clone(), limits::per_ip));
    let api = routes::api().into_parts().0.merge(auth).route("/cable", get(cable::cable));
    Router::new()
        .nest("/api/v1", api)
        .merge(routes::health::router().into_parts().0)
        .fallback(|| async { ApiError::new(Code::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(Code::MethodNotAllowed, "method not allowed here")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(track))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id)
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a handler panicked");
            ApiError::new(Code::InternalError, "something went wrong on our side").into_response()
        }))
        .with_state(state)
}

/// Request count and latency by route and status.
async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("parley_http_requests_total", &labels).increment(1);
    metrics::histogram!("parley_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The process-wide Prometheus recorder (installed once; later servers in the process share it).
fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new().install_recorder().ok()?;
            // Histogram samples pile up until drained: by a scrape of /metrics, or here, so a
            // node nobody scrapes does not grow (one thread for the process, as the recorder is).
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .ok()?;
            Some(handle)
        })
        .clone()
}

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub bind: String,
    pub workers: bool,
    pub jwt_secret: Option<String>,
    /// Events the live feed keeps for slow WebSocket connections before they catch up from the store.
    pub live_capacity: usize,
    /// Requests to `/auth/*` per client IP per minute.
    pub auth_per_minute: u32,
    /// Failed logins per email per 15 minutes.
    pub failed_logins: u32,
}

impl ServeOptions {
    pub fn new(bind: impl Into<String>, workers: bool, jwt_secret: Option<String>) -> Self {
        Self {
            bind: bind.into(),
            workers,
            jwt_secret,
            live_capacity: live::DEFAULT_CAPACITY,
            auth_per_minute: 60,
            failed_logins: 10,
        }
    }
}

/// A running server. [`Server::stop`] shuts it down gracefully.
pub struct Server {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    workers: Option<Workers>,
}

impl Server {
    /// Binds (port 0 picks a free port), starts the live feed, the workers and the server.
    pub async fn start(app: App, options: ServeOptions) -> anyhow::Result<Self> {
        app.store.spawn_listener().await?;
        parley_projections::ensure_live(&app.store, app.projections.all(), app.lease_options()).await?;
        let secret = load_secret(app.store.pool(), options.jwt_secret.as_deref()).await?;
        let live = LiveFeed::start(app.store.clone(), options.live_capacity).await?;
        let revocations = revocations::Revocations::start(&app.store, &live).await?;
        let roles = roles::RoleDirectory::start(&app.store, &live).await?;
        let api_keys = api_keys::ApiKeyDirectory::start(&app.store, &live, app.commands.clone()).await?;
        let (stop, stopped) = watch::channel(false);
        revocations::listen(app.store.pool(), revocations.clone(), api_keys.clone(), stopped.clone()).await?;
        let state = AppState {
            app: app.clone(),
            jwt: Arc::new(JwtKeys::new(&secret)),
            fanout: fanout::Fanout::start(&live, options.live_capacity),
            live,
            revocations,
            roles,
            api_keys,
            limits: limits::Limits::new(
                app.store.pool().clone(),
                options.auth_per_minute,
                options.failed_logins,
            ),
            metrics: prometheus(),
            shutdown: stopped.clone(),
        };
        let listener = TcpListener::bind(&options.bind).await?;
        let addr = listener.local_addr()?;
        let workers = options.workers.then(|| Workers::spawn(&app));
        let service = router(state).into_make_service_with_connect_info::<SocketAddr>();
        let mut stopped = stopped;
        let task = tokio::spawn(async move {
            axum::serve(listener, service)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        });
        tracing::info!(%addr, workers = options.workers, "parley is listening");
        Ok(Self { addr, stop, task, workers })
    }

    /// Stops accepting, closes WebSockets, drains requests, stops the workers.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        if let Some(workers) = self.workers {
            workers.shutdown().await;
        }
    }
}
