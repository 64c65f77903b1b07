//! Statements run as a given role, for the privilege tests: connect with a config, and the
//! SQLSTATE a statement is refused with.

/// Connects with `config` and drives the connection in the background.
pub async fn connect(config: &tokio_postgres::Config) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The SQLSTATE of a refused statement, or `None` when it succeeded.
pub async fn outcome(client: &tokio_postgres::Client, sql: &str) -> Option<String> {
    match client.batch_execute(sql).await {
        Ok(()) => None,
        Err(error) => Some(
            error
                .code()
                .map_or_else(|| error.to_string(), |code| code.code().to_owned()),
        ),
    }
}

/// A fresh database owned by a fresh role that may create roles — what
/// `docker/postgres/10-owner.sh` makes — named for one test: `<database_prefix>_<id>`, and
/// roles `<role_prefix><id>_<suffix>`.
#[derive(Debug)]
pub struct OwnedDatabase {
    pub admin_config: tokio_postgres::Config,
    pub admin: tokio_postgres::Client,
    pub database: String,
    pub owner: String,
    role_prefix: String,
    host: String,
    port: u16,
}

impl OwnedDatabase {
    pub async fn create(database_prefix: &str, role_prefix: &str) -> anyhow::Result<Self> {
        let admin_config: tokio_postgres::Config =
            crate::stack().await.database_admin_url.parse()?;
        let admin = connect(&admin_config).await?;
        let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let role_prefix = format!("{role_prefix}{id}");
        let database = format!("{database_prefix}_{id}");
        let owner = format!("{role_prefix}_owner");
        // Two statements: CREATE DATABASE may not run in the implicit transaction of a batch.
        admin
            .batch_execute(&format!("CREATE ROLE {owner} LOGIN CREATEROLE"))
            .await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {database} OWNER {owner}"))
            .await?;
        let host = match admin_config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = admin_config.get_ports().first().copied().unwrap_or(5432);
        Ok(Self {
            admin_config,
            admin,
            database,
            owner,
            role_prefix,
            host,
            port,
        })
    }

    /// A role name of this test's own.
    pub fn role(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.role_prefix)
    }

    /// The database's URL as `role` (loopback connections are trusted).
    pub fn url(&self, role: &str) -> String {
        format!(
            "postgres://{role}@{}:{}/{}",
            self.host, self.port, self.database
        )
    }
}

/// Reading columns of a query without parameters: the first column of every row, or the
/// first two.
pub trait Columns {
    fn column<T>(&self, sql: &str) -> impl std::future::Future<Output = anyhow::Result<Vec<T>>>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>;

    fn pairs<A, B>(
        &self,
        sql: &str,
    ) -> impl std::future::Future<Output = anyhow::Result<Vec<(A, B)>>>
    where
        A: for<'a> tokio_postgres::types::FromSql<'a>,
        B: for<'a> tokio_postgres::types::FromSql<'a>;

    /// The first column of the one row `sql` returns (an error unless exactly one).
    fn one<T>(&self, sql: &str) -> impl std::future::Future<Output = anyhow::Result<T>>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>;
}

impl Columns for tokio_postgres::Client {
    async fn column<T>(&self, sql: &str) -> anyhow::Result<Vec<T>>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        let rows = self.query(sql, &[]).await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn pairs<A, B>(&self, sql: &str) -> anyhow::Result<Vec<(A, B)>>
    where
        A: for<'a> tokio_postgres::types::FromSql<'a>,
        B: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        let rows = self.query(sql, &[]).await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    async fn one<T>(&self, sql: &str) -> anyhow::Result<T>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        Ok(self.query_one(sql, &[]).await?.try_get(0)?)
    }
}
