//! The chart with its production-like values (managed Kafka over SASL_SSL, a managed
//! Postgres and Redis) cannot run here, so each program's environment is parsed by the
//! runtime's own configuration code instead, and checked for the settings those values give.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, ensure, Context as _};
use serde_json::Value;
use vault_runtime::{variables as var, KafkaSecurity, Profile, Settings};

use super::files::Manifests;
use super::{Programs, MIGRATE};
use crate::unique;

/// The Secrets the production values refer to but the chart does not make, as an operator
/// would create them.
pub fn external_secrets() -> BTreeMap<String, String> {
    [
        ("pg-owner-password", "owner-secret"),
        ("pg-stg-password", "stg-secret"),
        ("pg-dds-password", "dds-secret"),
        ("pg-cdm-password", "cdm-secret"),
        ("kafka-password", "kafka-secret"),
        ("redis-password", "redis-secret"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Each program's environment parses into the managed Kafka, its own Postgres role and (for
/// service-stg) the managed Redis.
pub fn check_settings(manifests: &Manifests, programs: &Programs) -> anyhow::Result<()> {
    let ca = std::env::temp_dir()
        .join(unique("vaultline-ca"))
        .with_extension("crt");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    )?;
    let profiles: [(&str, Profile); 4] = [
        ("service-stg", service_stg::PROFILE),
        ("service-dds", service_dds::PROFILE),
        ("service-cdm", service_cdm::PROFILE),
        (MIGRATE, Profile::tool("vaultctl")),
    ];
    let result = profiles.into_iter().try_for_each(|(name, profile)| {
        let program = programs.get(name).with_context(|| format!("no {name}"))?;
        let mut env: HashMap<String, String> = program.env.clone().into_iter().collect();
        check_ca_mounted(manifests, name, &env)?;
        env.insert(var::KAFKA_CA_CERT.name.into(), ca.display().to_string());
        let settings =
            Settings::from(&env, profile).with_context(|| format!("{name}'s environment"))?;
        check_managed(name, &settings, &ca)?;
        if name == MIGRATE {
            for role in [
                var::PG_STG_PASSWORD.name,
                var::PG_DDS_PASSWORD.name,
                var::PG_CDM_PASSWORD.name,
            ] {
                ensure!(
                    env.get(role).is_some_and(|p| p.ends_with("-secret")),
                    "migrate: {role}"
                );
            }
        }
        Ok(())
    });
    std::fs::remove_file(&ca)?;
    result
}

/// The CA certificate is where the `kafka-ca` Secret is mounted.
fn check_ca_mounted(
    manifests: &Manifests,
    name: &str,
    env: &HashMap<String, String>,
) -> anyhow::Result<()> {
    let path = env
        .get(var::KAFKA_CA_CERT.name)
        .with_context(|| format!("{name}: no KAFKA_CA_CERT"))?;
    let pod = match name {
        MIGRATE => manifests
            .documents
            .iter()
            .find(|d| d["kind"] == "Job")
            .map(|d| &d["spec"]["template"]["spec"]),
        _ => manifests
            .deployment(name)
            .map(|d| &d["spec"]["template"]["spec"]),
    }
    .context("no pod spec")?;
    let mount = items(&pod["containers"][0]["volumeMounts"])
        .find(|m| path.starts_with(m["mountPath"].as_str().unwrap_or("\0")))
        .with_context(|| format!("{name}: nothing is mounted at {path}"))?;
    let volume = items(&pod["volumes"])
        .find(|v| v["name"] == mount["name"])
        .context("the mount's volume")?;
    ensure!(
        volume["secret"]["secretName"] == "kafka-ca",
        "{name}: CA volume {volume}"
    );
    let file = path
        .trim_start_matches(mount["mountPath"].as_str().unwrap_or_default())
        .trim_start_matches('/');
    let provided = items(&volume["secret"]["items"]).any(|item| item["path"] == file);
    ensure!(provided, "{name}: the CA Secret does not provide {file}");
    Ok(())
}

fn items(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

/// SASL_SSL with SCRAM to the managed Kafka, the program's own role on the managed Postgres,
/// and the managed Redis for service-stg.
fn check_managed(name: &str, settings: &Settings, ca: &Path) -> anyhow::Result<()> {
    match &settings.kafka.security {
        KafkaSecurity::Sasl {
            protocol,
            mechanism,
            username,
            password,
            ca_cert,
        } => {
            ensure!(
                protocol == "SASL_SSL" && mechanism == "SCRAM-SHA-512",
                "{name}: {protocol} {mechanism}"
            );
            ensure!(
                username == "vaultline" && password.expose() == "kafka-secret",
                "{name}: SASL user"
            );
            ensure!(ca_cert.as_deref() == Some(ca), "{name}: CA {ca_cert:?}");
        }
        KafkaSecurity::Plaintext => bail!("{name}: Kafka is not over SASL"),
    }
    let url = settings.postgres.url.expose();
    let (role, secret) = match name {
        MIGRATE => ("vaultline", "owner-secret"),
        "service-stg" => ("vaultline_stg", "stg-secret"),
        "service-dds" => ("vaultline_dds", "dds-secret"),
        _ => ("vaultline_cdm", "cdm-secret"),
    };
    ensure!(
        url == format!("postgres://{role}:{secret}@c-warehouse.rw.mdb.example.net:6432/dwh"),
        "{name}: Postgres URL is not the expected role, host and port"
    );
    if name == "service-stg" {
        let redis = settings.redis.as_ref().context("service-stg uses Redis")?;
        ensure!(
            redis.url.expose() == "redis://:redis-secret@c-dictionaries.rw.mdb.example.net:6380"
        );
    }
    Ok(())
}
