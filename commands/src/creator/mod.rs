//! The creator platform on the write side: spaces, experiences, streams and access grants (the
//! use cases behind `/spaces`, `/experiences`, `/streams` and `/access_grants`), the process
//! manager that sets their timers, and the jobs it enqueues (archive an ended stream, end an
//! abandoned one, record an expired grant).

mod access;
mod timers;

use std::time::Duration;

use chrono::{DateTime, Utc};
use parley_aggregates::conversation::{Conversation, ConversationCommand};
use parley_aggregates::creator::values::{self, CreatorValueError, ExperienceType, Slug};
use parley_aggregates::creator::{
    Experience, ExperienceCommand, ExperienceFields, Space, SpaceCommand, Stream, StreamCommand,
};
use parley_aggregates::permissions::Permission;
use parley_aggregates::values::Name;
use parley_aggregates::DomainError;
use parley_jobs::JobQueue;
use uuid::Uuid;

pub use timers::{
    CreatorTimers, ARCHIVE_STREAM, CREATOR_TIMERS, END_ABANDONED_STREAM, EXPIRE_GRANT, OPEN_PRIMARY_SPACES,
};

use crate::context::CommandContext;
use crate::dispatcher::{Idempotency, Idempotent};
use crate::error::DispatchError;
use crate::services::Commands;
use crate::unit_of_work::Executed;

/// The claim that keeps a space's slug unique in its account.
pub const SPACE_SLUG_CLAIM: &str = "space_slug";
/// The claim that gives an account one primary space.
pub const PRIMARY_SPACE_CLAIM: &str = "primary_space";
/// The claim that lets a checkout session grant access once.
pub const CHECKOUT_SESSION_CLAIM: &str = "checkout_session";
/// How long a live stream may go without its host connected before the job ends it, unless
/// configured.
pub const DEFAULT_ABANDON_AFTER: Duration = Duration::from_secs(300);

/// The claim value of a slug in an account.
pub fn slug_key(account_id: Uuid, slug: &str) -> String {
    format!("{account_id}/{slug}")
}

fn creator_field<T>(field: &'static str, parsed: Result<T, CreatorValueError>) -> Result<T, DispatchError> {
    parsed.map_err(|e| DispatchError::Invalid { field, message: e.to_string() })
}

fn name_field(field: &'static str, raw: &str) -> Result<Name, DispatchError> {
    Name::parse(raw).map_err(|e| DispatchError::Invalid { field, message: e.to_string() })
}

/// What a client sends to create or change an experience; on a change, absent fields keep their
/// value.
#[derive(Clone, Debug, Default)]
pub struct ExperienceInput {
    pub name: Option<String>,
    /// `Some(None)` clears it.
    pub description: Option<Option<String>>,
    pub experience_type: Option<String>,
    pub price_cents: Option<i64>,
    pub currency: Option<String>,
    pub published: Option<bool>,
}

impl ExperienceInput {
    /// The experience's fields once this input is applied to `current` (all required fields must
    /// be given when there is no current one).
    fn fields(&self, current: Option<&ExperienceFields>) -> Result<ExperienceFields, DispatchError> {
        let required = |field: &'static str| DispatchError::Invalid { field, message: "is required".into() };
        let name = match (&self.name, current) {
            (Some(n), _) => name_field("name", n)?.as_str().chars().take(100).collect::<String>(),
            (None, Some(c)) => c.name.clone(),
            (None, None) => return Err(required("name")),
        };
        if self.name.as_ref().is_some_and(|n| n.trim().chars().count() > 100) {
            return Err(DispatchError::Invalid {
                field: "name",
                message: "must be between 1 and 100 characters".into(),
            });
        }
        let description = match &self.description {
            Some(Some(d)) => Some(creator_field("description", values::description(d))?),
            Some(None) => None,
            None => current.and_then(|c| c.description.clone()),
        };
        let experience_type = match (&self.experience_type, current) {
            (Some(t), _) => creator_field("experience_type", ExperienceType::parse(t))?,
            (None, Some(c)) => c.experience_type,
            (None, None) => return Err(required("experience_type")),
        };
        let price_cents = match (self.price_cents, current) {
            (Some(p), _) => creator_field("price_cents", values::price_cents(p))?,
            (None, Some(c)) => c.price_cents,
            (None, None) => return Err(required("price_cents")),
        };
        let currency = match (&self.currency, current) {
            (Some(c), _) => creator_field("currency", values::currency(c))?,
            (None, Some(c)) => c.currency.clone(),
            (None, None) => "usd".to_owned(),
        };
        let published = self.published.or(current.map(|c| c.published)).unwrap_or(false);
        Ok(ExperienceFields { name, description, experience_type, price_cents, currency, published })
    }
}

/// The creator platform of a process.
#[derive(Clone)]
pub struct Creator {
    commands: Commands,
    queue: JobQueue,
    abandon_after: Duration,
    /// Which conversations are which stream's chat, as far as this node has asked.
    chats: access::KnownChats,
}

impl Creator {
    pub fn new(commands: Commands, queue: JobQueue, abandon_after: Duration) -> Self {
        Self { commands, queue, abandon_after, chats: Default::default() }
    }

    /// Now, as the store tells it (tests move it), for the rules of grants and streams.
    pub fn now(&self) -> DateTime<Utc> {
        self.commands.dispatcher().store().now()
    }

    // --- spaces ---

    pub async fn create_space(
        &self,
        ctx: &CommandContext,
        name: &str,
        slug: &str,
        description: Option<&str>,
        idempotency: Option<&Idempotency<'_, Executed<Space>>>,
    ) -> Result<Idempotent<Executed<Space>>, DispatchError> {
        ctx.require(Permission::SpacesManage)?;
        let by = ctx.actor_id()?;
        let create = SpaceCommand::Create {
            space_id: Uuid::now_v7(),
            account_id: ctx.account_id,
            name: name_field("name", name)?,
            slug: creator_field("slug", Slug::parse(slug))?,
            description: description
                .map(|d| creator_field("description", values::description(d)))
                .transpose()?,
            primary: false,
            by,
        };
        let SpaceCommand::Create { space_id, .. } = &create else { unreachable!("built above") };
        let stream_id = space_id.to_string();
        self.commands.dispatcher().execute_with::<Space>(ctx, &stream_id, create, idempotency).await
    }

    /// The primary space of an account, opened in the unit of work that opens the account (or
    /// by the backfill); an account's one primary space is a claim, so opening another is
    /// refused (`Claimed`).
    pub fn primary_space_command(account_id: Uuid, owner_id: Uuid) -> (String, SpaceCommand) {
        let space_id = Uuid::now_v7();
        let command = SpaceCommand::Create {
            space_id,
            account_id,
            name: Name::parse("Main").unwrap_or_else(|_| unreachable!("a valid name")),
            slug: Slug::parse("main").unwrap_or_else(|_| unreachable!("a valid slug")),
            description: None,
            primary: true,
            by: owner_id,
        };
        (space_id.to_string(), command)
    }

    pub async fn update_space(
        &self,
        ctx: &CommandContext,
        space_id: Uuid,
        name: Option<&str>,
        slug: Option<&str>,
        description: Option<Option<&str>>,
        expected_version: Option<i64>,
    ) -> Result<Executed<Space>, DispatchError> {
        ctx.require(Permission::SpacesManage)?;
        let update = SpaceCommand::Update {
            name: name.map(|n| name_field("name", n)).transpose()?,
            slug: slug.map(|s| creator_field("slug", Slug::parse(s))).transpose()?,
            description: description
                .map(|d| d.map(|d| creator_field("description", values::description(d))).transpose())
                .transpose()?,
            by: ctx.actor_id()?,
        };
        self.commands
            .dispatcher()
            .execute_expecting::<Space>(ctx, &space_id.to_string(), update, expected_version)
            .await
    }

    pub async fn delete_space(
        &self,
        ctx: &CommandContext,
        space_id: Uuid,
    ) -> Result<Executed<Space>, DispatchError> {
        ctx.require(Permission::SpacesManage)?;
        let delete = SpaceCommand::Delete { by: ctx.actor_id()? };
        self.commands.dispatcher().execute::<Space>(ctx, &space_id.to_string(), delete).await
    }

    // --- experiences ---

    pub async fn create_experience(
        &self,
        ctx: &CommandContext,
        space_id: Uuid,
        input: &ExperienceInput,
        idempotency: Option<&Idempotency<'_, Executed<Experience>>>,
    ) -> Result<Idempotent<Executed<Experience>>, DispatchError> {
        ctx.require(Permission::SpacesManage)?;
        let by = ctx.actor_id()?;
        let fields = input.fields(None)?;
        let experience_id = Uuid::now_v7();
        let account_id = ctx.account_id;
        self.commands
            .dispatcher()
            .transact(ctx, idempotency, move |uow| {
                let fields = fields.clone();
                Box::pin(async move {
                    let (space, _) = uow.load::<Space>(&space_id.to_string()).await?;
                    space.live().map_err(|_| DispatchError::NotFound("Space"))?;
                    let create =
                        ExperienceCommand::Create { experience_id, space_id, account_id, fields, by };
                    uow.execute::<Experience>(&experience_id.to_string(), create).await
                })
            })
            .await
    }

    pub async fn update_experience(
        &self,
        ctx: &CommandContext,
        experience_id: Uuid,
        input: &ExperienceInput,
        expected_version: Option<i64>,
    ) -> Result<Executed<Experience>, DispatchError> {
        ctx.require(Permission::SpacesManage)?;
        let by = ctx.actor_id()?;
        let input = input.clone();
        let done = self
            .commands
            .dispatcher()
            .transact(ctx, None, move |uow| {
                let input = input.clone();
                Box::pin(async move {
                    let stream_id = experience_id.to_string();
                    let (current, head) = uow.load::<Experience>(&stream_id).await?;
                    if expected_version.is_some_and(|v| v != head.version) {
                        return Err(DispatchError::PreconditionFailed { current: head.version });
                    }
                    current.live().map_err(DomainError::from)?;
                    let fields = input.fields(current.fields.as_ref())?;
                    uow.execute::<Experience>(&stream_id, ExperienceCommand::Update { fields, by }).await
                })
            })
            .await?;
        done.fresh()
    }

    pub async fn delete_experience(
        &self,
        ctx: &CommandContext,
        experience_id: Uuid,
    ) -> Result<Executed<Experience>, DispatchError> {
        ctx.require(Permission::SpacesManage)?;
        let delete = ExperienceCommand::Delete { by: ctx.actor_id()? };
        self.commands.dispatcher().execute::<Experience>(ctx, &experience_id.to_string(), delete).await
    }

    // --- streams ---

    /// Schedules a stream of a live-stream experience.
    pub async fn schedule_stream(
        &self,
        ctx: &CommandContext,
        experience_id: Uuid,
        title: &str,
        starts_at: DateTime<Utc>,
        max_participants: Option<i32>,
        idempotency: Option<&Idempotency<'_, Executed<Stream>>>,
    ) -> Result<Idempotent<Executed<Stream>>, DispatchError> {
        ctx.require(Permission::SpacesManage)?;
        let by = ctx.actor_id()?;
        let title = name_field("title", title)?.as_str().to_owned();
        if let Some(max) = max_participants.filter(|m| !(1..=100_000).contains(m)) {
            return Err(DispatchError::Invalid {
                field: "max_participants",
                message: format!("must be between 1 and 100000, not {max}"),
            });
        }
        let (stream_id, account_id) = (Uuid::now_v7(), ctx.account_id);
        self.commands
            .dispatcher()
            .transact(ctx, idempotency, move |uow| {
                let title = title.clone();
                Box::pin(async move {
                    let (experience, _) = uow.load::<Experience>(&experience_id.to_string()).await?;
                    experience.live().map_err(DomainError::from)?;
                    if experience.fields.as_ref().map(|f| f.experience_type)
                        != Some(ExperienceType::LiveStream)
                    {
                        return Err(DispatchError::Invalid {
                            field: "experience_id",
                            message: "is not a live_stream experience".into(),
                        });
                    }
                    let schedule = StreamCommand::Schedule {
                        stream_id,
                        experience_id,
                        account_id,
                        title,
                        starts_at,
                        max_participants,
                        by,
                    };
                    uow.execute::<Stream>(&stream_id.to_string(), schedule).await
                })
            })
            .await
    }

    /// Goes live: the stream and its chat (a conversation the host administers) in one
    /// transaction. Only a scheduled stream starts: of two concurrent starts one wins, the other
    /// is refused (409).
    pub async fn start_stream(
        &self,
        ctx: &CommandContext,
        stream_id: Uuid,
        idempotency: Option<&Idempotency<'_, Executed<Stream>>>,
    ) -> Result<Idempotent<Executed<Stream>>, DispatchError> {
        ctx.require(Permission::SpacesManage)?;
        let host = ctx.user_id()?;
        let account_id = ctx.account_id;
        let at = self.now();
        self.commands
            .dispatcher()
            .transact(ctx, idempotency, move |uow| {
                Box::pin(async move {
                    let key = stream_id.to_string();
                    let (stream, _) = uow.load::<Stream>(&key).await?;
                    stream.existing().map_err(DomainError::from)?;
                    let conversation_id = Uuid::now_v7();
                    let start = StreamCommand::Start { conversation_id, by: host, at };
                    let started = uow.execute::<Stream>(&key, start).await?;
                    let title = Name::parse(&format!("Chat: {}", stream.title))
                        .or_else(|_| Name::parse("Stream chat"))
                        .map_err(|e| DispatchError::Invalid { field: "title", message: e.to_string() })?;
                    let chat = ConversationCommand::StartStreamChat {
                        conversation_id,
                        account_id,
                        title,
                        host_id: host,
                    };
                    uow.execute::<Conversation>(&conversation_id.to_string(), chat).await?;
                    Ok(started)
                })
            })
            .await
    }

    /// Ends a live stream (its host, or the abandoned-stream job as the system), keeping its
    /// peak viewer count in the event.
    pub async fn end_stream(
        &self,
        ctx: &CommandContext,
        stream_id: Uuid,
        idempotency: Option<&Idempotency<'_, Executed<Stream>>>,
    ) -> Result<Idempotent<Executed<Stream>>, DispatchError> {
        ctx.require(Permission::SpacesManage)?;
        let by = ctx.actor_id().ok();
        let peak_viewers = self.peak_viewers(stream_id).await?;
        let end = StreamCommand::End { peak_viewers, by, at: self.now() };
        self.commands.dispatcher().execute_with::<Stream>(ctx, &stream_id.to_string(), end, idempotency).await
    }

    /// The most distinct viewers the stream had at once, as the nodes counted them (0 when
    /// nobody watched).
    pub async fn peak_viewers(&self, stream_id: Uuid) -> Result<i64, DispatchError> {
        let peak: Option<(i64,)> =
            sqlx::query_as("SELECT peak FROM stream_viewer_peaks WHERE stream_id = $1")
                .bind(stream_id)
                .fetch_optional(self.commands.dispatcher().store().pool())
                .await
                .map_err(parley_eventstore::StoreError::from)?;
        Ok(peak.map_or(0, |(p,)| p))
    }

    /// How long a live stream may go without its host connected.
    pub fn abandon_after(&self) -> Duration {
        self.abandon_after
    }
}
