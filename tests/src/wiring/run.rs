//! The deploy files' wiring, proven on the real binaries (issue 6).
//!
//! No Docker engine or Kubernetes cluster runs here, so these tests take the environment that
//! `docker/compose.yaml` (as `docker-compose config` resolves it) and the Helm chart (as Helm's
//! SDK renders it) give each program, point the hosts and ports at the local stack and the
//! database, topics, consumer groups and Postgres roles at names of this test's own, start the
//! real binaries with exactly that environment (nothing inherited), and follow a push from
//! datagen through to the datamart. The production-like chart values (managed Kafka) are
//! checked by parsing each program's environment with the runtime's own configuration code.
//!
//! A renamed variable fails twice over: every variable a file sets must be one the runtime
//! reads (a quoted literal in its configuration sources), and the variables whose absence the
//! runtime would quietly fill with a default that happens to reach the local stack (the
//! broker's and Redis's addresses, the topics) must be set.
//!
//! Ignored by `scripts/test.sh`: `scripts/validate-deploy.sh wiring` renders the files into
//! `target/deploy/` (`VAULTLINE_DEPLOY_RENDERED`) and runs these with the binaries it has just
//! built (`VAULTLINE_BIN_DIR`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _};
use futures::FutureExt as _;
use serde_json::Value;
use tokio::process::{Child, Command};
use vault_runtime::config::{KafkaSecurity, KafkaSettings, Profile, Settings};
use vault_tests::pipeline::{http, http_with, COUNTER_MISMATCHES_SQL};
use vault_tests::{stack, unique, Stack};

/// The programs a deployment runs, by the name the files give them.
const MIGRATE: &str = "migrate";
const DATAGEN: &str = "datagen";
const SERVICES: [&str; 3] = ["service-stg", "service-dds", "service-cdm"];

/// Orders pushed through each deployment.
const ORDERS: u64 = 300;

/// What one program of a deployment is: its command and exactly the environment it gets.
#[derive(Debug, Clone)]
struct Program {
    binary: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    /// The port the file checks `/health` on (compose healthcheck, chart containerPort).
    health_port: Option<u16>,
}

type Programs = BTreeMap<String, Program>;

fn rendered(file: &str) -> anyhow::Result<Value> {
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

fn string_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(string_of).collect())
        .unwrap_or_default()
}

// ------------------------------------------------------------------ reading the compose file

/// The programs of `docker-compose config`'s output, keyed by service name.
fn compose_programs(config: &Value) -> anyhow::Result<Programs> {
    let services = config["services"]
        .as_object()
        .context("the compose config has no services")?;
    let mut programs = Programs::new();
    for name in [MIGRATE, DATAGEN].into_iter().chain(SERVICES) {
        let service = services
            .get(name)
            .with_context(|| format!("docker/compose.yaml has no service {name}"))?;
        let command = strings(&service["command"]);
        let (binary, args) = command
            .split_first()
            .with_context(|| format!("compose service {name} has no command"))?;
        let env = service["environment"]
            .as_object()
            .map(|vars| {
                vars.iter()
                    .filter_map(|(k, v)| string_of(v).map(|v| (k.clone(), v)))
                    .collect()
            })
            .unwrap_or_default();
        // ["CMD", "healthcheck", PORT]
        let health_port = strings(&service["healthcheck"]["test"])
            .get(2)
            .and_then(|port| port.parse().ok());
        if health_port.is_some() {
            let published = strings(&service["ports"]);
            ensure!(
                published
                    .iter()
                    .any(|p| p.trim_end_matches("/tcp").ends_with(&format!(":{}", health_port.unwrap_or(0)))),
                "compose service {name}: the healthcheck's port {health_port:?} is not published ({published:?})"
            );
        }
        programs.insert(
            name.to_owned(),
            Program {
                binary: binary.clone(),
                args: args.to_vec(),
                env,
                health_port,
            },
        );
    }
    Ok(programs)
}

// ------------------------------------------------------------------ reading the chart

/// The rendered chart's documents, with the ConfigMaps and Secrets its env refers to.
struct Manifests {
    documents: Vec<Value>,
    config_maps: HashMap<String, BTreeMap<String, String>>,
    secrets: HashMap<String, BTreeMap<String, String>>,
}

impl Manifests {
    fn new(documents: Value) -> anyhow::Result<Self> {
        let documents = documents
            .as_array()
            .context("the rendered chart is not a list of documents")?
            .clone();
        let mut config_maps = HashMap::new();
        let mut secrets = HashMap::new();
        for doc in &documents {
            let name = doc["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let data = |key: &str| -> BTreeMap<String, String> {
                doc[key]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| string_of(v).map(|v| (k.clone(), v)))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            match doc["kind"].as_str() {
                Some("ConfigMap") => {
                    config_maps.insert(name, data("data"));
                }
                Some("Secret") => {
                    let mut values: BTreeMap<String, String> = data("data")
                        .into_iter()
                        .map(|(k, v)| Ok((k, String::from_utf8(base64_decode(&v)?)?)))
                        .collect::<anyhow::Result<_>>()?;
                    values.extend(data("stringData"));
                    secrets.insert(name, values);
                }
                _ => {}
            }
        }
        Ok(Self {
            documents,
            config_maps,
            secrets,
        })
    }

    /// The programs: each Deployment's container (named by its first argument, the binary) and
    /// the migrate Job's. `external` stands for Secrets the chart refers to but does not make.
    fn programs(&self, external: &BTreeMap<String, String>) -> anyhow::Result<Programs> {
        let mut programs = Programs::new();
        for doc in &self.documents {
            let kind = doc["kind"].as_str().unwrap_or_default();
            if kind != "Deployment" && kind != "Job" {
                continue;
            }
            let containers = doc["spec"]["template"]["spec"]["containers"]
                .as_array()
                .context("a workload without containers")?;
            ensure!(
                containers.len() == 1,
                "{kind} with {} containers",
                containers.len()
            );
            let container = &containers[0];
            let args = strings(&container["args"]);
            let (binary, rest) = args
                .split_first()
                .with_context(|| format!("{kind} {} has no args", doc["metadata"]["name"]))?;
            let name = if kind == "Job" && rest == ["migrate"] {
                MIGRATE.to_owned()
            } else {
                binary.clone()
            };
            let env = self.container_env(container, external)?;
            let health_port = if kind == "Deployment" {
                let port = container["ports"]
                    .as_array()
                    .and_then(|ports| ports.iter().find(|p| p["name"] == "http"))
                    .and_then(|p| p["containerPort"].as_u64())
                    .with_context(|| format!("{name}: no container port named http"))?;
                for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                    let get = &container[probe]["httpGet"];
                    ensure!(
                        get["path"] == "/health" && get["port"] == "http",
                        "{name}: {probe} is not GET /health on the http port: {get}"
                    );
                }
                Some(u16::try_from(port)?)
            } else {
                None
            };
            programs.insert(
                name,
                Program {
                    binary: binary.clone(),
                    args: rest.to_vec(),
                    env,
                    health_port,
                },
            );
        }
        Ok(programs)
    }

    /// The environment Kubernetes gives a container: `envFrom` first, `env` over it.
    fn container_env(
        &self,
        container: &Value,
        external: &BTreeMap<String, String>,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        for source in container["envFrom"].as_array().into_iter().flatten() {
            if let Some(name) = source["configMapRef"]["name"].as_str() {
                let data = self.config_maps.get(name).with_context(|| {
                    format!("envFrom names ConfigMap {name}, which the chart does not make")
                })?;
                env.extend(data.clone());
            } else {
                bail!("unexpected envFrom source {source}");
            }
        }
        for var in container["env"].as_array().into_iter().flatten() {
            let name = var["name"]
                .as_str()
                .context("an env entry without a name")?;
            let value = if let Some(value) = string_of(&var["value"]) {
                Some(value)
            } else if var["valueFrom"]["secretKeyRef"].is_object() {
                let reference = &var["valueFrom"]["secretKeyRef"];
                let key = reference["key"]
                    .as_str()
                    .context("secretKeyRef without key")?;
                let secret = reference["name"]
                    .as_str()
                    .context("secretKeyRef without name")?;
                let found = match self.secrets.get(secret) {
                    Some(data) => data.get(key).cloned(),
                    None => external.get(key).cloned(),
                };
                ensure!(
                    found.is_some() || reference["optional"] == true,
                    "{name}: key {key} of Secret {secret} is missing and not optional"
                );
                found
            } else if let Some(path) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                // The downward API: the pod's own fields, as Kubernetes would fill them in.
                let pod = format!(
                    "{}-7d9f8b6c5-x2k4q",
                    container["name"].as_str().unwrap_or("pod")
                );
                match path {
                    "metadata.name" => Some(pod),
                    "metadata.namespace" => Some("default".to_owned()),
                    other => bail!("{name}: unexpected fieldRef {other}"),
                }
            } else if var["valueFrom"]["configMapKeyRef"].is_object() {
                let reference = &var["valueFrom"]["configMapKeyRef"];
                let map = reference["name"].as_str().unwrap_or_default();
                let key = reference["key"].as_str().unwrap_or_default();
                self.config_maps
                    .get(map)
                    .and_then(|data| data.get(key))
                    .cloned()
            } else {
                bail!("{name}: unexpected env source {var}")
            };
            match value {
                Some(value) => env.insert(name.to_owned(), value),
                None => env.remove(name),
            };
        }
        Ok(env)
    }

    /// The Deployment running `binary`.
    fn deployment(&self, binary: &str) -> Option<&Value> {
        self.documents.iter().find(|doc| {
            doc["kind"] == "Deployment"
                && strings(&doc["spec"]["template"]["spec"]["containers"][0]["args"]).first()
                    == Some(&binary.to_owned())
        })
    }
}

fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
    {
        let digit = ALPHABET
            .iter()
            .position(|a| *a == byte)
            .with_context(|| format!("not base64: {text}"))?;
        buffer = (buffer << 6) | u32::try_from(digit)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff)?);
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------ checks on the names

/// Every variable name the runtime reads: the quoted upper-case literals of its configuration
/// sources (plus `RUST_LOG`, read by tracing's EnvFilter).
fn names_the_runtime_reads() -> anyhow::Result<BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut names = BTreeSet::from(["RUST_LOG".to_owned()]);
    for file in [
        "vault-runtime/src/config.rs",
        "vault-runtime/src/app.rs",
        "vault-runtime/src/bin/vaultctl.rs",
        "datagen/src/lib.rs",
    ] {
        let text = std::fs::read_to_string(root.join(file)).with_context(|| file.to_owned())?;
        for (i, literal) in text.split('"').enumerate() {
            let is_name = literal.len() >= 4
                && literal
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                && literal.starts_with(|c: char| c.is_ascii_uppercase());
            if i % 2 == 1 && is_name {
                names.insert(literal.to_owned());
            }
        }
    }
    Ok(names)
}

/// The names of `programs` that the runtime reads, and the ones whose absence would be
/// silently defaulted, are there; the service roles are the ones migrate grants.
fn check_names(source: &str, programs: &Programs) -> anyhow::Result<()> {
    let known = names_the_runtime_reads()?;
    let mut problems = Vec::new();
    for (name, program) in programs {
        for variable in program.env.keys() {
            if !known.contains(variable) {
                problems.push(format!(
                    "{name}: {variable} is not a variable the runtime reads"
                ));
            }
        }
        let has = |v: &str| program.env.contains_key(v);
        let service = ["HTTP_PORT", "KAFKA_SOURCE_TOPIC", "KAFKA_CONSUMER_GROUP"];
        let database = ["PG_WAREHOUSE_HOST", "PG_WAREHOUSE_USER", "MIGRATIONS"];
        let required: Vec<&str> = match name.as_str() {
            MIGRATE => vec![
                "PG_WAREHOUSE_HOST",
                "PG_WAREHOUSE_USER",
                "PG_STG_USER",
                "PG_DDS_USER",
                "PG_CDM_USER",
            ],
            DATAGEN => vec!["HTTP_PORT", "KAFKA_DESTINATION_TOPIC"],
            "service-cdm" => service.into_iter().chain(database).collect(),
            _ => service
                .into_iter()
                .chain(database)
                .chain(["KAFKA_DESTINATION_TOPIC"])
                .collect(),
        };
        for variable in required {
            if !has(variable) {
                problems.push(format!("{name}: {variable} is not set"));
            }
        }
        // migrate never talks to Kafka.
        if name != MIGRATE && !has("KAFKA_BOOTSTRAP_SERVERS") && !has("KAFKA_HOST") {
            problems.push(format!(
                "{name}: neither KAFKA_BOOTSTRAP_SERVERS nor KAFKA_HOST is set"
            ));
        }
        let uses_redis = name == DATAGEN || name == "service-stg";
        if uses_redis && !has("REDIS_URL") && !has("REDIS_HOST") {
            problems.push(format!("{name}: neither REDIS_URL nor REDIS_HOST is set"));
        }
        if SERVICES.contains(&name.as_str())
            && program.env.get("MIGRATIONS").map(String::as_str) != Some("verify")
        {
            problems.push(format!(
                "{name}: MIGRATIONS must be verify (its role may not run DDL)"
            ));
        }
        if let (Some(port), Some(http)) = (program.health_port, program.env.get("HTTP_PORT")) {
            if port.to_string() != *http {
                problems.push(format!(
                    "{name}: health is checked on {port} but HTTP_PORT is {http}"
                ));
            }
        }
        if program.binary != *name && name != MIGRATE {
            problems.push(format!("{name}: runs {}", program.binary));
        }
    }
    if let Some(migrate) = programs.get(MIGRATE) {
        ensure!(
            migrate.binary == "vaultctl" && migrate.args == ["migrate"],
            "{source}: migrate runs {} {:?}",
            migrate.binary,
            migrate.args
        );
        for (service, variable) in
            SERVICES
                .iter()
                .zip(["PG_STG_USER", "PG_DDS_USER", "PG_CDM_USER"])
        {
            let granted = migrate.env.get(variable);
            let used = programs
                .get(*service)
                .and_then(|p| p.env.get("PG_WAREHOUSE_USER"));
            if granted != used {
                problems.push(format!(
                    "{service} connects as {used:?} but migrate grants {variable}={granted:?}"
                ));
            }
        }
    }
    ensure!(
        problems.is_empty(),
        "{source}:\n  {}",
        problems.join("\n  ")
    );
    Ok(())
}

// ------------------------------------------------------------------ running on the local stack

/// The local stack and this run's own names, substituted into a file's environment.
struct Local {
    kafka_host: String,
    kafka_port: u16,
    kafka_bootstrap: String,
    pg_host: String,
    pg_port: u16,
    database: String,
    redis_host: String,
    redis_port: u16,
    redis_url: String,
    /// Prefix of this run's roles (roles are cluster-wide, so they get unique names).
    role_prefix: String,
    topics: BTreeMap<String, String>,
    groups: BTreeMap<String, String>,
    roles: BTreeMap<String, String>,
}

impl Local {
    fn new(stack: &Stack, database: &str) -> anyhow::Result<Self> {
        let (kafka_host, kafka_port) =
            host_port(stack.kafka_bootstrap.split(',').next().unwrap_or_default())?;
        let pg: tokio_postgres::Config = stack.database_admin_url.parse()?;
        let pg_host = match pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => bail!("the admin URL must name a TCP host"),
        };
        let pg_port = pg.get_ports().first().copied().unwrap_or(5432);
        let redis_authority = stack
            .redis_url
            .trim_start_matches("redis://")
            .split('/')
            .next()
            .unwrap_or_default();
        let (redis_host, redis_port) =
            host_port(redis_authority.rsplit('@').next().unwrap_or_default())?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        Ok(Self {
            kafka_host,
            kafka_port,
            kafka_bootstrap: stack.kafka_bootstrap.clone(),
            pg_host,
            pg_port,
            database: database.to_owned(),
            redis_host,
            redis_port,
            redis_url: stack.redis_url.clone(),
            role_prefix: format!("vd{}", &id[..10]),
            topics: BTreeMap::new(),
            groups: BTreeMap::new(),
            roles: BTreeMap::new(),
        })
    }

    fn topic(&mut self, name: &str) -> String {
        self.topics
            .entry(name.to_owned())
            .or_insert_with(|| unique(name))
            .clone()
    }

    fn role(&mut self, name: &str) -> String {
        let prefix = self.role_prefix.clone();
        self.roles
            .entry(name.to_owned())
            .or_insert_with(|| format!("{prefix}_{name}"))
            .clone()
    }

    /// `env` with the stack's addresses and this run's names. Only variables the file sets
    /// are replaced (a renamed one is not papered over), plus HTTP_HOST: loopback only here.
    fn localize(
        &mut self,
        env: &BTreeMap<String, String>,
        http_port: u16,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (name, value) in env {
            let local = match name.as_str() {
                "KAFKA_BOOTSTRAP_SERVERS" => self.kafka_bootstrap.clone(),
                "KAFKA_HOST" => self.kafka_host.clone(),
                "KAFKA_PORT" => self.kafka_port.to_string(),
                "KAFKA_SOURCE_TOPIC" | "KAFKA_DESTINATION_TOPIC" => self.topic(value),
                "KAFKA_CONSUMER_GROUP" => self
                    .groups
                    .entry(value.clone())
                    .or_insert_with(|| unique(value))
                    .clone(),
                "PG_WAREHOUSE_HOST" => self.pg_host.clone(),
                "PG_WAREHOUSE_PORT" => self.pg_port.to_string(),
                "PG_WAREHOUSE_DBNAME" => self.database.clone(),
                "PG_WAREHOUSE_USER" | "PG_STG_USER" | "PG_DDS_USER" | "PG_CDM_USER" => {
                    self.role(value)
                }
                "REDIS_HOST" => self.redis_host.clone(),
                "REDIS_PORT" => self.redis_port.to_string(),
                "REDIS_URL" => self.redis_url.clone(),
                "HTTP_PORT" => http_port.to_string(),
                _ => value.clone(),
            };
            out.insert(name.clone(), local);
        }
        out.insert("HTTP_HOST".into(), "127.0.0.1".into());
        out
    }
}

fn host_port(authority: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = authority
        .rsplit_once(':')
        .with_context(|| format!("{authority} is not host:port"))?;
    Ok((host.to_owned(), port.parse()?))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn bin_dir() -> PathBuf {
    std::env::var_os("VAULTLINE_BIN_DIR").map_or_else(
        || {
            // target/debug/deps/<this test> -> target/debug
            let exe = std::env::current_exe().expect("the test's own path");
            exe.parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .expect("the test runs from target/<profile>/deps")
        },
        PathBuf::from,
    )
}

/// A started program; killed (SIGKILL) if still running when dropped.
struct Running {
    name: String,
    child: Child,
    log: PathBuf,
    http_port: u16,
}

fn command(program: &Program, env: &BTreeMap<String, String>) -> anyhow::Result<Command> {
    let path = bin_dir().join(&program.binary);
    ensure!(
        path.is_file(),
        "{} is not built (scripts/validate-deploy.sh wiring builds it)",
        path.display()
    );
    let mut command = Command::new(path);
    command
        .args(&program.args)
        .env_clear()
        .envs(env)
        .kill_on_drop(true);
    Ok(command)
}

async fn start(
    name: &str,
    program: &Program,
    local: &mut Local,
    logs: &Path,
) -> anyhow::Result<Running> {
    let http_port = free_port()?;
    let env = local.localize(&program.env, http_port);
    let log = logs.join(format!("{name}.log"));
    let file = std::fs::File::create(&log)?;
    let child = command(program, &env)?
        .stdout(Stdio::from(file.try_clone()?))
        .stderr(Stdio::from(file))
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Running {
        name: name.to_owned(),
        child,
        log,
        http_port,
    })
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// SIGTERM, then the exit status within 30 s.
async fn stop(running: &mut Running) -> anyhow::Result<std::process::ExitStatus> {
    let pid = running.child.id().context("already exited")?;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    ensure!(status.success(), "kill -TERM {pid} failed");
    Ok(
        tokio::time::timeout(Duration::from_secs(30), running.child.wait())
            .await
            .with_context(|| format!("{} did not stop within 30 s of SIGTERM", running.name))??,
    )
}

async fn admin(stack: &Stack, database: Option<&str>) -> anyhow::Result<tokio_postgres::Client> {
    let mut config: tokio_postgres::Config = stack.database_admin_url.parse()?;
    if let Some(database) = database {
        config.dbname(database);
    }
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn as_role(local: &Local, role: &str) -> anyhow::Result<tokio_postgres::Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&local.pg_host)
        .port(local.pg_port)
        .dbname(&local.database)
        .user(role);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// `sql` run as `role` must be refused for lack of privilege.
async fn refused(local: &Local, role: &str, sql: &str) -> anyhow::Result<()> {
    let client = as_role(local, role).await?;
    match client.batch_execute(sql).await {
        Ok(()) => bail!("{role} was allowed: {sql}"),
        Err(error) => {
            let code = error.code().map(|c| c.code().to_owned());
            ensure!(
                code.as_deref() == Some("42501"),
                "{role}: expected permission denied for `{sql}`, got {error}"
            );
            Ok(())
        }
    }
}

/// The whole deployment on the local stack: roles, migrate, the four programs, a push
/// through to the datamart, least privilege, a clean stop.
async fn run_on_local_stack(source: &str, programs: &Programs) -> anyhow::Result<()> {
    let stack = stack().await;
    let database = format!("vaultline_deploy_{}", uuid::Uuid::new_v4().simple());
    let mut local = Local::new(stack, &database)?;
    admin(stack, None)
        .await?
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await?;
    let logs = std::env::temp_dir().join(unique("vaultline-deploy-wiring"));
    std::fs::create_dir_all(&logs)?;
    // `eventually` panics on a timeout; the clean-up below runs anyway, then the panic goes on.
    let result = AssertUnwindSafe(run_in(source, programs, &mut local, stack, &logs))
        .catch_unwind()
        .await;
    // Clean up whatever happened: the database, then the roles (they own nothing else).
    let client = admin(stack, None).await?;
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await?;
    for role in local.roles.values() {
        // The read API's role, made for the cdm role (IF EXISTS: tried for each).
        let reader = vault_migrations::roles::reader_role(role);
        client
            .batch_execute(&format!(
                "DROP ROLE IF EXISTS {role}; DROP ROLE IF EXISTS {reader}"
            ))
            .await?;
    }
    match result {
        Ok(Ok(())) => {
            std::fs::remove_dir_all(&logs)?;
            Ok(())
        }
        Ok(result) => result.with_context(|| format!("{source} (logs in {})", logs.display())),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

async fn run_in(
    source: &str,
    programs: &Programs,
    local: &mut Local,
    stack: &Stack,
    logs: &Path,
) -> anyhow::Result<()> {
    let migrate = &programs[MIGRATE];
    let owner_env = local.localize(&migrate.env, 0);
    let owner = owner_env["PG_WAREHOUSE_USER"].clone();

    // What docker/postgres/10-owner.sh does in the Postgres container (and a DBA does for a
    // managed database): the owner role, with CREATEROLE, owning the database.
    let admin_config: tokio_postgres::Config = stack.database_admin_url.parse()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/postgres/10-owner.sh");
    let output = Command::new("bash")
        .arg(&script)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PGHOST", &local.pg_host)
        .env("PGPORT", local.pg_port.to_string())
        .env(
            "PGPASSWORD",
            String::from_utf8_lossy(admin_config.get_password().unwrap_or_default()).as_ref(),
        )
        .env(
            "POSTGRES_USER",
            admin_config.get_user().unwrap_or("postgres"),
        )
        .env("POSTGRES_DB", &local.database)
        .env("VAULTLINE_OWNER_USER", &owner)
        .env(
            "VAULTLINE_OWNER_PASSWORD",
            owner_env
                .get("PG_WAREHOUSE_PASSWORD")
                .filter(|password| !password.is_empty())
                .map_or("unused-here", String::as_str),
        )
        .output()
        .await?;
    ensure!(
        output.status.success(),
        "10-owner.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The topics exist before anyone subscribes (compose: kafka-topics; Kubernetes: the
    // services or the provider create them).
    let topic_names: Vec<String> = ["stg_service", "dds_service", "cdm_service"]
        .iter()
        .map(|t| local.topic(t))
        .collect();
    stack.create_topics(&topic_names, 3).await?;

    // migrate, as the file runs it.
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        command(migrate, &owner_env)?.output(),
    )
    .await
    .context("vaultctl migrate did not finish within 120 s")??;
    ensure!(
        output.status.success(),
        "vaultctl migrate failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Everything the run prints or answers, scanned for the credentials at the end.
    let mut transcript = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // The four programs, each with exactly its environment.
    let mut running = Vec::new();
    for name in [DATAGEN].into_iter().chain(SERVICES) {
        running.push(start(name, &programs[name], local, logs).await?);
    }
    for program in &running {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], program.http_port));
        let what = format!("{source} {} to answer GET /health with 200", program.name);
        // Polled here rather than with `eventually`, to show the program's log on a timeout.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let mut healthy = Err(());
        while tokio::time::Instant::now() < deadline {
            if matches!(http(addr, "GET", "/health", "").await, Ok((200, _))) {
                healthy = Ok(());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if healthy.is_err() {
            bail!("{what}; its log ends:\n{}", tail(&program.log));
        }
    }

    // A push, through to the datamart.
    let datagen = std::net::SocketAddr::from(([127, 0, 0, 1], running[0].http_port));
    let (status, body) = http(datagen, "POST", "/push", &format!(r#"{{"N": {ORDERS}}}"#)).await?;
    ensure!(status == 200, "POST /push answered {status}: {body}");
    let pushed: Value = serde_json::from_str(&body)?;
    ensure!(pushed["messages_pushed"] == ORDERS, "{body}");
    let (first, last) = (
        pushed["first_order_id"]
            .as_i64()
            .context("first_order_id")?,
        pushed["last_order_id"].as_i64().context("last_order_id")?,
    );

    let hop_env: HashMap<String, String> = [(
        "KAFKA_BOOTSTRAP_SERVERS".to_owned(),
        local.kafka_bootstrap.clone(),
    )]
    .into();
    let kafka = KafkaSettings::from(&hop_env, service_stg::PROFILE)?;
    let group = |service: &str| local.groups.get(service).cloned().unwrap_or_default();
    let hops = [
        (group("service-stg"), topic_names[0].clone()),
        (group("service-dds"), topic_names[1].clone()),
        (group("service-cdm"), topic_names[2].clone()),
    ];
    let hops: Vec<(&str, &str)> = hops.iter().map(|(g, t)| (g.as_str(), t.as_str())).collect();
    if let Err(error) =
        vault_runtime::kafka::wait_caught_up(&kafka, &hops, Duration::from_secs(60), |_, _| {})
            .await
    {
        let logs: Vec<String> = running
            .iter()
            .map(|p| format!("--- {}:\n{}", p.name, tail(&p.log)))
            .collect();
        bail!(
            "the pipeline did not catch up: {error:#}\n{}",
            logs.join("\n")
        );
    }

    let db = admin(stack, Some(&local.database)).await?;
    let count = |sql: String| {
        let db = &db;
        async move { anyhow::Ok(db.query_one(sql.as_str(), &[]).await?.get::<_, i64>(0)) }
    };
    let staged = count(format!(
        "SELECT count(*) FROM stg.order_events WHERE object_id BETWEEN {first} AND {last}"
    ))
    .await?;
    ensure!(
        staged == ORDERS as i64,
        "{staged} of {ORDERS} orders in stg.order_events"
    );
    let vaulted = count("SELECT count(*) FROM dds.h_order".into()).await?;
    ensure!(
        vaulted == ORDERS as i64,
        "{vaulted} of {ORDERS} orders in dds.h_order"
    );
    let dead = count("SELECT count(*) FROM ops.dead_letters".into()).await?;
    ensure!(dead == 0, "{dead} dead letters");
    for table in ["cdm.user_product_counters", "cdm.user_category_counters"] {
        let rows = count(format!("SELECT count(*) FROM {table} WHERE order_cnt > 0")).await?;
        ensure!(rows > 0, "{table} is empty after {ORDERS} orders");
    }
    let mismatches = count(COUNTER_MISMATCHES_SQL.into()).await?;
    ensure!(
        mismatches == 0,
        "{mismatches} counters differ from the recount over the Data Vault"
    );

    // Least privilege: each service's role wrote its own layer above; it may not touch the
    // others, and none of the roles is a superuser (nor the owner).
    let mut role_of = |service: &str| local.role(&programs[service].env["PG_WAREHOUSE_USER"]);
    let (stg, dds, cdm) = (
        role_of("service-stg"),
        role_of("service-dds"),
        role_of("service-cdm"),
    );
    refused(
        local,
        &stg,
        "INSERT INTO cdm.order_state (order_id) VALUES (gen_random_uuid())",
    )
    .await?;
    refused(local, &stg, "DELETE FROM cdm.user_product_counters").await?;
    refused(local, &stg, "DELETE FROM dds.order_load_state").await?;
    refused(local, &dds, "DELETE FROM stg.order_events").await?;
    refused(
        local,
        &dds,
        "UPDATE cdm.user_category_counters SET order_cnt = 0",
    )
    .await?;
    refused(local, &cdm, "SELECT count(*) FROM dds.h_order").await?;
    refused(
        local,
        &cdm,
        "UPDATE ops.dead_letters SET replayed_at = now()",
    )
    .await?;
    refused(local, &stg, "CREATE TABLE stg.intruder (id int)").await?;
    let privileged = count(format!(
        "SELECT count(*) FROM pg_roles WHERE rolname IN ('{stg}', '{dds}', '{cdm}', '{owner}') \
         AND (rolsuper OR rolbypassrls OR (rolcreaterole AND rolname <> '{owner}'))"
    ))
    .await?;
    ensure!(privileged == 0, "{privileged} of the roles are privileged");
    // And why the services start with MIGRATIONS=verify: diesel's own check runs DDL, which a
    // service role may not.
    let stg_url = format!(
        "postgres://{stg}@{}:{}/{}",
        local.pg_host, local.pg_port, local.database
    );
    ensure!(
        vault_migrations::run(&stg_url).await.is_err(),
        "a service role could run diesel's migration check; MIGRATIONS=verify would be unnecessary"
    );
    ensure!(vault_migrations::pending(&stg_url).await?.is_empty());

    // The read side closed: service-cdm's API answers 401 without the file's token and reads
    // (as its read-only role) with it.
    let cdm_program = running
        .iter()
        .find(|p| p.name == "service-cdm")
        .context("service-cdm runs")?;
    let cdm_addr = std::net::SocketAddr::from(([127, 0, 0, 1], cdm_program.http_port));
    let token = programs["service-cdm"].env.get("API_TOKEN").cloned();
    ensure!(
        token.as_deref().is_some_and(|t| t.len() >= 16),
        "{source}: service-cdm gets no API_TOKEN of 16 characters or more"
    );
    let bearer = format!("Bearer {}", token.clone().unwrap_or_default());
    for path in ["/api/v1/summary", "/api/v1/tags", "/api/v1/pipeline"] {
        let (status, _, body) = http_with(cdm_addr, "GET", path, "", &[]).await?;
        ensure!(
            status == 401,
            "GET {path} without the token answered {status}: {body}"
        );
        let (status, _, body) =
            http_with(cdm_addr, "GET", path, "", &[("Authorization", &bearer)]).await?;
        ensure!(
            status == 200,
            "GET {path} with the token answered {status}: {body}"
        );
        transcript.push_str(&body);
    }
    for program in &running {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], program.http_port));
        let (_, body) = http(addr, "GET", "/health", "").await?;
        transcript.push_str(&body);
    }

    // SIGTERM: each finishes its batch, commits and exits 0.
    for program in running.iter_mut().rev() {
        let status = stop(program).await?;
        ensure!(
            status.success(),
            "{} exited with {status} after SIGTERM",
            program.name
        );
    }

    // No credential in any log line or /health body.
    for program in &running {
        transcript.push_str(&std::fs::read_to_string(&program.log)?);
    }
    let secrets: BTreeSet<&str> = programs
        .values()
        .flat_map(|program| &program.env)
        .filter(|(name, value)| {
            (name.ends_with("PASSWORD") || name.as_str() == "API_TOKEN") && !value.is_empty()
        })
        .map(|(_, value)| value.as_str())
        .collect();
    ensure!(!secrets.is_empty(), "{source} configures no credential");
    for secret in &secrets {
        ensure!(
            !transcript.contains(secret),
            "{source}: a configured credential ({} characters) appears in the logs or /health",
            secret.len()
        );
    }
    Ok(())
}

// ------------------------------------------------------------------ the tests

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
    let programs = manifests.programs(&BTreeMap::new())?;
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
    let secrets: BTreeMap<String, String> = [
        ("pg-owner-password", "owner-secret"),
        ("pg-stg-password", "stg-secret"),
        ("pg-dds-password", "dds-secret"),
        ("pg-cdm-password", "cdm-secret"),
        ("kafka-password", "kafka-secret"),
        ("redis-password", "redis-secret"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let programs = manifests.programs(&secrets)?;
    check_names("the chart (production values)", &programs)?;
    ensure!(
        !programs.contains_key(DATAGEN),
        "datagen is disabled in production"
    );

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
        (
            MIGRATE,
            Profile {
                service: "vaultctl",
                source_topic: None,
                destination_topic: None,
                consumer_group: "vaultctl",
                http_port: 0,
                uses_redis: false,
            },
        ),
    ];
    for (name, profile) in profiles {
        let program = programs.get(name).with_context(|| format!("no {name}"))?;
        let mut env: HashMap<String, String> = program.env.clone().into_iter().collect();
        // The CA certificate must be where the Secret is mounted.
        let path = env
            .get("KAFKA_CA_CERT")
            .cloned()
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
        let mount = pod["containers"][0]["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| path.starts_with(m["mountPath"].as_str().unwrap_or("\0")))
            .with_context(|| format!("{name}: nothing is mounted at {path}"))?;
        let volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == mount["name"])
            .context("the mount's volume")?;
        ensure!(
            volume["secret"]["secretName"] == "kafka-ca",
            "{name}: CA volume {volume}"
        );
        let file = path
            .trim_start_matches(mount["mountPath"].as_str().unwrap_or_default())
            .trim_start_matches('/');
        let provided = volume["secret"]["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|item| item["path"] == file);
        ensure!(provided, "{name}: the CA Secret does not provide {file}");
        env.insert("KAFKA_CA_CERT".into(), ca.display().to_string());

        let settings =
            Settings::from(&env, profile).with_context(|| format!("{name}'s environment"))?;
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
                ensure!(
                    ca_cert.as_deref() == Some(ca.as_path()),
                    "{name}: CA {ca_cert:?}"
                );
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
                redis.url.expose()
                    == "redis://:redis-secret@c-dictionaries.rw.mdb.example.net:6380"
            );
        }
        if name == MIGRATE {
            for role in ["PG_STG_PASSWORD", "PG_DDS_PASSWORD", "PG_CDM_PASSWORD"] {
                ensure!(
                    env.get(role).is_some_and(|p| p.ends_with("-secret")),
                    "migrate: {role}"
                );
            }
        }
    }
    std::fs::remove_file(&ca)?;
    Ok(())
}
