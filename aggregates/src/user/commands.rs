use uuid::Uuid;

use crate::values::{Email, Name};

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    /// Registers a user. The password is hashed before the command is built (hashing is slow and
    /// must never run inside the append transaction); one email per user is a claim.
    Register {
        user_id: Uuid,
        account_id: Uuid,
        name: Name,
        email: Email,
        password_hash: String,
        roles: Vec<String>,
        invitation_id: Option<Uuid>,
    },
    /// Deactivates the user (by an account manager, never by themself): login is refused and
    /// their sessions end.
    Deactivate { by: Uuid },
    /// Replaces the user's roles (known roles only, at least one).
    AssignRoles { roles: Vec<String>, by: Uuid },
    /// Changes profile fields: `None` leaves a field alone, `Some(None)` clears an optional one.
    UpdateProfile {
        by: Uuid,
        name: Option<Name>,
        display_name: Option<Option<String>>,
        avatar_url: Option<Option<String>>,
        bio: Option<Option<String>>,
    },
    /// Sets a new password, already hashed and checked against the recent ones by the caller
    /// (argon2 verification is slow and not pure: it stays out of `handle`).
    ChangePassword { password_hash: String },
}
