//! How the report and the progress line write numbers: thousands
//! separators, and latency in milliseconds.

/// Microseconds as milliseconds, to about three significant figures:
/// `28.5 ms`, `0.64 ms`, `1,235 ms`.
pub(super) fn millis(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms >= 1000.0 {
        return format!("{} ms", thousands(ms.round() as u64));
    }
    let decimals = if ms >= 100.0 {
        0
    } else if ms >= 10.0 {
        1
    } else if ms >= 1.0 {
        2
    } else {
        3
    };
    let text = format!("{ms:.decimals$}");
    // 0.640 -> 0.64, 2.00 -> 2
    let text = if decimals > 0 {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text} ms")
}

/// `1234567` as `1,234,567`.
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn latency_in_milliseconds() {
        assert_eq!(millis(28_543), "28.5 ms");
        assert_eq!(millis(640), "0.64 ms");
        assert_eq!(millis(55), "0.055 ms");
        assert_eq!(millis(1), "0.001 ms");
        assert_eq!(millis(2_000), "2 ms");
        assert_eq!(millis(1_234), "1.23 ms");
        assert_eq!(millis(150_400), "150 ms");
        assert_eq!(millis(1_234_567), "1,235 ms");
    }
}
