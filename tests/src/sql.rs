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
