//! The standard process metrics every Prometheus client exports (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
//! `process_max_fds`, `process_start_time_seconds`), read from `/proc/self` on each scrape.
//! `prometheus-client` has no process collector. Linux only: elsewhere (or when `/proc` cannot
//! be read) the metrics are absent, never 0.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The kernel reports CPU times and the start time in clock ticks of `USER_HZ`, which is 100
/// on every Linux architecture (Prometheus's own `procfs` library assumes it too; reading
/// `sysconf(_SC_CLK_TCK)` would take `unsafe`, which this workspace forbids).
const TICKS_PER_SECOND: f64 = 100.0;

/// What one look at `/proc` found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub virtual_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub start_time_seconds: Option<f64>,
}

impl Sample {
    /// Reads `/proc/self` (and `/proc/stat` for the boot time).
    pub fn read() -> Self {
        let proc = |path: &str| std::fs::read_to_string(path).ok();
        let stat = proc("/proc/self/stat");
        let stat = stat.as_deref().map(parse_stat).unwrap_or_default();
        let status = proc("/proc/self/status");
        let kilobytes = |field: &str| {
            status
                .as_deref()
                .and_then(|status| status_kilobytes(status, field))
                .map(|kb| kb * 1024.0)
        };
        let boot = proc("/proc/stat").as_deref().and_then(boot_time);
        Self {
            cpu_seconds: stat.cpu_ticks.map(|ticks| ticks / TICKS_PER_SECOND),
            resident_bytes: kilobytes("VmRSS:"),
            virtual_bytes: kilobytes("VmSize:"),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|entries| entries.count() as f64),
            max_fds: proc("/proc/self/limits")
                .as_deref()
                .and_then(max_open_files),
            start_time_seconds: stat
                .start_ticks
                .zip(boot)
                .map(|(ticks, boot)| boot + ticks / TICKS_PER_SECOND),
        }
    }
}

#[derive(Debug, Default)]
struct Stat {
    cpu_ticks: Option<f64>,
    start_ticks: Option<f64>,
}

/// `/proc/self/stat`: user and system time (fields 14 and 15) and the start time (field 22),
/// counted after the command name, which is in parentheses and may hold spaces.
fn parse_stat(stat: &str) -> Stat {
    let Some((_, after)) = stat.rsplit_once(')') else {
        return Stat::default();
    };
    // `after` begins with field 3 (the state).
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    Stat {
        cpu_ticks: field(14).zip(field(15)).map(|(user, system)| user + system),
        start_ticks: field(22),
    }
}

/// A `Vm…:  1234 kB` line of `/proc/self/status`.
fn status_kilobytes(status: &str, field: &str) -> Option<f64> {
    let line = status.lines().find(|line| line.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// `btime` of `/proc/stat`: when the machine booted, in seconds since the epoch.
fn boot_time(stat: &str) -> Option<f64> {
    let line = stat.lines().find(|line| line.starts_with("btime "))?;
    line["btime ".len()..].trim().parse().ok()
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Registered in a registry without a prefix, so the names are the standard ones.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sample = Sample::read();
        if let Some(seconds) = sample.cpu_seconds {
            let counter = ConstCounter::new(seconds);
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                sample.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                sample.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                sample.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                sample.max_fds,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                sample.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
                gauge.encode(metric)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stat_line_is_read_after_a_command_name_with_spaces() {
        let line = "4242 (tokio (runtime) 1) S 1 4242 4242 0 -1 4194560 1500 0 0 0 \
                    250 50 0 0 20 0 9 0 123456 1000000 2000 18446744073709551615";
        let stat = parse_stat(line);
        assert_eq!(stat.cpu_ticks, Some(300.0));
        assert_eq!(stat.start_ticks, Some(123456.0));
    }

    #[test]
    fn limits_and_status_lines_are_read() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024.0));
        let status = "Name:\tservice-stg\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kilobytes(status, "VmRSS:"), Some(10240.0));
        assert_eq!(boot_time("cpu 1 2 3\nbtime 1700000000\n"), Some(1.7e9));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_cpu_time_memory_and_open_files() {
        let sample = Sample::read();
        assert!(sample.cpu_seconds.is_some_and(|s| s >= 0.0), "{sample:?}");
        assert!(sample.resident_bytes.is_some_and(|b| b > 0.0), "{sample:?}");
        assert!(sample.open_fds.is_some_and(|n| n >= 3.0), "{sample:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        let started = sample.start_time_seconds.expect("a start time");
        assert!(
            started <= now + 1.0 && started > now - 86_400.0 * 365.0,
            "{started}"
        );
    }
}
