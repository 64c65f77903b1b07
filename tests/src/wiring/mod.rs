//! The harness of the deploy files' wiring tests (tests/tests/deploy_wiring.rs, issue 6).
//!
//! No Docker engine or Kubernetes cluster runs here, so the tests take the environment that
//! `docker/compose.yaml` (as `docker-compose config` resolves it) and the Helm chart (as Helm's
//! SDK renders it) give each program ([`files`]), check it against the declaration of every
//! variable ([`checks`]), point the hosts and ports at the local stack and the database,
//! topics, consumer groups and Postgres roles at names of the test's own, start the real
//! binaries with exactly that environment (nothing inherited), and follow a push from datagen
//! through to the datamart ([`run`]). The production-like chart values (managed Kafka) are
//! checked by parsing each program's environment with the runtime's own configuration code
//! ([`production`]).
//!
//! A renamed variable fails twice over: every variable a file sets must be one the program
//! reads (vault-runtime's `config::variables`), and the variables whose absence the runtime
//! would quietly fill with a default that happens to reach the local stack (the broker's and
//! Redis's addresses, the topics) must be set.
//!
//! `scripts/validate-deploy.sh wiring` renders the files into `target/deploy/`
//! (`VAULTLINE_DEPLOY_RENDERED`) and runs the tests with the binaries it has just built
//! (`VAULTLINE_BIN_DIR`).

pub mod checks;
pub mod files;
pub mod production;
pub mod run;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{anyhow, Context as _};
use serde_json::Value;

/// The programs a deployment runs, by the name the files give them.
pub const MIGRATE: &str = "migrate";
pub const DATAGEN: &str = "datagen";
pub const SERVICES: [&str; 3] = ["service-stg", "service-dds", "service-cdm"];

/// What one program of a deployment is: its command and exactly the environment it gets.
#[derive(Debug, Clone)]
pub struct Program {
    pub binary: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// The variables of `env` that come from settings every program shares (the chart's
    /// ConfigMap, through `envFrom`): each must be one some program reads, not necessarily
    /// this one.
    pub shared: BTreeSet<String>,
    /// The port the file checks `/health` on (compose healthcheck, chart containerPort).
    pub health_port: Option<u16>,
}

pub type Programs = BTreeMap<String, Program>;

/// A file `scripts/validate-deploy.sh` rendered to JSON.
pub fn rendered(file: &str) -> anyhow::Result<Value> {
    let dir = std::env::var("VAULTLINE_DEPLOY_RENDERED").map_err(|_| {
        anyhow!("VAULTLINE_DEPLOY_RENDERED is not set: run scripts/validate-deploy.sh, which renders the deploy files first")
    })?;
    let path = Path::new(&dir).join(file);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (made by scripts/validate-deploy.sh)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
