//! The HTTP and WebSocket API (API.md): one router per resource, the envelope and error table,
//! authentication, read-your-writes, idempotency, the live feed.

pub mod api_limit;
pub mod auth;
pub mod cable;
pub mod consistency;
pub mod cors;
pub mod door;
pub mod edge;
pub mod error;
pub mod extract;
pub mod limits;
pub mod openapi;
pub mod respond;
pub mod routes;
pub mod state;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use parley_eventstore::SharedReads;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use self::auth::JwtKeys;
use self::error::{ApiError, Code};
use self::state::AppState;
use crate::app::App;
use crate::config::{Config, Secret};
use crate::live::Live;
use crate::workers::Workers;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY: usize = 1024 * 1024;

/// The whole HTTP surface; `cors` (when origins are configured) is its outermost layer.
pub fn router(state: AppState, cors: Option<cors::Cors>) -> Router {
    let auth = routes::auth::router().into_router();
    let auth = auth.layer(middleware::from_fn_with_state(state.clone(), limits::per_ip));
    let api = routes::api()
        .into_router()
        .merge(auth)
        // Inside the request limit: a query the replica failed and the primary answers counts once.
        .layer(middleware::from_fn_with_state(state.clone(), crate::replica::route_reads))
        .layer(middleware::from_fn_with_state(state.clone(), api_limit::per_credential));
    let router = Router::new()
        .nest("/api/v1", api)
        .merge(routes::health::router().into_router())
        .merge(routes::dashboard::router().into_router())
        .merge(routes::docs::router().into_router())
        .fallback(|| async { ApiError::new(Code::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(Code::MethodNotAllowed, "method not allowed here")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(edge::edge))
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
        .with_state(state);
    match cors {
        Some(cors) => router.layer(middleware::from_fn_with_state(cors, cors::cors)),
        None => router,
    }
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

/// A running server. [`Server::stop`] shuts it down gracefully.
pub struct Server {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    workers: Option<Workers>,
    live: Live,
    api_limiter: api_limit::ApiLimiter,
    api_limits_sync: JoinHandle<()>,
    replica_follower: Option<JoinHandle<()>>,
    /// The node's one reader of the log, which its followers read from.
    shared_reads: SharedReads,
}

impl Server {
    /// Binds `config.bind` (port 0 picks a free port), starts the node's followers of the log,
    /// the workers (when `config.workers`) and the server.
    pub async fn start(app: App, config: &Config) -> anyhow::Result<Self> {
        app.store.spawn_listener().await?;
        parley_projections::ensure_live(&app.store, app.projections.all(), app.lease_options()).await?;
        let pool = app.store.pool();
        crate::signing_keys::ensure(pool, config.jwt_secret.as_ref().map(Secret::expose)).await?;
        let ring = crate::signing_keys::load(pool)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no live signing key in signing_keys"))?;
        let jwt = Arc::new(JwtKeys::of_ring(&ring));
        let presence_ttl = std::time::Duration::from_secs(config.presence_ttl_seconds.max(1));
        let shared_reads = app.store.share_reads(config.live_capacity).await?;
        let live = Live::start(&app, config.live_capacity, presence_ttl).await?;
        let state = AppState::new(state::Shared {
            app: app.clone(),
            jwt: jwt.clone(),
            live: live.clone(),
            limits: limits::Limits::new(
                app.store.pool().clone(),
                config.auth_per_minute,
                config.failed_logins,
            ),
            api_limiter: api_limit::ApiLimiter::new(app.store.pool().clone(), config.api_rate_per_minute),
            metrics: prometheus(),
            integrations: Arc::new(crate::integrations::Integrations::from_config(config)),
        });
        let cors = cors::Cors::new(&config.allowed_origins)?;
        let listener = TcpListener::bind(&config.bind).await?;
        let addr = listener.local_addr()?;
        let workers = if config.workers { Some(Workers::spawn(&app)?) } else { None };
        let api_limiter = state.api_limiter.clone();
        let service = router(state, cors).into_make_service_with_connect_info::<SocketAddr>();
        let (stop, mut stopped) = watch::channel(false);
        let api_limits_sync = api_limiter.spawn_sync(stop.subscribe());
        follow_signing_keys(pool.clone(), jwt, stop.subscribe());
        let replica_follower = app.replica.as_ref().map(|r| r.follow(pool.clone(), stop.subscribe()));
        let task = tokio::spawn(async move {
            axum::serve(listener, service)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        });
        tracing::info!(%addr, workers = config.workers, "parley is listening");
        Ok(Self {
            addr,
            stop,
            task,
            workers,
            live,
            api_limiter,
            api_limits_sync,
            replica_follower,
            shared_reads,
        })
    }

    /// The node's per-credential request counter (tests drive its sync rather than wait for it).
    pub fn api_limiter(&self) -> &api_limit::ApiLimiter {
        &self.api_limiter
    }

    /// Stops accepting, closes WebSockets, drains requests, stops the followers and the workers.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        // WebSockets close now; requests drain while the followers still follow the log (a
        // logout elsewhere still counts), then the followers stop.
        self.live.close_connections();
        let _ = self.task.await;
        // Its last sync shares what the drained requests counted.
        let _ = self.api_limits_sync.await;
        if let Some(follower) = self.replica_follower {
            let _ = follower.await;
        }
        self.live.stop().await;
        if let Some(workers) = self.workers {
            workers.shutdown().await;
        }
        self.shared_reads.stop().await;
    }
}

/// How often a node looks whether the signing keys changed.
const KEYS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Follows `signing_keys` until the server stops: a rotation or a retirement reaches this node
/// within a second, without a restart.
fn follow_signing_keys(pool: sqlx::PgPool, jwt: Arc<JwtKeys>, mut stopped: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut seen = crate::signing_keys::generation(&pool).await.ok();
        let mut every = tokio::time::interval(KEYS_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return,
                _ = every.tick() => {}
            }
            let Ok(now) = crate::signing_keys::generation(&pool).await else { continue };
            if seen.as_ref() == Some(&now) {
                continue;
            }
            match crate::signing_keys::load(&pool).await {
                Ok(Some(ring)) => {
                    tracing::info!(signing = %ring.signing.kid, keys = ring.verifying.len(), "signing keys changed");
                    jwt.reload(&ring);
                    seen = Some(now);
                }
                Ok(None) => tracing::warn!("no live signing key: keeping the keys in use"),
                Err(e) => tracing::warn!(error = %e, "could not read the signing keys"),
            }
        }
    });
}
