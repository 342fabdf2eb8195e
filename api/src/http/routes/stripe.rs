//! `POST /api/v1/webhooks/stripe`: Stripe's word that a checkout was paid. Verified by its
//! signature (401 otherwise); `checkout.session.completed` with `payment_status: "paid"` and the
//! experience and user in its metadata grants access once per session id (a repeat answers 200
//! and grants nothing); other events and unpaid sessions are answered 200 and ignored.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};
use uuid::Uuid;

use super::Routes;
use crate::http::error::{ApiError, Code};
use crate::http::openapi::Doc;
use crate::http::respond::ok;
use crate::http::state::AppState;
use crate::integrations::verify_stripe;

pub fn router() -> Routes {
    Routes::default().post_signed("/webhooks/stripe", receive).doc(
        Doc::new("Stripe's webhook: a paid checkout session grants access to its experience once")
            .describe(
                "Signed with `Stripe-Signature: t=...,v1=...` (HMAC-SHA256 of `t.body` keyed with the \
                 webhook secret, 5 minutes' tolerance). Other events and unpaid sessions: 200, ignored.",
            )
            .signed_by("Stripe-Signature", "`t=<unix>,v1=<hex HMAC-SHA256 of t.body>`")
            .body::<CheckoutEvent>()
            .answers::<Received>(200),
    )
}

/// The parts of a Stripe event Parley reads.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct CheckoutEvent {
    /// `checkout.session.completed` grants; others are ignored.
    r#type: String,
    /// `{object: {id, payment_status, metadata: {experience_id, user_id}}}`.
    data: Value,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Received {
    received: bool,
    /// Whether this delivery granted access (false for a repeat or an ignored event).
    granted: bool,
}

#[tracing::instrument(skip_all)]
async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(secret) = state.integrations.stripe.as_ref() else {
        return Err(ApiError::new(Code::Unauthorized, "Stripe webhooks are not configured on this server"));
    };
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    verify_stripe(secret, signature, &body, chrono::Utc::now())
        .map_err(|e| ApiError::new(Code::Unauthorized, e.to_string()))?;
    // Signed by Stripe: whatever it says is answered 200, so Stripe does not retry it forever.
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let object = &event["data"]["object"];
    // Paid at checkout, or later (a delayed payment method) when Stripe says it succeeded.
    let paid = (event["type"] == "checkout.session.completed" && object["payment_status"] == "paid")
        || event["type"] == "checkout.session.async_payment_succeeded";
    let id = |field: &str| object["metadata"][field].as_str().and_then(|s| s.parse::<Uuid>().ok());
    let mut granted = false;
    if let (true, Some(session), Some(experience), Some(user)) =
        (paid, object["id"].as_str(), id("experience_id"), id("user_id"))
    {
        granted = state.app.creator.grant_from_checkout(experience, user, session).await?.is_some();
        tracing::info!(session, %experience, %user, granted, "checkout completed");
    }
    Ok(ok(json!({"received": true, "granted": granted}), None))
}
