//! CPU time and memory of the processes a benchmark run exercises, read from `/proc`: each
//! service (the pid files `scripts/run.sh` keeps in `.stack/run/`), the Kafka broker
//! (`.stack/kafka.pid`, else the process running `kafka.Kafka`), Redis (`.stack/redis.pid`,
//! else `redis-server`) and Postgres (its `postgres` processes: the server's own and the
//! backends of the benchmark's database, not those of other databases on a shared server). A
//! process that is not found is reported missing, not as an error: the figures are for
//! whatever runs. Found without a pid file (a broker this checkout's scripts did not start), a
//! component is the largest process naming it.
//!
//! CPU is utime + stime, the difference over the run. Postgres starts and ends backends, so its
//! figure is the sum over its processes, each from when it was first seen (from zero when it
//! started during the run) to when it was last seen: a backend's last 200 ms before it ends
//! are lost, pooled connections stay. Memory is the largest resident set seen in samples every
//! [`SAMPLE_EVERY`] over the run, and `VmHWM` (the peak since the process started, which may
//! predate the run). For Postgres both are those of its largest single process: summing would
//! count the shared buffers once per backend.
//!
//! The machine as a whole is read from `/proc/stat` over the same span ([`Machine`]): how busy
//! its cores were, how much of that the watched processes do not explain (another build or
//! test sharing the machine), and how much time the hypervisor took from a virtual machine's
//! cores (`steal`). Latency on a shared virtual machine moves with that last figure: at 1,000
//! orders/s the same commit gave a p99 of 205 ms with 5 % stolen on average and 394–410 ms
//! with 13–16 % (docs/performance.md, "Latency and a shared machine").

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

/// How often memory is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// Clock ticks per second of `/proc/PID/stat`'s times: 100 on every Linux this runs on
/// (`getconf CLK_TCK`), read without a libc binding.
const TICKS_PER_SECOND: f64 = 100.0;

/// How one watched component's processes are found.
#[derive(Debug, Clone)]
enum Locate {
    /// A pid file, if its process still runs a command line containing `expect`; else the
    /// largest process whose command line contains it.
    PidFile { file: PathBuf, expect: &'static str },
    /// Every process of this command name (`/proc/PID/comm`), less the Postgres backends of
    /// databases other than this one (`None`: all).
    Command(&'static str, Option<String>),
}

/// The figures of one component over a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    pub name: String,
    /// False when no process of it was found.
    pub found: bool,
    /// How many processes the figures cover (most seen at once).
    pub processes: usize,
    pub cpu_seconds: f64,
    /// The largest resident set of one of its processes, sampled over the run.
    pub peak_rss_mb: f64,
    /// The largest `VmHWM` of one of its processes: since that process started.
    pub vm_hwm_mb: f64,
}

#[derive(Debug)]
struct Watched {
    locate: Locate,
    /// Per pid: CPU ticks at first sight (0 if it started during the run) and now.
    ticks: HashMap<u32, (u64, u64)>,
    usage: Usage,
}

/// The watched components; sample with [`Processes::sample`], read with [`Processes::report`].
#[derive(Debug, Clone)]
pub struct Processes(Arc<Mutex<Sampled>>);

#[derive(Debug)]
struct Sampled {
    watched: Vec<Watched>,
    /// The machine's times at the first sample and the last.
    span: Option<(CpuTimes, CpuTimes)>,
}

/// What a run used: each watched component, and the machine over the same span.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub processes: Vec<Usage>,
    pub machine: Machine,
}

impl Report {
    /// The process table and the machine's line, for the terminal.
    pub fn text(&self) -> String {
        let mut out = String::from("process        CPU-s   peak RSS (run)   VmHWM (since start)\n");
        for u in &self.processes {
            if u.found {
                out.push_str(&format!(
                    "{:<13} {:>6.1}   {:>9.0} MB      {:>9.0} MB{}\n",
                    u.name,
                    u.cpu_seconds,
                    u.peak_rss_mb,
                    u.vm_hwm_mb,
                    if u.processes > 1 {
                        format!("   ({} processes; memory: the largest one)", u.processes)
                    } else {
                        String::new()
                    }
                ));
            } else {
                out.push_str(&format!("{:<13} missing\n", u.name));
            }
        }
        out.push_str(&self.machine.line());
        out.push('\n');
        out
    }
}

/// The machine's CPU time by kind since boot, in ticks, from `/proc/stat`'s `cpu` line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct CpuTimes {
    cores: usize,
    /// user, nice, system, irq, softirq (guest time is within user).
    busy: u64,
    /// idle and iowait.
    idle: u64,
    /// Time the hypervisor ran something else while this machine's vCPU wanted to run.
    steal: u64,
}

impl CpuTimes {
    fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let total = lines.next()?.strip_prefix("cpu ")?;
        let ticks: Vec<u64> = total
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
        let cores = lines
            .filter(|line| {
                line.strip_prefix("cpu")
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .count();
        Some(Self {
            cores,
            busy: at(0) + at(1) + at(2) + at(5) + at(6),
            idle: at(3) + at(4),
            steal: at(7),
        })
    }
}

/// The whole machine over a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cores: usize,
    /// Every core's time over the run (cores × seconds).
    pub cpu_seconds: f64,
    /// Of which busy (any process, the kernel).
    pub busy_cpu_seconds: f64,
    /// Busy time the watched processes do not account for: other work on the machine.
    pub other_cpu_seconds: f64,
    /// Taken by the hypervisor from this virtual machine.
    pub steal_cpu_seconds: f64,
    pub steal_share: f64,
}

impl Machine {
    fn between(first: CpuTimes, last: CpuTimes, watched_cpu_seconds: f64) -> Self {
        let seconds = |ticks: u64| ticks as f64 / TICKS_PER_SECOND;
        let busy = seconds(last.busy.saturating_sub(first.busy));
        let idle = seconds(last.idle.saturating_sub(first.idle));
        let steal = seconds(last.steal.saturating_sub(first.steal));
        let total = busy + idle + steal;
        Self {
            cores: last.cores,
            cpu_seconds: total,
            busy_cpu_seconds: busy,
            other_cpu_seconds: (busy - watched_cpu_seconds).max(0.0),
            steal_cpu_seconds: steal,
            steal_share: if total > 0.0 { steal / total } else { 0.0 },
        }
    }

    /// One line for the terminal, with a warning when the figures are not those of a
    /// machine the run had to itself.
    pub fn line(&self) -> String {
        let share = |v: f64| {
            if self.cpu_seconds > 0.0 {
                100.0 * v / self.cpu_seconds
            } else {
                0.0
            }
        };
        let mut line = format!(
            "machine        {} cores, {:.0} % busy ({:.1} CPU-s of it outside the processes above), {:.0} % stolen by the hypervisor",
            self.cores,
            share(self.busy_cpu_seconds),
            self.other_cpu_seconds,
            share(self.steal_cpu_seconds),
        );
        if self.steal_share > SHARED_ABOVE
            || self.other_cpu_seconds > SHARED_ABOVE * self.cpu_seconds
        {
            line.push_str(" — shared: latency and rates understate this code");
        }
        line
    }
}

/// Above this share of the machine's time stolen or spent by other work, a run's figures are
/// those of a shared machine.
const SHARED_ABOVE: f64 = 0.1;

impl Processes {
    /// The usual components of a local run, pid files under `stack` (`.stack`), the
    /// warehouse `database`.
    pub fn local(stack: &Path, database: Option<&str>) -> Self {
        let mut watched = Vec::new();
        for service in ["datagen", "service-stg", "service-dds", "service-cdm"] {
            watched.push((
                service.to_owned(),
                Locate::PidFile {
                    file: stack.join("run").join(format!("{service}.pid")),
                    expect: service,
                },
            ));
            // More replicas (`VAULTLINE_REPLICAS` of scripts/run.sh): `<service>-<r>.pid`.
            for replica in 2.. {
                let file = stack.join("run").join(format!("{service}-{replica}.pid"));
                if !file.exists() {
                    break;
                }
                watched.push((
                    format!("{service}-{replica}"),
                    Locate::PidFile {
                        file,
                        expect: service,
                    },
                ));
            }
        }
        watched.push((
            "kafka".to_owned(),
            Locate::PidFile {
                file: stack.join("kafka.pid"),
                expect: "kafka.Kafka",
            },
        ));
        watched.push((
            "redis".to_owned(),
            Locate::PidFile {
                file: stack.join("redis.pid"),
                expect: "redis-server",
            },
        ));
        watched.push((
            "postgres".to_owned(),
            Locate::Command("postgres", database.map(str::to_owned)),
        ));
        let watched = watched
            .into_iter()
            .map(|(name, locate)| Watched {
                usage: Usage {
                    name,
                    ..Usage::default()
                },
                locate,
                ticks: HashMap::new(),
            })
            .collect();
        let processes = Self(Arc::new(Mutex::new(Sampled {
            watched,
            span: None,
        })));
        processes.sample_with(true);
        processes
    }

    /// Reads every watched process once.
    pub fn sample(&self) {
        self.sample_with(false);
    }

    fn sample_with(&self, first: bool) {
        let Ok(mut sampled) = self.0.lock() else {
            return;
        };
        if let Some(now) = CpuTimes::read() {
            sampled.span = Some((sampled.span.map_or(now, |(first, _)| first), now));
        }
        let watched = &mut sampled.watched;
        let all = if watched
            .iter()
            .any(|w| matches!(w.locate, Locate::Command(..)))
        {
            all_pids()
        } else {
            Vec::new()
        };
        for w in watched.iter_mut() {
            let pids = locate(&w.locate, &all);
            if pids.is_empty() {
                continue;
            }
            w.usage.found = true;
            w.usage.processes = w.usage.processes.max(pids.len());
            // A backend Postgres started during the run spent all its time in the run; a
            // component's one process seen late (restarted) only what is seen from then on.
            let group = matches!(w.locate, Locate::Command(..));
            for pid in &pids {
                let Some(stat) = stat(*pid) else { continue };
                let baseline = if first || !group { stat.ticks } else { 0 };
                w.ticks.entry(*pid).or_insert((baseline, stat.ticks)).1 = stat.ticks;
                if let Some((rss, hwm)) = memory(*pid) {
                    w.usage.peak_rss_mb = w.usage.peak_rss_mb.max(rss);
                    w.usage.vm_hwm_mb = w.usage.vm_hwm_mb.max(hwm);
                }
            }
        }
    }

    /// The figures so far: each component's, and the machine's from the first sample to the
    /// last.
    pub fn report(&self) -> Report {
        let Ok(sampled) = self.0.lock() else {
            return Report::default();
        };
        let processes: Vec<Usage> = sampled
            .watched
            .iter()
            .map(|w| {
                let ticks: u64 = w
                    .ticks
                    .values()
                    .map(|(first, now)| now - first)
                    .sum::<u64>();
                Usage {
                    cpu_seconds: ticks as f64 / TICKS_PER_SECOND,
                    ..w.usage.clone()
                }
            })
            .collect();
        let watched: f64 = processes.iter().map(|u| u.cpu_seconds).sum();
        let machine = sampled.span.map_or_else(Machine::default, |(first, last)| {
            Machine::between(first, last, watched)
        });
        Report { processes, machine }
    }

    /// Samples every [`SAMPLE_EVERY`] until dropped (the task ends with the runtime).
    pub fn sample_in_background(&self) -> tokio::task::JoinHandle<()> {
        let processes = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SAMPLE_EVERY).await;
                let processes = processes.clone();
                let _ = tokio::task::spawn_blocking(move || processes.sample()).await;
            }
        })
    }
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .unwrap_or_default()
}

fn locate(locate: &Locate, all: &[u32]) -> Vec<u32> {
    match locate {
        Locate::PidFile { file, expect } => {
            let from_file = std::fs::read_to_string(file)
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok())
                .filter(|pid| cmdline(*pid).contains(expect));
            match from_file {
                Some(pid) => vec![pid],
                None => (if all.is_empty() {
                    all_pids()
                } else {
                    all.to_vec()
                })
                .into_iter()
                // The server, not a script or a shell that names it: the largest match.
                .filter(|pid| *pid != std::process::id() && cmdline(*pid).contains(expect))
                .max_by(|a, b| {
                    let rss = |pid| memory(pid).map_or(0.0, |(rss, _)| rss);
                    rss(*a).total_cmp(&rss(*b))
                })
                .into_iter()
                .collect(),
            }
        }
        Locate::Command(name, database) => all
            .iter()
            .copied()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == *name)
            })
            .filter(|pid| {
                database.as_deref().is_none_or(|database| {
                    backend_database(&cmdline(*pid)).is_none_or(|of| of == database)
                })
            })
            .collect(),
    }
}

/// The database of a Postgres backend from its process title (`postgres: [15/main: ]USER
/// DATABASE HOST(PORT) STATE`); `None` for the server's own processes.
fn backend_database(title: &str) -> Option<&str> {
    let mut words = title
        .strip_prefix("postgres: ")?
        .split_whitespace()
        .peekable();
    // Debian titles name the cluster first.
    if words.peek().is_some_and(|word| word.ends_with(':')) {
        words.next();
    }
    let (_user, database, client) = (words.next()?, words.next()?, words.next()?);
    (client.contains('(') || client == "[local]").then_some(database)
}

struct Stat {
    /// utime + stime
    ticks: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: fields after it.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        ticks: field(14)? + field(15)?,
    })
}

/// VmRSS and VmHWM in MB.
fn memory(pid: u32) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    };
    Some((kb("VmRSS:")? / 1024.0, kb("VmHWM:")? / 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        assert!(stat(pid).is_some());
        let (rss, hwm) = memory(pid).expect("own status");
        assert!(rss > 0.0 && hwm >= rss);
    }

    #[test]
    fn backends_are_told_apart_by_their_database() {
        let of = |title: &str| backend_database(title).map(str::to_owned);
        assert_eq!(
            of("postgres: 15/main: postgres vaultline_bench 127.0.0.1(53542) idle").as_deref(),
            Some("vaultline_bench")
        );
        assert_eq!(
            of("postgres: app dwh [local] SELECT").as_deref(),
            Some("dwh")
        );
        assert_eq!(of("postgres: 15/main: checkpointer"), None);
        assert_eq!(of("postgres: 15/main: autovacuum launcher"), None);
        assert_eq!(
            of("/usr/lib/postgresql/15/bin/postgres -D /var/lib/x"),
            None
        );
    }

    #[test]
    fn the_machine_counts_busy_idle_and_stolen_time_over_the_span() {
        let first = CpuTimes::parse(
            "cpu  100 0 50 1000 10 0 5 20 0 0\ncpu0 50 0 25 500 5 0 2 10 0 0\ncpu1 50 0 25 500 5 0 3 10 0 0\nintr 1\n",
        )
        .expect("parsed");
        assert_eq!(first.cores, 2);
        assert_eq!((first.busy, first.idle, first.steal), (155, 1010, 20));
        let last = CpuTimes {
            busy: 155 + 120,
            idle: 1010 + 40,
            steal: 20 + 40,
            ..first
        };
        let machine = Machine::between(first, last, 0.7);
        assert!((machine.cpu_seconds - 2.0).abs() < 1e-9);
        assert!((machine.busy_cpu_seconds - 1.2).abs() < 1e-9);
        assert!((machine.other_cpu_seconds - 0.5).abs() < 1e-9);
        assert!((machine.steal_share - 0.2).abs() < 1e-9);
        assert!(machine.line().contains("20 % stolen"), "{}", machine.line());
        assert!(machine.line().contains("shared"), "{}", machine.line());
        let quiet = Machine::between(first, CpuTimes { steal: 20, ..last }, 1.2);
        assert!(!quiet.line().contains("shared"), "{}", quiet.line());
    }

    #[test]
    fn this_machine_has_cores_and_busy_time() {
        let now = CpuTimes::read().expect("/proc/stat");
        assert!(now.cores >= 1 && now.busy > 0 && now.idle > 0);
    }

    #[test]
    fn a_component_not_running_is_reported_missing() {
        let processes = Processes::local(Path::new("/nonexistent"), None);
        let report = processes.report();
        let datagen = report
            .processes
            .iter()
            .find(|u| u.name == "datagen")
            .expect("listed");
        // No datagen process in a unit test's sandbox but the test binary itself, which
        // the search skips.
        assert!(!datagen.found || datagen.processes == 1);
        assert!(report.text().contains("datagen"));
        assert!(report.text().contains("machine "));
    }
}
