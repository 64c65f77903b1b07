//! vault-bench: the benchmark of a running pipeline, in two modes.
//!
//! ```text
//! vault-bench [latency] [--rate ORDERS_PER_SECOND] [--seconds N] [--p99-ms MS] [--warm-up-s S] [--warm-up-burst N] [--json FILE] [--plots DIR]
//! vault-bench drain [--orders N] [--seed S] [--reference] [--timeout-s S] [--warm-up-s S] [--warm-up-burst N] [--json FILE] [--plots DIR]
//! ```
//! Both first warm the pipeline up (`--warm-up-s`, 10 s at 1,000 orders/s by default, then
//! `--warm-up-burst`, 20,000 orders as fast as they go; not measured): what is measured is a
//! pipeline that has been running, as in production.
//! **latency** (the default) produces synthetic orders (from the dictionaries in Redis, as
//! datagen does) to the raw topic at a steady rate for N seconds, waits until every service
//! has committed everything, then measures, per order, the time from its `sent_dttm` (stamped
//! when produced) to the commit of its counters in the datamart. It exits 1 when the pipeline
//! fell behind the rate or the p99 latency exceeds its target.
//!
//! **drain** produces N orders (with their cancellations and later versions) as fast as the
//! broker takes them and times them from the first produce until the datamart reflects every
//! order's latest version: orders/s end to end and per stage. It fails when the counters
//! differ from the recount over the Data Vault. `--reference` also applies the same rows with
//! set-based SQL to a scratch database and prints the ratio (datagen/src/bench/reference.rs).
//!
//! Both report each process's CPU time and memory (datagen/src/bench/processes.rs), can write
//! their figures as JSON and plot the latencies as SVG. Connection settings as for the services
//! (`KAFKA_BOOTSTRAP_SERVERS`, `REDIS_URL`, `DATABASE_URL`, ...; `KAFKA_DESTINATION_TOPIC` and
//! `PIPELINE_{STG,DDS,CDM}_{GROUP,TOPIC}` when the pipeline runs on topics and groups of its
//! own). `scripts/bench.sh` runs it against the local stack.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use datagen::bench::latency::{self, Summary};
use datagen::bench::processes::Processes;
use datagen::bench::progress::Progress;
use datagen::bench::{plot, reference};
use datagen::dictionary::Dictionary;
use datagen::generate::Generator;
use diesel::sql_types::{BigInt, Nullable};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use rand::SeedableRng;
use serde_json::{json, Value};
use vault_runtime::{
    pg_pool, producer, publish, redis_pool, wait_caught_up, FutureProducer, HopsLag, PgPool,
    ProcessEnv, SessionLimits, Settings,
};

const TICK: Duration = Duration::from_millis(100);
/// Orders generated and produced at a time by the drain (datagen's push uses the same).
const DRAIN_CHUNK: u64 = 2000;
/// How often the drain asks the broker how far the pipeline got.
const POLL_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Parser)]
#[command(
    name = "vault-bench",
    about = "Benchmarks a running Vaultline pipeline: latency at a steady rate (the default), \
             or a drain of N orders.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Without a subcommand: the latency mode's options.
    #[command(flatten)]
    latency: LatencyArgs,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Orders at a steady rate; latency percentiles sent → counted (the default mode).
    Latency(LatencyArgs),
    /// N orders as fast as the broker takes them; orders/s until the datamart has them all.
    Drain(DrainArgs),
}

#[derive(Debug, Clone, Args)]
struct LatencyArgs {
    /// Orders per second (at least 10).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..))]
    rate: u64,
    /// How long to produce, in seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// The p99 latency target in milliseconds.
    #[arg(long = "p99-ms", default_value_t = 1000.0)]
    p99_ms: f64,
    #[command(flatten)]
    warm_up: WarmUp,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Clone, Args)]
struct DrainArgs {
    /// How many orders (their later versions come on top, about a tenth).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    orders: u64,
    /// The generator's seed (a random one, printed, by default).
    #[arg(long)]
    seed: Option<u64>,
    /// Also apply the same rows with set-based SQL to a scratch database, and compare.
    #[arg(long)]
    reference: bool,
    /// Give up when the datamart has not reflected every order after this many seconds.
    #[arg(long = "timeout-s", default_value_t = 900)]
    timeout_s: u64,
    #[command(flatten)]
    warm_up: WarmUp,
    #[command(flatten)]
    output: Output,
}

/// A warm-up before the measurement: the pipeline measured is one that has been running, as
/// in production. A broker just (re)started spends its first seconds compiling its hot paths
/// (the JVM's JIT): in one run a cold Kafka took 6.3 CPU-seconds for a 50,000-order drain and
/// 3.3 warm, and the p99 at 1,000 orders/s was 659 ms cold against 294 ms warm. A steady
/// warm-up alone leaves the paths of a full-speed stream to be compiled during the
/// measurement (2.2 of a drain's 4.4 Kafka CPU-seconds were its C2 compiler's), hence the
/// burst after it.
#[derive(Debug, Clone, Args)]
struct WarmUp {
    /// Seconds of orders at 1,000 a second before the measurement, not counted in it
    /// (0: none).
    #[arg(long = "warm-up-s", default_value_t = 10)]
    warm_up_s: u64,
    /// Then this many orders as fast as the broker takes them (with their later versions, as
    /// a drain's), not counted either (0: none).
    #[arg(long = "warm-up-burst", default_value_t = 20_000)]
    warm_up_burst: u64,
}

#[derive(Debug, Clone, Args)]
struct Output {
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the latency over time and its histogram as SVG into this directory.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// The commit the figures belong to (default: `git rev-parse --short HEAD`).
    #[arg(long)]
    commit: Option<String>,
    /// Where `scripts/run.sh` and `scripts/stack.sh` keep their pid files.
    #[arg(long, default_value = ".stack")]
    stack_dir: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from(&ProcessEnv, datagen::PROFILE_BENCH) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("vault-bench: {error}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.mode {
        None => latency_mode(&settings, &cli.latency).await,
        Some(Mode::Latency(args)) => latency_mode(&settings, &args).await,
        Some(Mode::Drain(args)) => drain_mode(&settings, &args).await,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("vault-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// What both modes connect to.
struct Bench {
    pg: PgPool,
    producer: FutureProducer,
    topic: String,
    redis: vault_runtime::RedisPool,
    dictionary: Dictionary,
}

impl Bench {
    async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let redis_settings = settings.redis.as_ref().context("Redis settings")?;
        let redis = redis_pool(redis_settings)?;
        let dictionary = datagen::dictionary::load_or_seed(&redis, 42).await?;
        Ok(Self {
            pg: pg_pool(&settings.postgres, SessionLimits::OPERATOR),
            producer: producer(&settings.kafka)?,
            topic: settings
                .kafka
                .destination_topic
                .clone()
                .context("KAFKA_DESTINATION_TOPIC")?,
            redis,
            dictionary,
        })
    }
}

/// Produces `per_tick` orders every tick (a tenth of a second) for `ticks` ticks, with ids
/// from `first_id`; returns how many ticks were late.
async fn produce_steadily(
    bench: &Bench,
    first_id: i64,
    per_tick: u64,
    ticks: u64,
    label: &'static str,
) -> anyhow::Result<u32> {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut progress = Progress::new(label, per_tick * ticks);
    let started = Instant::now();
    let mut behind = 0_u32;
    for tick in 0..ticks {
        let due = started + TICK * tick as u32;
        tokio::time::sleep_until(due.into()).await;
        let from = first_id + (tick * per_tick) as i64;
        let orders = datagen::generate::orders(&mut rng, &bench.dictionary, from, per_tick);
        let messages = datagen::messages(&orders)?;
        publish(&bench.producer, &bench.topic, &messages).await?;
        if Instant::now() > due + TICK {
            behind += 1;
        }
        progress.set((tick + 1) * per_tick);
    }
    progress.finish();
    Ok(behind)
}

/// Waits until every hop's group has committed everything on its topic: the pipeline's hops
/// (`PIPELINE_{STG,DDS,CDM}_{GROUP,TOPIC}`, the defaults unless set), so that a benchmark can
/// run on topics and groups of its own.
async fn caught_up(settings: &Settings) -> anyhow::Result<()> {
    wait_caught_up(
        &settings.kafka,
        &pipeline_hops(settings),
        Duration::from_secs(600),
        |_, _| {},
    )
    .await?;
    Ok(())
}

/// The pipeline's (consumer group, topic) hops, in order.
fn pipeline_hops(settings: &Settings) -> Vec<(&str, &str)> {
    settings
        .pipeline
        .iter()
        .map(|hop| (hop.group.as_str(), hop.topic.as_str()))
        .collect()
}

/// Runs the warm-up ([`WarmUp`]): orders at 1,000 a second, then a burst, each until the
/// pipeline has caught up with it. Its orders have ids of their own, outside the measured
/// range.
async fn warm_up(bench: &Bench, settings: &Settings, options: &WarmUp) -> anyhow::Result<()> {
    if options.warm_up_s > 0 {
        const PER_TICK: u64 = 100;
        let ticks = options.warm_up_s * 10;
        let ids = datagen::order_ids::OrderIds::default()
            .reserve(&bench.redis, PER_TICK * ticks)
            .await?;
        let started = Instant::now();
        produce_steadily(bench, ids.first, PER_TICK, ticks, "warm-up").await?;
        warmed(
            settings,
            started,
            &format!("{} orders at 1000 orders/s", PER_TICK * ticks),
        )
        .await?;
    }
    let n = options.warm_up_burst;
    if n > 0 {
        let ids = datagen::order_ids::OrderIds::default()
            .reserve(&bench.redis, n)
            .await?;
        let started = Instant::now();
        produce_burst(
            bench,
            ids.first,
            n,
            rand::random(),
            Utc::now(),
            "warm-up burst",
        )
        .await?;
        warmed(settings, started, &format!("{n} orders at once")).await?;
    }
    Ok(())
}

/// Waits until the pipeline has caught up with one part of the warm-up (`what`, produced
/// from `started` on), and says so.
async fn warmed(settings: &Settings, started: Instant, what: &str) -> anyhow::Result<()> {
    caught_up(settings).await?;
    println!(
        "warm-up: {what}, caught up after {:.1} s (not measured)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Produces `n` orders from `first_id` on (with their cancellations and later versions,
/// dated around `now`) as fast as the broker takes them; returns the number of messages.
async fn produce_burst(
    bench: &Bench,
    first_id: i64,
    n: u64,
    seed: u64,
    now: DateTime<Utc>,
    label: &'static str,
) -> anyhow::Result<u64> {
    let mut generator = Generator::new(
        rand::rngs::StdRng::seed_from_u64(seed),
        &bench.dictionary,
        first_id,
        n,
        now,
    );
    let mut progress = Progress::new(label, n);
    let mut messages = 0_u64;
    while generator.remaining() > 0 {
        let chunk = generator.next_chunk(DRAIN_CHUNK);
        let out = datagen::messages(&chunk)?;
        publish(&bench.producer, &bench.topic, &out).await?;
        messages += out.len() as u64;
        progress.set(n - generator.remaining());
    }
    progress.finish();
    Ok(messages)
}

async fn latency_mode(settings: &Settings, options: &LatencyArgs) -> anyhow::Result<bool> {
    let bench = Bench::connect(settings).await?;
    warm_up(&bench, settings, &options.warm_up).await?;
    let per_tick = options.rate / 10;
    let ticks = options.seconds * 10;
    let total = per_tick * ticks;
    let ids = datagen::order_ids::OrderIds::default()
        .reserve(&bench.redis, total)
        .await?;
    let (first_id, last_id) = (ids.first, ids.last);
    println!(
        "vault-bench: {} orders/s for {} s ({total} orders, ids {first_id}..{last_id}, plus ~10% later versions)",
        options.rate, options.seconds
    );
    let processes = Processes::local(&options.output.stack_dir, database(settings).as_deref());
    let sampler = processes.sample_in_background();
    let started = Instant::now();
    let behind = produce_steadily(&bench, first_id, per_tick, ticks, "produce").await?;
    let produced_in = started.elapsed();
    println!(
        "produced in {:.1} s ({} ticks late)",
        produced_in.as_secs_f64(),
        behind
    );
    caught_up(settings).await?;
    let caught_up = started.elapsed();
    sampler.abort();
    processes.sample();

    let mut conn = bench.pg.get().await?;
    let samples = latency::samples(&mut conn, first_id, last_id).await?;
    let summary = Summary::of(&samples);
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |ms| format!("{ms:.0} ms"));
    let throughput = summary.orders as f64 / summary.span_s.unwrap_or(f64::INFINITY).max(1e-9);
    let all_arrived = summary.orders as u64 == total;
    let kept_up = throughput >= options.rate as f64 * 0.95;
    let p99_ok = summary.p99_ms.is_some_and(|p99| p99 <= options.p99_ms);
    println!(
        "orders through to the datamart  {} of {total}",
        summary.orders
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
        ms(summary.p50_ms),
        ms(summary.p95_ms),
        ms(summary.p99_ms),
        options.p99_ms,
        ms(summary.max_ms)
    );
    let report = processes.report();
    print!("{}", report.text());
    let pass = all_arrived && kept_up && p99_ok;
    println!(
        "result                          {}",
        if pass { "PASS" } else { "FAIL" }
    );
    let result = json!({
        "mode": "latency",
        "warm_up_s": options.warm_up.warm_up_s,
        "rate": options.rate,
        "seconds": options.seconds,
        "orders": total,
        "first_order_id": first_id,
        "last_order_id": last_id,
        "produced_s": produced_in.as_secs_f64(),
        "ticks_late": behind,
        "caught_up_s": caught_up.as_secs_f64(),
        "throughput_orders_per_s": throughput,
        "latency": summary,
        "p99_target_ms": options.p99_ms,
        "processes": report.processes,
        "machine": report.machine,
        "pass": pass,
    });
    write_output(&options.output, result, "latency", &samples)?;
    Ok(pass)
}

#[derive(Debug, QueryableByName)]
struct StageEnds {
    #[diesel(sql_type = Nullable<diesel::sql_types::Double>)]
    stg: Option<f64>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Double>)]
    dds: Option<f64>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Double>)]
    cdm: Option<f64>,
}

#[derive(Debug, QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(
    conn: &mut AsyncPgConnection,
    sql: &str,
    range: Option<(i64, i64)>,
) -> anyhow::Result<i64> {
    let sql = format!("SELECT ({sql}) AS n");
    let count: Count = match range {
        Some((first, last)) => {
            diesel::sql_query(sql)
                .bind::<BigInt, _>(first)
                .bind::<BigInt, _>(last)
                .get_result(conn)
                .await?
        }
        None => diesel::sql_query(sql).get_result(conn).await?,
    };
    Ok(count.n)
}

async fn drain_mode(settings: &Settings, options: &DrainArgs) -> anyhow::Result<bool> {
    let bench = Bench::connect(settings).await?;
    warm_up(&bench, settings, &options.warm_up).await?;
    let n = options.orders;
    let seed = options.seed.unwrap_or_else(rand::random);
    let ids = datagen::order_ids::OrderIds::default()
        .reserve(&bench.redis, n)
        .await?;
    let (first_id, last_id) = (ids.first, ids.last);
    println!(
        "vault-bench drain: {n} orders (ids {first_id}..{last_id}, plus ~10% later versions), seed {seed}"
    );
    let processes = Processes::local(&options.output.stack_dir, database(settings).as_deref());
    let sampler = processes.sample_in_background();
    let now = Utc::now();
    let started_at = Utc::now();
    let started = Instant::now();
    let messages = produce_burst(&bench, first_id, n, seed, now, "produce").await?;
    let produced_in = started.elapsed();
    println!(
        "produced {messages} messages in {:.1} s ({:.0} orders/s)",
        produced_in.as_secs_f64(),
        n as f64 / produced_in.as_secs_f64().max(1e-9)
    );

    let mut conn = bench.pg.get().await?;
    let range = Some((first_id, last_id));
    // While the pipeline drains, only the broker is asked how far it got: a count in the
    // warehouse costs Postgres a join over the range (5 of its 26 CPU-seconds in a 100,000-
    // order drain when polled twice a second). The warehouse is asked once every hop has
    // committed everything, and again only if it is not complete yet.
    let hops = HopsLag::new(&settings.kafka, &pipeline_hops(settings))?;
    let mut progress = Progress::new("pipeline", messages);
    let limit = Duration::from_secs(options.timeout_s);
    loop {
        // A read that fails (a coordinator moving) is asked again; only the limit ends it.
        let outstanding = hops.outstanding().await.ok();
        if let Some(outstanding) = outstanding {
            progress.set(messages.saturating_sub(outstanding.max(0) as u64));
        }
        let counted = if outstanding == Some(0) {
            latency::counted(&mut conn, first_id, last_id).await?
        } else {
            0
        };
        // Every order at dds's latest version, and every version in the Data Vault: then
        // that latest version is the order's last.
        if counted as u64 == n {
            let versions = count(
                &mut conn,
                "SELECT count(*) FROM dds.s_order_version WHERE order_id BETWEEN $1 AND $2",
                range,
            )
            .await?;
            if versions as u64 == messages {
                break;
            }
        }
        if started.elapsed() > limit {
            progress.finish();
            let counted = latency::counted(&mut conn, first_id, last_id).await?;
            println!(
                "the datamart reflects {counted} of {n} orders after {} s: giving up",
                options.timeout_s
            );
            return Ok(false);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    progress.finish();
    sampler.abort();
    processes.sample();
    let report = processes.report();

    let ends: StageEnds = diesel::sql_query(
        "SELECT extract(epoch FROM (SELECT max(load_dt) FROM stg.order_events \
                    WHERE object_id BETWEEN $1 AND $2))::float8 AS stg, \
                extract(epoch FROM (SELECT max(load_dt) FROM dds.order_load_state \
                    WHERE order_id BETWEEN $1 AND $2))::float8 AS dds, \
                extract(epoch FROM (SELECT max(c.updated_at) FROM cdm.order_state c \
                    JOIN dds.order_load_state d ON d.h_order_pk = c.order_id \
                    WHERE d.order_id BETWEEN $1 AND $2))::float8 AS cdm",
    )
    .bind::<BigInt, _>(first_id)
    .bind::<BigInt, _>(last_id)
    .get_result(&mut conn)
    .await?;
    let start = started_at.timestamp_micros() as f64 / 1e6;
    let rate = |end: Option<f64>| end.map(|end| n as f64 / (end - start).max(1e-9));
    let seconds = |end: Option<f64>| end.map(|end| end - start);
    let end_to_end = rate(ends.cdm);
    println!("first produce → last committed, orders/s:");
    for (stage, end) in [("stg", ends.stg), ("dds", ends.dds), ("cdm", ends.cdm)] {
        println!(
            "  {stage}  {:>8.0} orders/s  ({:.1} s)",
            rate(end).unwrap_or(0.0),
            seconds(end).unwrap_or(0.0)
        );
    }
    println!(
        "end to end (first produce → every order counted)  {:.0} orders/s",
        end_to_end.unwrap_or(0.0)
    );

    let samples = latency::samples(&mut conn, first_id, last_id).await?;
    let summary = Summary::of(&samples);
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |ms| format!("{ms:.0} ms"));
    println!(
        "latency produce → counted       p50 {}  p95 {}  p99 {}  max {}",
        ms(summary.p50_ms),
        ms(summary.p95_ms),
        ms(summary.p99_ms),
        ms(summary.max_ms)
    );
    let checking = Instant::now();
    let differences = count(&mut conn, reference::DIFFERENCES_SQL, None).await?;
    println!(
        "counters, PIT against history   {differences} differ ({:.1} s to check)",
        checking.elapsed().as_secs_f64()
    );
    print!("{}", report.text());
    let mut pass = differences == 0;

    let mut reference_json = Value::Null;
    if options.reference {
        let (figures, rows_match) = run_reference(
            settings,
            &mut conn,
            &reference::Range {
                dictionary: &bench.dictionary,
                seed,
                first_id,
                orders: n,
                now,
                chunk: DRAIN_CHUNK,
            },
            end_to_end,
        )
        .await?;
        pass &= rows_match;
        reference_json = figures;
    }
    println!(
        "result                          {}",
        if pass { "PASS" } else { "FAIL" }
    );
    let result = json!({
        "mode": "drain",
        "warm_up_s": options.warm_up.warm_up_s,
        "orders": n,
        "messages": messages,
        "seed": seed,
        "first_order_id": first_id,
        "last_order_id": last_id,
        "produce_s": produced_in.as_secs_f64(),
        "produce_orders_per_s": n as f64 / produced_in.as_secs_f64().max(1e-9),
        "stages": {
            "stg": {"seconds": seconds(ends.stg), "orders_per_s": rate(ends.stg)},
            "dds": {"seconds": seconds(ends.dds), "orders_per_s": rate(ends.dds)},
            "cdm": {"seconds": seconds(ends.cdm), "orders_per_s": rate(ends.cdm)},
        },
        "end_to_end_orders_per_s": end_to_end,
        "latency": summary,
        "counter_differences": differences,
        "processes": report.processes,
        "machine": report.machine,
        "reference": reference_json,
        "pass": pass,
    });
    write_output(&options.output, result, "drain", &samples)?;
    Ok(pass)
}

/// Runs the reference and compares its rows with the pipeline's for the range: the tables of
/// one order always, the rest when the warehouse holds nothing but this range (bench.sh's
/// fresh database). Returns its figures and whether the rows match.
async fn run_reference(
    settings: &Settings,
    conn: &mut AsyncPgConnection,
    range: &reference::Range<'_>,
    pipeline_rate: Option<f64>,
) -> anyhow::Result<(Value, bool)> {
    println!("reference: the same rows with set-based SQL into a scratch database ...");
    let figures = reference::run(settings.postgres.url.expose(), range).await?;
    let n = range.orders;
    let rate = n as f64 / figures.apply.as_secs_f64().max(1e-9);
    println!(
        "reference                       {rate:.0} orders/s (apply {:.1} s; preparing the rows in memory {:.1} s)",
        figures.apply.as_secs_f64(),
        figures.prepare.as_secs_f64()
    );
    let ratio = pipeline_rate.map(|p| p / rate);
    if let Some(ratio) = ratio {
        println!(
            "pipeline ÷ reference            {ratio:.3} (the pipeline reaches {:.1} % of the database alone)",
            ratio * 100.0
        );
    }
    let last = range.first_id + n as i64 - 1;
    let whole = count(conn, "SELECT count(*) FROM dds.h_order", None).await? as u64 == n;
    let mut rows = serde_json::Map::new();
    let mut all_match = figures.differences == 0;
    let order_scoped = reference::order_scoped();
    for (table, sql) in reference::all_tables() {
        let scoped = order_scoped
            .iter()
            .find(|(name, _)| *name == table)
            .map(|(_, sql)| sql.as_str());
        let pipeline = match (scoped, whole) {
            (Some(sql), _) => Some(count(conn, sql, Some((range.first_id, last))).await?),
            (None, true) => Some(count(conn, &sql, None).await?),
            (None, false) => None,
        };
        let written = figures.rows.get(&table).copied().unwrap_or(0);
        let matches = pipeline.is_none_or(|p| p == written);
        all_match &= matches;
        if !matches {
            println!(
                "  rows differ in {table}: pipeline {} reference {written}",
                pipeline.unwrap_or(0)
            );
        }
        rows.insert(
            table,
            json!({"reference": written, "pipeline": pipeline, "match": matches}),
        );
    }
    println!(
        "reference rows                  {} ({} tables{}); its own recount: {} differ",
        if all_match {
            "as the pipeline's"
        } else {
            "DIFFER"
        },
        rows.len(),
        if whole {
            ""
        } else {
            "; shared tables not compared: the warehouse holds other orders"
        },
        figures.differences
    );
    Ok((
        json!({
            "orders_per_s": rate,
            "apply_s": figures.apply.as_secs_f64(),
            "prepare_s": figures.prepare.as_secs_f64(),
            "pipeline_over_reference": ratio,
            "rows": rows,
            "rows_match": all_match,
            "recount_differences": figures.differences,
        }),
        all_match,
    ))
}

/// The JSON file and the plots, when asked for.
fn write_output(
    output: &Output,
    mut result: Value,
    title: &str,
    samples: &[latency::Sample],
) -> anyhow::Result<()> {
    if let Some(dir) = &output.plots {
        let paths = plot::write(dir, &format!("vault-bench {title}"), samples)?;
        println!("plots                           {}", paths.join(", "));
        result["plots"] = json!(paths);
    }
    if let Some(file) = &output.json {
        result["commit"] = json!(output.commit.clone().or_else(git_commit));
        result["at"] = json!(Utc::now().to_rfc3339());
        std::fs::write(file, serde_json::to_string_pretty(&result)? + "\n")
            .with_context(|| format!("writing {}", file.display()))?;
        println!("figures                         {}", file.display());
    }
    Ok(())
}

/// The warehouse database's name, whose Postgres backends count as the pipeline's.
fn database(settings: &Settings) -> Option<String> {
    let url = settings.postgres.url.expose();
    let name = url.rsplit_once('/')?.1;
    Some(name.split('?').next().unwrap_or(name).to_owned())
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(Path::new("."))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
