//! The deploy files' wiring, proven on the real binaries (issue 6); the harness is
//! `vault_tests::wiring`.
//!
//! Ignored by `scripts/test.sh`: `scripts/validate-deploy.sh wiring` renders the files into
//! `target/deploy/` (`VAULTLINE_DEPLOY_RENDERED`) and runs these with the binaries it has just
//! built (`VAULTLINE_BIN_DIR`).

use anyhow::{ensure, Context as _};
use vault_tests::wiring::checks::check_names;
use vault_tests::wiring::files::{compose_programs, Manifests};
use vault_tests::wiring::run::run_on_local_stack;
use vault_tests::wiring::{production, rendered, DATAGEN};

#[tokio::test]
#[ignore = "run by scripts/validate-deploy.sh, which renders the deploy files first"]
async fn compose_wiring_runs_the_real_binaries_through_to_the_datamart() -> anyhow::Result<()> {
    let config = rendered("compose.json")?;
    let config = config
        .as_array()
        .and_then(|docs| docs.first())
        .context("empty compose config")?;
    let programs = compose_programs(config)?;
    check_names("docker/compose.yaml", &programs)?;
    run_on_local_stack("docker/compose.yaml", &programs).await
}

#[tokio::test]
#[ignore = "run by scripts/validate-deploy.sh, which renders the deploy files first"]
async fn helm_wiring_runs_the_real_binaries_through_to_the_datamart() -> anyhow::Result<()> {
    let manifests = Manifests::new(rendered("helm-default.json")?)?;
    let programs = manifests.programs(&Default::default())?;
    ensure!(
        programs.len() == 5,
        "the default chart runs {:?}",
        programs.keys().collect::<Vec<_>>()
    );
    check_names("the chart (default values)", &programs)?;
    run_on_local_stack("the chart (default values)", &programs).await
}

/// The production-like values cannot run here (managed Kafka over SASL_SSL), so each program's
/// environment is parsed by the runtime's own configuration code instead.
#[tokio::test]
#[ignore = "run by scripts/validate-deploy.sh, which renders the deploy files first"]
async fn helm_production_values_configure_managed_kafka_and_each_role() -> anyhow::Result<()> {
    let manifests = Manifests::new(rendered("helm-production.json")?)?;
    let programs = manifests.programs(&production::external_secrets())?;
    check_names("the chart (production values)", &programs)?;
    ensure!(
        !programs.contains_key(DATAGEN),
        "datagen is disabled in production"
    );
    production::check_settings(&manifests, &programs)
}
