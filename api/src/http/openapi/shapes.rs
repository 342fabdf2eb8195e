//! Shapes of answers that handlers build in place (a view plus a shown-once secret, a small
//! acknowledgement), named for the document. Views read from read models carry their own
//! schemas (`#[derive(ToSchema)]` where they are defined); these are only what has no type.
//! The Schemathesis test checks every answer against them.

#![allow(dead_code)]

use chrono::{DateTime, NaiveDate, Utc};
use parley_projections::read_models::api_keys::query::ApiKeyView;
use parley_projections::read_models::users::query::OwnProfile;
use parley_projections::read_models::webhooks::query::{HookView, SubscriptionView};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// The answer of register, login and refresh.
#[derive(ToSchema)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the access token lives.
    pub expires_in: i64,
    pub user: TokenUser,
    pub account: TokenAccount,
}

#[derive(ToSchema)]
pub struct TokenUser {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub roles: Vec<String>,
    pub account_id: Uuid,
}

#[derive(ToSchema)]
pub struct TokenAccount {
    pub id: Uuid,
    pub name: String,
}

/// `GET /users/me`: the own profile with the permissions its roles grant.
#[derive(ToSchema)]
pub struct Me {
    #[serde(flatten)]
    pub profile: OwnProfile,
    pub permissions: Vec<String>,
}

/// A permission of the registry.
#[derive(ToSchema)]
pub struct PermissionInfo {
    pub name: String,
    pub description: String,
}

/// A user's roles after `PUT /users/{id}/roles`.
#[derive(ToSchema)]
pub struct AssignedRoles {
    pub id: Uuid,
    pub roles: Vec<String>,
}

/// A profile after `PATCH /users/{id}`.
#[derive(ToSchema)]
pub struct UpdatedProfile {
    pub id: Uuid,
    pub name: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    pub bio: Option<String>,
    pub version: i64,
}

/// A new invitation: the token is shown only here.
#[derive(ToSchema)]
pub struct IssuedInvitation {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// A new API key: the secret is shown only here.
#[derive(ToSchema)]
pub struct IssuedApiKey {
    #[serde(flatten)]
    pub key: ApiKeyView,
    pub secret: String,
}

/// A webhook subscription with its secret (creation and rotation only).
#[derive(ToSchema)]
pub struct IssuedSubscription {
    #[serde(flatten)]
    pub subscription: SubscriptionView,
    /// `whsec_` and the base64 key.
    pub secret: String,
}

/// An incoming hook with its secret (creation only).
#[derive(ToSchema)]
pub struct IssuedHook {
    #[serde(flatten)]
    pub hook: HookView,
    pub secret: String,
}

/// `POST /conversations/{id}/read`.
#[derive(ToSchema)]
pub struct ReadUpTo {
    pub conversation_id: Uuid,
    pub message_id: Uuid,
}

/// A member just added to a conversation.
#[derive(ToSchema)]
pub struct AddedMember {
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    /// `admin` or `member`.
    pub role: String,
    pub joined_at: DateTime<Utc>,
}

/// A reaction.
#[derive(ToSchema)]
pub struct Reaction {
    pub id: Uuid,
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub emoji: String,
}

/// An event of the log, as the audit API shows it (secrets redacted).
#[derive(ToSchema)]
pub struct AuditEvent {
    /// Its log cursor.
    pub position: String,
    pub event_id: Uuid,
    pub event_type: String,
    pub stream_type: String,
    pub stream_id: String,
    pub version: i64,
    pub data: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

/// An aggregate as it was, with the events that made it.
#[derive(ToSchema)]
pub struct StreamState {
    pub stream_type: String,
    pub stream_id: String,
    pub version: i64,
    pub state: Value,
    pub events: Vec<AuditEvent>,
}

/// `meta` of `/analytics/daily`.
#[derive(ToSchema)]
pub struct DateRange {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// `meta` of `/analytics/users`.
#[derive(ToSchema)]
pub struct OfDate {
    pub date: NaiveDate,
}

/// An active user of a day: named with `analytics.export_pii`, otherwise a pseudonym.
#[derive(ToSchema)]
pub struct ActiveUser {
    pub user_id: Option<Uuid>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub pseudonym: Option<String>,
    pub messages: i64,
}

/// `meta` of `/notifications`.
#[derive(ToSchema)]
pub struct UnreadCount {
    pub unread_count: i64,
}

/// A projection generation as operators see it.
#[derive(ToSchema)]
pub struct Projection {
    pub name: String,
    pub generation: i32,
    pub version: i32,
    /// `running`, `failing`, `rebuilding` or `handing_over`.
    pub status: String,
    pub position: String,
    pub lag: i64,
    pub lag_seconds: f64,
    pub events_applied: i64,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// Where the streaming replica's copy is (`null` without `DATABASE_REPLICA_URL`).
    pub replica: Option<ReplicaCopy>,
}

/// A projection's copy on the streaming replica.
#[derive(ToSchema)]
pub struct ReplicaCopy {
    /// `up` (queries read there), `lagging` (further behind than allowed), `down` or `unknown`.
    pub status: String,
    /// How far the replica's replay is behind the primary (`null` while down).
    pub lag_seconds: Option<f64>,
    /// The generation's position in the replica's copy (`null` while down).
    pub position: Option<String>,
    /// Events the replica's copy has not applied yet that the primary's has.
    pub lag: Option<i64>,
}

/// A rebuild queued as a job.
#[derive(ToSchema)]
pub struct RebuildQueued {
    pub name: String,
    /// `null` when a rebuild of it is already queued.
    pub job_id: Option<Uuid>,
}

/// A redelivery queued.
#[derive(ToSchema)]
pub struct ResendQueued {
    pub subscription_id: Uuid,
    pub event_id: Uuid,
}

/// Redeliveries queued over a time range.
#[derive(ToSchema)]
pub struct RecoverQueued {
    pub subscription_id: Uuid,
    pub deliveries: i64,
}

/// A signed delivery accepted; a job posts it.
#[derive(ToSchema)]
pub struct Accepted {
    pub accepted: bool,
}

/// `PATCH /users/{id}`: the fields to change; `null` clears an optional one.
#[derive(ToSchema)]
pub struct ProfileChanges {
    pub name: Option<String>,
    #[schema(nullable)]
    pub display_name: Option<String>,
    #[schema(nullable)]
    pub avatar_url: Option<String>,
    #[schema(nullable)]
    pub bio: Option<String>,
}

/// `PATCH /conversations/{id}`: `"topic": null` clears the topic; a title cannot be cleared.
#[derive(ToSchema)]
pub struct ConversationChanges {
    pub title: Option<String>,
    #[schema(nullable)]
    pub topic: Option<String>,
}

/// What an incoming webhook posts: `text` becomes a message of the hook's conversation.
#[derive(ToSchema)]
pub struct IncomingText {
    pub text: String,
}

/// A permission's name, one of the registry's.
pub struct PermissionName;

impl utoipa::PartialSchema for PermissionName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
        let names = parley_aggregates::permissions::REGISTRY.iter().map(|(_, name, _)| *name);
        utoipa::openapi::RefOr::T(Schema::Object(
            ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names)).build(),
        ))
    }
}

impl ToSchema for PermissionName {}
