//! Every aggregate's error, in one type for the layers above to map to one answer each.

use crate::account::AccountError;
use crate::api_key::ApiKeyError;
use crate::conversation::ConversationError;
use crate::inbox::InboxError;
use crate::invitation::InvitationError;
use crate::role::RoleError;
use crate::session::SessionError;
use crate::user::UserError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Invitation(#[from] InvitationError),
    #[error(transparent)]
    Conversation(#[from] ConversationError),
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error(transparent)]
    ApiKey(#[from] ApiKeyError),
    #[error(transparent)]
    Inbox(#[from] InboxError),
    #[error(transparent)]
    WebhookSubscription(#[from] crate::webhook::WebhookSubscriptionError),
    #[error(transparent)]
    IncomingWebhook(#[from] crate::webhook::IncomingWebhookError),
    #[error(transparent)]
    Call(#[from] crate::call::CallError),
    #[error(transparent)]
    Space(#[from] crate::creator::SpaceError),
    #[error(transparent)]
    Experience(#[from] crate::creator::ExperienceError),
    #[error(transparent)]
    Stream(#[from] crate::creator::StreamError),
    #[error(transparent)]
    AccessGrant(#[from] crate::creator::AccessGrantError),
}
