//! One router per resource, merged in `http::router`.

pub mod audit;
pub mod auth;
pub mod conversations;
pub mod health;
pub mod invitations;
pub mod messages;
pub mod users;
