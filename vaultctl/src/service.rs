//! The pipeline's services, as every command names them: `stg` or `service-stg`, and so on.
//! Both spellings come from one place, the pipeline's default hops
//! (`vault_core::contract::topics::PIPELINE`): the stage's short name, and its consumer
//! group, which is the service's name: the name its dead letters are kept under.

use clap::builder::PossibleValue;
use clap::ValueEnum;
use vault_core::contract::topics::{self, DefaultHop};

/// A service of the pipeline, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Stg,
    Dds,
    Cdm,
}

impl Service {
    /// The service's own name (`service-stg`): the key of its dead letters, its default
    /// consumer group.
    pub fn name(self) -> &'static str {
        self.hop().group
    }

    /// The consumer group and source topic the service has unless configured otherwise.
    pub fn default_hop(self) -> (&'static str, &'static str) {
        (self.hop().group, self.hop().topic)
    }

    /// The short name (`stg`).
    fn short(self) -> &'static str {
        self.hop().stage
    }

    fn hop(self) -> DefaultHop {
        topics::PIPELINE[self as usize]
    }
}

impl ValueEnum for Service {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Stg, Self::Dds, Self::Cdm]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.short()).alias(self.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_is_named_short_or_in_full_and_means_the_same() {
        for (short, full, service) in [
            ("stg", "service-stg", Service::Stg),
            ("dds", "service-dds", Service::Dds),
            ("cdm", "service-cdm", Service::Cdm),
        ] {
            assert_eq!(Service::from_str(short, false), Ok(service));
            assert_eq!(Service::from_str(full, false), Ok(service));
            assert_eq!(service.name(), full);
        }
        assert!(Service::from_str("datagen", false).is_err());
    }

    #[test]
    fn a_service_has_its_default_group_and_topic() {
        assert_eq!(Service::Stg.default_hop(), ("service-stg", "stg_service"));
        assert_eq!(Service::Cdm.default_hop(), ("service-cdm", "cdm_service"));
    }
}
