//! Servers of a test's own — Redis, Postgres, a Kafka-protocol broker — on free loopback
//! ports, for the tests that crash and restart a dependency (the shared stack must stay up for
//! every other test). Each keeps its data in a scratch directory, removed when it is dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

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
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
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
                vault_runtime::stores::redis_ping(&pool).await.ok()
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
}

/// A private Kafka-protocol broker (Nisshi, storing in SQLite so that topics and committed
/// offsets survive a restart). The binary is `$NISSHI_BIN` (`VAULTLINE_BROKER_SQLITE=1
/// scripts/stack.sh up`, as scripts/test.sh runs it, prints the one it built with the SQLite
/// engine or found), else `nisshi` on `PATH`.
#[derive(Debug)]
pub struct PrivateBroker(Scratch, Option<&'static str>);

impl PrivateBroker {
    /// Starts one whose groups get their first assignment without delay, as the stack's.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_rebalance_delay(Some("0s")).await
    }

    /// Starts one with `--group-initial-rebalance-delay` set to `delay` (`None`: Nisshi's
    /// default).
    pub async fn start_with_rebalance_delay(delay: Option<&'static str>) -> anyhow::Result<Self> {
        let mut broker = Self(Scratch::new("vaultline-broker")?, delay);
        broker.restart().await?;
        Ok(broker)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.0.port)
    }

    /// Starts the broker again on the same port and storage, and waits until it listens.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.0.kill();
        let url = format!("tcp://127.0.0.1:{}", self.0.port);
        let child = Command::new(nisshi_binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://broker.db"])
            .args(
                self.1
                    .iter()
                    .flat_map(|delay| ["--group-initial-rebalance-delay", delay]),
            )
            .current_dir(&self.0.dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.0.dir.join(BROKER_LOG))?)
            .spawn()
            .context("starting nisshi: run the tests with scripts/test.sh, or set NISSHI_BIN (VAULTLINE_BROKER_SQLITE=1 scripts/stack.sh up prints it)")?;
        self.0.child = Some(child);
        self.wait_started().await
    }

    /// Waits until it listens; fails at once, with the end of its log, if it exits first (a
    /// binary without the SQLite engine says so there).
    async fn wait_started(&mut self) -> anyhow::Result<()> {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.0.port).parse()?;
        let log = self.0.dir.join(BROKER_LOG);
        let child = self
            .0
            .child
            .as_mut()
            .context("the private broker is not started")?;
        eventually(
            "the private broker to listen",
            Duration::from_secs(30),
            || {
                let exited = child.try_wait();
                let log = &log;
                async move {
                    match exited {
                        Ok(None) => tokio::net::TcpStream::connect(addr)
                            .await
                            .ok()
                            .map(|_| Ok(())),
                        Ok(Some(status)) => {
                            let said = std::fs::read_to_string(log).unwrap_or_default();
                            let tail: Vec<&str> = said.lines().rev().take(5).collect();
                            Some(Err(anyhow::anyhow!(
                                "the private broker ({}) exited at start ({status}): {}",
                                nisshi_binary().display(),
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

    /// Kills it outright (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.0.kill();
    }
}

/// Where the private broker's stderr goes, in its scratch directory.
const BROKER_LOG: &str = "broker.log";

fn nisshi_binary() -> PathBuf {
    std::env::var_os("NISSHI_BIN").map_or_else(|| "nisshi".into(), PathBuf::from)
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
