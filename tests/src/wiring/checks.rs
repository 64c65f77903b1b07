//! The deploy files' variables against the declaration of every variable
//! (vault-runtime's `config::variables`): each one a file sets is one its program reads, each
//! one a deployment must set is set, and the files agree with each other (health ports, roles).

use anyhow::ensure;
use vault_runtime::config::variables::{self, Deploy, Program as Reader, VARIABLES};

use super::{Program, Programs, MIGRATE, SERVICES};

/// The names of `programs` are ones each program reads, the ones a deployment must set are
/// set, and the service roles are the ones migrate grants.
pub fn check_names(source: &str, programs: &Programs) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for (name, program) in programs {
        if program.binary != *name && name != MIGRATE {
            problems.push(format!("{name}: runs {}", program.binary));
        }
        let Some(reader) = Reader::from_binary(&program.binary) else {
            problems.push(format!(
                "{name}: {} is not a Vaultline program",
                program.binary
            ));
            continue;
        };
        problems.extend(unread(name, reader, program));
        problems.extend(unset(name, reader, program));
        problems.extend(agreement(name, program));
    }
    if let Some(migrate) = programs.get(MIGRATE) {
        ensure!(
            migrate.binary == "vaultctl" && migrate.args == ["migrate"],
            "{source}: migrate runs {} {:?}",
            migrate.binary,
            migrate.args
        );
        problems.extend(granted_roles(migrate, programs));
    }
    ensure!(
        problems.is_empty(),
        "{source}:\n  {}",
        problems.join("\n  ")
    );
    Ok(())
}

/// Variables the file sets that the program does not read: a renamed or stale one. A variable
/// every program is given (the chart's shared ConfigMap) need only be one some program reads.
fn unread(name: &str, reader: Reader, program: &Program) -> Vec<String> {
    program
        .env
        .keys()
        .filter_map(|variable| match variables::variable(variable) {
            None => Some(format!(
                "{name}: {variable} is not a variable any program reads"
            )),
            Some(declared) if !declared.read_by(reader) && !program.shared.contains(variable) => {
                Some(format!(
                    "{name}: {variable} is not a variable {} reads",
                    program.binary
                ))
            }
            Some(_) => None,
        })
        .collect()
}

/// Variables the declaration says a deployment must set for this program, unset.
fn unset(name: &str, reader: Reader, program: &Program) -> Vec<String> {
    let has = |variable: &str| program.env.contains_key(variable);
    VARIABLES
        .iter()
        .filter_map(|variable| match variable.deploy {
            Deploy::Required(readers) if readers.contains(&reader) && !has(variable.name) => {
                Some(format!("{name}: {} is not set", variable.name))
            }
            // Reported once, from the first of the two names.
            Deploy::EitherOr(other, readers)
                if readers.contains(&reader)
                    && variable.name < other
                    && !has(variable.name)
                    && !has(other) =>
            {
                Some(format!(
                    "{name}: neither {} nor {other} is set",
                    variable.name
                ))
            }
            _ => None,
        })
        .collect()
}

/// A service runs with `MIGRATIONS=verify` (its role may not run DDL), and its health is
/// checked on the port it listens on.
fn agreement(name: &str, program: &Program) -> Vec<String> {
    let mut problems = Vec::new();
    let migrations = variables::MIGRATIONS.name;
    if SERVICES.contains(&name) && program.env.get(migrations).map(String::as_str) != Some("verify")
    {
        problems.push(format!(
            "{name}: {migrations} must be verify (its role may not run DDL)"
        ));
    }
    let http_port = variables::HTTP_PORT.name;
    if let (Some(port), Some(http)) = (program.health_port, program.env.get(http_port)) {
        if port.to_string() != *http {
            problems.push(format!(
                "{name}: health is checked on {port} but {http_port} is {http}"
            ));
        }
    }
    problems
}

/// Each service connects as the role migrate grants it.
fn granted_roles(migrate: &Program, programs: &Programs) -> Vec<String> {
    let user = variables::PG_WAREHOUSE_USER.name;
    SERVICES
        .iter()
        .zip([
            variables::PG_STG_USER.name,
            variables::PG_DDS_USER.name,
            variables::PG_CDM_USER.name,
        ])
        .filter_map(|(service, variable)| {
            let granted = migrate.env.get(variable);
            let used = programs.get(*service).and_then(|p| p.env.get(user));
            (granted != used).then(|| {
                format!("{service} connects as {used:?} but migrate grants {variable}={granted:?}")
            })
        })
        .collect()
}
