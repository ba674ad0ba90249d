//! Peak memory of this process, for benchmark tables (Linux `/proc`; NaN elsewhere).

/// The process's resident-set high-water mark (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Resets the high-water mark to the current resident set, so the next reading covers only
/// what follows (best effort).
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_is_read_on_linux() {
        super::reset_peak();
        let v = super::peak_rss_mib();
        if cfg!(target_os = "linux") {
            assert!(v > 0.0 && v < 1e6, "{v}");
        }
    }
}
