//! service-cdm: applies counter events (topic `cdm_service`) to the datamarts
//! `cdm.user_product_counters` and `cdm.user_category_counters`, exactly (docs/contract.md §3.3),
//! and serves the read API and the dashboard over them (§6.4, §6.5: `api`, `dashboard`).

mod api;
mod auth;
mod dashboard;
mod handler;
mod overview;
pub mod read_only;
pub mod rules;
mod sampler;
pub mod tables;
pub mod tags;
pub mod verify;

pub use handler::{count, CdmStage};
use vault_core::contract::topics;
use vault_runtime::{Profile, Settings};

pub const PROFILE: Profile = Profile {
    service: topics::CDM_GROUP,
    source_topic: Some(topics::COUNTER_EVENTS),
    // The tag events (docs/contract.md §6.3), published from the outbox, not by the batches.
    destination_topic: Some(topics::TAG_EVENTS),
    consumer_group: topics::CDM_GROUP,
    http_port: 5014,
    uses_redis: false,
};

pub type Application = vault_runtime::Application<CdmStage>;

/// Builds the service from settings (see [`vault_runtime::Application::build`]).
pub fn build(settings: Settings) -> anyhow::Result<Application> {
    Application::build(settings)
}
