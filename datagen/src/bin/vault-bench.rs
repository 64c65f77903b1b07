//! vault-bench: the throughput and latency benchmark of a running pipeline.
//!
//! ```text
//! vault-bench [--rate ORDERS_PER_SECOND] [--seconds N] [--p99-ms MS]
//! ```
//! Produces synthetic orders (from the dictionaries in Redis, as datagen does) to the raw
//! topic at a steady rate for N seconds, waits until every service has committed everything,
//! then measures, per order, the time from its `sent_dttm` (stamped when produced) to the
//! commit of its counters in the datamart. Prints throughput and latency percentiles, and
//! exits 1 when the pipeline fell behind the rate or the p99 latency exceeds its target.
//! Connection settings as for the services (`KAFKA_BOOTSTRAP_SERVERS`, `REDIS_URL`,
//! `DATABASE_URL`, ...; `KAFKA_DESTINATION_TOPIC` and `PIPELINE_{STG,DDS,CDM}_{GROUP,TOPIC}`
//! when the pipeline runs on topics and groups of its own). `scripts/bench.sh` runs it against
//! the local stack.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use diesel::sql_types::{BigInt, Double, Nullable};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use rand::SeedableRng;
use vault_runtime::{
    pg_pool, producer, publish, redis_pool, wait_caught_up, ProcessEnv, SessionLimits, Settings,
};

const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, QueryableByName)]
struct Latency {
    #[diesel(sql_type = BigInt)]
    orders: i64,
    #[diesel(sql_type = Nullable<Double>)]
    p50: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    p95: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    p99: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    max: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    span: Option<f64>,
}

#[derive(Debug)]
struct Options {
    rate: u64,
    seconds: u64,
    p99_ms: f64,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        rate: 2000,
        seconds: 20,
        p99_ms: 1000.0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair
            .get(1)
            .ok_or_else(|| format!("{} needs a value", pair[0]))?;
        let bad = |_| format!("{}: `{value}` is not a number", pair[0]);
        match pair[0].as_str() {
            "--rate" => options.rate = value.parse().map_err(bad)?,
            "--seconds" => options.seconds = value.parse().map_err(bad)?,
            "--p99-ms" => {
                options.p99_ms = value
                    .parse()
                    .map_err(|_| format!("--p99-ms: `{value}` is not a number"))?
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if options.rate < 10 || options.seconds == 0 {
        return Err("--rate must be at least 10 and --seconds at least 1".into());
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!(
                "vault-bench: {error}\nusage: vault-bench [--rate N] [--seconds N] [--p99-ms MS]"
            );
            return ExitCode::from(2);
        }
    };
    let settings = match Settings::from(&ProcessEnv, datagen::PROFILE_BENCH) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("vault-bench: {error}");
            return ExitCode::from(2);
        }
    };
    match run(&settings, &options).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("vault-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: &Settings, options: &Options) -> anyhow::Result<bool> {
    let redis_settings = settings.redis.as_ref().context("Redis settings")?;
    let redis = redis_pool(redis_settings)?;
    let pg = pg_pool(&settings.postgres, SessionLimits::OPERATOR);
    let producer = producer(&settings.kafka)?;
    let topic = settings
        .kafka
        .destination_topic
        .clone()
        .context("KAFKA_DESTINATION_TOPIC")?;
    let dictionary = datagen::dictionary::load_or_seed(&redis, 42).await?;

    let total = options.rate * options.seconds;
    let per_tick = options.rate / 10;
    let ticks = options.seconds * 10;
    let ids = datagen::order_ids::OrderIds::default()
        .reserve(&redis, per_tick * ticks)
        .await?;
    let (first_id, last_id) = (ids.first, ids.last);
    println!(
        "vault-bench: {} orders/s for {} s ({total} orders, ids {first_id}..{last_id}, plus ~10% later versions)",
        options.rate, options.seconds
    );
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let started = Instant::now();
    let mut behind = 0_u32;
    for tick in 0..ticks {
        let due = started + TICK * tick as u32;
        tokio::time::sleep_until(due.into()).await;
        let from = first_id + (tick * per_tick) as i64;
        let orders = datagen::generate::orders(&mut rng, &dictionary, from, per_tick);
        let messages = datagen::messages(&orders)?;
        publish(&producer, &topic, &messages).await?;
        if Instant::now() > due + TICK {
            behind += 1;
        }
    }
    let produced_in = started.elapsed();
    println!(
        "produced in {:.1} s ({} ticks late)",
        produced_in.as_secs_f64(),
        behind
    );

    // The pipeline's hops (`PIPELINE_{STG,DDS,CDM}_{GROUP,TOPIC}`, the defaults unless set),
    // so that a benchmark can run on topics and groups of its own.
    let hops: Vec<(&str, &str)> = settings
        .pipeline
        .iter()
        .map(|hop| (hop.group.as_str(), hop.topic.as_str()))
        .collect();
    wait_caught_up(&settings.kafka, &hops, Duration::from_secs(600), |_, _| {}).await?;
    let caught_up = started.elapsed();

    let mut conn = pg.get().await?;
    let latency: Latency = diesel::sql_query(
        "SELECT count(*) AS orders, \
                percentile_cont(0.50) WITHIN GROUP (ORDER BY lat) AS p50, \
                percentile_cont(0.95) WITHIN GROUP (ORDER BY lat) AS p95, \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY lat) AS p99, \
                max(lat) AS max, \
                extract(epoch FROM max(done) - min(sent))::float8 AS span \
         FROM (SELECT extract(epoch FROM c.updated_at - s.sent_dttm)::float8 AS lat, \
                      c.updated_at AS done, s.sent_dttm AS sent \
               FROM stg.order_events s \
               JOIN dds.order_load_state d ON d.order_id = s.object_id \
               JOIN cdm.order_state c ON c.order_id = d.h_order_pk AND c.update_ts = s.update_ts \
               WHERE s.object_id BETWEEN $1 AND $2) x",
    )
    .bind::<BigInt, _>(first_id)
    .bind::<BigInt, _>(last_id)
    .get_result(&mut conn)
    .await?;

    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("{:.0} ms", s * 1000.0));
    let throughput = latency.orders as f64 / latency.span.unwrap_or(f64::INFINITY).max(1e-9);
    let all_arrived = latency.orders == (per_tick * ticks) as i64;
    let kept_up = throughput >= options.rate as f64 * 0.95;
    let p99_ok = latency
        .p99
        .is_some_and(|p99| p99 * 1000.0 <= options.p99_ms);
    println!(
        "orders through to the datamart  {} of {}",
        latency.orders,
        per_tick * ticks
    );
    println!(
        "caught up after                 {:.1} s",
        caught_up.as_secs_f64()
    );
    println!(
        "throughput (first sent .. last counted)  {throughput:.0} orders/s (target ≥ {:.0})",
        options.rate as f64 * 0.95
    );
    println!(
        "latency sent → counted          p50 {}  p95 {}  p99 {} (target ≤ {} ms)  max {}",
        ms(latency.p50),
        ms(latency.p95),
        ms(latency.p99),
        options.p99_ms,
        ms(latency.max)
    );
    let pass = all_arrived && kept_up && p99_ok;
    println!(
        "result                          {}",
        if pass { "PASS" } else { "FAIL" }
    );
    Ok(pass)
}
