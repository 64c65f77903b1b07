//! service-stg: decodes raw orders (topic `stg_service`), enriches them from the Redis
//! dictionaries, keeps the newest version of each in `stg.order_events` and publishes the
//! enriched orders (topic `dds_service`).

mod dictionaries;
mod handler;

pub use handler::StgStage;
use vault_core::contract::topics;
use vault_runtime::{Profile, Settings};

pub const PROFILE: Profile = Profile {
    service: topics::STG_GROUP,
    source_topic: Some(topics::RAW_ORDERS),
    destination_topic: Some(topics::ENRICHED_ORDERS),
    consumer_group: topics::STG_GROUP,
    http_port: 5012,
    uses_redis: true,
};

pub type Application = vault_runtime::Application<StgStage>;

/// Builds the service from settings (see [`vault_runtime::Application::build`]).
pub fn build(settings: Settings) -> anyhow::Result<Application> {
    Application::build(settings)
}
