use uuid::Uuid;

use crate::values::Name;

#[derive(Debug, Clone, PartialEq)]
pub enum AccountCommand {
    /// Opens a new account with its first user as owner.
    Open { account_id: Uuid, name: Name, owner_id: Uuid },
    /// Makes a user an owner of the account, or not; the last owner cannot stop being one.
    SetOwner { user_id: Uuid, owner: bool },
}
