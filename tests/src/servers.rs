//! Servers of a test's own — Redis, Postgres, Apache Kafka (one node or a cluster) — on free
//! loopback ports, for the tests that crash and restart a dependency (the shared stack must
//! stay up for every other test). Each keeps its data in a scratch directory, removed when it
//! is dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};

use crate::pipeline::redis_pool;
use crate::{eventually, unique};

/// What every private server has: a port, a scratch directory and, while up, its process.
#[derive(Debug)]
struct Scratch {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Scratch {
    fn new(prefix: &str) -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            port,
            dir,
            child: None,
        })
    }

    /// Kills the process outright (SIGKILL), as a crash would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn wait_listening(&self, what: &str) -> anyhow::Result<()> {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse()?;
        eventually(what, Duration::from_secs(30), || async move {
            tokio::net::TcpStream::connect(addr).await.ok().map(drop)
        })
        .await;
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private `redis-server`. A restart reloads what [`PrivateRedis::snapshot`] saved.
#[derive(Debug)]
pub struct PrivateRedis(Scratch);

impl PrivateRedis {
    /// Starts `redis-server` (it must be on `PATH`) and waits until it answers.
    pub async fn start() -> anyhow::Result<Self> {
        let mut redis = Self(Scratch::new("vaultline-redis")?);
        redis.restart().await?;
        Ok(redis)
    }

    pub fn port(&self) -> u16 {
        self.0.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.0.port)
    }

    /// Starts the server again on the same port and directory, and waits until it answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.0.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.0.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.0.dir)
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server (is it installed?)")?;
        self.0.child = Some(child);
        let url = self.url();
        eventually(
            "the private Redis to answer",
            Duration::from_secs(20),
            || async {
                let pool = redis_pool(&url).ok()?;
                vault_runtime::redis_ping(&pool).await.ok()
            },
        )
        .await;
        Ok(())
    }

    /// Saves the data set to disk, for the next start to load.
    pub async fn snapshot(&self) -> anyhow::Result<()> {
        let pool = redis_pool(&self.url())?;
        let mut conn = pool.get().await?;
        let () = bb8_redis::redis::cmd("SAVE")
            .query_async(&mut *conn)
            .await?;
        Ok(())
    }

    /// Kills it outright (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.0.kill();
    }

    /// Empties it (`FLUSHALL`), as a restart without persistence leaves it.
    pub async fn flush_all(&self) -> anyhow::Result<()> {
        let pool = redis_pool(&self.url())?;
        let mut conn = pool.get().await?;
        let () = bb8_redis::redis::cmd("FLUSHALL")
            .query_async(&mut *conn)
            .await?;
        Ok(())
    }

    /// Stops it with SIGSTOP: connections stay open and nothing answers, as with a server
    /// that hangs (or a network that drops packets).
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self
            .0
            .child
            .as_ref()
            .context("redis-server is not running")?
            .id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }
}

/// How a private Kafka cluster is laid out; [`KafkaOptions::default`] is one node set up as the
/// local stack's broker.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// KRaft nodes, each a controller and a broker.
    pub nodes: usize,
    /// Broker properties appended to every node's (later ones win): `key=value`.
    pub settings: Vec<String>,
    /// SCRAM users stored when the nodes are formatted: `SCRAM-SHA-512=[name=U,password=P]`.
    pub scram: Vec<String>,
    /// A second client listener on a port of its own, with this security protocol (e.g.
    /// `SASL_SSL`); its settings go in `settings` under `listener.name.<protocol>.…`.
    pub extra_listener: Option<&'static str>,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        Self {
            nodes: 1,
            settings: Vec::new(),
            scram: Vec::new(),
            extra_listener: None,
        }
    }
}

/// One node of a [`PrivateKafka`]: its client port and scratch directory (the [`Scratch`]), its
/// controller port and, with an extra listener, that listener's port.
#[derive(Debug)]
struct KafkaNode {
    scratch: Scratch,
    controller_port: u16,
    extra_port: Option<u16>,
}

/// A private Apache Kafka cluster on loopback: `nodes` KRaft nodes started through
/// `scripts/kafka.sh node` (the settings the local stack's broker has), each with its own
/// ports and log directory, so a test can kill -9 and restart brokers without touching the
/// shared stack. Data survives a restart; everything goes when it is dropped.
#[derive(Debug)]
pub struct PrivateKafka {
    nodes: Vec<KafkaNode>,
    options: KafkaOptions,
}

impl PrivateKafka {
    /// One node, as the stack's broker.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(KafkaOptions::default()).await
    }

    /// Starts every node and waits until each answers metadata listing all of them.
    pub async fn start_with(options: KafkaOptions) -> anyhow::Result<Self> {
        anyhow::ensure!(options.nodes >= 1, "a cluster needs a node");
        let mut nodes = Vec::with_capacity(options.nodes);
        for _ in 0..options.nodes {
            let scratch = Scratch::new("vaultline-kafka")?;
            let controller_port = free_port()?;
            let extra_port = options.extra_listener.map(|_| free_port()).transpose()?;
            nodes.push(KafkaNode {
                scratch,
                controller_port,
                extra_port,
            });
        }
        let mut kafka = Self { nodes, options };
        for index in 0..kafka.nodes.len() {
            kafka.spawn(index)?;
        }
        for index in 0..kafka.nodes.len() {
            kafka.wait_started(index).await?;
        }
        Ok(kafka)
    }

    /// Every node's client listener, as `bootstrap.servers` wants them.
    pub fn bootstrap(&self) -> String {
        self.addresses(|node| Some(node.scratch.port))
    }

    /// Every node's extra listener (see [`KafkaOptions::extra_listener`]).
    pub fn extra_bootstrap(&self) -> String {
        self.addresses(|node| node.extra_port)
    }

    fn addresses(&self, port: impl Fn(&KafkaNode) -> Option<u16>) -> String {
        self.nodes
            .iter()
            .filter_map(port)
            .map(|port| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The log (stdout and stderr) node `index` has written so far.
    pub fn log(&self, index: usize) -> String {
        std::fs::read_to_string(self.nodes[index].scratch.dir.join(KAFKA_LOG)).unwrap_or_default()
    }

    /// Kills every node outright (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        for node in &mut self.nodes {
            node.scratch.kill();
        }
    }

    /// Starts every node again on the same ports and data, and waits until they answer.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        for index in 0..self.nodes.len() {
            self.spawn(index)?;
        }
        for index in 0..self.nodes.len() {
            self.wait_started(index).await?;
        }
        Ok(())
    }

    /// Kills node `index` outright (SIGKILL) and leaves it down.
    pub fn kill_node(&mut self, index: usize) {
        self.nodes[index].scratch.kill();
    }

    /// Starts node `index` again on its ports and data, and waits until it answers.
    pub async fn restart_node(&mut self, index: usize) -> anyhow::Result<()> {
        self.nodes[index].scratch.kill();
        self.spawn(index)?;
        self.wait_started(index).await
    }

    fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let voters = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| format!("{}@127.0.0.1:{}", i + 1, node.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        let node = &self.nodes[index];
        let port = node.scratch.port;
        let mut command = Command::new(kafka_script());
        command
            .arg("node")
            .arg("--dir")
            .arg(&node.scratch.dir)
            .args(["--port", &port.to_string()])
            .args(["--controller-port", &node.controller_port.to_string()])
            .args(["--node-id", &(index + 1).to_string()])
            .args(["--voters", &voters]);
        if let (Some(protocol), Some(extra)) = (self.options.extra_listener, node.extra_port) {
            let plain = format!("PLAINTEXT://127.0.0.1:{port}");
            let extra = format!("{protocol}://127.0.0.1:{extra}");
            let controller = format!("CONTROLLER://127.0.0.1:{}", node.controller_port);
            command
                .args(["--set", &format!("listeners={plain},{controller},{extra}")])
                .args(["--set", &format!("advertised.listeners={plain},{extra}")]);
        }
        for setting in &self.options.settings {
            command.args(["--set", setting]);
        }
        for user in &self.options.scram {
            command.args(["--scram", user]);
        }
        let log = std::fs::File::create(node.scratch.dir.join(KAFKA_LOG))?;
        let child = command
            // Smaller than the stack's broker: a test may run a cluster of three beside it.
            .env("VAULTLINE_KAFKA_HEAP", "-Xms128m -Xmx384m")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", kafka_script().display()))?;
        self.nodes[index].scratch.child = Some(child);
        Ok(())
    }

    /// Waits until node `index` answers metadata that lists every node of the cluster; fails at
    /// once, with the end of its log, if it exits first.
    async fn wait_started(&mut self, index: usize) -> anyhow::Result<()> {
        let expected = self.nodes.len();
        let bootstrap = format!("127.0.0.1:{}", self.nodes[index].scratch.port);
        let log = self.nodes[index].scratch.dir.join(KAFKA_LOG);
        let child = self.nodes[index]
            .scratch
            .child
            .as_mut()
            .context("the private Kafka node is not started")?;
        eventually(
            "the private Kafka node to answer metadata",
            Duration::from_secs(90),
            || {
                let exited = child.try_wait();
                let log = &log;
                let bootstrap = bootstrap.clone();
                async move {
                    match exited {
                        Ok(None) => brokers_listed(bootstrap)
                            .await
                            .filter(|brokers| *brokers == expected)
                            .map(|_| Ok(())),
                        Ok(Some(status)) => {
                            let said = std::fs::read_to_string(log).unwrap_or_default();
                            let tail: Vec<&str> = said.lines().rev().take(8).collect();
                            Some(Err(anyhow::anyhow!(
                                "the private Kafka node exited at start ({status}): {}",
                                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                            )))
                        }
                        Err(error) => Some(Err(error.into())),
                    }
                }
            },
        )
        .await
    }
}

/// How many brokers the node at `bootstrap` lists in its metadata, once it answers.
async fn brokers_listed(bootstrap: String) -> Option<usize> {
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("log_level", "0")
            .create()
            .ok()?;
        let metadata = client.fetch_metadata(None, Duration::from_secs(2)).ok()?;
        Some(metadata.brokers().len())
    })
    .await
    .ok()
    .flatten()
}

/// Where a private Kafka node's output goes, in its scratch directory.
const KAFKA_LOG: &str = "kafka.log";

/// The launcher the local stack uses too.
fn kafka_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.sh")
}

/// Runs a Kafka command-line tool by its class (`scripts/kafka.sh run`), returning its
/// standard output; fails with its standard error when it exits non-zero.
pub fn kafka_tool(class: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(kafka_script())
        .arg("run")
        .arg(class)
        .args(args)
        .env("VAULTLINE_KAFKA_HEAP", "-Xms64m -Xmx256m")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", kafka_script().display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{class} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The consumer groups tool's class (`kafka-consumer-groups.sh`).
const CONSUMER_GROUPS: &str = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";

/// One row of `kafka-consumer-groups --describe`: a partition the group reads, with the
/// offsets the broker itself reports (`None` where the tool prints `-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPartition {
    pub topic: String,
    pub partition: i32,
    pub current: Option<i64>,
    pub log_end: Option<i64>,
    pub lag: Option<i64>,
}

/// `kafka-consumer-groups --describe --group GROUP`: the broker's own view of the group's
/// offsets and lag on every partition it has committed on or been assigned.
pub fn describe_group(bootstrap: &str, group: &str) -> anyhow::Result<Vec<GroupPartition>> {
    let out = kafka_tool(
        CONSUMER_GROUPS,
        &[
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--group",
            group,
        ],
    )?;
    table(&out, "PARTITION")?
        .into_iter()
        .map(|row| {
            let number = |column: &str| -> anyhow::Result<Option<i64>> {
                match row.get(column).map(String::as_str) {
                    None | Some("-") => Ok(None),
                    Some(value) => Ok(Some(value.parse()?)),
                }
            };
            Ok(GroupPartition {
                topic: row.get("TOPIC").cloned().unwrap_or_default(),
                partition: row.get("PARTITION").map_or(Ok(-1), |p| p.parse())?,
                current: number("CURRENT-OFFSET")?,
                log_end: number("LOG-END-OFFSET")?,
                lag: number("LAG")?,
            })
        })
        .collect()
}

/// `kafka-consumer-groups --describe --members`: how many partitions each member of the
/// group holds, by consumer id.
pub fn group_members(bootstrap: &str, group: &str) -> anyhow::Result<BTreeMap<String, usize>> {
    let out = kafka_tool(
        CONSUMER_GROUPS,
        &[
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--members",
            "--group",
            group,
        ],
    )?;
    table(&out, "#PARTITIONS")?
        .into_iter()
        .map(|row| {
            let id = row.get("CONSUMER-ID").cloned().unwrap_or_default();
            let partitions = row.get("#PARTITIONS").map_or(Ok(0), |n| n.parse())?;
            Ok((id, partitions))
        })
        .collect()
}

/// The rows of the whitespace-aligned table in a Kafka tool's output whose header line names
/// `column`, each as column name → value.
fn table(out: &str, column: &str) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
    let mut lines = out
        .lines()
        .skip_while(|line| !line.split_whitespace().any(|word| word == column));
    let header: Vec<&str> = lines
        .next()
        .with_context(|| format!("no table with a {column} column in: {out}"))?
        .split_whitespace()
        .collect();
    Ok(lines
        .take_while(|line| !line.trim().is_empty())
        .map(|line| {
            header
                .iter()
                .zip(line.split_whitespace())
                .map(|(name, value)| ((*name).to_owned(), value.to_owned()))
                .collect()
        })
        .collect())
}

/// A port nothing listens on, never one this process handed out before: a server given two
/// listeners on the same port refuses to start (Kafka: "Each listener must have a different
/// port"), and the kernel may offer a port again once its probe socket is closed.
fn free_port() -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if given.insert(port) {
            return Ok(port);
        }
    }
}

/// A private Postgres cluster (`initdb`, trust authentication on loopback), run as the
/// `postgres` user when the tests run as root.
#[derive(Debug)]
pub struct PrivatePostgres(Scratch);

impl PrivatePostgres {
    /// Creates the cluster and starts it.
    pub async fn start() -> anyhow::Result<Self> {
        let scratch = Scratch::new("vaultline-pg")?;
        if as_root() {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&scratch.dir)
                .status()?;
            anyhow::ensure!(
                status.success(),
                "chown of {} failed",
                scratch.dir.display()
            );
        }
        let data = scratch.dir.join("data");
        pg_tool(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
            ],
        )?;
        let pg = Self(scratch);
        pg.restart().await?;
        Ok(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.0.port)
    }

    /// Creates database `name` on it and returns its URL (as the `postgres` superuser).
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let (admin, connection) =
            tokio_postgres::connect(&self.url(), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.0.port
        ))
    }

    /// Starts (or starts again) the server and waits until it accepts connections.
    pub async fn restart(&self) -> anyhow::Result<()> {
        let data = self.0.dir.join("data");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.0.port,
            self.0.dir.display()
        );
        let log = self.0.dir.join("log");
        pg_tool(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-o",
                &options,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "start",
            ],
        )?;
        self.0
            .wait_listening("the private Postgres to listen")
            .await
    }

    /// Stops every process of the server with SIGSTOP: connections stay open and nothing
    /// answers, as with a server that hangs (or a network that drops packets).
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal_all("STOP")
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal_all("CONT")
    }

    /// Sends `signal` to the postmaster and every process it started.
    fn signal_all(&self, signal: &str) -> anyhow::Result<()> {
        let pid_file = std::fs::read_to_string(self.0.dir.join("data/postmaster.pid"))?;
        let postmaster = pid_file
            .lines()
            .next()
            .context("an empty postmaster.pid")?
            .trim()
            .to_owned();
        let mut pids = vec![postmaster.clone()];
        for task in std::fs::read_dir(format!("/proc/{postmaster}/task"))? {
            let children = std::fs::read_to_string(task?.path().join("children"))?;
            pids.extend(children.split_whitespace().map(str::to_owned));
        }
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .args(&pids)
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pids:?} failed");
        Ok(())
    }

    /// Stops it the way a crash would (`pg_ctl stop -m immediate`: no checkpoint, every
    /// connection cut).
    pub fn crash(&self) -> anyhow::Result<()> {
        let data = self.0.dir.join("data");
        pg_tool(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.crash();
    }
}

fn as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a Postgres server tool (from Debian's versioned directory when it is not on `PATH`).
fn pg_tool(tool: &str, args: &[&str]) -> anyhow::Result<()> {
    let path = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|versions| {
            let mut candidates: Vec<PathBuf> = versions
                .flatten()
                .map(|entry| entry.path().join("bin").join(tool))
                .collect();
            candidates.sort();
            candidates.into_iter().rev().find(|path| path.exists())
        })
        .unwrap_or_else(|| PathBuf::from(tool));
    let mut command = if as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(&path);
        command
    } else {
        Command::new(&path)
    };
    let output = command
        .args(args)
        .current_dir(std::env::temp_dir())
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
