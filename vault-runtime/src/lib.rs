//! The adapters Vaultline's services share, written once: configuration from the environment,
//! Kafka, Postgres and Redis clients, the `/health` and `/metrics` server, shutdown, the
//! dead-letter store and the consume loop. A service is a [`consume::Handler`] plus a profile.

pub mod app;
pub mod config;
pub mod consume;
pub mod dead_letter;
pub mod failure;
pub mod http;
pub mod kafka;
pub mod rewind;
pub mod shutdown;
pub mod status;
pub mod stores;

pub use app::{Application, Context};
pub use config::{Profile, Settings};
pub use consume::{Handler, Outcome};
pub use failure::Failure;
pub use kafka::{InMessage, OutMessage};
