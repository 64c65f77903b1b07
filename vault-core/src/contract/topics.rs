//! The pipeline's default topic and consumer-group names (docs/contract.md §1), written once:
//! the services' profiles, datagen, the configuration's defaults and the operator tooling all
//! take them from here, so that renaming a topic is one edit.

/// Raw orders (§2.1): datagen writes, service-stg reads.
pub const RAW_ORDERS: &str = "stg_service";
/// Enriched orders (§2.3): service-stg writes, service-dds reads.
pub const ENRICHED_ORDERS: &str = "dds_service";
/// Counter events (§2.4): service-dds writes, service-cdm reads.
pub const COUNTER_EVENTS: &str = "cdm_service";
/// Tag grants and revokes (§6.3): service-cdm writes.
pub const TAG_EVENTS: &str = "user_tags";

/// service-stg's consumer group (also the service's name).
pub const STG_GROUP: &str = "service-stg";
/// service-dds's consumer group (also the service's name).
pub const DDS_GROUP: &str = "service-dds";
/// service-cdm's consumer group (also the service's name).
pub const CDM_GROUP: &str = "service-cdm";

/// One hop of the pipeline under its default names: a stage, the group it commits in and the
/// topic it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultHop {
    /// `stg`, `dds` or `cdm`.
    pub stage: &'static str,
    pub group: &'static str,
    pub topic: &'static str,
}

/// The pipeline's hops in order, under their default names.
pub const PIPELINE: [DefaultHop; 3] = [
    DefaultHop {
        stage: "stg",
        group: STG_GROUP,
        topic: RAW_ORDERS,
    },
    DefaultHop {
        stage: "dds",
        group: DDS_GROUP,
        topic: ENRICHED_ORDERS,
    },
    DefaultHop {
        stage: "cdm",
        group: CDM_GROUP,
        topic: COUNTER_EVENTS,
    },
];
