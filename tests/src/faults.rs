//! What the fault tests share: a pipeline on a private Postgres whose warehouse an admin
//! session can alter under the services, and waiting for a stage to pause on a named cause.

use std::time::{Duration, Instant};

use crate::pipeline::{http, Overrides, Pipeline, Service};
use crate::servers::PrivatePostgres;

/// How long a stage may take to pause, or the pipeline to settle.
pub const SETTLE: Duration = Duration::from_secs(180);

/// A pipeline whose services connect as a role that is not a superuser, on a private server,
/// and an admin session on its warehouse.
pub struct Altered {
    pub pg: PrivatePostgres,
    pub pipeline: Pipeline,
    pub admin: tokio_postgres::Client,
    /// The services' role, for grants and revokes.
    pub role: String,
}

impl std::fmt::Debug for Altered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Altered")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Altered {
    pub async fn start(partitions: i32) -> anyhow::Result<Self> {
        let pg = PrivatePostgres::start().await?;
        let database_url = pg.create_database("warehouse").await?;
        let (admin_url, role_url) = crate::database_with_role(&pg.url(), &database_url).await?;
        let role = role_url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(':').next())
            .expect("a role")
            .to_owned();
        let pipeline = Pipeline::start_with(
            partitions,
            Overrides {
                database_url: Some(role_url),
                ..Overrides::default()
            },
        )
        .await?;
        let (admin, connection) =
            tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(Self {
            pg,
            pipeline,
            admin,
            role,
        })
    }
}

/// `service`'s `/health`: the status code and the document.
pub async fn health(p: &Pipeline, service: Service) -> anyhow::Result<(u16, serde_json::Value)> {
    let (status, body) = http(p.http_addr(service).expect("running"), "GET", "/health", "").await?;
    Ok((status, serde_json::from_str(&body)?))
}

/// Waits until `service` answers 503 with a pause cause that mentions `needle`, and returns
/// the document; on time-out the panic shows the last answer.
pub async fn await_paused(p: &Pipeline, service: Service, needle: &str) -> serde_json::Value {
    let mut last = String::new();
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Ok((status, doc)) = health(p, service).await {
            let cause = doc["worker"]["cause"].as_str().unwrap_or_default();
            if status == 503 && cause.contains(needle) {
                return doc;
            }
            last = format!("{status} {doc}");
        }
        assert!(
            Instant::now() < deadline,
            "{service:?} did not pause naming {needle}; last answer: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every service answers 200 again.
pub async fn await_healthy(p: &Pipeline) {
    for service in Service::ALL {
        let what = format!("{service:?} to report healthy again");
        crate::eventually(&what, Duration::from_secs(60), || async {
            let (status, _) = health(p, service).await.ok()?;
            (status == 200).then_some(())
        })
        .await;
    }
}

/// Holds a fault until `until`, checking every second that nothing became a dead letter.
pub async fn hold_without_dead_letters(p: &Pipeline, until: Instant) -> anyhow::Result<()> {
    loop {
        let letters = p.count("SELECT count(*) FROM ops.dead_letters").await?;
        assert_eq!(letters, 0, "a systemic fault rejected a message");
        if Instant::now() >= until {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
