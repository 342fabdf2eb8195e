//! The composition root: configuration, telemetry, wiring of the store, the write side and the
//! projection workers, and the `parley` command line.

pub mod analytics;
pub mod app;
pub mod cli;
pub mod config;
pub mod embedded_postgres;
pub mod http;
pub mod integrations;
pub mod live;
pub mod rebuilds;
pub mod replica;
pub mod signing_keys;
pub mod telemetry;
pub mod workers;

pub use app::App;
pub use config::Config;
