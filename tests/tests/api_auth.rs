//! The read side closed by default (issue 16, docs/read-api.md "Access"): with `API_TOKEN` set,
//! service-cdm's read API answers 401 — JSON, with `WWW-Authenticate: Bearer`, as documented
//! for every route — without the token, with another one or another scheme, and before it
//! looks at the route; the right token reads. `/health`, `/metrics` and the dashboard's page
//! stay open to probes, scrapers and browsers. Without a token the API answers anyone.

use std::collections::BTreeMap;

use anyhow::Context as _;
use std::time::Duration;

use vault_tests::eventually;
use vault_tests::faults::health;
use vault_tests::pipeline::{http, Overrides, Pipeline, Service};
use vault_tests::read_api::ApiClient;

/// A path of every documented route (the tag need not exist: 401 comes first).
const ROUTES: [&str; 8] = [
    "/api/v1/users/0123456789abcdef01234567/counters",
    "/api/v1/users/0123456789abcdef01234567/tags",
    "/api/v1/tags",
    "/api/v1/tags/Nobody/users",
    "/api/v1/pipeline",
    "/api/v1/pipeline/history",
    "/api/v1/summary",
    "/api/v1/openapi.json",
];

#[tokio::test]
async fn the_read_api_answers_401_without_its_token_and_200_with_it() -> anyhow::Result<()> {
    let p = Pipeline::start(1).await?;
    schema_ready(&p).await;
    let api = ApiClient::new(&p)?;
    let right = format!("Bearer {}", p.api_token);
    let wrong = format!("Bearer {}x", p.api_token);
    let basic = format!("Basic {}", p.api_token);
    for path in ROUTES {
        for authorization in [
            None,
            Some(wrong.as_str()),
            Some(basic.as_str()),
            Some("Bearer "),
        ] {
            let (status, headers, body) = api.request_as("GET", path, authorization).await?;
            assert_eq!(status, 401, "GET {path} with {authorization:?}: {body}");
            assert_eq!(body["error"], "unauthorized", "{body}");
            let challenge = headers
                .iter()
                .find(|(name, _)| name == "www-authenticate")
                .map(|(_, value)| value.as_str());
            assert_eq!(challenge, Some(r#"Bearer realm="vaultline""#), "GET {path}");
            assert!(
                !body.to_string().contains(&p.api_token),
                "the answer repeats the token: {body}"
            );
        }
        let (status, _, body) = api.request_as("GET", path, Some(&right)).await?;
        assert!(
            status == 200 || (status == 404 && body["error"] == "unknown_tag"),
            "GET {path} with the token: {status} {body}"
        );
    }
    // Neither an unknown route nor another method is told apart without the token.
    for (method, path) in [("GET", "/api/v1/nothing"), ("POST", "/api/v1/tags")] {
        let (status, _, body) = api.request_as(method, path, None).await?;
        assert_eq!(status, 401, "{method} {path}: {body}");
    }
    // Probes, scrapers and the page itself need no token.
    let addr = p.http_addr(Service::Cdm).context("cdm runs")?;
    for path in ["/health", "/metrics", "/"] {
        let (status, body) = http(addr, "GET", path, "").await?;
        assert!(
            status == 200 || (path == "/health" && status == 503),
            "GET {path} without a token: {status} {body}"
        );
        assert!(!body.contains(&p.api_token), "GET {path} shows the token");
    }
    p.shutdown().await
}

#[tokio::test]
async fn without_a_token_the_read_api_answers_anyone() -> anyhow::Result<()> {
    let overrides = Overrides {
        service_env: BTreeMap::from([("API_TOKEN".to_owned(), String::new())]),
        ..Overrides::default()
    };
    let p = Pipeline::start_with(1, overrides).await?;
    schema_ready(&p).await;
    let api = ApiClient::new(&p)?;
    let (status, _, body) = api.request_as("GET", "/api/v1/tags", None).await?;
    assert_eq!(status, 200, "{body}");
    p.shutdown().await
}

/// Waits until service-cdm's worker runs: its migrations are applied by then.
async fn schema_ready(p: &Pipeline) {
    eventually(
        "service-cdm's worker to run",
        Duration::from_secs(60),
        || async {
            let (_, body) = health(p, Service::Cdm).await.ok()?;
            (body["worker"]["state"] == "running").then_some(())
        },
    )
    .await;
}
