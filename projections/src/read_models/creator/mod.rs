//! The creator platform's read model: spaces with their experience counts, experiences with
//! their stream and active-grant counts, streams with their state and viewer figures, and access
//! grants. Counts are kept as events arrive, never counted on read.

use async_trait::async_trait;
use parley_aggregates::creator::{AccessGrantEvent, ExperienceEvent, GrantSource, SpaceEvent, StreamEvent};
use parley_eventstore::RecordedEvent;
use sqlx::PgConnection;

use super::decode;
use crate::error::ProjectionError;
use crate::projection::{Decisions, Projection};
use crate::reads::ReadModel;

pub mod query;

pub struct CreatorProjection;

const HANDLES: &[&str] = &[
    "SpaceCreated",
    "SpaceUpdated",
    "SpaceDeleted",
    "ExperienceCreated",
    "ExperienceUpdated",
    "ExperienceDeleted",
    "StreamScheduled",
    "StreamStarted",
    "StreamEnded",
    "StreamArchived",
    "AccessGranted",
    "AccessGrantRevoked",
    "AccessGrantExpired",
];

#[async_trait]
impl Projection for CreatorProjection {
    fn name(&self) -> &'static str {
        ReadModel::Creator.name()
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["spaces", "experiences", "streams", "access_grants"]
    }

    fn schema(&self) -> &'static str {
        r#"
        CREATE TABLE spaces (
            id                uuid PRIMARY KEY,
            account_id        uuid NOT NULL,
            name              text NOT NULL,
            slug              text NOT NULL,
            description       text,
            is_primary        boolean NOT NULL,
            experiences_count bigint NOT NULL DEFAULT 0,
            created_at        timestamptz NOT NULL,
            updated_at        timestamptz NOT NULL,
            version           bigint NOT NULL
        );
        CREATE INDEX spaces_account_idx ON spaces (account_id, is_primary DESC, lower(name), id);
        CREATE TABLE experiences (
            id              uuid PRIMARY KEY,
            account_id      uuid NOT NULL,
            space_id        uuid NOT NULL,
            name            text NOT NULL,
            description     text,
            experience_type text NOT NULL,
            price_cents     bigint NOT NULL,
            currency        text NOT NULL,
            published       boolean NOT NULL,
            streams_count   bigint NOT NULL DEFAULT 0,
            active_grants   bigint NOT NULL DEFAULT 0,
            created_at      timestamptz NOT NULL,
            updated_at      timestamptz NOT NULL,
            version         bigint NOT NULL
        );
        CREATE INDEX experiences_space_idx ON experiences (space_id, created_at, id);
        CREATE INDEX experiences_popular_idx ON experiences (account_id, active_grants DESC, id);
        CREATE TABLE streams (
            id               uuid PRIMARY KEY,
            account_id       uuid NOT NULL,
            experience_id    uuid NOT NULL,
            title            text NOT NULL,
            starts_at        timestamptz NOT NULL,
            max_participants integer,
            state            text NOT NULL,
            room_name        text NOT NULL,
            conversation_id  uuid,
            host_id          uuid,
            peak_viewers     bigint NOT NULL DEFAULT 0,
            started_at       timestamptz,
            ended_at         timestamptz,
            archived_at      timestamptz,
            created_at       timestamptz NOT NULL,
            version          bigint NOT NULL
        );
        CREATE INDEX streams_experience_idx ON streams (experience_id, starts_at, id);
        CREATE TABLE access_grants (
            id            uuid PRIMARY KEY,
            account_id    uuid NOT NULL,
            user_id       uuid NOT NULL,
            experience_id uuid NOT NULL,
            expires_at    timestamptz,
            status        text NOT NULL,
            source        text NOT NULL,
            created_at    timestamptz NOT NULL,
            ended_at      timestamptz,
            version       bigint NOT NULL
        );
        CREATE INDEX access_grants_user_idx ON access_grants (user_id, experience_id) WHERE status = 'active';
        CREATE INDEX access_grants_account_idx ON access_grants (account_id, created_at DESC, id);
        "#
    }

    /// Every listing is a query's; a batch finds each row by id.
    fn deferred_indexes(&self) -> &'static [&'static str] {
        &[
            "spaces_account_idx",
            "experiences_space_idx",
            "experiences_popular_idx",
            "streams_experience_idx",
            "access_grants_user_idx",
            "access_grants_account_idx",
        ]
    }

    fn decides(&self) -> Decisions {
        Decisions {
            handles: HANDLES,
            ignores: &[],
            ignores_streams: &[
                "Account",
                "User",
                "Session",
                "Invitation",
                "Conversation",
                "Role",
                "ApiKey",
                "Inbox",
                "WebhookSubscription",
                "IncomingWebhook",
                "Call",
                "AnalyticsDay",
            ],
        }
    }

    async fn apply(&self, conn: &mut PgConnection, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
        for e in events {
            match e.stream_type.as_str() {
                "Space" => space(conn, e, decode::<SpaceEvent>(e)?).await?,
                "Experience" => experience(conn, e, decode::<ExperienceEvent>(e)?).await?,
                "Stream" => stream(conn, e, decode::<StreamEvent>(e)?).await?,
                _ => grant(conn, e, decode::<AccessGrantEvent>(e)?).await?,
            }
        }
        Ok(())
    }
}

async fn space(conn: &mut PgConnection, e: &RecordedEvent, event: SpaceEvent) -> Result<(), ProjectionError> {
    match event {
        SpaceEvent::SpaceCreated { space_id, account_id, name, slug, description, is_primary, .. } => {
            sqlx::query(
                "INSERT INTO spaces (id, account_id, name, slug, description, is_primary, created_at, updated_at, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) ON CONFLICT (id) DO NOTHING",
            )
            .bind(space_id)
            .bind(account_id)
            .bind(name)
            .bind(slug)
            .bind(description)
            .bind(is_primary)
            .bind(e.recorded_at)
            .bind(e.version)
            .execute(&mut *conn)
            .await?;
        }
        SpaceEvent::SpaceUpdated { space_id, name, slug, description, .. } => {
            sqlx::query(
                "UPDATE spaces SET name = $2, slug = $3, description = $4, updated_at = $5, version = $6 WHERE id = $1",
            )
            .bind(space_id)
            .bind(name)
            .bind(slug)
            .bind(description)
            .bind(e.recorded_at)
            .bind(e.version)
            .execute(&mut *conn)
            .await?;
        }
        SpaceEvent::SpaceDeleted { space_id, .. } => {
            sqlx::query("DELETE FROM spaces WHERE id = $1").bind(space_id).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

async fn experience(
    conn: &mut PgConnection,
    e: &RecordedEvent,
    event: ExperienceEvent,
) -> Result<(), ProjectionError> {
    match event {
        ExperienceEvent::ExperienceCreated { experience_id, space_id, account_id, fields, .. } => {
            sqlx::query(
                "INSERT INTO experiences (id, account_id, space_id, name, description, experience_type, price_cents, \
                   currency, published, created_at, updated_at, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11) ON CONFLICT (id) DO NOTHING",
            )
            .bind(experience_id)
            .bind(account_id)
            .bind(space_id)
            .bind(&fields.name)
            .bind(&fields.description)
            .bind(fields.experience_type.name())
            .bind(fields.price_cents)
            .bind(&fields.currency)
            .bind(fields.published)
            .bind(e.recorded_at)
            .bind(e.version)
            .execute(&mut *conn)
            .await?;
            count(conn, "spaces", "experiences_count", space_id, 1).await?;
        }
        ExperienceEvent::ExperienceUpdated { experience_id, fields, .. } => {
            sqlx::query(
                "UPDATE experiences SET name = $2, description = $3, experience_type = $4, price_cents = $5, \
                   currency = $6, published = $7, updated_at = $8, version = $9 WHERE id = $1",
            )
            .bind(experience_id)
            .bind(&fields.name)
            .bind(&fields.description)
            .bind(fields.experience_type.name())
            .bind(fields.price_cents)
            .bind(&fields.currency)
            .bind(fields.published)
            .bind(e.recorded_at)
            .bind(e.version)
            .execute(&mut *conn)
            .await?;
        }
        ExperienceEvent::ExperienceDeleted { experience_id, space_id, .. } => {
            sqlx::query("DELETE FROM experiences WHERE id = $1")
                .bind(experience_id)
                .execute(&mut *conn)
                .await?;
            count(conn, "spaces", "experiences_count", space_id, -1).await?;
        }
    }
    Ok(())
}

async fn stream(
    conn: &mut PgConnection,
    e: &RecordedEvent,
    event: StreamEvent,
) -> Result<(), ProjectionError> {
    match event {
        StreamEvent::StreamScheduled {
            stream_id,
            experience_id,
            account_id,
            title,
            starts_at,
            max_participants,
            room_name,
            ..
        } => {
            sqlx::query(
                "INSERT INTO streams (id, account_id, experience_id, title, starts_at, max_participants, state, \
                   room_name, created_at, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'scheduled', $7, $8, $9) ON CONFLICT (id) DO NOTHING",
            )
            .bind(stream_id)
            .bind(account_id)
            .bind(experience_id)
            .bind(title)
            .bind(starts_at)
            .bind(max_participants)
            .bind(room_name)
            .bind(e.recorded_at)
            .bind(e.version)
            .execute(&mut *conn)
            .await?;
            count(conn, "experiences", "streams_count", experience_id, 1).await?;
        }
        StreamEvent::StreamStarted { stream_id, conversation_id, started_by, started_at, .. } => {
            sqlx::query(
                "UPDATE streams SET state = 'live', conversation_id = $2, host_id = $3, started_at = $4, version = $5 \
                 WHERE id = $1",
            )
            .bind(stream_id)
            .bind(conversation_id)
            .bind(started_by)
            .bind(started_at)
            .bind(e.version)
            .execute(&mut *conn)
            .await?;
        }
        StreamEvent::StreamEnded { stream_id, peak_viewers, ended_at, .. } => {
            sqlx::query(
                "UPDATE streams SET state = 'ended', peak_viewers = greatest(peak_viewers, $2), ended_at = $3, \
                   version = $4 WHERE id = $1",
            )
            .bind(stream_id)
            .bind(peak_viewers)
            .bind(ended_at)
            .bind(e.version)
            .execute(&mut *conn)
            .await?;
        }
        StreamEvent::StreamArchived { stream_id, archived_at, .. } => {
            sqlx::query("UPDATE streams SET archived_at = $2, version = $3 WHERE id = $1")
                .bind(stream_id)
                .bind(archived_at)
                .bind(e.version)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

async fn grant(
    conn: &mut PgConnection,
    e: &RecordedEvent,
    event: AccessGrantEvent,
) -> Result<(), ProjectionError> {
    match event {
        AccessGrantEvent::AccessGranted {
            grant_id,
            account_id,
            user_id,
            experience_id,
            expires_at,
            source,
        } => {
            let source = match source {
                GrantSource::Manual { .. } => "manual",
                GrantSource::Checkout { .. } => "checkout",
            };
            sqlx::query(
                "INSERT INTO access_grants (id, account_id, user_id, experience_id, expires_at, status, source, \
                   created_at, version) VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8) ON CONFLICT (id) DO NOTHING",
            )
            .bind(grant_id)
            .bind(account_id)
            .bind(user_id)
            .bind(experience_id)
            .bind(expires_at)
            .bind(source)
            .bind(e.recorded_at)
            .bind(e.version)
            .execute(&mut *conn)
            .await?;
            count(conn, "experiences", "active_grants", experience_id, 1).await?;
        }
        AccessGrantEvent::AccessGrantRevoked { grant_id, experience_id, .. }
        | AccessGrantEvent::AccessGrantExpired { grant_id, experience_id, .. } => {
            let status = if e.event_type == "AccessGrantRevoked" { "revoked" } else { "expired" };
            sqlx::query("UPDATE access_grants SET status = $2, ended_at = $3, version = $4 WHERE id = $1")
                .bind(grant_id)
                .bind(status)
                .bind(e.recorded_at)
                .bind(e.version)
                .execute(&mut *conn)
                .await?;
            count(conn, "experiences", "active_grants", experience_id, -1).await?;
        }
    }
    Ok(())
}

/// Moves a kept count of a row by `by` (never below zero).
async fn count(
    conn: &mut PgConnection,
    table: &'static str,
    column: &'static str,
    id: uuid::Uuid,
    by: i64,
) -> Result<(), ProjectionError> {
    sqlx::query(&format!("UPDATE {table} SET {column} = greatest({column} + $2, 0) WHERE id = $1"))
        .bind(id)
        .bind(by)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
