//! Webhooks: `WebhookSubscription`, an endpoint of a customer that receives the account's events
//! of the types it names, and `IncomingWebhook`, a hook through which an integration posts into
//! one conversation. Their signing secrets are not in the log (they must be readable to sign, so
//! they cannot be hashed): the log keeps only a fingerprint of each.

mod incoming;
mod subscription;

pub use incoming::{IncomingWebhook, IncomingWebhookCommand, IncomingWebhookError, IncomingWebhookEvent};
pub use subscription::{
    WebhookSubscription, WebhookSubscriptionCommand, WebhookSubscriptionError, WebhookSubscriptionEvent,
};
