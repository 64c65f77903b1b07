//! Per-order latency from the warehouse: from an order's `sent_dttm` (stamped when produced)
//! to the commit of its counters (`cdm.order_state.updated_at`), for the order's latest
//! version, and its summary.

use diesel::sql_types::{BigInt, Double};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

/// One order through to the datamart.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct Sample {
    /// When its latest version was sent, in seconds since the epoch.
    #[diesel(sql_type = Double)]
    pub sent: f64,
    /// Seconds from then to the commit of its counters.
    #[diesel(sql_type = Double)]
    pub latency: f64,
}

/// Every order of `first..=last` whose latest version the datamart reflects, by send time.
pub async fn samples(
    conn: &mut AsyncPgConnection,
    first: i64,
    last: i64,
) -> diesel::QueryResult<Vec<Sample>> {
    diesel::sql_query(
        "SELECT extract(epoch FROM s.sent_dttm)::float8 AS sent, \
                extract(epoch FROM c.updated_at - s.sent_dttm)::float8 AS latency \
         FROM stg.order_events s \
         JOIN dds.order_load_state d ON d.order_id = s.object_id \
         JOIN cdm.order_state c ON c.order_id = d.h_order_pk AND c.update_ts = s.update_ts \
         WHERE s.object_id BETWEEN $1 AND $2 \
         ORDER BY s.sent_dttm",
    )
    .bind::<BigInt, _>(first)
    .bind::<BigInt, _>(last)
    .load(conn)
    .await
}

/// How many orders of `first..=last` the datamart reflects at their latest loaded version:
/// cheap enough to poll while the pipeline runs.
pub async fn counted(
    conn: &mut AsyncPgConnection,
    first: i64,
    last: i64,
) -> diesel::QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let count: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM dds.order_load_state d \
         JOIN cdm.order_state c ON c.order_id = d.h_order_pk AND c.update_ts = d.update_ts \
         WHERE d.order_id BETWEEN $1 AND $2",
    )
    .bind::<BigInt, _>(first)
    .bind::<BigInt, _>(last)
    .get_result(conn)
    .await?;
    Ok(count.n)
}

/// Percentiles in milliseconds, and the span from the first send to the last count.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub orders: usize,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Seconds from the first order sent to the last one counted.
    pub span_s: Option<f64>,
}

impl Summary {
    pub fn of(samples: &[Sample]) -> Self {
        let mut latencies: Vec<f64> = samples.iter().map(|s| s.latency * 1000.0).collect();
        latencies.sort_by(f64::total_cmp);
        let first_sent = samples.iter().map(|s| s.sent).min_by(f64::total_cmp);
        let last_done = samples
            .iter()
            .map(|s| s.sent + s.latency)
            .max_by(f64::total_cmp);
        Self {
            orders: samples.len(),
            p50_ms: percentile(&latencies, 0.50),
            p95_ms: percentile(&latencies, 0.95),
            p99_ms: percentile(&latencies, 0.99),
            max_ms: latencies.last().copied(),
            span_s: first_sent.zip(last_done).map(|(a, b)| b - a),
        }
    }
}

/// Postgres's `percentile_cont`: linear between the two nearest ranks of the sorted values.
pub fn percentile(sorted: &[f64], fraction: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = fraction * last as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_as_percentile_cont_does() {
        let values = [10.0, 20.0, 30.0, 40.0];
        assert_eq!(percentile(&values, 0.5), Some(25.0));
        assert_eq!(percentile(&values, 0.0), Some(10.0));
        assert_eq!(percentile(&values, 1.0), Some(40.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn the_span_runs_from_the_first_send_to_the_last_count() {
        let samples = [
            Sample {
                sent: 100.0,
                latency: 0.5,
            },
            Sample {
                sent: 101.0,
                latency: 2.0,
            },
        ];
        let summary = Summary::of(&samples);
        assert_eq!(summary.orders, 2);
        assert_eq!(summary.span_s, Some(3.0));
        assert_eq!(summary.max_ms, Some(2000.0));
    }
}
