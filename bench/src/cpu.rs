//! CPU time of processes, from `/proc`: what a figure cost the server and PostgreSQL.

/// CPU time (user and system) process `pid` has used so far, seconds.
pub fn seconds_of(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(parse_stat(&stat).map(|(_, cpu)| cpu).unwrap_or(0.0))
}

/// The CPU time each running PostgreSQL process (the postmaster and its backends) has used so
/// far: [`PostgresCpu::since`] an earlier reading is what a phase cost the database on this
/// machine.
pub struct PostgresCpu(std::collections::HashMap<u32, f64>);

impl PostgresCpu {
    pub fn now() -> Self {
        let Ok(dir) = std::fs::read_dir("/proc") else { return Self(Default::default()) };
        Self(
            dir.filter_map(|entry| {
                let entry = entry.ok()?;
                let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                let (name, cpu) = parse_stat(&stat)?;
                (name == "postgres").then_some((pid, cpu))
            })
            .collect(),
        )
    }

    /// Seconds used since `before` by the processes running now (those started since count
    /// whole). A backend that ended within the phase is not counted; one that ended is never
    /// subtracted (when another test's nodes stop during a phase, their backends leave).
    pub fn since(&self, before: &PostgresCpu) -> f64 {
        self.0.iter().map(|(pid, cpu)| cpu - before.0.get(pid).copied().unwrap_or(0.0)).sum()
    }
}

/// Seconds PostgreSQL's processes used since `before` (see [`PostgresCpu`]).
pub fn postgres_since(before: &PostgresCpu) -> f64 {
    PostgresCpu::now().since(before)
}

/// A run's rate with the CPU seconds it cost this process (the clients, and whatever of Parley
/// runs in it) and PostgreSQL.
pub async fn costed(
    run: impl std::future::Future<Output = anyhow::Result<f64>>,
) -> anyhow::Result<(f64, (f64, f64))> {
    let (client, postgres) = (seconds_of(std::process::id())?, PostgresCpu::now());
    let rate = run.await?;
    Ok((rate, (seconds_of(std::process::id())? - client, postgres_since(&postgres))))
}

/// Prints what one operation of a [`costed`] run of `seconds` at `rate` cost.
pub fn print_per_op(name: &str, rate: f64, seconds: u64, (client, postgres): (f64, f64)) {
    let per = |cpu: f64| cpu / (rate * seconds as f64) * 1e6;
    println!(
        "    CPU per op, {name:<22} client {:>6.0} us  PostgreSQL {:>6.0} us",
        per(client),
        per(postgres)
    );
}

/// The command name and the CPU seconds (utime + stime) of a `/proc/<pid>/stat` line.
fn parse_stat(stat: &str) -> Option<(&str, f64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line; 12 and 13 after the name. Linux reports
    // them in USER_HZ, 100 on every architecture it runs on.
    Some((name, (ticks(11) + ticks(12)) / 100.0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stat_line_gives_its_name_and_cpu() {
        let line = "42 (postgres) S 1 42 42 0 -1 4194560 1 0 0 0 150 50 0 0 20 0 1 0 1 0 0";
        assert_eq!(super::parse_stat(line), Some(("postgres", 2.0)));
    }
}
