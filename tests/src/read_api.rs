//! What the read-side tests share: a client of service-cdm's read API that checks every
//! answer against `docs/openapi.json` and records which documented routes it has seen, and a
//! warehouse to read, filled through the pipeline.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use datagen::dictionary::{synthetic, Dictionary};
use rand::SeedableRng;
use serde_json::Value;
use vault_core::RawOrder;

use crate::eventually;
use crate::expect;
use crate::openapi::OpenApi;
use crate::pipeline::{http_with, Pipeline, Service};

/// How long the pipeline may take to process what a test sends.
pub const SETTLE: Duration = Duration::from_secs(180);

/// A client of the read API that holds every answer to the OpenAPI document.
#[derive(Debug)]
pub struct ApiClient {
    pub addr: SocketAddr,
    /// Sent as `Authorization: Bearer <token>` (the pipeline's `API_TOKEN`).
    pub token: String,
    doc: OpenApi,
    /// The documented routes answered so far.
    seen: Mutex<BTreeSet<String>>,
}

impl ApiClient {
    pub fn new(p: &Pipeline) -> anyhow::Result<Self> {
        Ok(Self {
            addr: p
                .http_addr(Service::Cdm)
                .context("service-cdm is not running")?,
            token: p.api_token.clone(),
            doc: OpenApi::load()?,
            seen: Mutex::new(BTreeSet::new()),
        })
    }

    /// `GET path`: the status and the JSON body, after checking the body against the schema
    /// the document gives for the route and status (an error body for an undocumented route).
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.request("GET", path).await
    }

    pub async fn request(&self, method: &str, path: &str) -> anyhow::Result<(u16, Value)> {
        let authorization = format!("Bearer {}", self.token);
        let (status, _, json) = self.request_as(method, path, Some(&authorization)).await?;
        Ok((status, json))
    }

    /// `method path` with this `Authorization` header (or none), checked against the document
    /// like every answer; also returns the response's headers.
    pub async fn request_as(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
    ) -> anyhow::Result<(u16, Vec<(String, String)>, Value)> {
        let headers: Vec<(&str, &str)> = authorization
            .map(|value| ("Authorization", value))
            .into_iter()
            .collect();
        let (status, response_headers, body) =
            http_with(self.addr, method, path, "", &headers).await?;
        let json: Value = serde_json::from_str(&body)
            .with_context(|| format!("{method} {path} answered {status} with non-JSON {body}"))?;
        match self.doc.template_of(path) {
            Some(template) if method == "GET" => {
                self.doc
                    .check(&template, status, &json)
                    .with_context(|| format!("GET {path}: {json}"))?;
                self.seen
                    .lock()
                    .expect("not poisoned")
                    .insert(template.clone());
            }
            _ => self
                .doc
                .check_schema("Error", &json)
                .with_context(|| format!("{method} {path} ({status})"))?,
        }
        Ok((status, response_headers, json))
    }

    /// The documented routes this client has not been answered on yet.
    pub fn unseen(&self) -> Vec<String> {
        let seen = self.seen.lock().expect("not poisoned");
        self.doc
            .paths()
            .into_iter()
            .filter(|path| !seen.contains(path))
            .collect()
    }
}

/// `text` percent-encoded for a path segment or query value (everything but unreserved
/// characters).
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A fresh dictionary in Redis and `count` generated orders (with datagen's share of
/// cancellations and later versions) sent through the pipeline and processed.
pub async fn fill(
    p: &Pipeline,
    users: usize,
    restaurants: usize,
    count: u64,
) -> anyhow::Result<(Dictionary, Vec<RawOrder>)> {
    let seed = uuid::Uuid::new_v4().as_u64_pair().0;
    let dictionary = synthetic(seed, users, restaurants);
    p.put_dictionary(&dictionary).await?;
    let orders = send(p, &dictionary, 1, count).await?;
    Ok((dictionary, orders))
}

/// Sends `count` more generated orders with ids from `first_id` and waits until the pipeline
/// has processed them.
pub async fn send(
    p: &Pipeline,
    dictionary: &Dictionary,
    first_id: i64,
    count: u64,
) -> anyhow::Result<Vec<RawOrder>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(first_id as u64);
    let orders = datagen::generate::orders(&mut rng, dictionary, first_id, count);
    p.produce_raw(&expect::messages(&orders)).await?;
    p.settle(SETTLE).await;
    Ok(orders)
}

/// Defines the tag `tag` (a category rule) and waits until service-cdm has applied it (its
/// holders granted, `cdm.tag_rules_applied` updated); checks that the holders are exactly the
/// users whose counter reaches the threshold.
pub async fn define_category_tag(
    p: &Pipeline,
    tag: &str,
    category: &str,
    threshold: i32,
) -> anyhow::Result<()> {
    let db = p.db().await?;
    db.execute(
        "INSERT INTO cdm.tag_rules (tag, scope, target, threshold) VALUES ($1, 'category', $2, $3)",
        &[&tag, &category, &threshold],
    )
    .await?;
    let what = format!("service-cdm to apply the rule {tag}");
    eventually(&what, Duration::from_secs(60), || async {
        let row = db
            .query_one(
                "SELECT count(*) FROM cdm.tag_rules_applied WHERE tag = $1 AND threshold = $2",
                &[&tag, &threshold],
            )
            .await
            .ok()?;
        (row.get::<_, i64>(0) == 1).then_some(())
    })
    .await;
    let row = db
        .query_one(
            "SELECT (SELECT array_agg(user_id ORDER BY user_id)::text FROM cdm.user_tags \
                     WHERE tag = $1) IS NOT DISTINCT FROM \
                    (SELECT array_agg(user_id ORDER BY user_id)::text \
                     FROM cdm.user_category_counters WHERE category_name = $2 \
                     AND order_cnt >= $3)",
            &[&tag, &category, &threshold],
        )
        .await?;
    anyhow::ensure!(
        row.get::<_, bool>(0),
        "the holders of {tag} are not the users the rule names"
    );
    Ok(())
}
