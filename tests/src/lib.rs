//! The shared harness of Vaultline's integration tests.
//!
//! Every integration test needs the same three dependencies — a Kafka-protocol broker,
//! Postgres and Redis — and must not see another test's data, because tests run in parallel
//! (under nextest, one process per test). This crate finds the dependencies once per process
//! ([`stack`]) and hands out isolated resources on them: a fresh database per test
//! ([`Stack::fresh_database`]), unique topic and group names ([`unique`]), and topics that exist
//! before anyone subscribes ([`Stack::create_topics`]). Tests wait for a condition with
//! [`eventually`] instead of sleeping, and assert on what a consumer group committed with
//! [`Stack::committed_offsets`].
//!
//! [`pipeline`] builds on this: the three services started in-process on a fresh database and
//! unique topics. [`oracle`] is the independent model of the counters the end-to-end tests
//! compare the datamarts with. [`openapi`] checks the read API's answers against its document.
//! [`servers`] runs Redis, Postgres or a broker of a test's own, for the tests
//! that crash and restart a dependency. [`warehouse`] gives a test that works on the tables
//! directly a migrated database of its own. [`wiring`] is the deploy wiring tests' harness:
//! the compose file's and the chart's environments, checked against the declaration of every
//! variable and run on the real binaries.
//!
//! Where each dependency comes from, first match wins:
//! 1. the environment: `KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL` (an admin URL: tests only
//!    create databases through it), `REDIS_URL` — `scripts/test.sh` exports all three;
//! 2. something listening on its default port on 127.0.0.1 (9092, 5432, 6379), such as the
//!    stack that `scripts/stack.sh up` starts;
//! 3. a container, when a Docker daemon answers (see *Docker* below);
//! 4. otherwise the test panics with one line naming what is missing.
//!
//! # Docker
//! Containers are named `vaultline-test-kafka`, `vaultline-test-postgres` and
//! `vaultline-test-redis` and marked reusable, so every test process — and every later run —
//! shares one set instead of starting its own; a lock file in the temp directory keeps two
//! processes from creating the same container at once. They keep running after the tests:
//! `docker rm -f vaultline-test-kafka vaultline-test-postgres vaultline-test-redis` removes
//! them.

pub mod expect;
pub mod faults;
pub mod openapi;
pub mod oracle;
pub mod orders;
pub mod pipeline;
pub mod process;
pub mod produce;
pub mod read_api;
pub mod servers;
pub mod sql;
pub mod warehouse;
pub mod wiring;

use std::{
    any::Any,
    collections::BTreeMap,
    future::Future,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _};
use futures::future::BoxFuture;
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    types::RDKafkaErrorCode,
    Offset, TopicPartitionList,
};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// How long a probe of a default port waits for the handshake. Loopback answers at once; the
/// bound only matters when a firewall drops the packet instead of refusing it.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The bound on each broker round trip the harness makes itself (metadata, offset fetch,
/// topic creation).
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// How often [`eventually`] asks again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Where the tests of this process find Kafka, Postgres and Redis.
#[derive(Debug)]
pub struct Stack {
    /// `host:port[,host:port…]`, for the `bootstrap.servers` client setting.
    pub kafka_bootstrap: String,
    /// A Postgres URL whose user may `CREATE DATABASE`. Tests never write to its database;
    /// each takes its own from [`Stack::fresh_database`].
    pub database_admin_url: String,
    /// `redis://host:port`. Redis has no cheap isolation, so tests that write to it use keys
    /// made unique with [`unique`].
    pub redis_url: String,
}

/// The stack of this process, found on first use (see the [crate docs](crate) for the order).
///
/// # Panics
/// When a dependency is neither configured, nor listening on its default port, nor startable
/// through Docker; the message is one line saying which and what to run.
pub async fn stack() -> &'static Stack {
    // A tokio `OnceCell` rather than `std::sync::OnceLock`: finding the stack awaits, and the
    // test runtimes (one per `#[tokio::test]`) must not block each other's threads meanwhile.
    static STACK: OnceCell<Stack> = OnceCell::const_new();
    STACK.get_or_init(discover).await
}

/// `prefix` followed by a short random suffix, for topic, group and key names that no other
/// test (or earlier run against the same broker) uses.
pub fn unique(prefix: &str) -> String {
    let suffix = Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &suffix[..12])
}

/// Calls `f` every ~100 ms until it returns `Some`, and returns that value.
///
/// # Panics
/// When `timeout` passes first (including while a call of `f` is still running), with a
/// message naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, f()).await {
            Ok(Some(value)) => return value,
            Ok(None) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            Ok(None) | Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
        }
    }
}

impl Stack {
    /// A client configuration with `bootstrap.servers` set; tests add the rest.
    pub fn kafka_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.kafka_bootstrap);
        config
    }

    /// Creates an empty database named `vaultline_test_<created>_<id>` and returns its URL (the admin
    /// URL with the database swapped). Nothing is migrated: that is the service's job.
    pub async fn fresh_database(&self) -> anyhow::Result<String> {
        // The creation time in the name lets `scripts/test.sh` drop only databases of runs
        // that are surely over, never one a concurrent run is using.
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or_default();
        let name = format!(
            "vaultline_test_{created}_{}",
            &Uuid::new_v4().simple().to_string()[..12]
        );
        let url = with_database(&self.database_admin_url, &name)?;
        let (client, connection) =
            tokio_postgres::connect(&self.database_admin_url, tokio_postgres::NoTls)
                .await
                .with_context(|| {
                    format!(
                        "connecting to the Postgres admin database {}",
                        redact(&self.database_admin_url)
                    )
                })?;
        // tokio-postgres hands the socket back as a future that must run for the client to
        // work; it ends when the client is dropped.
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating database {name}"))?;
        drop(client);
        if let Ok(Err(error)) = connection.await {
            tracing::warn!(%error, "The Postgres admin connection ended with an error.");
        }
        Ok(url)
    }

    /// Creates a fresh database owned by a new role that is not a superuser (so that its
    /// privileges can be revoked), and returns the database's admin URL and the role's URL.
    pub async fn fresh_database_with_role(&self) -> anyhow::Result<(String, String)> {
        let admin_url = self.fresh_database().await?;
        database_with_role(&self.database_admin_url, &admin_url).await
    }

    /// Creates `names` with `partitions` partitions each (the broker's default replication
    /// factor: 1 on the stack, 3 on a private cluster) and waits until the broker's metadata
    /// shows every one with all its partitions, so that a consumer may subscribe right away. A topic that already exists is left as it is.
    pub async fn create_topics(&self, names: &[String], partitions: i32) -> anyhow::Result<()> {
        // A cluster that has just started may drop the request (its controller still electing,
        // a broker handle torn down): a few bounded tries, each with a fresh client.
        let mut attempt = 1;
        loop {
            match self.create_topics_once(names, partitions).await {
                Ok(()) => break,
                Err(error) if attempt < 5 => {
                    eprintln!("creating topics, attempt {attempt}: {error:#}; retrying");
                    tokio::time::sleep(Duration::from_secs(attempt)).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }

        let probe: Arc<BaseConsumer> = Arc::new(
            self.kafka_config()
                .create()
                .context("creating a Kafka metadata client")?,
        );
        for name in names {
            let what = format!("topic {name} with {partitions} partitions in the broker metadata");
            eventually(&what, Duration::from_secs(30), || {
                let (probe, name) = (Arc::clone(&probe), name.clone());
                async move {
                    tokio::task::spawn_blocking(move || partition_ids(probe.as_ref(), &name).ok())
                        .await
                        .ok()
                        .flatten()
                        .filter(|ids| i32::try_from(ids.len()) == Ok(partitions))
                }
            })
            .await;
        }
        Ok(())
    }

    /// One CreateTopics request for `names`; a topic that already exists counts as created.
    async fn create_topics_once(&self, names: &[String], partitions: i32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self
            .kafka_config()
            .create()
            .context("creating a Kafka admin client")?;
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(-1)))
            .collect();
        let options = AdminOptions::new()
            .operation_timeout(Some(KAFKA_TIMEOUT))
            .request_timeout(Some(KAFKA_TIMEOUT));
        let results = admin
            .create_topics(&topics, &options)
            .await
            .context("sending CreateTopics")?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => bail!("creating topic {name} failed: {code}"),
            }
        }
        Ok(())
    }

    /// The offsets `group` has committed on each partition of `topic`: the offset of the next
    /// message the group will read there, or `None` where it has committed nothing.
    pub async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
        let mut config = self.kafka_config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false");
        let topic = topic.to_owned();
        // Offset fetches block; a consumer that never subscribes does not join the group.
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = config.create().context("creating a Kafka consumer")?;
            let mut partitions = TopicPartitionList::new();
            for id in partition_ids(&consumer, &topic)? {
                partitions.add_partition(&topic, id);
            }
            let committed = consumer
                .committed_offsets(partitions, KAFKA_TIMEOUT)
                .with_context(|| format!("fetching the offsets committed on {topic}"))?;
            committed
                .elements()
                .iter()
                .map(|element| {
                    element.error().with_context(|| {
                        format!("committed offset of {topic}/{}", element.partition())
                    })?;
                    let offset = match element.offset() {
                        Offset::Offset(offset) => Some(offset),
                        _ => None,
                    };
                    Ok((element.partition(), offset))
                })
                .collect()
        })
        .await
        .context("the offset fetch task failed")?
    }
}

/// The partition ids of `topic` according to the broker; an error when the broker does not
/// (yet) know the topic.
fn partition_ids<C: Consumer>(client: &C, topic: &str) -> anyhow::Result<Vec<i32>> {
    let metadata = client
        .fetch_metadata(Some(topic), KAFKA_TIMEOUT)
        .with_context(|| format!("fetching the metadata of {topic}"))?;
    let found = metadata
        .topics()
        .iter()
        .find(|candidate| candidate.name() == topic)
        .ok_or_else(|| anyhow!("the broker's metadata has no topic {topic}"))?;
    if let Some(error) = found.error() {
        bail!("the broker's metadata for {topic} says {error:?}");
    }
    Ok(found.partitions().iter().map(|p| p.id()).collect())
}

/// `url` with its database (the path) replaced by `database`, keeping the query string.
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let scheme_end = url
        .find("://")
        .ok_or_else(|| anyhow!("DATABASE_URL must be a postgres:// URL"))?
        + "://".len();
    let (prefix, rest) = url.split_at(scheme_end);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |at| &tail[at..]);
    Ok(format!("{prefix}{authority}/{database}{query}"))
}

/// `url` without its password, for error messages.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|at| at + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |at| scheme_end + at);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => match url[scheme_end..scheme_end + at].find(':') {
            Some(colon) => format!(
                "{}:***{}",
                &url[..scheme_end + colon],
                &url[scheme_end + at..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// One dependency the tests need, and how to reach it without configuration.
struct Component {
    /// The name in error messages.
    what: &'static str,
    /// The environment variable that configures it.
    env: &'static str,
    /// Its default port on 127.0.0.1.
    port: u16,
    /// Its address when it listens on the default port.
    default_address: &'static str,
    /// Starts it in Docker and returns its address.
    start_container: fn() -> BoxFuture<'static, anyhow::Result<String>>,
}

const KAFKA: Component = Component {
    what: "Kafka-protocol broker",
    env: "KAFKA_BOOTSTRAP_SERVERS",
    port: 9092,
    default_address: "127.0.0.1:9092",
    start_container: || Box::pin(docker::kafka()),
};
const POSTGRES: Component = Component {
    what: "Postgres",
    env: "DATABASE_URL",
    port: 5432,
    default_address: "postgres://postgres@127.0.0.1:5432/postgres",
    start_container: || Box::pin(docker::postgres()),
};
const REDIS: Component = Component {
    what: "Redis",
    env: "REDIS_URL",
    port: 6379,
    default_address: "redis://127.0.0.1:6379",
    start_container: || Box::pin(docker::redis()),
};

async fn discover() -> Stack {
    let stack = Stack {
        kafka_bootstrap: locate(&KAFKA).await,
        database_admin_url: locate(&POSTGRES).await,
        redis_url: locate(&REDIS).await,
    };
    tracing::info!(
        kafka = %stack.kafka_bootstrap,
        postgres = %redact(&stack.database_admin_url),
        redis = %stack.redis_url,
        "Found the test stack."
    );
    stack
}

async fn locate(component: &Component) -> String {
    if let Some(value) = std::env::var(component.env)
        .ok()
        .filter(|value| !value.trim().is_empty())
    {
        return value;
    }
    let port = component.port;
    let listening = tokio::task::spawn_blocking(move || {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        TcpStream::connect_timeout(&address, PROBE_TIMEOUT).is_ok()
    })
    .await
    .unwrap_or(false);
    if listening {
        return component.default_address.to_owned();
    }
    if docker_answers().await {
        return (component.start_container)().await.unwrap_or_else(|error| {
            panic!(
                "no {} at 127.0.0.1:{port} and starting one in Docker failed: {error:#}",
                component.what
            )
        });
    }
    panic!(
        "no {} at 127.0.0.1:{port} ({} is unset) and no Docker: run scripts/stack.sh up",
        component.what, component.env
    );
}

/// Whether a Docker daemon is there to start containers: `DOCKER_HOST` is set (testcontainers
/// uses it), or `/var/run/docker.sock` answers a ping. A socket file alone proves nothing;
/// it outlives a stopped daemon.
async fn docker_answers() -> bool {
    if std::env::var_os("DOCKER_HOST").is_some_and(|host| !host.is_empty()) {
        return true;
    }
    tokio::task::spawn_blocking(|| ping_docker(Path::new("/var/run/docker.sock")).is_ok())
        .await
        .unwrap_or(false)
}

fn ping_docker(socket: &Path) -> std::io::Result<()> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(
            "the Docker daemon did not answer the ping",
        ))
    }
}

/// Containers for the dependencies that neither the environment nor the default ports supply.
mod docker {
    use super::{Any, Mutex};
    use anyhow::Context as _;
    use testcontainers::{runners::AsyncRunner as _, ContainerAsync, Image, ImageExt};
    use testcontainers_modules::{kafka::apache, postgres, redis};

    /// The started containers, held for the life of the process. Reusable containers are not
    /// removed on drop anyway; holding them keeps that true should the reuse flag go.
    static HELD: Mutex<Vec<Box<dyn Any + Send>>> = Mutex::new(Vec::new());

    pub(super) async fn kafka() -> anyhow::Result<String> {
        let container = start(apache::Kafka::default(), "vaultline-test-kafka").await?;
        let port = container.get_host_port_ipv4(apache::KAFKA_PORT).await?;
        hold(container);
        // The image advertises 127.0.0.1 with the mapped port, and clients connect to what
        // the broker advertises.
        Ok(format!("127.0.0.1:{port}"))
    }

    pub(super) async fn postgres() -> anyhow::Result<String> {
        let image = postgres::Postgres::default().with_tag("16-alpine");
        let container = start(image, "vaultline-test-postgres").await?;
        let host = container.get_host().await?;
        let port = container.get_host_port_ipv4(5432).await?;
        hold(container);
        Ok(format!(
            "postgres://postgres:postgres@{host}:{port}/postgres"
        ))
    }

    pub(super) async fn redis() -> anyhow::Result<String> {
        let image = redis::Redis::default().with_tag("7-alpine");
        let container = start(image, "vaultline-test-redis").await?;
        let host = container.get_host().await?;
        let port = container.get_host_port_ipv4(redis::REDIS_PORT).await?;
        hold(container);
        Ok(format!("redis://{host}:{port}"))
    }

    async fn start<I: Image + 'static>(
        image: impl ImageExt<I> + Send,
        name: &str,
    ) -> anyhow::Result<ContainerAsync<I>> {
        // Test processes start at the same moment; the first creates the container under
        // the lock and waits until it is ready, the rest then find it by name and reuse it.
        let lock_path = std::env::temp_dir().join("vaultline-testcontainers.lock");
        let lock = tokio::task::spawn_blocking(move || -> anyhow::Result<std::fs::File> {
            let file = std::fs::File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .with_context(|| format!("opening {}", lock_path.display()))?;
            file.lock()
                .with_context(|| format!("locking {}", lock_path.display()))?;
            Ok(file)
        })
        .await
        .context("the lock task failed")??;
        let container = image
            .with_container_name(name)
            .with_reuse(testcontainers::ReuseDirective::Always)
            .start()
            .await
            .with_context(|| format!("starting container {name}"))?;
        drop(lock);
        Ok(container)
    }

    fn hold<I: Image + 'static>(container: ContainerAsync<I>) {
        HELD.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Box::new(container));
    }
}

/// Gives the database at `database_url` to a new role that is not a superuser (so that its
/// privileges can be revoked), using the server's `admin_url`; returns the database's URL and
/// the role's URL for it.
pub async fn database_with_role(
    admin_url: &str,
    database_url: &str,
) -> anyhow::Result<(String, String)> {
    let database = database_url
        .rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .unwrap_or_default()
        .to_owned();
    let role = format!("vaultline_role_{}", Uuid::new_v4().simple());
    let password = Uuid::new_v4().simple().to_string();
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN NOSUPERUSER PASSWORD '{password}'; \
             ALTER DATABASE {database} OWNER TO {role}"
        ))
        .await
        .with_context(|| format!("creating role {role}"))?;
    drop(client);
    let _ = connection.await;
    let scheme_end = database_url
        .find("://")
        .ok_or_else(|| anyhow!("DATABASE_URL must be a postgres:// URL"))?
        + "://".len();
    let rest = &database_url[scheme_end..];
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let role_url = format!("{}{role}:{password}@{host}", &database_url[..scheme_end]);
    Ok((database_url.to_owned(), role_url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_database_url_keeps_credentials_host_and_options() -> anyhow::Result<()> {
        assert_eq!(
            with_database("postgres://u:p@db:5433/dwh?sslmode=disable", "t1")?,
            "postgres://u:p@db:5433/t1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432", "t2")?,
            "postgres://postgres@127.0.0.1:5432/t2"
        );
        assert_eq!(
            with_database("postgresql://h?user=x", "t3")?,
            "postgresql://h/t3?user=x"
        );
        assert!(with_database("host=h user=u", "t4").is_err());
        Ok(())
    }

    #[test]
    fn a_redacted_url_hides_only_the_password() {
        assert_eq!(
            redact("postgres://u:secret@h:1/db"),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn unique_names_keep_the_prefix_and_differ() {
        let (a, b) = (unique("orders"), unique("orders"));
        assert!(a.starts_with("orders-") && a.len() == "orders-".len() + 12);
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn eventually_returns_the_first_value_that_arrives() {
        let mut calls = 0;
        let value = eventually("the third call", Duration::from_secs(5), || {
            calls += 1;
            let seen = calls;
            async move { (seen == 3).then_some(seen) }
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 200ms waiting for nothing")]
    async fn eventually_panics_with_what_it_waited_for() {
        eventually("nothing", Duration::from_millis(200), || async {
            None::<()>
        })
        .await;
    }
}
