//! The deploy files' variables against the declaration of every variable
//! (vault-runtime's `config::variables`): each one a file sets is one its program reads, each
//! one a deployment must set is set, and the files agree with each other (health ports, roles).

use anyhow::ensure;
use vault_runtime::variables::{self, Deploy, Fallback, Program as Reader, VARIABLES};

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

/// `docker/.env.example`'s values for the variables the programs read under the same name are
/// the declared defaults: a copy of it changes nothing until someone edits it. (That it names
/// exactly the variables the compose file reads, scripts/validate-deploy.sh checks.)
pub fn env_example_problems(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .filter_map(|(name, value)| {
            let declared = variables::variable(name.trim())?;
            match declared.default {
                Fallback::Value(default) if default != value.trim() => Some(format!(
                    "docker/.env.example sets {name}={value}, but its declared default is {default}"
                )),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn program(binary: &str, env: &[(&str, &str)]) -> Program {
        Program {
            binary: binary.to_owned(),
            args: Vec::new(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            shared: BTreeSet::new(),
            health_port: None,
        }
    }

    #[test]
    fn a_variable_the_program_does_not_read_and_a_missing_required_one_are_named() {
        let dds = program(
            "service-dds",
            &[
                ("KAFKA_HOST", "kafka"),
                ("KAFKA_SOURCE_TOPIC", "dds_service"),
                ("KAFKA_DESTINATION_TOPIC", "cdm_service"),
                ("KAFKA_CONSUMER_GROUP", "service-dds"),
                ("HTTP_PORT", "5013"),
                ("PG_WAREHOUSE_HOST", "postgres"),
                ("PG_WAREHOUSE_USER", "vaultline_dds"),
                ("MIGRATIONS", "verify"),
                // datagen's, not service-dds's; and a name nobody reads.
                ("DATAGEN_SEED", "42"),
                ("BATCH_SIZE", "10"),
            ],
        );
        let programs: Programs = BTreeMap::from([("service-dds".to_owned(), dds.clone())]);
        let error = check_names("test", &programs).expect_err("two problems");
        let text = error.to_string();
        assert!(
            text.contains("DATAGEN_SEED is not a variable service-dds reads"),
            "{text}"
        );
        assert!(
            text.contains("BATCH_SIZE is not a variable any program reads"),
            "{text}"
        );

        let mut shared = dds;
        shared.env.remove("BATCH_SIZE");
        shared.env.remove("KAFKA_HOST");
        shared.shared.insert("DATAGEN_SEED".to_owned());
        let programs: Programs = BTreeMap::from([("service-dds".to_owned(), shared)]);
        let text = check_names("test", &programs)
            .expect_err("the broker is unset")
            .to_string();
        assert!(
            text.contains("neither KAFKA_BOOTSTRAP_SERVERS nor KAFKA_HOST is set"),
            "{text}"
        );
        assert!(
            !text.contains("DATAGEN_SEED"),
            "shared settings may serve others: {text}"
        );
    }

    #[test]
    fn the_env_example_gives_the_declared_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker/.env.example");
        let text = std::fs::read_to_string(path).expect("docker/.env.example");
        assert_eq!(env_example_problems(&text), Vec::<String>::new());
        assert_eq!(
            env_example_problems("BATCH_MAX_MESSAGES=10\n"),
            ["docker/.env.example sets BATCH_MAX_MESSAGES=10, but its declared default is 1000"]
        );
    }
}
