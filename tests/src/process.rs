//! The services' real binaries as child processes, for what only a process can show:
//! `kill -9`, SIGTERM and exit codes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A workspace binary (`service-stg`, ...) next to the running test's own directory;
/// `scripts/test.sh` builds them before the tests run.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let binary = dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: build the workspace's binaries first (cargo build --workspace --bins)",
        binary.display()
    );
    binary
}

/// Starts `name` with exactly `env`, its output appended to `log` in the temp directory.
pub fn spawn(name: &str, env: &HashMap<String, String>, log: &str) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::env::temp_dir().join(log))?;
    Ok(Command::new(binary(name))
        .env_clear()
        .envs(env)
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()?)
}

/// The log `spawn` wrote.
pub fn log(log: &str) -> String {
    std::fs::read_to_string(std::env::temp_dir().join(log)).unwrap_or_default()
}

/// Sends SIGTERM and waits for the exit code.
pub async fn terminate(mut child: Child) -> anyhow::Result<Option<i32>> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -TERM failed");
    let exit = tokio::task::spawn_blocking(move || child.wait()).await??;
    Ok(exit.code())
}

/// What a stop by SIGTERM came to: the exit code, how long it took, and the program's log.
#[derive(Debug)]
pub struct Stopped {
    pub code: Option<i32>,
    pub took: std::time::Duration,
    pub log: String,
}

/// Sends SIGTERM to the child `spawn` started with `log_name` and times its exit.
pub async fn terminate_timed(child: Child, log_name: &str) -> anyhow::Result<Stopped> {
    let signalled = std::time::Instant::now();
    let code = terminate(child).await?;
    let took = signalled.elapsed();
    eprintln!("stopped {took:?} after SIGTERM, exit {code:?}");
    Ok(Stopped {
        code,
        took,
        log: log(log_name),
    })
}

/// A free port on the loopback interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}
