//! A deployment's programs run on the local stack: this run's own database, topics, groups
//! and roles substituted into each program's environment, the real binaries started with
//! exactly that, a push followed through to the datamart, least privilege and a clean stop
//! checked, and no credential in any log.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use futures::FutureExt as _;
use serde_json::Value;
use tokio::process::{Child, Command};
use vault_core::contract::topics;
use vault_runtime::variables::{self as var, Variable};
use vault_runtime::KafkaSettings;

use super::{Program, Programs, DATAGEN, MIGRATE, SERVICES};
use crate::pipeline::{http, http_with, COUNTER_MISMATCHES_SQL};
use crate::sql;
use crate::{stack, unique, Stack};

/// Orders pushed through each deployment.
const ORDERS: u64 = 300;

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
            let is = |variable: &Variable| variable.name == name;
            let local = if is(&var::KAFKA_BOOTSTRAP_SERVERS) {
                self.kafka_bootstrap.clone()
            } else if is(&var::KAFKA_HOST) {
                self.kafka_host.clone()
            } else if is(&var::KAFKA_PORT) {
                self.kafka_port.to_string()
            } else if is(&var::KAFKA_SOURCE_TOPIC) || is(&var::KAFKA_DESTINATION_TOPIC) {
                self.topic(value)
            } else if is(&var::KAFKA_CONSUMER_GROUP) {
                self.groups
                    .entry(value.clone())
                    .or_insert_with(|| unique(value))
                    .clone()
            } else if is(&var::PG_WAREHOUSE_HOST) {
                self.pg_host.clone()
            } else if is(&var::PG_WAREHOUSE_PORT) {
                self.pg_port.to_string()
            } else if is(&var::PG_WAREHOUSE_DBNAME) {
                self.database.clone()
            } else if [
                &var::PG_WAREHOUSE_USER,
                &var::PG_STG_USER,
                &var::PG_DDS_USER,
                &var::PG_CDM_USER,
            ]
            .into_iter()
            .any(is)
            {
                self.role(value)
            } else if is(&var::REDIS_HOST) {
                self.redis_host.clone()
            } else if is(&var::REDIS_PORT) {
                self.redis_port.to_string()
            } else if is(&var::REDIS_URL) {
                self.redis_url.clone()
            } else if is(&var::HTTP_PORT) {
                http_port.to_string()
            } else {
                value.clone()
            };
            out.insert(name.clone(), local);
        }
        out.insert(var::HTTP_HOST.name.into(), "127.0.0.1".into());
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

impl Running {
    fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }
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
    sql::connect(&config).await
}

/// `statement` run as `role` must be refused for lack of privilege.
async fn refused(local: &Local, role: &str, statement: &str) -> anyhow::Result<()> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&local.pg_host)
        .port(local.pg_port)
        .dbname(&local.database)
        .user(role);
    let client = sql::connect(&config).await?;
    match sql::outcome(&client, statement).await {
        None => bail!("{role} was allowed: {statement}"),
        Some(code) => {
            ensure!(
                code == "42501",
                "{role}: expected permission denied for `{statement}`, got {code}"
            );
            Ok(())
        }
    }
}

/// The whole deployment on the local stack: roles, migrate, the four programs, a push
/// through to the datamart, least privilege, a clean stop.
pub async fn run_on_local_stack(source: &str, programs: &Programs) -> anyhow::Result<()> {
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

/// The steps of one run, in order; each fails with what it found.
async fn run_in(
    source: &str,
    programs: &Programs,
    local: &mut Local,
    stack: &Stack,
    logs: &Path,
) -> anyhow::Result<()> {
    let migrate = &programs[MIGRATE];
    let owner_env = local.localize(&migrate.env, 0);
    let owner = owner_env[var::PG_WAREHOUSE_USER.name].clone();
    make_owner(local, stack, &owner_env).await?;
    let topic_names = create_topics(local, stack).await?;
    // Everything the run prints or answers, scanned for the credentials at the end.
    let mut transcript = run_migrate(migrate, &owner_env).await?;
    let mut running = start_programs(source, programs, local, logs).await?;
    let (first, last) = push(&running[0]).await?;
    wait_caught_up(local, &topic_names, &running).await?;
    check_warehouse(stack, local, first, last).await?;
    check_least_privilege(programs, local, stack, &owner).await?;
    transcript.push_str(&check_read_side(source, programs, &running).await?);
    stop_programs(&mut running).await?;
    for program in &running {
        transcript.push_str(&std::fs::read_to_string(&program.log)?);
    }
    check_no_credential_leaks(source, programs, &transcript)
}

/// What docker/postgres/10-owner.sh does in the Postgres container (and a DBA does for a
/// managed database): the owner role, with CREATEROLE, owning the database.
async fn make_owner(
    local: &Local,
    stack: &Stack,
    owner_env: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
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
        .env(
            "VAULTLINE_OWNER_USER",
            &owner_env[var::PG_WAREHOUSE_USER.name],
        )
        .env(
            "VAULTLINE_OWNER_PASSWORD",
            owner_env
                .get(var::PG_WAREHOUSE_PASSWORD.name)
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
    Ok(())
}

/// The topics exist before anyone subscribes (compose: kafka-topics; Kubernetes: the services
/// or the provider create them). This run's names of the pipeline's topics, in order.
async fn create_topics(local: &mut Local, stack: &Stack) -> anyhow::Result<Vec<String>> {
    let topic_names: Vec<String> = topics::PIPELINE
        .iter()
        .map(|hop| local.topic(hop.topic))
        .collect();
    stack.create_topics(&topic_names, 3).await?;
    Ok(topic_names)
}

/// migrate, as the file runs it; what it printed.
async fn run_migrate(
    migrate: &Program,
    owner_env: &BTreeMap<String, String>,
) -> anyhow::Result<String> {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        command(migrate, owner_env)?.output(),
    )
    .await
    .context("vaultctl migrate did not finish within 120 s")??;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        output.status.success(),
        "vaultctl migrate failed: {printed}"
    );
    Ok(printed)
}

/// The four programs, each with exactly its environment, datagen first; each healthy.
async fn start_programs(
    source: &str,
    programs: &Programs,
    local: &mut Local,
    logs: &Path,
) -> anyhow::Result<Vec<Running>> {
    let mut running = Vec::new();
    for name in [DATAGEN].into_iter().chain(SERVICES) {
        running.push(start(name, &programs[name], local, logs).await?);
    }
    for program in &running {
        let addr = program.addr();
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
    Ok(running)
}

/// A push of [`ORDERS`] orders to datagen; the first and last order id it made.
async fn push(datagen: &Running) -> anyhow::Result<(i64, i64)> {
    let (status, body) = http(
        datagen.addr(),
        "POST",
        "/push",
        &format!(r#"{{"N": {ORDERS}}}"#),
    )
    .await?;
    ensure!(status == 200, "POST /push answered {status}: {body}");
    let pushed: Value = serde_json::from_str(&body)?;
    ensure!(pushed["messages_pushed"] == ORDERS, "{body}");
    Ok((
        pushed["first_order_id"]
            .as_i64()
            .context("first_order_id")?,
        pushed["last_order_id"].as_i64().context("last_order_id")?,
    ))
}

/// Each hop has committed everything on its topic; on a timeout, the programs' logs.
async fn wait_caught_up(
    local: &Local,
    topic_names: &[String],
    running: &[Running],
) -> anyhow::Result<()> {
    let hop_env: HashMap<String, String> = [(
        var::KAFKA_BOOTSTRAP_SERVERS.name.to_owned(),
        local.kafka_bootstrap.clone(),
    )]
    .into();
    let kafka = KafkaSettings::from(&hop_env, service_stg::PROFILE)?;
    let hops: Vec<(String, String)> = topics::PIPELINE
        .iter()
        .zip(topic_names)
        .map(|(hop, topic)| {
            let group = local.groups.get(hop.group).cloned().unwrap_or_default();
            (group, topic.clone())
        })
        .collect();
    let hops: Vec<(&str, &str)> = hops.iter().map(|(g, t)| (g.as_str(), t.as_str())).collect();
    if let Err(error) =
        vault_runtime::wait_caught_up(&kafka, &hops, Duration::from_secs(60), |_, _| {}).await
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
    Ok(())
}

/// Every pushed order in each layer, no dead letter, counters that match the recount.
async fn check_warehouse(
    stack: &Stack,
    local: &Local,
    first: i64,
    last: i64,
) -> anyhow::Result<()> {
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
    Ok(())
}

/// Each service's role wrote its own layer; it may not touch the others, and none of the
/// roles is a superuser (nor the owner). And why the services start with
/// `MIGRATIONS=verify`: diesel's own check runs DDL, which a service role may not.
async fn check_least_privilege(
    programs: &Programs,
    local: &mut Local,
    stack: &Stack,
    owner: &str,
) -> anyhow::Result<()> {
    let mut role_of =
        |service: &str| local.role(&programs[service].env[var::PG_WAREHOUSE_USER.name]);
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
    let db = admin(stack, Some(&local.database)).await?;
    let privileged: i64 = db
        .query_one(
            format!(
                "SELECT count(*) FROM pg_roles WHERE rolname IN ('{stg}', '{dds}', '{cdm}', '{owner}') \
                 AND (rolsuper OR rolbypassrls OR (rolcreaterole AND rolname <> '{owner}'))"
            )
            .as_str(),
            &[],
        )
        .await?
        .get(0);
    ensure!(privileged == 0, "{privileged} of the roles are privileged");
    let stg_url = format!(
        "postgres://{stg}@{}:{}/{}",
        local.pg_host, local.pg_port, local.database
    );
    ensure!(
        vault_migrations::run(&stg_url).await.is_err(),
        "a service role could run diesel's migration check; MIGRATIONS=verify would be unnecessary"
    );
    ensure!(vault_migrations::pending(&stg_url).await?.is_empty());
    Ok(())
}

/// The read side closed: service-cdm's API answers 401 without the file's token and reads (as
/// its read-only role) with it. What it and every `/health` answered.
async fn check_read_side(
    source: &str,
    programs: &Programs,
    running: &[Running],
) -> anyhow::Result<String> {
    let cdm = running
        .iter()
        .find(|p| p.name == "service-cdm")
        .context("service-cdm runs")?;
    let token = programs["service-cdm"]
        .env
        .get(var::API_TOKEN.name)
        .cloned();
    ensure!(
        token.as_deref().is_some_and(|t| t.len() >= 16),
        "{source}: service-cdm gets no API_TOKEN of 16 characters or more"
    );
    let bearer = format!("Bearer {}", token.unwrap_or_default());
    let mut answered = String::new();
    for path in ["/api/v1/summary", "/api/v1/tags", "/api/v1/pipeline"] {
        let (status, _, body) = http_with(cdm.addr(), "GET", path, "", &[]).await?;
        ensure!(
            status == 401,
            "GET {path} without the token answered {status}: {body}"
        );
        let (status, _, body) =
            http_with(cdm.addr(), "GET", path, "", &[("Authorization", &bearer)]).await?;
        ensure!(
            status == 200,
            "GET {path} with the token answered {status}: {body}"
        );
        answered.push_str(&body);
    }
    for program in running {
        let (_, body) = http(program.addr(), "GET", "/health", "").await?;
        answered.push_str(&body);
    }
    Ok(answered)
}

/// SIGTERM, in reverse order: each finishes its batch, commits and exits 0.
async fn stop_programs(running: &mut [Running]) -> anyhow::Result<()> {
    for program in running.iter_mut().rev() {
        let status = stop(program).await?;
        ensure!(
            status.success(),
            "{} exited with {status} after SIGTERM",
            program.name
        );
    }
    Ok(())
}

/// No configured credential in any log line or `/health` body.
fn check_no_credential_leaks(
    source: &str,
    programs: &Programs,
    transcript: &str,
) -> anyhow::Result<()> {
    let secrets: BTreeSet<&str> = programs
        .values()
        .flat_map(|program| &program.env)
        .filter(|(name, value)| {
            var::variable(name).is_some_and(|declared| declared.secret) && !value.is_empty()
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
