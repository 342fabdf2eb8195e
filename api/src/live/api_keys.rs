//! API keys, in memory: a request with `Bearer pk_...` is authenticated by the hash of its
//! secret without a database round trip once the node knows the key. A node learns of a key
//! from the log (its creation and revocation arrive on the live feed, and this node's own at
//! their commit), or, the first time it sees a key created before it started (or on another node
//! a moment ago), from the write side: one indexed lookup, then the key is known.
//!
//! Revocation reaches every node through the log like a logout; the node that served it knows
//! before it answers. Each node records a key's use at most once a minute (the aggregate keeps
//! the log at one `ApiKeyUsed` per key per minute however many nodes there are).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use parley_aggregates::api_key::{ApiKey, ApiKeyEvent};
use parley_aggregates::from_payload;
use parley_aggregates::permissions::Permission;
use parley_commands::services::Commands;
use parley_commands::{tokens, DispatchError};
use parley_eventstore::{EventStore, RecordedEvent, StoreError};
use uuid::Uuid;

use super::changes::{Changed, Changes};
use super::follow::FollowsLog;

pub const API_KEY_REVOKED: &str = "ApiKeyRevoked";

/// How often one node records that a key was used.
const RECORD_USE_EVERY: Duration = Duration::from_secs(60);

/// What a node knows of a key, as of `version` of its stream.
#[derive(Clone, Debug)]
struct Known {
    account_id: Uuid,
    permissions: Vec<Permission>,
    expires_at: Option<DateTime<Utc>>,
    revoked: bool,
    version: i64,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<Uuid, Known>,
    by_secret_hash: HashMap<String, Uuid>,
    use_recorded: HashMap<Uuid, Instant>,
}

/// The key a request authenticated with.
#[derive(Clone, Debug)]
pub struct KeyHolder {
    pub api_key_id: Uuid,
    pub account_id: Uuid,
    pub permissions: Vec<Permission>,
}

#[derive(Clone)]
pub struct ApiKeyDirectory {
    inner: Arc<RwLock<Inner>>,
    commands: Commands,
    /// Bumped at each revocation, for the WebSocket connections that wait for their key's.
    revocations: Changes,
}

impl ApiKeyDirectory {
    /// An empty directory; keys are read from the write side when first presented, so loading
    /// reads nothing.
    pub fn new(commands: Commands) -> Self {
        Self { inner: Default::default(), commands, revocations: Changes::default() }
    }

    /// The event types it takes note of.
    pub fn wants(event_type: &str) -> bool {
        event_type == "ApiKeyCreated" || event_type == API_KEY_REVOKED
    }

    /// The key behind `secret`, if it exists, is not revoked and has not expired.
    pub async fn authenticate(&self, secret: &str) -> Result<KeyHolder, KeyRefused> {
        let secret_hash = tokens::hash(secret);
        let known = match self.lookup(&secret_hash) {
            Some(known) => known,
            None => self.fetch(&secret_hash).await?.ok_or(KeyRefused::Unknown)?,
        };
        let (api_key_id, key) = known;
        if key.revoked {
            return Err(KeyRefused::Revoked);
        }
        let now = Utc::now();
        if key.expires_at.is_some_and(|at| at <= now) {
            return Err(KeyRefused::Expired);
        }
        self.record_use(api_key_id, key.account_id, now);
        Ok(KeyHolder { api_key_id, account_id: key.account_id, permissions: key.permissions })
    }

    /// Whether this node knows the key to be revoked.
    pub fn is_revoked(&self, api_key_id: Uuid) -> bool {
        self.inner.read().ok().and_then(|i| i.keys.get(&api_key_id).map(|k| k.revoked)).unwrap_or(false)
    }

    fn lookup(&self, secret_hash: &str) -> Option<(Uuid, Known)> {
        let inner = self.inner.read().ok()?;
        let id = *inner.by_secret_hash.get(secret_hash)?;
        inner.keys.get(&id).map(|k| (id, k.clone()))
    }

    /// Reads a key this node does not know from the write side, and remembers it.
    async fn fetch(&self, secret_hash: &str) -> Result<Option<(Uuid, Known)>, KeyRefused> {
        let Some(loaded) = self.commands.api_key_by_secret_hash(secret_hash).await? else {
            return Ok(None);
        };
        let Some(id) = loaded.aggregate.id else { return Ok(None) };
        let known = Known::of(&loaded.aggregate, loaded.account_id, loaded.version);
        self.remember(id, known, Some(secret_hash.to_owned()));
        Ok(self.lookup(secret_hash))
    }

    /// Records the use in the log, at most once a minute from this node, off the request's path.
    fn record_use(&self, api_key_id: Uuid, account_id: Uuid, at: DateTime<Utc>) {
        let due = |inner: &Inner| {
            inner.use_recorded.get(&api_key_id).is_none_or(|last| last.elapsed() >= RECORD_USE_EVERY)
        };
        // Almost always not due: decided under the shared lock.
        if !self.inner.read().is_ok_and(|inner| due(&inner)) {
            return;
        }
        {
            let Ok(mut inner) = self.inner.write() else { return };
            if !due(&inner) {
                return;
            }
            inner.use_recorded.insert(api_key_id, Instant::now());
        }
        let commands = self.commands.clone();
        tokio::spawn(async move {
            if let Err(e) = commands.record_api_key_use(account_id, api_key_id, at).await {
                tracing::warn!(error = %e, %api_key_id, "could not record an API key's use");
            }
        });
    }

    /// Keeps the newest news of a key; older news than what is known is ignored.
    fn remember(&self, id: Uuid, known: Known, secret_hash: Option<String>) {
        let Ok(mut inner) = self.inner.write() else { return };
        if let Some(hash) = secret_hash {
            inner.by_secret_hash.insert(hash, id);
        }
        if inner.keys.get(&id).is_none_or(|k| k.version <= known.version) {
            inner.keys.insert(id, known);
        }
    }

    /// Takes note of a key's revocation at `version` of its stream.
    pub fn revoked(&self, api_key_id: Uuid, account_id: Uuid, version: i64) {
        // Known or not: a key first presented later is read from the write side, which knows it
        // is revoked; until then, this keeps a racing read from resurrecting it.
        let known = self.inner.read().ok().and_then(|i| i.keys.get(&api_key_id).cloned());
        let known = match known {
            Some(k) => Known { revoked: true, version, ..k },
            None => Known { account_id, permissions: Vec::new(), expires_at: None, revoked: true, version },
        };
        self.remember(api_key_id, known, None);
        self.revocations.bump();
    }

    /// Wakes at each key revoked from now on (then ask [`Self::is_revoked`]).
    pub fn revocations(&self) -> Changed {
        self.revocations.subscribe()
    }

    /// Takes note of a key's creation or revocation from the log.
    pub fn observe(&self, event: &RecordedEvent) {
        if event.stream_type != ApiKey::TYPE || event.event_type == "ApiKeyUsed" {
            return;
        }
        let Ok(e) = from_payload::<ApiKeyEvent>(&event.event_type, &event.payload) else { return };
        match e {
            ApiKeyEvent::ApiKeyCreated {
                api_key_id,
                account_id,
                permissions,
                secret_hash,
                expires_at,
                ..
            } => {
                let known =
                    Known { account_id, permissions, expires_at, revoked: false, version: event.version };
                self.remember(api_key_id, known, Some(secret_hash));
            }
            ApiKeyEvent::ApiKeyRevoked { api_key_id, account_id, .. } => {
                self.revoked(api_key_id, account_id, event.version)
            }
            ApiKeyEvent::ApiKeyUsed { .. } => {}
        }
    }
}

impl Known {
    fn of(key: &ApiKey, account_id: Uuid, version: i64) -> Self {
        Self {
            account_id,
            permissions: key.permissions.clone(),
            expires_at: key.expires_at,
            revoked: key.revoked,
            version,
        }
    }
}

/// Why a presented key authenticates nothing.
#[derive(Debug, thiserror::Error)]
pub enum KeyRefused {
    #[error("invalid API key")]
    Unknown,
    #[error("the API key has been revoked")]
    Revoked,
    #[error("the API key has expired")]
    Expired,
    /// The key could not be looked up.
    #[error(transparent)]
    Lookup(#[from] DispatchError),
}

impl FollowsLog for ApiKeyDirectory {
    const WHAT: &'static str = "API keys";

    /// Forgets everything when the feed fell behind: each key is read again when next presented.
    async fn load(&self, _store: &EventStore) -> Result<(), StoreError> {
        if let Ok(mut inner) = self.inner.write() {
            inner.keys.clear();
            inner.by_secret_hash.clear();
        }
        Ok(())
    }

    fn observe(&self, event: &Arc<RecordedEvent>) {
        ApiKeyDirectory::observe(self, event);
    }
}
