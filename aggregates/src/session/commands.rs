use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub enum SessionCommand {
    Start {
        session_id: Uuid,
        user_id: Uuid,
        account_id: Uuid,
        refresh_token_hash: String,
        expires_at: DateTime<Utc>,
    },
    /// Presents a refresh token (by its hash). The current one rotates to `new_hash`; an older
    /// one means the token leaked (it was already rotated), so the session ends.
    Refresh {
        presented_hash: String,
        new_hash: String,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    End {
        reason: String,
    },
}
