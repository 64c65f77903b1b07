//! How a batch can fail, sorted at the adapter boundary (STYLE §5).
//!
//! *Transient*: a dependency is down or busy; back off and retry the same batch, skip nothing.
//! *Suspect*: the dependency answered but refused the work, which may be the fault of one
//! message in the batch; the consume loop bisects the batch to find it and, if one message
//! keeps failing while its dependencies are healthy, rejects it with the reason.
//! Messages that are plainly bad (undecodable, unknown ids) are not failures at all: handlers
//! reject them themselves and carry on.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("dependency unavailable: {0:#}")]
    Transient(anyhow::Error),
    #[error("batch refused: {0:#}")]
    Suspect(anyhow::Error),
}

impl Failure {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

impl From<DieselError> for Failure {
    fn from(error: DieselError) -> Self {
        let transient = matches!(
            &error,
            DieselError::DatabaseError(
                DatabaseErrorKind::UnableToSendCommand
                    | DatabaseErrorKind::ClosedConnection
                    | DatabaseErrorKind::SerializationFailure
                    | DatabaseErrorKind::ReadOnlyTransaction,
                _
            ) | DieselError::BrokenTransactionManager
                | DieselError::AlreadyInTransaction
        );
        let error = anyhow::Error::new(error).context("Postgres");
        if transient {
            Self::Transient(error)
        } else {
            Self::Suspect(error)
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<bb8::RunError<E>> for Failure {
    fn from(error: bb8::RunError<E>) -> Self {
        Self::Transient(anyhow::anyhow!("connection pool: {error}"))
    }
}

impl From<KafkaError> for Failure {
    fn from(error: KafkaError) -> Self {
        let permanent = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessage)
        );
        let error = anyhow::Error::new(error).context("Kafka producer");
        if permanent {
            Self::Suspect(error)
        } else {
            Self::Transient(error)
        }
    }
}

impl From<bb8_redis::redis::RedisError> for Failure {
    fn from(error: bb8_redis::redis::RedisError) -> Self {
        Self::Transient(anyhow::Error::new(error).context("Redis"))
    }
}
