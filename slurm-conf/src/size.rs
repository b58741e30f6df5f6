//! Byte sizes as people write them: `512`, `64K`, `4G`, `1.5T` (powers of 1024).

/// A size string that is not a size.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0:?} is not a size (write a number with an optional K, M, G or T suffix, e.g. \"4G\")")]
pub struct SizeError(pub String);

/// Parses a size with an optional binary suffix (K, M, G, T; `B`/`iB` allowed).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let err = || SizeError(text.to_string());
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (number, multiplier) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(err()),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let value: f64 = number.trim().parse().map_err(|_| err())?;
    if !value.is_finite() || value < 0.0 {
        return Err(err());
    }
    Ok((value * multiplier as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("1.5M").unwrap(), 1536 * 1024);
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("4X").is_err());
    }
}

/// A duration string that is not a duration.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0:?} is not a duration (write a number with s, m, h or d, e.g. \"1h\"; \"0\" for none)")]
pub struct DurationError(pub String);

/// Parses a duration in whole seconds: `90s`, `30m`, `1h`, `2d`, or `0`.
pub fn parse_duration(text: &str) -> Result<u64, DurationError> {
    let err = || DurationError(text.to_string());
    let t = text.trim();
    if t == "0" {
        return Ok(0);
    }
    let unit = t.chars().last().ok_or_else(err)?;
    let seconds: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return Err(err()),
    };
    let number: u64 = t[..t.len() - 1].trim().parse().map_err(|_| err())?;
    number.checked_mul(seconds).ok_or_else(err)
}

#[cfg(test)]
mod duration_tests {
    use super::*;

    #[test]
    fn durations_as_people_write_them() {
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        for bad in ["", "1", "h", "1w", "-1h", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
