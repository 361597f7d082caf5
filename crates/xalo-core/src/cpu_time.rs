//! CPU time of processes and threads, and their waits for a core, read from Linux's
//! `/proc`, for the benchmarks' reports (how a run's CPU divides between the servers and
//! the load generator, and how long their work waited for a core). Written here because
//! no maintained crate reads per-thread CPU time by thread name or the scheduler's waits.

/// Clock ticks per second of `/proc`'s CPU times (`USER_HZ`, 100 on Linux).
pub const TICKS_PER_SECOND: f64 = 100.0;

/// User and system CPU time of process `pid` so far, in ticks; `None` without `/proc`.
pub fn of_process(pid: u32) -> Option<u64> {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// User and system CPU time so far of this process's live threads named `name`, in ticks;
/// `None` without `/proc`.
pub fn of_threads_named(name: &str) -> Option<u64> {
    let mut ticks = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if command_of(&stat) == Some(name) {
            ticks += stat_ticks(&stat).unwrap_or(0);
        }
    }
    Some(ticks)
}

/// How long the live threads of process `pid` have waited for a core so far, runnable
/// while others ran, in µs: the second field of each thread's `/proc/…/schedstat`. A
/// thread that has ended takes its share with it. `None` without `/proc`.
pub fn run_queue_wait_us(pid: u32) -> Option<u64> {
    let mut ns = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        if let Ok(line) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += waited_ns(&line).unwrap_or(0);
        }
    }
    Some(ns / 1000)
}

/// The run-queue wait of a `/proc/…/schedstat` line: time on a core, time waiting for
/// one, time slices, the first two in nanoseconds.
fn waited_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().nth(1)?.parse().ok()
}

/// The command (thread) name of a `/proc/…/stat` line: in parentheses, may hold spaces
/// and parentheses itself.
fn command_of(stat: &str) -> Option<&str> {
    Some(stat.split_once('(')?.1.rsplit_once(')')?.0)
}

/// utime + stime of a `/proc/…/stat` line: fields 14 and 15, counted after the command.
fn stat_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_in_the_name() {
        let line = "4716 (tokio (rt) 1) S 1 2 3 4 5 6 7 8 9 10 1234 56 0 0 20 0";
        assert_eq!(command_of(line), Some("tokio (rt) 1"));
        assert_eq!(stat_ticks(line), Some(1234 + 56));
        assert_eq!(stat_ticks("garbage"), None);
    }

    #[test]
    fn a_schedstat_line() {
        assert_eq!(waited_ns("181513224 8728202 402\n"), Some(8_728_202));
        assert_eq!(waited_ns("181513224"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        if std::path::Path::new("/proc/self/stat").exists() {
            let spin: u64 = (0..5_000_000u64).fold(0, |a, b| a.wrapping_add(b * b));
            assert!(spin > 0);
            assert!(of_process(std::process::id()).unwrap() > 0);
            assert!(run_queue_wait_us(std::process::id()).is_some());
        }
    }
}
