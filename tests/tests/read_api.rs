//! service-cdm's read API (docs/contract.md §6.4) end to end: orders through the real pipeline,
//! then every answer compared with the tables it reads, and every body checked against
//! `docs/openapi.json`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use vault_core::HashKey;
use vault_tests::eventually;
use vault_tests::pipeline::{Pipeline, Service};
use vault_tests::read_api::{define_category_tag, encode, fill, send, ApiClient};
use vault_tests::sql::Columns;

/// The raw answer to a request without a body, sent with the API's bearer token: the head
/// (status line and headers, lower-cased) and every byte the server sent after it, unparsed.
async fn raw_request(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
) -> anyhow::Result<(String, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await??;
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("{method} {path}: no end of head"))?;
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    Ok((head, response[end + 4..].to_vec()))
}

fn status_of(head: &str) -> Option<u16> {
    head.split_whitespace().nth(1)?.parse().ok()
}

fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim())
}

/// Rows of (id, name, order_cnt) as text, for comparing API answers with tables.
type Rows = BTreeSet<(String, String, i64)>;

fn rows(list: &Value, id: &str, name: &str) -> Rows {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|row| {
            (
                row[id].as_str().expect("id").to_owned(),
                row[name].as_str().expect("name").to_owned(),
                row["order_cnt"].as_i64().expect("order_cnt"),
            )
        })
        .collect()
}

async fn table_rows(p: &Pipeline, sql: &str, user: &str) -> anyhow::Result<Rows> {
    Ok(p.db()
        .await?
        .query(sql, &[&user])
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1), i64::from(row.get::<_, i32>(2))))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_api_answers_what_the_tables_hold_and_what_its_document_says() -> anyhow::Result<()>
{
    let p = Pipeline::start(2).await?;
    let (dictionary, _) = fill(&p, 25, 4, 400).await?;
    let api = ApiClient::new(&p)?;

    // Counters: by source id and by hub key, exactly the rows with order_cnt > 0.
    for user in &dictionary.users {
        let source = user.id.as_str();
        let key = HashKey::of(source).to_string();
        let (status, by_source) = api.get(&format!("/api/v1/users/{source}/counters")).await?;
        assert_eq!(status, 200, "{by_source}");
        let (_, by_key) = api.get(&format!("/api/v1/users/{key}/counters")).await?;
        assert_eq!(by_source, by_key);
        assert_eq!(by_source["user_id"], key.as_str());
        let products = table_rows(
            &p,
            "SELECT product_id::text, product_name, order_cnt FROM cdm.user_product_counters \
             WHERE user_id = $1::text::uuid AND order_cnt > 0",
            &key,
        )
        .await?;
        let categories = table_rows(
            &p,
            "SELECT category_id::text, category_name, order_cnt FROM cdm.user_category_counters \
             WHERE user_id = $1::text::uuid AND order_cnt > 0",
            &key,
        )
        .await?;
        assert_eq!(
            rows(&by_source["products"], "product_id", "product_name"),
            products
        );
        assert_eq!(
            rows(&by_source["categories"], "category_id", "category_name"),
            categories
        );
        let counts: Vec<i64> = by_source["products"]
            .as_array()
            .expect("products")
            .iter()
            .map(|row| row["order_cnt"].as_i64().expect("order_cnt"))
            .collect();
        assert!(
            counts.windows(2).all(|w| w[0] >= w[1]),
            "largest first: {counts:?}"
        );
    }

    // A tag whose name needs percent-encoding, held by the users with at least two orders in
    // the most popular category; a second one nobody holds.
    let category: String = p
        .db()
        .await?
        .one(
            "SELECT category_name FROM cdm.user_category_counters \
             GROUP BY category_name ORDER BY count(*) DESC, category_name LIMIT 1",
        )
        .await?;
    let tag = "Любитель «выпечки» & co/2 🍕";
    let nobody = "Never Anyone";
    define_category_tag(&p, tag, &category, 2).await?;
    define_category_tag(&p, nobody, &category, 1_000_000).await?;
    let holders: Vec<String> = p
        .db()
        .await?
        .query(
            "SELECT user_id::text FROM cdm.user_tags WHERE tag = $1 ORDER BY user_id",
            &[&tag],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(holders.len() >= 3, "enough holders to page: {holders:?}");

    // Each user's tags are what cdm.user_tags holds for them.
    for user in &dictionary.users {
        let key = HashKey::of(user.id.as_str()).to_string();
        let (status, body) = api.get(&format!("/api/v1/users/{key}/tags")).await?;
        assert_eq!(status, 200);
        let tags: Vec<&str> = body["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .map(|t| t["tag"].as_str().expect("tag"))
            .collect();
        let expected: Vec<&str> = if holders.contains(&key) {
            vec![tag]
        } else {
            vec![]
        };
        assert_eq!(tags, expected, "{key}");
    }

    // The rules with their holders (cached for a couple of seconds).
    let rules = eventually(
        "the rules with their holders",
        Duration::from_secs(15),
        || async {
            let (_, body) = api.get("/api/v1/tags").await.ok()?;
            let find = |name: &str| {
                body["tags"]
                    .as_array()?
                    .iter()
                    .find(|t| t["tag"] == name)
                    .cloned()
            };
            let (ours, none) = (find(tag)?, find(nobody)?);
            (ours["holders"] == holders.len() && none["holders"] == 0).then_some(ours)
        },
    )
    .await;
    assert_eq!(rules["scope"], "category");
    assert_eq!(rules["target"], category.as_str());
    assert_eq!(rules["threshold"], 2);
    assert_eq!(rules["applied"], true, "{rules}");
    assert!(rules["applied_at"].is_string(), "{rules}");

    // Paging visits every holder once, in user_id order, and `next` is absent on the last page.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let path = format!("/api/v1/tags/{}/users", encode(tag));
    loop {
        let query = match &after {
            Some(cursor) => format!("?limit=2&after={cursor}"),
            None => "?limit=2".to_owned(),
        };
        let (status, page) = api.get(&format!("{path}{query}")).await?;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["tag"], tag);
        let users = page["users"].as_array().expect("users");
        assert!(users.len() <= 2);
        seen.extend(
            users
                .iter()
                .map(|u| u["user_id"].as_str().expect("user_id").to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
        assert!(seen.len() <= holders.len(), "paging does not end");
    }
    assert_eq!(seen, holders);
    let (_, all) = api.get(&format!("{path}?limit=1000")).await?;
    assert_eq!(all["users"].as_array().map(Vec::len), Some(holders.len()));
    assert!(all["next"].is_null());
    let (status, empty) = api
        .get(&format!("/api/v1/tags/{}/users", encode(nobody)))
        .await?;
    assert_eq!(
        (status, empty["users"].clone()),
        (200, Value::Array(vec![]))
    );

    // An unknown user is no error; malformed input, unknown tags and routes are, in JSON.
    let (status, unknown) = api
        .get("/api/v1/users/0123456789abcdef01234567/counters")
        .await?;
    assert_eq!(status, 200);
    assert_eq!(unknown["products"], Value::Array(vec![]));
    assert_eq!(unknown["categories"], Value::Array(vec![]));
    let (status, _) = api
        .get("/api/v1/users/0123456789abcdef01234567/tags")
        .await?;
    assert_eq!(status, 200);
    for (path, status, code) in [
        ("/api/v1/users/not-a-user/counters", 400, "invalid_user"),
        (
            "/api/v1/users/0123456789abcdef0123456/tags",
            400,
            "invalid_user",
        ),
        (&format!("{path}?limit=0"), 400, "invalid_limit"),
        (&format!("{path}?limit=1001"), 400, "invalid_limit"),
        (&format!("{path}?limit=many"), 400, "invalid_limit"),
        (&format!("{path}?after=zzz"), 400, "invalid_cursor"),
        ("/api/v1/tags/No%20Such%20Tag/users", 404, "unknown_tag"),
        ("/api/v1/nothing", 404, "not_found"),
        ("/api/v2/tags", 404, "not_found"),
    ] {
        let (got, body) = api.get(path).await?;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{path}"
        );
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, body) = api.request("POST", "/api/v1/tags").await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (status, body) = api.request("DELETE", "/api/v1/nothing").await?;
    assert_eq!(status, 404, "{body}");

    // The dashboard's routes, and the document itself, are served too.
    let (status, _) = api.get("/api/v1/pipeline").await?;
    assert_eq!(status, 200);
    let (status, _) = api.get("/api/v1/pipeline/history").await?;
    assert_eq!(status, 200);
    let (status, _) = api.get("/api/v1/summary").await?;
    assert_eq!(status, 200);
    let (status, document) = api.get("/api/v1/openapi.json").await?;
    assert_eq!((status, document["openapi"].as_str()), (200, Some("3.1.0")));
    assert_eq!(
        api.unseen(),
        Vec::<String>::new(),
        "documented but never served"
    );
    p.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_and_summary_report_progress_throughput_and_dead_letters() -> anyhow::Result<()>
{
    let p = Pipeline::start(2).await?;
    let (dictionary, orders) = fill(&p, 20, 3, 200).await?;
    let api = ApiClient::new(&p)?;

    // At rest: every stage's group is this test's, with everything committed (in a sample
    // the service takes after the orders: it samples once a second).
    let before = eventually("a sample at rest", Duration::from_secs(10), || async {
        let (_, body) = api.get("/api/v1/pipeline").await.ok()?;
        let stages = body["stages"].as_array()?;
        (stages[0]["committed"] == orders.len() && stages.iter().all(|s| s["lag"] == 0))
            .then_some(body)
    })
    .await;
    let stages = before["stages"].as_array().expect("stages");
    let groups: Vec<&str> = stages
        .iter()
        .map(|s| s["group"].as_str().expect("group"))
        .collect();
    assert_eq!(
        groups,
        [
            p.group(Service::Stg),
            p.group(Service::Dds),
            p.group(Service::Cdm)
        ]
    );
    for stage in stages {
        assert_eq!(stage["lag"], 0, "{stage}");
        assert!(stage["error"].is_null(), "{stage}");
        // Each partition on its own line, adding up to the stage's offsets.
        let partitions = stage["partitions"].as_array().expect("partitions");
        assert_eq!(partitions.len(), 2, "{stage}");
        let committed: i64 = partitions
            .iter()
            .map(|q| q["committed"].as_i64().expect("committed"))
            .sum();
        assert_eq!(stage["committed"], committed, "{stage}");
        assert!(partitions.iter().all(|q| q["lag"] == 0), "{stage}");
    }
    assert_eq!(stages[0]["committed"], orders.len());

    // More orders: the samples the service takes once a second, summed over their windows,
    // account for exactly the new messages.
    let more = send(&p, &dictionary, 10_001, 300).await?;
    let total = orders.len() + more.len();
    let after = eventually(
        "a sample with every order",
        Duration::from_secs(10),
        || async {
            let (_, body) = api.get("/api/v1/pipeline").await.ok()?;
            (body["stages"][0]["committed"] == total).then_some(body)
        },
    )
    .await;
    let (_, history) = api.get("/api/v1/pipeline/history").await?;
    let samples = history["samples"].as_array().expect("samples");
    let from = samples
        .iter()
        .position(|s| s["sampled_at"] == before["sampled_at"])
        .expect("the earlier sample is kept");
    let to = samples
        .iter()
        .position(|s| s["sampled_at"] == after["sampled_at"])
        .expect("the later sample is kept");
    let committed: f64 = samples[from + 1..=to]
        .iter()
        .map(|s| {
            let window = s["window_seconds"].as_f64().expect("a window");
            assert!(window > 0.5 && window < 5.0, "a sample every second: {s}");
            s["stages"][0]["throughput"].as_f64().expect("throughput") * window
        })
        .sum();
    assert!(
        (committed - more.len() as f64).abs() < 1e-6 * more.len() as f64,
        "{committed} vs {}",
        more.len()
    );
    // Every stage committed messages since: each has an end-to-end latency.
    for stage in after["stages"].as_array().expect("stages") {
        let latency = &stage["latency"];
        assert!(latency["observations"].as_u64() > Some(0), "{stage}");
        let p50 = latency["p50_seconds"].as_f64().expect("p50");
        let p99 = latency["p99_seconds"].as_f64().expect("p99");
        assert!(0.0 <= p50 && p50 <= p99 && p99 < 60.0, "{stage}");
    }

    // A poison message becomes a dead letter of service-stg, and the summary says so.
    p.produce_raw(&[("poison".to_owned(), b"{not json".to_vec())])
        .await?;
    p.settle(vault_tests::read_api::SETTLE).await;
    let counted = p
        .count("SELECT count(*) FROM cdm.order_state WHERE counted")
        .await?;
    let summary = eventually(
        "the summary to show the dead letter",
        Duration::from_secs(20),
        || async {
            let (_, body) = api.get("/api/v1/summary").await.ok()?;
            (body["dead_letters"]["pending"] == 1 && body["orders"]["counted"] == counted)
                .then_some(body)
        },
    )
    .await;
    let by_service = &summary["dead_letters"]["by_service"];
    assert_eq!(by_service[0]["service"], "service-stg");
    assert_eq!(by_service[0]["total"], 1);
    // With where, why and when, as the table has them (the schema forbids key and payload).
    let (kind, reason, received_at): (String, String, i64) = p
        .db()
        .await?
        .query_one(
            "SELECT error_kind, reason, \
                    (extract(epoch FROM received_at) * 1000000)::bigint FROM ops.dead_letters",
            &[],
        )
        .await
        .map(|row| (row.get(0), row.get(1), row.get(2)))?;
    let recent = &summary["dead_letters"]["recent"];
    assert_eq!(recent.as_array().map(Vec::len), Some(1), "{recent}");
    assert_eq!(recent[0]["service"], "service-stg");
    assert_eq!(recent[0]["error_kind"], kind.as_str());
    assert_eq!(recent[0]["reason"], reason.as_str());
    assert_eq!(recent[0]["replayed"], false);
    let shown: chrono::DateTime<chrono::Utc> = recent[0]["received_at"]
        .as_str()
        .expect("received_at")
        .parse()?;
    assert_eq!(shown.timestamp_micros(), received_at);
    let top: Vec<(String, i64)> = p
        .db()
        .await?
        .pairs(
            "SELECT max(category_name), sum(order_cnt)::bigint FROM cdm.user_category_counters \
             GROUP BY category_id HAVING sum(order_cnt) > 0 ORDER BY 2 DESC, 1, category_id \
             LIMIT 10",
        )
        .await?
        .into_iter()
        .collect();
    let shown: Vec<(String, i64)> = summary["top_categories"]
        .as_array()
        .expect("top categories")
        .iter()
        .map(|c| {
            (
                c["category_name"].as_str().expect("name").to_owned(),
                c["order_cnt"].as_i64().expect("order_cnt"),
            )
        })
        .collect();
    assert_eq!(shown, top);
    assert!(!summary["top_products"]
        .as_array()
        .expect("top products")
        .is_empty());
    p.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_answered_like_get_without_a_body_and_a_nul_in_a_tag_name_is_a_bad_request(
) -> anyhow::Result<()> {
    let p = Pipeline::start(1).await?;
    let api = ApiClient::new(&p)?;
    let addr = api.addr;
    // The service applies the migrations as it starts: the schema is there once the API
    // answers, and healthy once the worker runs.
    for path in ["/api/v1/tags", "/health"] {
        eventually(
            &format!("GET {path} 200"),
            Duration::from_secs(60),
            || async {
                let (head, _) = raw_request(addr, &p.api_token, "GET", path).await.ok()?;
                (status_of(&head) == Some(200)).then_some(())
            },
        )
        .await;
    }

    // Uptime checkers ask with HEAD: the status and content type GET gets, and no body.
    for path in [
        "/api/v1/tags",
        "/api/v1/users/0123456789abcdef01234567/counters",
        "/api/v1/users/0123456789abcdef01234567/tags",
        "/api/v1/summary",
        "/api/v1/pipeline",
        "/api/v1/pipeline/history",
        "/api/v1/openapi.json",
        "/api/v1/users/not-a-user/tags",
        "/api/v1/nothing",
        "/",
        "/health",
        "/metrics",
    ] {
        let (get, get_body) = raw_request(addr, &p.api_token, "GET", path).await?;
        let (head, head_body) = raw_request(addr, &p.api_token, "HEAD", path).await?;
        assert!(!get_body.is_empty(), "GET {path} has a body");
        assert_eq!(status_of(&head), status_of(&get), "HEAD {path}: {head}");
        assert_eq!(
            header(&head, "content-type"),
            header(&get, "content-type"),
            "HEAD {path}"
        );
        assert_eq!(
            String::from_utf8_lossy(&head_body),
            "",
            "HEAD {path} sends no body"
        );
    }
    let (head, _) = raw_request(addr, &p.api_token, "HEAD", "/api/v1/tags").await?;
    assert_eq!(status_of(&head), Some(200), "{head}");

    // Other methods are still refused, and the refusal says what is allowed.
    let (refused, _) = raw_request(addr, &p.api_token, "DELETE", "/api/v1/tags").await?;
    assert_eq!(status_of(&refused), Some(405), "{refused}");
    assert_eq!(header(&refused, "allow"), Some("get, head"));

    // Postgres text cannot hold NUL: such a tag name is the client's error, in the API's body.
    for path in ["/api/v1/tags/%00/users", "/api/v1/tags/a%00b/users?limit=5"] {
        let (status, body) = api.get(path).await?;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_tag")),
            "{path}: {body}"
        );
        assert!(body["message"].as_str().is_some_and(|m| m.contains("NUL")));
    }
    p.shutdown().await
}
