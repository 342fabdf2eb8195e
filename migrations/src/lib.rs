//! The one ordered set of SQL migrations for the whole system, embedded at compile time.
//!
//! The log, the write-side tables and the projection runtime live here. Read-model tables are
//! created per generation by their projections (see `parley-projections`), because a rebuild
//! needs a fresh copy of them beside the live one.

/// Every migration of `migrations/sql`, in order.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./sql");
