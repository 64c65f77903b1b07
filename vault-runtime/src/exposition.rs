//! What `GET /metrics` answers: OpenMetrics text when the scraper's `Accept` header asks for
//! `application/openmetrics-text` (Prometheus does, by default), the classic Prometheus text
//! format 0.0.4 otherwise (`curl`, `promtool check metrics`, older scrapers), as Prometheus's
//! own client libraries do. `prometheus-client` writes OpenMetrics only; the classic form is
//! derived from it here.

use prometheus_client::registry::Registry;

/// The two text formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Classic,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it lists
    /// `application/openmetrics-text` with a non-zero quality, classic text otherwise.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let asks_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or_default();
                let refused = parts.any(|param| {
                    param
                        .strip_prefix("q=")
                        .and_then(|q| q.parse::<f64>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if asks_openmetrics {
            Self::OpenMetrics
        } else {
            Self::Classic
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The exposition of `registry` in `format`.
pub fn encode(registry: &Registry, format: Format) -> String {
    let mut out = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!(%error, "Cannot encode the metrics.");
    }
    match format {
        Format::OpenMetrics => out,
        Format::Classic => classic(&out),
    }
}

/// The `/metrics` answer for a request's `Accept` header.
pub fn reply(registry: &Registry, accept: Option<&str>) -> impl warp::Reply {
    let format = Format::negotiate(accept);
    warp::reply::with_header(
        encode(registry, format),
        "content-type",
        format.content_type(),
    )
}

/// Rewrites the OpenMetrics text `prometheus-client` writes as classic text: a counter's
/// family is named with its `_total` suffix (in OpenMetrics the family has none, its samples
/// do), `unknown` is `untyped`, `info` a gauge named `_info`, and `# UNIT` and `# EOF` go, as
/// the classic format has neither. HELP texts unescape `\"` (classic escapes only `\\` and
/// `\n`).
pub fn classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // A HELP line waits for its TYPE line, which decides the family's classic name.
    let mut help: Option<(&str, String)> = None;
    // The family of the current block, whose `_created` samples are left out.
    let mut family: Option<&str> = None;
    let flush = |out: &mut String, help: &mut Option<(&str, String)>, name: Option<&str>| {
        if let Some((help_name, text)) = help.take() {
            out.push_str(&format!("# HELP {} {text}\n", name.unwrap_or(help_name)));
        }
    };
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush(&mut out, &mut help, None);
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text.replace("\\\"", "\"")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (classic_name, classic_kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_owned(), "untyped"),
                "gaugehistogram" => (name.to_owned(), "histogram"),
                other => (name.to_owned(), other),
            };
            if help
                .as_ref()
                .is_some_and(|(help_name, _)| *help_name == name)
            {
                flush(&mut out, &mut help, Some(&classic_name));
            } else {
                flush(&mut out, &mut help, None);
            }
            out.push_str(&format!("# TYPE {classic_name} {classic_kind}\n"));
            family = Some(name);
            continue;
        }
        flush(&mut out, &mut help, None);
        // Counters' `_created` samples have no place in the classic format.
        if family.is_some_and(|family| {
            line.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with("_created"))
        }) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    flush(&mut out, &mut help, None);
    out
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;

    use super::*;

    const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
        application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn openmetrics_is_served_only_to_whoever_asks_for_it() {
        assert_eq!(
            Format::negotiate(Some(PROMETHEUS_ACCEPT)),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("Application/OpenMetrics-Text")),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(None), Format::Classic);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Classic);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Classic
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0, text/plain")),
            Format::Classic
        );
    }

    #[test]
    fn classic_text_names_counter_families_with_their_total_and_has_no_eof() {
        let mut registry = Registry::with_prefix("vaultline");
        let counter = Counter::<u64>::default();
        counter.inc_by(3);
        registry.register("messages_in", "Messages \"in\"", counter);
        registry.register("worker_paused", "1 while paused", Gauge::<i64>::default());
        let text = encode(&registry, Format::Classic);
        assert_eq!(
            text,
            "# HELP vaultline_messages_in_total Messages \"in\".\n\
             # TYPE vaultline_messages_in_total counter\n\
             vaultline_messages_in_total 3\n\
             # HELP vaultline_worker_paused 1 while paused.\n\
             # TYPE vaultline_worker_paused gauge\n\
             vaultline_worker_paused 0\n"
        );
        let open = encode(&registry, Format::OpenMetrics);
        assert!(
            open.contains("# TYPE vaultline_messages_in counter\n"),
            "{open}"
        );
        assert!(open.ends_with("# EOF\n"), "{open}");
    }
}
