//! Rejected messages (docs/failures.md, message faults): kept in `ops.dead_letters` with their reason and source
//! position, listed and replayed from there.
//!
//! Handlers write dead letters in the same transaction as the rest of their batch, so a
//! rejection is durable exactly when the batch is, and the offset moves past it only then.

use diesel::sql_types::{Array, BigInt, Bytea, Integer, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::kafka::InMessage;

/// A message a service could not process, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// A short stable name (`invalid_json`, `unknown_user`, ...), for grouping and metrics.
    pub kind: String,
    pub reason: String,
}

impl DeadLetter {
    pub fn new(message: &InMessage, kind: &str, reason: impl Into<String>) -> Self {
        Self {
            topic: message.topic.clone(),
            partition: message.partition,
            offset: message.offset,
            key: message.key.clone(),
            payload: message.payload().to_vec(),
            kind: kind.to_owned(),
            reason: reason.into(),
        }
    }
}

impl DeadLetter {
    /// The made-up letter the warehouse probe writes (and rolls back).
    pub(crate) fn probe() -> Self {
        Self {
            topic: "vaultline.probe".to_owned(),
            partition: 0,
            offset: (uuid::Uuid::new_v4().as_u64_pair().0 >> 1) as i64,
            key: None,
            payload: b"{}".to_vec(),
            kind: "probe".to_owned(),
            reason: "warehouse probe (rolled back)".to_owned(),
        }
    }
}

/// Stores dead letters in one round trip; a redelivered message is stored once.
pub async fn insert(
    conn: &mut AsyncPgConnection,
    service: &str,
    letters: &[DeadLetter],
) -> diesel::QueryResult<usize> {
    if letters.is_empty() {
        return Ok(0);
    }
    let topics: Vec<&str> = letters.iter().map(|l| l.topic.as_str()).collect();
    let partitions: Vec<i32> = letters.iter().map(|l| l.partition).collect();
    let offsets: Vec<i64> = letters.iter().map(|l| l.offset).collect();
    let keys: Vec<Option<&[u8]>> = letters.iter().map(|l| l.key.as_deref()).collect();
    let payloads: Vec<&[u8]> = letters.iter().map(|l| l.payload.as_slice()).collect();
    let kinds: Vec<&str> = letters.iter().map(|l| l.kind.as_str()).collect();
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    diesel::sql_query(
        "INSERT INTO ops.dead_letters \
             (service, topic, partition, \"offset\", message_key, payload, error_kind, reason) \
         SELECT $1, t, p, o, k, b, e, r \
         FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bytea[], $6::bytea[], \
                     $7::text[], $8::text[]) AS u(t, p, o, k, b, e, r) \
         ON CONFLICT (service, topic, partition, \"offset\") DO NOTHING",
    )
    .bind::<Text, _>(service)
    .bind::<Array<Text>, _>(topics)
    .bind::<Array<Integer>, _>(partitions)
    .bind::<Array<BigInt>, _>(offsets)
    .bind::<Array<Nullable<Bytea>>, _>(keys)
    .bind::<Array<Bytea>, _>(payloads)
    .bind::<Array<Text>, _>(kinds)
    .bind::<Array<Text>, _>(reasons)
    .execute(conn)
    .await
}

/// A stored dead letter, as listed for operators.
#[derive(Debug, Clone, QueryableByName)]
pub struct StoredDeadLetter {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub service: String,
    #[diesel(sql_type = Text)]
    pub topic: String,
    #[diesel(sql_type = Integer)]
    pub partition: i32,
    #[diesel(sql_type = BigInt)]
    pub offset: i64,
    #[diesel(sql_type = Nullable<Bytea>)]
    pub message_key: Option<Vec<u8>>,
    #[diesel(sql_type = Bytea)]
    pub payload: Vec<u8>,
    #[diesel(sql_type = Text)]
    pub error_kind: String,
    #[diesel(sql_type = Text)]
    pub reason: String,
}

/// How many dead letters one step of a replay reads, republishes and marks: one page of
/// payloads is all a replay holds in memory, however many letters are pending.
pub const REPLAY_PAGE: i64 = 500;

/// Dead letters not yet replayed with an id above `after` and at most `through`, oldest first,
/// at most `limit` of them; optionally of one service only, optionally only the given ids.
/// Everything is filtered by the database, so a caller pages through any number of letters by
/// passing the last id it saw as `after`.
pub async fn pending(
    conn: &mut AsyncPgConnection,
    service: Option<&str>,
    ids: Option<&[i64]>,
    after: i64,
    through: i64,
    limit: i64,
) -> diesel::QueryResult<Vec<StoredDeadLetter>> {
    diesel::sql_query(
        "SELECT id, service, topic, partition, \"offset\", message_key, payload, error_kind, \
                reason \
         FROM ops.dead_letters \
         WHERE replayed_at IS NULL AND id > $1 AND id <= $2 \
           AND ($3::text IS NULL OR service = $3) AND ($4::bigint[] IS NULL OR id = ANY($4)) \
         ORDER BY id LIMIT $5",
    )
    .bind::<BigInt, _>(after)
    .bind::<BigInt, _>(through)
    .bind::<Nullable<Text>, _>(service)
    .bind::<Nullable<Array<BigInt>>, _>(ids)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// How many dead letters are not yet replayed, optionally of one service only.
pub async fn count_pending(
    conn: &mut AsyncPgConnection,
    service: Option<&str>,
) -> diesel::QueryResult<i64> {
    let count: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM ops.dead_letters \
         WHERE replayed_at IS NULL AND ($1::text IS NULL OR service = $1)",
    )
    .bind::<Nullable<Text>, _>(service)
    .get_result(conn)
    .await?;
    Ok(count.n)
}

/// The highest dead letter id so far (0 when there is none).
async fn last_id(conn: &mut AsyncPgConnection) -> diesel::QueryResult<i64> {
    let last: Count = diesel::sql_query("SELECT coalesce(max(id), 0) AS n FROM ops.dead_letters")
        .get_result(conn)
        .await?;
    Ok(last.n)
}

/// Marks dead letters as replayed (after their payloads were republished).
pub async fn mark_replayed(
    conn: &mut AsyncPgConnection,
    ids: &[i64],
) -> diesel::QueryResult<usize> {
    diesel::sql_query(
        "UPDATE ops.dead_letters SET replayed_at = now() \
         WHERE id = ANY($1) AND replayed_at IS NULL",
    )
    .bind::<Array<BigInt>, _>(ids)
    .execute(conn)
    .await
}

/// Republishes pending dead letters to the topic they came from (with their original key),
/// then marks them replayed; the owning service processes them afresh, and one that fails
/// again becomes a new dead letter. `ids` narrows the replay to chosen letters. Returns how
/// many were replayed.
///
/// The letters are read [`REPLAY_PAGE`] at a time in id order, and each page is republished
/// and marked before the next is read, so memory stays bounded whatever the number pending.
/// Only letters that existed when the replay began are replayed: one that fails again while
/// the replay runs is a new letter, left for the next replay instead of looping forever.
pub async fn replay(
    pool: &crate::stores::PgPool,
    producer: &rdkafka::producer::FutureProducer,
    service: Option<&str>,
    ids: Option<&[i64]>,
) -> anyhow::Result<usize> {
    use rdkafka::producer::FutureRecord;
    use rdkafka::util::Timeout;

    let mut conn = pool.get().await?;
    let through = last_id(&mut conn).await?;
    let (mut after, mut replayed) = (0, 0);
    loop {
        let page = pending(&mut conn, service, ids, after, through, REPLAY_PAGE).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.id;
        // The whole page is enqueued at once and acknowledged together (as
        // `kafka::publish` does); the idempotent producer keeps each partition's order.
        let deliveries = page.iter().map(|letter| {
            let mut record = FutureRecord::to(&letter.topic).payload(&letter.payload);
            if let Some(key) = &letter.message_key {
                record = record.key(key);
            }
            async move {
                producer
                    .send(record, Timeout::After(std::time::Duration::from_secs(30)))
                    .await
                    .map_err(|(e, _)| {
                        anyhow::anyhow!("republishing dead letter {}: {e}", letter.id)
                    })
            }
        });
        futures::future::try_join_all(deliveries).await?;
        let page_ids: Vec<i64> = page.iter().map(|l| l.id).collect();
        mark_replayed(&mut conn, &page_ids).await?;
        replayed += page_ids.len();
        if i64::try_from(page.len()).unwrap_or(i64::MAX) < REPLAY_PAGE {
            break;
        }
    }
    Ok(replayed)
}
