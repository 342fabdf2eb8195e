//! `GET /api/v1/cable`: the WebSocket feed (API.md, "WebSocket").
//!
//! Every subscription keeps the cursor of the last event it delivered. Events come live from the
//! node's feed; one at or before a subscription's cursor is skipped, so the seam between catch-up
//! (read from the store after the client's `after`) and live delivery has no gap and no
//! duplicate. When the connection falls behind the feed it catches up from the store. The
//! protocol loop ([`Connection`]) runs over any `Sink`/`Stream` of frames, so it is tested
//! without a socket.

mod action_cable;
mod connection;
pub mod dialect;
mod subscription;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

pub use self::connection::{frame_body, Connection, UNAUTHORIZED_CLOSE};
use self::dialect::Dialect;
use super::auth::{origin, Principal};
use super::error::{ApiError, Code};
use super::extract::ApiQuery;
use super::state::AppState;

/// Frames over 64 KiB are answered `payload_too_large` and the connection stays up; only a frame
/// over this transport limit ends it.
const TRANSPORT_LIMIT: usize = 1024 * 1024;
/// What a connection reads at a time. Frames are small; a large one is read in several chunks.
/// (The default, 128 KiB, is what ten thousand idle connections would mostly hold: 1.3 GiB.)
pub const READ_BUFFER: usize = 4 * 1024;

#[derive(Deserialize, utoipa::IntoParams)]
pub struct CableParams {
    /// An access token or an API key.
    token: Option<String>,
}

/// The request's origin, for the principal's metadata.
pub struct Origin(Option<String>, Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let (request_id, client_ip) = origin(parts);
        Ok(Self(request_id, client_ip))
    }
}

pub async fn cable(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<CableParams>,
    Origin(request_id, client_ip): Origin,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return ApiError::new(Code::BadRequest, "this endpoint speaks WebSocket: send an upgrade request")
            .into_response();
    };
    let principal = match params.token.as_deref() {
        Some(token) => Principal::authenticate(&state, token, request_id, client_ip).await.ok(),
        None => None,
    };
    // The first of the client's subprotocols that Parley speaks is selected (Action Cable's
    // client gives up for good when its own is not).
    let ws = ws.protocols([dialect::ACTION_CABLE, dialect::PARLEY]);
    let dialect = Dialect::of_protocol(ws.selected_protocol().and_then(|p| p.to_str().ok()));
    ws.max_message_size(TRANSPORT_LIMIT).read_buffer_size(READ_BUFFER).on_upgrade(move |socket| async move {
        match principal {
            Some(principal) => {
                Connection::speaking(state.app.clone(), state.live.clone(), principal, dialect)
                    .run(socket)
                    .await
            }
            None => close_unauthorized(socket, dialect).await,
        }
    })
}

async fn close_unauthorized(mut socket: WebSocket, dialect: Dialect) {
    let _ = connection::refuse_credential(&mut socket, dialect).await;
}
