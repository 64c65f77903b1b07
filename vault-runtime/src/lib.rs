//! The adapters Vaultline's services share, written once: configuration from the environment,
//! Kafka, Postgres and Redis clients, the `/health` and `/metrics` server, shutdown, the
//! dead-letter store, the batch protocol and the consume loop. A service is a [`Stage`] plus a
//! profile.

pub mod app;
pub mod config;
pub mod consume;
pub mod dead_letter;
pub mod exposition;
pub mod failure;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod monitor;
pub mod probe;
pub mod process_metrics;
pub mod rewind;
pub mod rules;
pub mod shutdown;
pub mod stage;
pub mod status;
pub mod stores;
pub mod verify;

pub use app::Application;
pub use config::variables::{self, Variable, VARIABLES};
pub use config::{Profile, Settings};
pub use failure::Failure;
pub use kafka::{InMessage, OutMessage};
pub use stage::{
    Companion, Context, Entry, Outcome, ProbeKeys, Rejection, Rejects, Routes, Stage, Table,
};
