//! Process CPU time, for timings that survive a machine shared with other jobs.

/// User + system CPU time of this process so far, all threads (Linux `/proc/self/stat`,
/// 100 ticks/s), NaN elsewhere. With one libtorch thread it approximates the wall time
/// the work would take on an idle core.
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_finite_and_grows_with_work() {
        let a = cpu_seconds();
        if a.is_nan() {
            return; // not Linux
        }
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 120 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let b = cpu_seconds();
        assert!(b >= a + 0.05, "{a} -> {b} after 120 ms of spinning");
    }
}
