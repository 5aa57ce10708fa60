//! Durations on the command line: `5`, `0.5`, `500ms`, `2s`, `10m`, `1h`.
use std::time::Duration;

/// Parse a positive duration; a bare number is seconds. Shared by every command that takes
/// one, so `record -d 10s` and `stress -d 10s` mean the same.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else if let Some(m) = text.strip_suffix('m') {
        (m, 60.0)
    } else if let Some(h) = text.strip_suffix('h') {
        (h, 3600.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number.trim().parse().map_err(|_| {
        format!("`{text}` is not a duration (examples: 5, 0.5, 500ms, 2s, 10m, 1h)")
    })?;
    let secs = value * scale;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("`{text}`: the duration must be greater than zero"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{text}`: duration out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 250ms "), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn rejects_what_is_not_a_positive_finite_duration() {
        for bad in ["0", "-3", "abc", "inf", "NaN", "1e30", "1e300", "", "5x"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }
}
