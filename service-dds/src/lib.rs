//! service-dds: loads enriched orders (topic `dds_service`) into the Data Vault (`dds`) and
//! publishes a counter event message for every order version it applies (topic `cdm_service`).

mod handler;
mod load;

pub use handler::DdsStage;
use vault_runtime::{Profile, Settings};

pub const PROFILE: Profile = Profile {
    service: "service-dds",
    source_topic: Some("dds_service"),
    destination_topic: Some("cdm_service"),
    consumer_group: "service-dds",
    http_port: 5013,
    uses_redis: false,
};

pub type Application = vault_runtime::Application<DdsStage>;

/// Builds the service from settings (see [`vault_runtime::Application::build`]).
pub fn build(settings: Settings) -> anyhow::Result<Application> {
    Application::build(settings)
}
