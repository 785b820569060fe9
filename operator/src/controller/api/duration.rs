//! Go durations (`30s`, `1m30s`, `1.5h`), as Kubernetes APIs and CEL's `duration()` write them.
//!
//! Hand-written because the crates that parse durations accept other forms (humantime takes
//! `1 day`, `2 weeks`) that the CRD's pattern and CEL refuse; the three must agree on every
//! string (the tests below check the pattern against the parser).

use std::time::Duration;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a duration (one or more <number><unit> with units ns, us, ms, s, m, h, e.g. 30s or 1m30s)"
)]
pub struct InvalidDuration(pub String);

/// Parses an unsigned Go duration: exactly the strings `patterns::GO_DURATION` matches.
pub fn parse(text: &str) -> Result<Duration, InvalidDuration> {
    let invalid = || InvalidDuration(text.to_string());
    if text.is_empty() {
        return Err(invalid());
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let int_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if int_len == 0 {
            return Err(invalid());
        }
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(frac) => {
                let frac_len = frac.find(|c: char| !c.is_ascii_digit()).unwrap_or(frac.len());
                if frac_len == 0 {
                    return Err(invalid());
                }
                frac.split_at(frac_len)
            }
            None => ("", after),
        };
        let (unit_nanos, unit_len) = unit(after).ok_or_else(invalid)?;
        rest = &after[unit_len..];
        let int: u128 = int_part.parse().map_err(|_| invalid())?;
        // The fraction in nanoseconds of this unit: digits / 10^len * unit, exact up to 1 ns.
        let mut frac_nanos: u128 = 0;
        let mut scale: u128 = 1;
        for d in frac_part.bytes().take(30) {
            frac_nanos = frac_nanos * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        let nanos = int
            .checked_mul(unit_nanos)
            .and_then(|n| n.checked_add(frac_nanos * unit_nanos / scale))
            .ok_or_else(invalid)?;
        let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| invalid())?;
        let part = Duration::new(secs, (nanos % 1_000_000_000) as u32);
        total = total.checked_add(part).ok_or_else(invalid)?;
    }
    Ok(total)
}

/// The unit at the start of `s`: its length in nanoseconds and in bytes.
fn unit(s: &str) -> Option<(u128, usize)> {
    const UNITS: [(&str, u128); 7] = [
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    // Longest first: "ms" before "m", "ns"/"us" before "s".
    UNITS
        .iter()
        .filter(|(u, _)| s.starts_with(u))
        .max_by_key(|(u, _)| u.len())
        .map(|(u, n)| (*n, u.len()))
}

/// `{{ interval }}` and messages: whole seconds as Prometheus reads them (`90s`), else
/// milliseconds (`1500ms`).
pub fn to_prometheus(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ok = [
            ("30s", Duration::from_secs(30)),
            ("1m", Duration::from_secs(60)),
            ("1m30s", Duration::from_secs(90)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("250ms", Duration::from_millis(250)),
            ("2us", Duration::from_micros(2)),
            ("2µs", Duration::from_micros(2)),
            ("7ns", Duration::from_nanos(7)),
            ("0s", Duration::ZERO),
            ("1h2m3s4ms", Duration::from_millis(3_723_004)),
            ("0.5s", Duration::from_millis(500)),
        ];
        for (text, want) in ok {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_what_go_or_the_pattern_refuse() {
        for bad in [
            "",
            "30",
            "s",
            "1.s",
            ".5s",
            "1 m",
            "-1s",
            "+1s",
            "1d",
            "1w",
            "1m 30s",
            "1M",
            "1sec",
            "99999999999999999999h",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            parse("1d").unwrap_err().to_string(),
            "\"1d\" is not a duration (one or more <number><unit> with units ns, us, ms, s, m, h, e.g. 30s or 1m30s)"
        );
    }

    /// The CRD's pattern and this parser accept the same strings; only a number too large for
    /// a duration (which Go and CEL refuse too) matches the pattern and still fails to parse.
    #[test]
    fn the_pattern_and_the_parser_agree() {
        let pattern = &crate::controller::api::patterns::compiled().go_duration;
        for s in [
            "30s", "1m30s", "1.5h", "250ms", "2us", "2µs", "7ns", "0s", "", "30", "s", "1.s", ".5s", "1 m",
            "-1s", "1d", "1m 30s", "1M", "1sec",
        ] {
            assert_eq!(pattern.is_match(s), parse(s).is_ok(), "{s:?}");
        }
        assert!(pattern.is_match("99999999999999999999h") && parse("99999999999999999999h").is_err());
    }

    #[test]
    fn prometheus_durations() {
        assert_eq!(to_prometheus(Duration::from_secs(90)), "90s");
        assert_eq!(to_prometheus(Duration::from_millis(1500)), "1500ms");
    }
}
