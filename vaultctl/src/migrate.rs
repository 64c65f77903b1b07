//! `vaultctl migrate`: the deployment's one-shot step, run as the owner of the schemas.

use vault_migrations::roles::{Layer, ServiceRole};
use vault_runtime::variables::{
    PG_CDM_PASSWORD, PG_CDM_USER, PG_DDS_PASSWORD, PG_DDS_USER, PG_STG_PASSWORD, PG_STG_USER,
};
use vault_runtime::{Env as _, ProcessEnv, Settings};

/// Each service's role: the variables naming it and its password.
const SERVICE_ROLES: [(Layer, &str, &str); 3] = [
    (Layer::Stg, PG_STG_USER.name, PG_STG_PASSWORD.name),
    (Layer::Dds, PG_DDS_USER.name, PG_DDS_PASSWORD.name),
    (Layer::Cdm, PG_CDM_USER.name, PG_CDM_PASSWORD.name),
];

/// Applies pending migrations, then creates and grants the role of each service that
/// `PG_<LAYER>_USER` names.
pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let url = settings.postgres.url.expose();
    let applied = vault_migrations::run(url).await?;
    println!("applied {} migration(s)", applied.len());
    let roles: Vec<ServiceRole> = SERVICE_ROLES
        .into_iter()
        .filter_map(|(layer, user, password)| {
            ProcessEnv.get(user).map(|name| ServiceRole {
                layer,
                name,
                password: ProcessEnv.get(password),
            })
        })
        .collect();
    let names: Vec<&str> = roles.iter().map(|role| role.name.as_str()).collect();
    let names = if names.is_empty() {
        "none (PG_STG_USER, PG_DDS_USER and PG_CDM_USER are unset)".to_owned()
    } else {
        names.join(", ")
    };
    vault_migrations::roles::apply(url, roles).await?;
    println!("service roles granted: {names}");
    Ok(())
}
