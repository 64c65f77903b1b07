//! Every environment variable a Vaultline program reads, declared once: its name, its default,
//! which programs read it, whether it holds a credential, what it means, and what a deployment
//! must set.
//!
//! The parser ([`crate::config`]) takes names and defaults from here, `docs/configuration.md` is
//! generated from here (`cargo run -p vault-runtime --example config-reference`), and the deploy
//! wiring test checks the compose file and the chart against it. A unit test fails when code
//! reads a variable that is not declared.

use vault_core::contract::topics;

/// A program that reads its settings from the environment, by its binary's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Program {
    Datagen,
    Stg,
    Dds,
    Cdm,
    /// The operator tool; deployments run it as `vaultctl migrate`.
    Vaultctl,
    /// datagen's benchmark driver.
    VaultBench,
}

impl Program {
    pub const ALL: [Program; 6] = [
        Program::Datagen,
        Program::Stg,
        Program::Dds,
        Program::Cdm,
        Program::Vaultctl,
        Program::VaultBench,
    ];

    /// The binary's name, as the deploy files run it.
    pub const fn binary(self) -> &'static str {
        match self {
            Program::Datagen => "datagen",
            Program::Stg => topics::STG_GROUP,
            Program::Dds => topics::DDS_GROUP,
            Program::Cdm => topics::CDM_GROUP,
            Program::Vaultctl => "vaultctl",
            Program::VaultBench => "vault-bench",
        }
    }

    pub fn from_binary(binary: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.binary() == binary)
    }
}

/// What an unset variable means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// This value, written as it would be set (the parser reads it like a set one).
    Value(&'static str),
    /// The program's own (from its profile); the text says what that is.
    Program(&'static str),
    /// No value stands in; the text says what unset means.
    Unset(&'static str),
}

/// What a deployment (the compose file, the chart) must set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deploy {
    /// Nothing: the default is right everywhere.
    Optional,
    /// This variable, for these programs: unset, the default would reach only a developer's
    /// machine (a broker on localhost) or the wrong names.
    Required(&'static [Program]),
    /// This variable or the named one, for these programs.
    EitherOr(&'static str, &'static [Program]),
}

/// One environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variable {
    pub name: &'static str,
    pub default: Fallback,
    /// The programs that read it.
    pub programs: &'static [Program],
    /// A credential: never logged (the parser wraps it in [`crate::config::Secret`]).
    pub secret: bool,
    pub deploy: Deploy,
    pub description: &'static str,
}

impl Variable {
    /// Whether `program` reads this variable.
    pub fn read_by(&self, program: Program) -> bool {
        self.programs.contains(&program)
    }
}

use Program::{Cdm, Datagen, Dds, Stg, VaultBench, Vaultctl};

const SERVICES: &[Program] = &[Stg, Dds, Cdm];
const HTTP: &[Program] = &[Datagen, Stg, Dds, Cdm];
const KAFKA: &[Program] = &[Datagen, Stg, Dds, Cdm, Vaultctl, VaultBench];
const PRODUCERS: &[Program] = &[Datagen, Stg, Dds, Cdm, VaultBench];
const POSTGRES: &[Program] = &[Stg, Dds, Cdm, Vaultctl, VaultBench];
const REDIS: &[Program] = &[Datagen, Stg, VaultBench];
const LOGGING: &[Program] = &[Datagen, Stg, Dds, Cdm];
const PIPELINE_READERS: &[Program] = &[Cdm, Vaultctl, VaultBench];
const MIGRATE: &[Program] = &[Vaultctl];

const fn optional(
    name: &'static str,
    default: Fallback,
    programs: &'static [Program],
    description: &'static str,
) -> Variable {
    Variable {
        name,
        default,
        programs,
        secret: false,
        deploy: Deploy::Optional,
        description,
    }
}

const fn secret(
    name: &'static str,
    programs: &'static [Program],
    description: &'static str,
) -> Variable {
    Variable {
        name,
        default: Fallback::Unset("none"),
        programs,
        secret: true,
        deploy: Deploy::Optional,
        description,
    }
}

const fn deployed(variable: Variable, deploy: Deploy) -> Variable {
    Variable { deploy, ..variable }
}

/// A service's role, which `vaultctl migrate` creates and grants; deployments name all three.
const fn service_role(name: &'static str, description: &'static str) -> Variable {
    deployed(
        optional(
            name,
            Fallback::Unset("no role granted"),
            MIGRATE,
            description,
        ),
        Deploy::Required(MIGRATE),
    )
}

// ---- Kafka

pub const KAFKA_BOOTSTRAP_SERVERS: Variable = deployed(
    optional(
        "KAFKA_BOOTSTRAP_SERVERS",
        Fallback::Unset("`KAFKA_HOST:KAFKA_PORT`"),
        KAFKA,
        "The broker list; wins over `KAFKA_HOST` and `KAFKA_PORT`.",
    ),
    Deploy::EitherOr("KAFKA_HOST", HTTP),
);
pub const KAFKA_HOST: Variable = deployed(
    optional(
        "KAFKA_HOST",
        Fallback::Value("localhost"),
        KAFKA,
        "The broker's host.",
    ),
    Deploy::EitherOr("KAFKA_BOOTSTRAP_SERVERS", HTTP),
);
pub const KAFKA_PORT: Variable = optional(
    "KAFKA_PORT",
    Fallback::Value("9092"),
    KAFKA,
    "The broker's port.",
);
pub const KAFKA_SOURCE_TOPIC: Variable = deployed(
    optional(
        "KAFKA_SOURCE_TOPIC",
        Fallback::Program("the service's own: `stg_service`, `dds_service`, `cdm_service`"),
        SERVICES,
        "The topic the service consumes.",
    ),
    Deploy::Required(SERVICES),
);
pub const KAFKA_DESTINATION_TOPIC: Variable = deployed(
    optional(
        "KAFKA_DESTINATION_TOPIC",
        Fallback::Program(
            "the program's own: `stg_service` (datagen), `dds_service` (stg), `cdm_service` (dds), `user_tags` (cdm: tag events)",
        ),
        PRODUCERS,
        "The topic the program produces to.",
    ),
    Deploy::Required(&[Datagen, Stg, Dds]),
);
pub const KAFKA_CONSUMER_GROUP: Variable = deployed(
    optional(
        "KAFKA_CONSUMER_GROUP",
        Fallback::Program("the service's name: `service-stg`, `service-dds`, `service-cdm`"),
        SERVICES,
        "The consumer group the service commits in.",
    ),
    Deploy::Required(SERVICES),
);
pub const KAFKA_USERNAME: Variable = optional(
    "KAFKA_USERNAME",
    Fallback::Unset("plaintext, no SASL"),
    KAFKA,
    "The SASL user; with `KAFKA_PASSWORD` (both or neither) the connection uses SASL.",
);
pub const KAFKA_PASSWORD: Variable = secret(
    "KAFKA_PASSWORD",
    KAFKA,
    "The SASL password; required with `KAFKA_USERNAME`.",
);
pub const KAFKA_SECURITY_PROTOCOL: Variable = optional(
    "KAFKA_SECURITY_PROTOCOL",
    Fallback::Value("SASL_SSL"),
    KAFKA,
    "The security protocol with SASL (with a username only).",
);
pub const KAFKA_SASL_MECHANISM: Variable = optional(
    "KAFKA_SASL_MECHANISM",
    Fallback::Value("SCRAM-SHA-512"),
    KAFKA,
    "The SASL mechanism (with a username only).",
);
pub const KAFKA_CA_CERT: Variable = optional(
    "KAFKA_CA_CERT",
    Fallback::Unset("librdkafka's default CA store"),
    KAFKA,
    "Path of the CA certificate file (with a username only); must be a readable file.",
);
pub const KAFKA_ENABLE_IDEMPOTENCE: Variable = optional(
    "KAFKA_ENABLE_IDEMPOTENCE",
    Fallback::Value("true"),
    KAFKA,
    "The idempotent producer; `false` for a broker without it (then one request in flight).",
);
pub const KAFKA_COMPRESSION: Variable = optional(
    "KAFKA_COMPRESSION",
    Fallback::Value("lz4"),
    KAFKA,
    "How the producers compress their batches: `none`, `gzip`, `snappy`, `lz4` or `zstd` \
     (consumers read any). JSON orders shrink several times, and the broker stores, copies and \
     sends fewer bytes (docs/performance.md).",
);
pub const KAFKA_TOPIC_PARTITIONS: Variable = optional(
    "KAFKA_TOPIC_PARTITIONS",
    Fallback::Value("3"),
    KAFKA,
    "Missing topics are created at start with this many partitions; `0`: never create. \
     Existing topics are left alone.",
);
pub const KAFKA_SESSION_TIMEOUT_MS: Variable = optional(
    "KAFKA_SESSION_TIMEOUT_MS",
    Fallback::Value("10000"),
    SERVICES,
    "How long the group waits for a member that stopped heartbeating (a process killed with \
     -9) before it gives that member's partitions to others; 6000 to 1800000 (the brokers' \
     default bounds).",
);
pub const KAFKA_GROUP_INSTANCE_ID: Variable = optional(
    "KAFKA_GROUP_INSTANCE_ID",
    Fallback::Unset("dynamic membership"),
    SERVICES,
    "Static group membership (e.g. the pod's name): a restarted member with the same id takes \
     its partitions back at once, without a rebalance. Unique among the group's live members.",
);

// ---- Postgres

pub const DATABASE_URL: Variable = optional(
    "DATABASE_URL",
    Fallback::Unset("built from `PG_WAREHOUSE_*`"),
    POSTGRES,
    "The warehouse as a `postgres://` or `postgresql://` URL; wins over `PG_WAREHOUSE_*`.",
);
pub const PG_WAREHOUSE_HOST: Variable = deployed(
    optional(
        "PG_WAREHOUSE_HOST",
        Fallback::Unset("required without `DATABASE_URL`"),
        POSTGRES,
        "The warehouse's host.",
    ),
    Deploy::Required(&[Stg, Dds, Cdm, Vaultctl]),
);
pub const PG_WAREHOUSE_PORT: Variable = optional(
    "PG_WAREHOUSE_PORT",
    Fallback::Value("5432"),
    POSTGRES,
    "The warehouse's port.",
);
pub const PG_WAREHOUSE_DBNAME: Variable = optional(
    "PG_WAREHOUSE_DBNAME",
    Fallback::Value("dwh"),
    POSTGRES,
    "The warehouse database.",
);
pub const PG_WAREHOUSE_USER: Variable = deployed(
    optional(
        "PG_WAREHOUSE_USER",
        Fallback::Unset("required without `DATABASE_URL`"),
        POSTGRES,
        "The role the program connects as: the owner for `vaultctl`, the service's own \
         least-privilege role for a service.",
    ),
    Deploy::Required(&[Stg, Dds, Cdm, Vaultctl]),
);
pub const PG_WAREHOUSE_PASSWORD: Variable =
    secret("PG_WAREHOUSE_PASSWORD", POSTGRES, "That role's password.");
pub const PG_POOL_SIZE: Variable = optional(
    "PG_POOL_SIZE",
    Fallback::Value("8"),
    POSTGRES,
    "Connections in the Postgres pool.",
);
pub const MIGRATIONS: Variable = deployed(
    optional(
        "MIGRATIONS",
        Fallback::Value("apply"),
        SERVICES,
        "`apply`: apply pending migrations at start, under an advisory lock (local runs); \
         `verify`: only wait until none is pending (a least-privilege role cannot run DDL; \
         deployments run `vaultctl migrate` as the owner first).",
    ),
    Deploy::Required(SERVICES),
);
pub const PG_STG_USER: Variable = service_role(
    "PG_STG_USER",
    "`vaultctl migrate`: service-stg's role, created or updated and granted its layer.",
);
pub const PG_STG_PASSWORD: Variable = secret(
    "PG_STG_PASSWORD",
    MIGRATE,
    "`vaultctl migrate`: service-stg's role's password, (re)set on every run.",
);
pub const PG_DDS_USER: Variable = service_role(
    "PG_DDS_USER",
    "`vaultctl migrate`: service-dds's role, created or updated and granted its layer.",
);
pub const PG_DDS_PASSWORD: Variable = secret(
    "PG_DDS_PASSWORD",
    MIGRATE,
    "`vaultctl migrate`: service-dds's role's password, (re)set on every run.",
);
pub const PG_CDM_USER: Variable = service_role(
    "PG_CDM_USER",
    "`vaultctl migrate`: service-cdm's role (and its read-only reader), created or \
         updated and granted its layer.",
);
pub const PG_CDM_PASSWORD: Variable = secret(
    "PG_CDM_PASSWORD",
    MIGRATE,
    "`vaultctl migrate`: service-cdm's role's password, (re)set on every run.",
);

// ---- Redis

pub const REDIS_URL: Variable = deployed(
    optional(
        "REDIS_URL",
        Fallback::Unset("built from `REDIS_HOST`, `REDIS_PORT`, `REDIS_PASSWORD`"),
        REDIS,
        "The dictionaries' Redis as a `redis://` or `rediss://` URL; wins over the parts.",
    ),
    Deploy::EitherOr("REDIS_HOST", &[Datagen, Stg]),
);
pub const REDIS_HOST: Variable = deployed(
    optional(
        "REDIS_HOST",
        Fallback::Value("localhost"),
        REDIS,
        "Redis's host.",
    ),
    Deploy::EitherOr("REDIS_URL", &[Datagen, Stg]),
);
pub const REDIS_PORT: Variable = optional(
    "REDIS_PORT",
    Fallback::Value("6379"),
    REDIS,
    "Redis's port.",
);
pub const REDIS_PASSWORD: Variable = secret("REDIS_PASSWORD", REDIS, "Redis's password.");
pub const REDIS_POOL_SIZE: Variable = optional(
    "REDIS_POOL_SIZE",
    Fallback::Value("8"),
    REDIS,
    "Connections in the Redis pool.",
);

// ---- HTTP

pub const HTTP_HOST: Variable = optional(
    "HTTP_HOST",
    Fallback::Value("0.0.0.0"),
    HTTP,
    "The address `/health`, `/metrics` (and service-cdm's API) listen on; the containers \
     need all interfaces, `scripts/run.sh` binds `127.0.0.1`.",
);
pub const HTTP_PORT: Variable = deployed(
    optional(
        "HTTP_PORT",
        Fallback::Program("the program's own: `5011` datagen, `5012` stg, `5013` dds, `5014` cdm"),
        HTTP,
        "The HTTP port.",
    ),
    Deploy::Required(HTTP),
);
pub const API_TOKEN: Variable = Variable {
    default: Fallback::Unset(
        "the read API answers anyone, and service-cdm logs a warning at start",
    ),
    ..secret(
        "API_TOKEN",
        &[Cdm],
        "The bearer token service-cdm's read API and dashboard data require \
         (docs/read-api.md, \"Access\"); at least 16 printable ASCII characters, no spaces. \
         Compose reads it from `.env`, the chart from its Secret (`api-token`); the local stack \
         makes one (`.stack/api-token`).",
    )
};

// ---- processing

pub const BATCH_MAX_MESSAGES: Variable = optional(
    "BATCH_MAX_MESSAGES",
    Fallback::Value("1000"),
    SERVICES,
    "The most messages one batch (one transaction) holds; at least 1.",
);
pub const BATCH_LINGER_MS: Variable = optional(
    "BATCH_LINGER_MS",
    Fallback::Value("5"),
    SERVICES,
    "How long a batch waits for more messages once it has one. Under load the next batch is \
     already waiting when one commits, so this only shapes latency at low rates \
     (docs/performance.md).",
);
pub const WORKER_STALL_SECONDS: Variable = optional(
    "WORKER_STALL_SECONDS",
    Fallback::Value("30"),
    SERVICES,
    "How long the group may have lag without committing anything before `/health` reports \
     the worker stalled.",
);
/// The periodic counter check's budget: after a check that took `t`, the next waits at least
/// this many `t` from its start (service-cdm's `verify`), so the check takes at most this
/// fraction of one Postgres core whatever the warehouse's size. A macro, so that the
/// description below spells the number out.
macro_rules! verify_budget_factor {
    () => {
        20
    };
}
pub const VERIFY_BUDGET_FACTOR: u32 = verify_budget_factor!();

pub const VERIFY_INTERVAL_SECONDS: Variable = optional(
    "VERIFY_INTERVAL_SECONDS",
    // Every minute: the recount scans the whole Data Vault (about 1 s for 30,000 orders, 50 s
    // for 1 M here, docs/performance.md "The counter check"), runs only while the group has no
    // lag, and spaces itself by its own duration on a large warehouse.
    Fallback::Value("60"),
    &[Cdm],
    concat!(
        "How often service-cdm compares its counters with the recount over the Data Vault while \
         the group has no lag (`vaultline_recount_differences`), at the most: after a check that \
         took t, the next waits at least ",
        verify_budget_factor!(),
        " t (at most 1/",
        verify_budget_factor!(),
        " of one Postgres core). `0`: never."
    ),
);

// ---- the pipeline as the read side reports it

const fn hop_group(name: &'static str, stage: usize) -> Variable {
    optional(
        name,
        Fallback::Value(topics::PIPELINE[stage].group),
        PIPELINE_READERS,
        "A hop's consumer group, as `GET /api/v1/pipeline`, `vaultctl lag` and `vaultctl wait` \
         report it; a service's own hop defaults to its own `KAFKA_CONSUMER_GROUP`.",
    )
}

const fn hop_topic(name: &'static str, stage: usize) -> Variable {
    optional(
        name,
        Fallback::Value(topics::PIPELINE[stage].topic),
        PIPELINE_READERS,
        "The topic that hop reads; a service's own hop defaults to its own \
         `KAFKA_SOURCE_TOPIC`.",
    )
}

pub const PIPELINE_STG_GROUP: Variable = hop_group("PIPELINE_STG_GROUP", 0);
pub const PIPELINE_STG_TOPIC: Variable = hop_topic("PIPELINE_STG_TOPIC", 0);
pub const PIPELINE_DDS_GROUP: Variable = hop_group("PIPELINE_DDS_GROUP", 1);
pub const PIPELINE_DDS_TOPIC: Variable = hop_topic("PIPELINE_DDS_TOPIC", 1);
pub const PIPELINE_CDM_GROUP: Variable = hop_group("PIPELINE_CDM_GROUP", 2);
pub const PIPELINE_CDM_TOPIC: Variable = hop_topic("PIPELINE_CDM_TOPIC", 2);

/// Each hop's (group, topic) variables, in pipeline order.
pub const PIPELINE: [(&Variable, &Variable); 3] = [
    (&PIPELINE_STG_GROUP, &PIPELINE_STG_TOPIC),
    (&PIPELINE_DDS_GROUP, &PIPELINE_DDS_TOPIC),
    (&PIPELINE_CDM_GROUP, &PIPELINE_CDM_TOPIC),
];

// ---- datagen and logging

pub const DATAGEN_SEED: Variable = optional(
    "DATAGEN_SEED",
    Fallback::Value("42"),
    &[Datagen],
    "The seed of the synthetic dictionaries datagen writes to an empty Redis.",
);
pub const RUST_LOG: Variable = optional(
    "RUST_LOG",
    Fallback::Value("info"),
    LOGGING,
    "The log filter (tracing's `EnvFilter` syntax, e.g. `info,service_dds=debug`).",
);
pub const LOG_FORMAT: Variable = optional(
    "LOG_FORMAT",
    Fallback::Value("text"),
    LOGGING,
    "`json` for JSON lines; anything else is text.",
);

/// Every variable, in the order the reference lists them.
pub const VARIABLES: &[Variable] = &[
    KAFKA_BOOTSTRAP_SERVERS,
    KAFKA_HOST,
    KAFKA_PORT,
    KAFKA_SOURCE_TOPIC,
    KAFKA_DESTINATION_TOPIC,
    KAFKA_CONSUMER_GROUP,
    KAFKA_USERNAME,
    KAFKA_PASSWORD,
    KAFKA_SECURITY_PROTOCOL,
    KAFKA_SASL_MECHANISM,
    KAFKA_CA_CERT,
    KAFKA_ENABLE_IDEMPOTENCE,
    KAFKA_COMPRESSION,
    KAFKA_TOPIC_PARTITIONS,
    KAFKA_SESSION_TIMEOUT_MS,
    KAFKA_GROUP_INSTANCE_ID,
    DATABASE_URL,
    PG_WAREHOUSE_HOST,
    PG_WAREHOUSE_PORT,
    PG_WAREHOUSE_DBNAME,
    PG_WAREHOUSE_USER,
    PG_WAREHOUSE_PASSWORD,
    PG_POOL_SIZE,
    MIGRATIONS,
    PG_STG_USER,
    PG_STG_PASSWORD,
    PG_DDS_USER,
    PG_DDS_PASSWORD,
    PG_CDM_USER,
    PG_CDM_PASSWORD,
    REDIS_URL,
    REDIS_HOST,
    REDIS_PORT,
    REDIS_PASSWORD,
    REDIS_POOL_SIZE,
    HTTP_HOST,
    HTTP_PORT,
    API_TOKEN,
    BATCH_MAX_MESSAGES,
    BATCH_LINGER_MS,
    WORKER_STALL_SECONDS,
    VERIFY_INTERVAL_SECONDS,
    PIPELINE_STG_GROUP,
    PIPELINE_STG_TOPIC,
    PIPELINE_DDS_GROUP,
    PIPELINE_DDS_TOPIC,
    PIPELINE_CDM_GROUP,
    PIPELINE_CDM_TOPIC,
    DATAGEN_SEED,
    RUST_LOG,
    LOG_FORMAT,
];

/// The declared variable called `name`.
pub fn variable(name: &str) -> Option<&'static Variable> {
    VARIABLES.iter().find(|v| v.name == name)
}

/// The variables `program` reads.
pub fn read_by(program: Program) -> impl Iterator<Item = &'static Variable> {
    VARIABLES.iter().filter(move |v| v.read_by(program))
}

/// `docs/configuration.md`: the reference, generated from [`VARIABLES`].
pub fn reference() -> String {
    let mut out = String::from(
        "<!-- Generated from vault-runtime/src/config/variables.rs by\n     \
         `cargo run -q -p vault-runtime --example config-reference > docs/configuration.md`;\n     \
         CI fails when this file is stale. Edit the declaration, not this file. -->\n\
         # Configuration\n\n\
         Every Vaultline program reads its settings from environment variables, once, at \
         start (the rules are in [contract.md](contract.md#1-components-defaults-and-configuration)). \
         An empty value counts as unset; a URL form wins over the separate parts. A missing or \
         malformed setting stops the program with one line naming the variable. A credential \
         (*secret*) never reaches a log.\n\n\
         *Deploy* says what the compose file and the chart must set (the deploy wiring test \
         checks it): *required* (unset, the default would reach only a developer's machine or \
         the wrong names), or one of two variables.\n\n\
         | variable | default | read by | deploy | meaning |\n\
         |---|---|---|---|---|\n",
    );
    for variable in VARIABLES {
        let default = match variable.default {
            Fallback::Value(value) => format!("`{value}`"),
            Fallback::Program(text) => text.to_owned(),
            Fallback::Unset(text) => format!("unset: {text}"),
        };
        let programs: Vec<&str> = if variable.programs == Program::ALL {
            vec!["all"]
        } else {
            variable.programs.iter().map(|p| p.binary()).collect()
        };
        let deploy = match variable.deploy {
            Deploy::Optional => String::new(),
            Deploy::Required(programs) => format!("required{}", for_programs(programs)),
            Deploy::EitherOr(other, programs) => {
                format!("this or `{other}`{}", for_programs(programs))
            }
        };
        let secret = if variable.secret { " *Secret.*" } else { "" };
        out.push_str(&format!(
            "| `{}` | {default} | {} | {deploy} | {}{secret} |\n",
            variable.name,
            programs.join(", "),
            variable.description.replace('|', "\\|"),
        ));
    }
    out
}

fn for_programs(programs: &[Program]) -> String {
    let names: Vec<&str> = programs.iter().map(|p| p.binary()).collect();
    format!(" ({})", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_name_is_declared_once() {
        let mut seen = BTreeSet::new();
        for variable in VARIABLES {
            assert!(seen.insert(variable.name), "{} twice", variable.name);
            assert!(!variable.programs.is_empty(), "{}", variable.name);
        }
    }

    #[test]
    fn an_either_or_names_a_declared_variable_that_names_it_back() {
        for variable in VARIABLES {
            if let Deploy::EitherOr(other, programs) = variable.deploy {
                let other = variable_named(other);
                assert_eq!(
                    other.deploy,
                    Deploy::EitherOr(variable.name, programs),
                    "{}",
                    variable.name
                );
            }
        }
    }

    #[test]
    fn a_deployment_is_asked_only_for_what_the_program_reads() {
        for variable in VARIABLES {
            if let Deploy::Required(programs) | Deploy::EitherOr(_, programs) = variable.deploy {
                for program in programs {
                    assert!(variable.read_by(*program), "{} {program:?}", variable.name);
                }
            }
        }
    }

    #[test]
    fn the_committed_reference_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == reference(),
            "docs/configuration.md is stale: \
             cargo run -q -p vault-runtime --example config-reference > docs/configuration.md"
        );
    }

    fn variable_named(name: &str) -> &'static Variable {
        variable(name).unwrap_or_else(|| panic!("{name} is not declared"))
    }
}
