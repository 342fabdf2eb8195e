//! Ended credentials announced at their commit: a trigger on the log `NOTIFY`s
//! `parley_revocations` in the transaction that records a `SessionEnded`, `UserRolesChanged` or
//! `ApiKeyRevoked`, so every node hears of it when it commits, even while the log's commit-safe
//! feed waits behind an old open transaction somewhere in the cluster.

use parley_eventstore::StoreError;
use uuid::Uuid;

use super::api_keys::{ApiKeyDirectory, API_KEY_REVOKED};
use super::revocations::{Revocations, SESSION_ENDED, USER_ROLES_CHANGED};
use super::Stopping;

/// The channel on which the log's trigger announces ended credentials at commit.
const REVOCATIONS_CHANNEL: &str = "parley_revocations";

/// One announcement of [`REVOCATIONS_CHANNEL`].
#[derive(serde::Deserialize)]
struct Announced {
    event_type: String,
    account_id: Uuid,
    stream_id: String,
    version: i64,
    session_id: Option<Uuid>,
    api_key_id: Option<Uuid>,
}

/// Listens for ended credentials announced at commit: sessions, role changes and API keys reach
/// this node in milliseconds, even while the log's commit-safe feed waits behind an old open
/// transaction somewhere in the cluster. The feed stays the backstop: an announcement lost while
/// reconnecting still arrives through it.
pub async fn listen(
    pool: &sqlx::PgPool,
    revocations: Revocations,
    api_keys: ApiKeyDirectory,
    stopping: &Stopping,
) -> Result<(), StoreError> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(REVOCATIONS_CHANNEL).await?;
    stopping.spawn(move |mut stop| async move {
        loop {
            let received = tokio::select! {
                _ = stop.stopped() => return,
                received = listener.recv() => received,
            };
            match received {
                Ok(n) => match serde_json::from_str::<Announced>(n.payload()) {
                    Ok(a) => match a.event_type.as_str() {
                        SESSION_ENDED => a.session_id.into_iter().for_each(|s| revocations.revoke(s)),
                        USER_ROLES_CHANGED => {
                            if let Ok(user) = a.stream_id.parse() {
                                revocations.change_roles(user, a.version);
                            }
                        }
                        API_KEY_REVOKED => {
                            if let Some(key) = a.api_key_id {
                                api_keys.revoked(key, a.account_id, a.version);
                            }
                        }
                        _ => {}
                    },
                    Err(e) => tracing::warn!(error = %e, "unreadable revocation announcement"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "revocation listener lost its connection");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    });
    Ok(())
}
