//! Store-, runtime- and command-level tests on a real PostgreSQL, a fresh database each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod action_cable;
mod cable_loop;
mod calls;
mod commands;
mod concurrency;
mod group_commit;
mod http_api_keys;
mod http_bad_input;
mod http_chat;
mod http_flow;
mod http_live;
mod http_paging;
mod http_roles;
mod http_sessions;
mod http_users;
mod idempotency;
mod jobs;
mod outage;
mod process_managers;
mod projections;
mod replay;
mod signals;
mod store;
mod walks;
mod webhooks;
