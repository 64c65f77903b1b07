//! The managed-Kafka path (docs/deploy.md, "Helm": managed Kafka), proven on the real broker: Apache Kafka
//! with a SASL_SSL listener (SCRAM-SHA-512 users, a certificate from a CA of the test's own)
//! beside the PLAINTEXT one the harness uses. The services are configured the way a managed
//! cluster asks (`KAFKA_USERNAME`, `KAFKA_PASSWORD`, `KAFKA_CA_CERT`), carry orders to the
//! datamart exactly, and are shown to have done it over SASL_SSL as that user. A wrong password
//! stops a service at start with one line naming the user (docs/failures.md, "Fatal"), while a
//! broker that does not answer is still waited for.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::Duration;

use anyhow::{ensure, Context as _};
use vault_tests::expect::{assert_exact, messages};
use vault_tests::pipeline::{Overrides, Pipeline, Service};
use vault_tests::process::{free_port, log, spawn, terminate};
use vault_tests::servers::{kafka_tool, KafkaOptions, PrivateKafka};
use vault_tests::{eventually, stack, unique};

const SETTLE: Duration = Duration::from_secs(180);
/// How long a service may take to give up on refused credentials.
const STOPS_WITHIN: Duration = Duration::from_secs(60);
/// The bound on each command-line tool the test runs (openssl, a Kafka tool's JVM).
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);
/// How many orders go through the pipeline.
const ORDERS: u64 = 300;

/// A certificate authority and a broker certificate for 127.0.0.1 and localhost, in a scratch
/// directory removed on drop; librdkafka checks the broker's address against the
/// certificate's names, so both SANs are there.
struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    async fn make() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique("vaultline-tls"));
        std::fs::create_dir_all(&dir)?;
        let certificates = Self { dir };
        let dir = certificates.dir.as_path();
        openssl(
            dir,
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
             -out ca.pem -days 2 -subj /CN=vaultline-test-ca \
             -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign",
        )
        .await?;
        // genpkey writes PKCS#8, the form Kafka's PEM key store reads.
        openssl(
            dir,
            "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out broker.key",
        )
        .await?;
        openssl(
            dir,
            "req -new -key broker.key -subj /CN=localhost -out broker.csr",
        )
        .await?;
        std::fs::write(
            dir.join("broker.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
             basicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n",
        )?;
        openssl(
            dir,
            "x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
             -extfile broker.ext -out broker.pem",
        )
        .await?;
        // Kafka's PEM key store: the unencrypted PKCS#8 key, then the chain (broker first).
        let mut keystore = std::fs::read_to_string(dir.join("broker.key"))?;
        ensure!(
            keystore.starts_with("-----BEGIN PRIVATE KEY-----"),
            "openssl genpkey did not write an unencrypted PKCS#8 key"
        );
        keystore += &std::fs::read_to_string(dir.join("broker.pem"))?;
        keystore += &std::fs::read_to_string(dir.join("ca.pem"))?;
        std::fs::write(certificates.keystore(), keystore)?;
        Ok(certificates)
    }

    /// What the services trust (`KAFKA_CA_CERT`).
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The broker's key and certificate chain (`ssl.keystore.location`).
    fn keystore(&self) -> PathBuf {
        self.dir.join("broker-keystore.pem")
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `openssl` in `dir` with `command`'s words (none has a space); fails with its
/// standard error.
async fn openssl(dir: &Path, command: &str) -> anyhow::Result<()> {
    let args: Vec<&str> = command.split_whitespace().collect();
    let output = tokio::time::timeout(
        TOOL_TIMEOUT,
        tokio::process::Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("openssl {} timed out", args[0]))?
    .context("running openssl (is it installed?)")?;
    ensure!(
        output.status.success(),
        "openssl {} failed: {}",
        args[0],
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A SCRAM-SHA-512 user of the broker: a unique name and a password made for this run.
struct User {
    name: String,
    password: String,
}

impl User {
    fn new() -> Self {
        Self {
            name: unique("vaultline-svc"),
            password: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

/// One node whose second listener is SASL_SSL with SCRAM-SHA-512 and the test's certificate;
/// inter-broker and controller traffic, and the harness, stay on PLAINTEXT.
async fn managed_broker(tls: &Certificates, user: &User) -> anyhow::Result<PrivateKafka> {
    PrivateKafka::start_with(KafkaOptions {
        nodes: 1,
        settings: vec![
            "sasl.enabled.mechanisms=SCRAM-SHA-512".into(),
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
             org.apache.kafka.common.security.scram.ScramLoginModule required;"
                .into(),
            // Kafka 3.9 reads an unencrypted PKCS#8 key here: no ssl.key.password needed.
            "ssl.keystore.type=PEM".into(),
            format!("ssl.keystore.location={}", tls.keystore().display()),
        ],
        scram: vec![format!(
            "SCRAM-SHA-512=[name={},password={}]",
            user.name, user.password
        )],
        extra_listener: Some("SASL_SSL"),
    })
    .await
}

/// What a service needs to reach the broker as a managed cluster is reached.
fn managed_env(kafka: &PrivateKafka, tls: &Certificates, user: &User) -> BTreeMap<String, String> {
    [
        ("KAFKA_BOOTSTRAP_SERVERS", kafka.extra_bootstrap()),
        ("KAFKA_USERNAME", user.name.clone()),
        ("KAFKA_PASSWORD", user.password.clone()),
        ("KAFKA_CA_CERT", tls.ca().display().to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

/// Has the broker log every request it completes (`kafka.request.logger` at DEBUG: the
/// request, the listener it came in on and the authenticated principal).
async fn log_requests(kafka: &PrivateKafka) -> anyhow::Result<()> {
    let bootstrap = kafka.bootstrap();
    let args = [
        "--bootstrap-server",
        bootstrap.as_str(),
        "--alter",
        "--entity-type",
        "broker-loggers",
        "--entity-name",
        "1",
        "--add-config",
        "kafka.request.logger=DEBUG",
    ]
    .map(str::to_owned);
    tokio::time::timeout(
        TOOL_TIMEOUT,
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kafka_tool("kafka.admin.ConfigCommand", &args)
        }),
    )
    .await
    .context("kafka-configs timed out")???;
    Ok(())
}

/// The broker's request-log line of an offset commit by `group`, authenticated as `user` on
/// the SASL_SSL listener, if there is one yet.
fn sasl_commit<'a>(broker_log: &'a str, group: &str, user: &str) -> Option<&'a str> {
    let group = format!(r#""groupId":"{group}""#);
    let principal = format!(r#""principal":"User:{user}""#);
    broker_log.lines().find(|line| {
        line.contains("Completed request:")
            && line.contains(r#""requestApiKeyName":"OFFSET_COMMIT""#)
            && line.contains(&group)
            && line.contains(&principal)
            && line.contains(r#""listener":"SASL_SSL""#)
            && line.contains(r#""securityProtocol":"SASL_SSL""#)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_carry_orders_exactly_over_sasl_ssl_as_their_scram_user() -> anyhow::Result<()> {
    let tls = Certificates::make().await?;
    let user = User::new();
    let kafka = managed_broker(&tls, &user).await?;
    log_requests(&kafka).await?;

    let p = Pipeline::start_with(
        3,
        Overrides {
            kafka_bootstrap: Some(kafka.bootstrap()),
            service_env: managed_env(&kafka, &tls, &user),
            ..Overrides::default()
        },
    )
    .await?;
    let (d, sent) = p.seeded_orders((30, 4), 11, 90_000, ORDERS).await?;
    p.produce_raw(&messages(&sent)).await?;
    p.settle(SETTLE).await;

    assert_exact(&p, &d, &sent).await?;
    assert_eq!(p.counter_mismatches().await?, 0);
    assert_eq!(
        p.count("SELECT count(*) FROM stg.order_events").await?,
        i64::try_from(ORDERS)?
    );
    // Every stage committed what it processed as the SCRAM user over SASL_SSL: had a service
    // used the PLAINTEXT listener, its commits would be User:ANONYMOUS on PLAINTEXT.
    for service in Service::ALL {
        let group = p.group(service).to_owned();
        let what = format!("a SASL_SSL offset commit of {group} in the broker's request log");
        eventually(&what, Duration::from_secs(20), || {
            let found = sasl_commit(&kafka.log(0), &group, &user.name).is_some();
            async move { found.then_some(()) }
        })
        .await;
    }
    p.shutdown().await
}

/// A child process killed when dropped, so that a failed assertion leaves nothing running.
struct Running(Option<Child>);

impl Running {
    /// Waits up to `limit` for the process to exit by itself.
    async fn exited_within(&mut self, what: &str, limit: Duration) -> ExitStatus {
        let child = self.0.as_mut().expect("the process is running");
        eventually(what, limit, || {
            let exited = child.try_wait().ok().flatten();
            async move { exited }
        })
        .await
    }

    fn still_running(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The real service-stg binary's environment for the managed broker (its own topics, group
/// and database; the stack's Redis), as a deployment sets it; topic creation left on.
async fn stg_env(managed: BTreeMap<String, String>) -> anyhow::Result<HashMap<String, String>> {
    let stack = stack().await;
    let mut env: HashMap<String, String> = [
        ("DATABASE_URL", stack.fresh_database().await?),
        ("REDIS_URL", stack.redis_url.clone()),
        ("KAFKA_SOURCE_TOPIC", unique("stg_service")),
        ("KAFKA_DESTINATION_TOPIC", unique("dds_service")),
        ("KAFKA_CONSUMER_GROUP", unique("service-stg")),
        ("HTTP_HOST", "127.0.0.1".into()),
        ("HTTP_PORT", free_port().to_string()),
        ("RUST_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect();
    env.extend(managed);
    Ok(env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_kafka_password_stops_the_service_with_one_line_naming_the_user(
) -> anyhow::Result<()> {
    let tls = Certificates::make().await?;
    let user = User::new();
    let kafka = managed_broker(&tls, &user).await?;
    let wrong = uuid::Uuid::new_v4().simple().to_string();
    let mut managed = managed_env(&kafka, &tls, &user);
    managed.insert("KAFKA_PASSWORD".into(), wrong.clone());
    let env = stg_env(managed).await?;
    let log_name = format!("{}.log", unique("managed-kafka-stg"));

    let mut stg = Running(Some(spawn("service-stg", &env, &log_name)?));
    let status = stg
        .exited_within("service-stg to stop on refused credentials", STOPS_WITHIN)
        .await;
    let output = log(&log_name);
    // Exit code 2: a configuration error, as a bad setting is.
    assert_eq!(status.code(), Some(2), "{output}");
    let naming_user: Vec<&str> = output
        .lines()
        .filter(|line| line.contains(&user.name))
        .collect();
    assert_eq!(naming_user.len(), 1, "one line names the user: {output}");
    eprintln!("the line: {}", naming_user[0]);
    let line = naming_user[0].to_lowercase();
    for part in ["service-stg: ", "kafka_username", "authentication failed"] {
        assert!(line.contains(part), "`{}` lacks `{part}`", naming_user[0]);
    }
    assert!(!output.contains(&wrong), "the password reached the output");
    assert!(!output.contains(&user.password));
    // The broker did refuse it (and the service did not just time out).
    assert!(
        kafka.log(0).contains("Failed authentication with"),
        "the broker logged no failed authentication"
    );
    let _ = std::fs::remove_file(std::env::temp_dir().join(&log_name));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_that_does_not_answer_at_start_is_waited_for_not_fatal() -> anyhow::Result<()> {
    let tls = Certificates::make().await?;
    let user = User::new();
    // SASL settings towards a port nothing listens on: an outage, not a refusal.
    let managed: BTreeMap<String, String> = [
        (
            "KAFKA_BOOTSTRAP_SERVERS",
            format!("127.0.0.1:{}", free_port()),
        ),
        ("KAFKA_USERNAME", user.name.clone()),
        ("KAFKA_PASSWORD", user.password.clone()),
        ("KAFKA_CA_CERT", tls.ca().display().to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect();
    let env = stg_env(managed).await?;
    let log_name = format!("{}.log", unique("managed-kafka-down-stg"));
    let mut stg = Running(Some(spawn("service-stg", &env, &log_name)?));

    eventually(
        "service-stg to retry its Kafka credentials check",
        Duration::from_secs(60),
        || {
            let retried =
                log(&log_name).contains("Cannot reach Kafka to check its credentials yet");
            async move { retried.then_some(()) }
        },
    )
    .await;
    let output = log(&log_name);
    assert!(
        stg.still_running(),
        "service-stg exited on an outage: {output}"
    );
    assert!(
        !output.contains(&user.password),
        "the password reached the output"
    );
    let child = stg.0.take().expect("the process is running");
    assert_eq!(terminate(child).await?, Some(0), "{output}");
    let _ = std::fs::remove_file(std::env::temp_dir().join(&log_name));
    Ok(())
}
