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
    End {
        reason: String,
    },
}
