//! `/metrics` as Prometheus's own tools read it (issue 16): every service and datagen answer
//! the classic text format 0.0.4 unless the scraper asks for OpenMetrics, and
//! `promtool check metrics` (Debian's `prometheus` package) finds nothing wrong with what they
//! answer. The recount result is exported by service-cdm alone, once its check has run, with
//! the time of that check; the read API's requests are counted by route and status; the
//! process metrics are there.
//!
//! Without `promtool` (`$PROMTOOL`, else on `PATH`) the test fails when `CI` is set (other than
//! `false` or `0`); otherwise it writes `SKIPPED: promtool not found` past the harness's
//! capture and checks the rest.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vault_tests::eventually;
use vault_tests::pipeline::{http, Datagen, Pipeline, Service};

/// A GET with an optional `Accept` header: the status, the `content-type` and the body.
async fn get(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> anyhow::Result<(u16, String, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let accept = accept
        .map(|accept| format!("Accept: {accept}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8(response)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("no status")?;
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    anyhow::ensure!(
        !head.to_ascii_lowercase().contains("chunked"),
        "a chunked /metrics answer"
    );
    Ok((status, content_type, body.to_owned()))
}

fn promtool() -> Option<String> {
    if let Ok(path) = std::env::var("PROMTOOL") {
        return Some(path);
    }
    std::process::Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()
        .filter(|status| status.success())
        .map(|_| "promtool".to_owned())
}

/// `promtool check metrics` on `exposition`: its exit code and what it said.
async fn promtool_check(promtool: &str, exposition: &str) -> anyhow::Result<(i32, String)> {
    let mut child = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(exposition.as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code().unwrap_or(-1), said))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metrics_endpoint_speaks_both_formats_and_promtool_accepts_the_classic_one(
) -> anyhow::Result<()> {
    let promtool = promtool();
    if promtool.is_none() {
        let under_ci =
            std::env::var("CI").is_ok_and(|ci| !matches!(ci.as_str(), "" | "false" | "0"));
        assert!(
            !under_ci,
            "CI is set but promtool was not found: install it (apt-get install -y prometheus) or set PROMTOOL"
        );
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: promtool not found (set PROMTOOL or install prometheus); \
             `promtool check metrics` was not run"
        );
    }

    let p = Pipeline::start(1).await?;
    let datagen = Datagen::start(&p, &p.stack.redis_url).await?;
    let datagen_addr = datagen.addr;
    let (status, body) = http(datagen_addr, "POST", "/push", r#"{"N": 50}"#).await?;
    assert_eq!(status, 200, "{body}");
    p.settle(Duration::from_secs(120)).await;

    // service-cdm's check against the recount (every second in the tests) has run: its
    // result and time are exported; the other services never export them.
    let cdm = p.http_addr(Service::Cdm).context("cdm runs")?;
    let recount = eventually(
        "the recount to be exported",
        Duration::from_secs(60),
        || async {
            let (_, _, body) = get(cdm, "/metrics", None).await.ok()?;
            body.contains("vaultline_recount_differences{service=\"service-cdm\"} 0\n")
                .then_some(body)
        },
    )
    .await;
    let checked: f64 = recount
        .lines()
        .find(|line| line.starts_with("vaultline_recount_last_checked_timestamp_seconds{"))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .context("no last-checked timestamp")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    assert!(
        (now - 120.0..=now + 1.0).contains(&checked),
        "{checked} vs {now}"
    );

    // A read API request, counted by its route template and status.
    let (api_status, _) = http(
        cdm,
        "GET",
        "/api/v1/users/00000000000000000000abcd/counters",
        "",
    )
    .await?;
    let (_, _, after_api) = get(cdm, "/metrics", None).await?;
    assert!(
        after_api.contains(&format!(
            "vaultline_http_requests_total{{service=\"service-cdm\",route=\"/api/v1/users/{{user}}/counters\",status=\"{api_status}\"}} 1\n"
        )),
        "{after_api}"
    );
    assert!(
        after_api.contains(
            "vaultline_http_request_duration_seconds_count{service=\"service-cdm\",route=\"/api/v1/users/{user}/counters\"} 1\n"
        ),
        "{after_api}"
    );

    let mut endpoints: Vec<(&str, SocketAddr)> = Service::ALL
        .iter()
        .map(|service| (service.binary(), p.http_addr(*service).expect("running")))
        .collect();
    endpoints.push(("datagen", datagen_addr));
    for (name, addr) in endpoints {
        // Classic text unless asked otherwise.
        let (status, content_type, classic) = get(addr, "/metrics", None).await?;
        assert_eq!(status, 200, "{name}");
        assert_eq!(
            content_type, "text/plain; version=0.0.4; charset=utf-8",
            "{name}"
        );
        assert!(!classic.contains("# EOF"), "{name}: {classic}");
        assert!(
            classic.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{name}: {classic}"
        );
        assert!(classic.contains("process_resident_memory_bytes{"), "{name}");
        assert!(classic.contains("process_open_fds{"), "{name}");
        assert!(classic.contains("process_start_time_seconds{"), "{name}");
        assert!(
            classic.contains("vaultline_dependency_up{"),
            "{name}: {classic}"
        );
        assert_eq!(
            classic.contains("vaultline_recount_"),
            name == "service-cdm",
            "{name}: the recount only where it is computed"
        );
        assert!(
            !classic.contains("counter_differences"),
            "{name}: the old name"
        );

        // OpenMetrics when asked, as Prometheus asks.
        let (status, content_type, open) = get(
            addr,
            "/metrics",
            Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
        )
        .await?;
        assert_eq!(status, 200, "{name}");
        assert_eq!(
            content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8",
            "{name}"
        );
        assert!(open.ends_with("# EOF\n"), "{name}: {open}");
        assert!(
            open.contains("# TYPE process_cpu_seconds counter\n"),
            "{name}: {open}"
        );

        if let Some(promtool) = &promtool {
            let (code, said) = promtool_check(promtool, &classic).await?;
            assert_eq!(
                code, 0,
                "promtool check metrics on {name}'s /metrics: {said}\n{classic}"
            );
        }
    }

    datagen.stop().await?;
    p.shutdown().await
}
