//! service-dds: loads enriched orders (topic `dds_service`) into the Data Vault (`dds`) and
//! publishes a counter event message for every order version it applies (topic `cdm_service`).

mod handler;
pub mod load;
pub mod pit_check;

pub use handler::DdsStage;
use vault_core::contract::topics;
use vault_runtime::{Profile, Settings};

pub const PROFILE: Profile = Profile {
    service: topics::DDS_GROUP,
    source_topic: Some(topics::ENRICHED_ORDERS),
    destination_topic: Some(topics::COUNTER_EVENTS),
    consumer_group: topics::DDS_GROUP,
    http_port: 5013,
    uses_redis: false,
};

pub type Application = vault_runtime::Application<DdsStage>;

/// Builds the service from settings (see [`vault_runtime::Application::build`]).
pub fn build(settings: Settings) -> anyhow::Result<Application> {
    Application::build(settings)
}
