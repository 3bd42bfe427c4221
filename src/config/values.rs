//! Parsing of the scalar values that appear in `NODE.conf`: durations, byte
//! sizes, booleans, chunk-size triples. Pure functions over `&str`; each
//! error says what was expected so the loader can prefix file and line.

use std::time::Duration;

/// Parses a duration: `100ms`, `2s`, `1.5s`, `1m`, `1h`, or a bare number
/// of seconds (the classic heartbeat `ha.cf` convention).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let expected = || format!("expected a duration like 200ms, 2s or 1.5 (seconds), found {s:?}");
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(expected());
    }
    let value: f64 = num.parse().map_err(|_| expected())?;
    let scale = match unit.trim() {
        "" | "s" | "sec" => 1.0,
        "ms" => 1e-3,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(expected()),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(expected());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a byte size: `65536`, `64K`, `64KiB`, `1M`, `2G` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let expected = || format!("expected a size like 65536, 64K or 1M, found {s:?}");
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: u64 = num.parse().map_err(|_| expected())?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(expected()),
    };
    value.checked_mul(1 << shift).ok_or_else(expected)
}

/// Parses `yes/no`, `on/off`, `true/false`, `1/0`.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "yes" | "on" | "true" | "1" => Ok(true),
        "no" | "off" | "false" | "0" => Ok(false),
        _ => Err(format!("expected yes or no, found {s:?}")),
    }
}

/// Parses a share as a percentage: `50%` or `50`.
pub fn parse_percent(s: &str) -> Result<u8, String> {
    let t = s.trim().trim_end_matches('%');
    match t.parse::<u8>() {
        Ok(v) if v <= 100 => Ok(v),
        _ => Err(format!("expected a percentage from 0% to 100%, found {s:?}")),
    }
}

/// FastCDC chunk size bounds of a set, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkParams {
    fn default() -> Self {
        ChunkParams {
            min: 16 << 10,
            avg: 64 << 10,
            max: 256 << 10,
        }
    }
}

impl ChunkParams {
    /// Parses `MIN/AVG/MAX`, e.g. `16K/64K/256K`, within the bounds the
    /// `fastcdc` 2020 implementation accepts.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let [min, avg, max] = parts.as_slice() else {
            return Err(format!(
                "expected MIN/AVG/MAX chunk sizes like 16K/64K/256K, found {s:?}"
            ));
        };
        let p = ChunkParams {
            min: to_u32(parse_size(min)?)?,
            avg: to_u32(parse_size(avg)?)?,
            max: to_u32(parse_size(max)?)?,
        };
        p.validate()?;
        Ok(p)
    }

    /// The limits of `fastcdc::v2020`: min 64 B..1 MiB, avg 256 B..4 MiB,
    /// max 1 KiB..16 MiB, and min ≤ avg ≤ max.
    pub fn validate(&self) -> Result<(), String> {
        let ok = (64..=1 << 20).contains(&self.min)
            && (256..=4 << 20).contains(&self.avg)
            && (1024..=16 << 20).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunk sizes {}/{}/{} out of range: need 64B ≤ min ≤ 1M, 256B ≤ avg ≤ 4M, 1K ≤ max ≤ 16M and min ≤ avg ≤ max",
                self.min, self.avg, self.max
            ))
        }
    }
}

impl std::fmt::Display for ChunkParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            human_size(self.min.into()),
            human_size(self.avg.into()),
            human_size(self.max.into())
        )
    }
}

fn to_u32(v: u64) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("size {v} is too large"))
}

/// Prints a size the way it is written in a config file (`64K`, `1M`).
pub fn human_size(v: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if v >= 1 << shift && v.is_multiple_of(1 << shift) {
            return format!("{}{unit}", v >> shift);
        }
    }
    v.to_string()
}

/// Prints a duration the way it is written in a config file.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms > 0 && ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms >= 600_000 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_classic_and_suffixed_forms() {
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_use_binary_units_and_reject_overflow() {
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("99999999999999999999G").is_err());
        assert!(parse_size("1T").is_err());
    }

    #[test]
    fn chunk_params_are_bounded_and_ordered() {
        assert_eq!(ChunkParams::parse("16K/64K/256K").unwrap(), ChunkParams::default());
        assert!(ChunkParams::parse("64K/16K/256K").is_err());
        assert!(ChunkParams::parse("16K/64K").is_err());
        assert!(ChunkParams::parse("1/64K/256K").is_err());
        assert_eq!(ChunkParams::default().to_string(), "16K/64K/256K");
    }

    #[test]
    fn booleans_and_percentages() {
        assert!(parse_bool("on").unwrap());
        assert!(!parse_bool("No").unwrap());
        assert!(parse_bool("maybe").is_err());
        assert_eq!(parse_percent("50%").unwrap(), 50);
        assert!(parse_percent("150%").is_err());
    }
}
