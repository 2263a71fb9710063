//! Human-readable durations and sizes, for status tables and messages.

use std::time::Duration;

/// `850ms`, `4.2s`, `12s`, `3m 12s`, `1h 02m`, `2d 03h`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 10 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d {:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

/// `512 B`, `3.4 KiB`, `12.3 MiB`, `1.2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            (Duration::from_millis(850), "850ms"),
            (Duration::from_millis(4_200), "4.2s"),
            (Duration::from_secs(12), "12s"),
            (Duration::from_secs(192), "3m 12s"),
            (Duration::from_secs(3_720), "1h 02m"),
            (Duration::from_secs(183_600), "2d 03h"),
        ];
        for (d, want) in cases {
            assert_eq!(duration(d), want);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3_482), "3.4 KiB");
        assert_eq!(bytes(12_897_485), "12.3 MiB");
        assert_eq!(bytes(1_288_490_189), "1.2 GiB");
    }
}
