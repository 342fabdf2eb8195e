use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::values::Email;

#[derive(Debug, Clone, PartialEq)]
pub enum InvitationCommand {
    Create {
        invitation_id: Uuid,
        account_id: Uuid,
        email: Email,
        role: String,
        token_hash: String,
        invited_by: Uuid,
        expires_at: DateTime<Utc>,
    },
    /// Accepted by registering with the invitation's token; `now` decides expiry.
    Accept {
        user_id: Uuid,
        email: Email,
        now: DateTime<Utc>,
    },
    Revoke {
        revoked_by: Uuid,
    },
}
