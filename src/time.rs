//! Time as the gateway's API shows it: RFC 3339 timestamps (UTC), and LiteLLM's durations
//! (`30s`, `5m`, `1h`, `30d`, `2w`, `1mo`). Times are Unix milliseconds throughout.

/// A LiteLLM duration. Months are calendar months (a budget that resets monthly resets on the
/// same day of each month), so they are not a fixed number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duration {
    Seconds(u64),
    Months(u32),
}

impl Duration {
    /// Parses `<n><unit>` with unit s, m, h, d, w or mo (n ≥ 1).
    pub fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit())?;
        let (digits, unit) = text.split_at(split);
        let n: u64 = digits.parse().ok().filter(|n| *n >= 1)?;
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "mo" => return u32::try_from(n).ok().filter(|n| *n <= 1200).map(Duration::Months),
            _ => return None,
        };
        // More than 100 years is a mistake, not a duration.
        n.checked_mul(seconds).filter(|s| *s <= 100 * 366 * 86_400).map(Duration::Seconds)
    }

    /// `from_ms` plus this duration.
    pub fn after(self, from_ms: u64) -> u64 {
        match self {
            Duration::Seconds(s) => from_ms + s * 1000,
            Duration::Months(n) => add_months(from_ms, n),
        }
    }
}

/// Formats Unix milliseconds as `2026-11-25T08:23:32.000Z`.
pub fn format_rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

/// Parses an RFC 3339 timestamp (`2026-11-25T08:23:32Z`, fractions and offsets allowed, or a
/// bare date `2026-11-25` meaning midnight UTC) to Unix milliseconds. Times before 1970: None.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let text = text.trim();
    let num = |s: &str| -> Option<i64> { s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().ok()).flatten() };
    let date = text.get(..10)?;
    let (y, mo, d) = (num(date.get(..4)?)?, num(date.get(5..7)?)?, num(date.get(8..10)?)?);
    if &date[4..5] != "-" || &date[7..8] != "-" || !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo as u32) {
        return None;
    }
    let days = days_from_civil(y, mo as u32, d as u32);
    let rest = &text[10..];
    if rest.is_empty() {
        return u64::try_from(days * 86_400_000).ok();
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (h, mi, s) = (num(rest.get(..2)?)?, num(rest.get(3..5)?)?, num(rest.get(6..8)?)?);
    if &rest[2..3] != ":" || &rest[5..6] != ":" || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &rest[8..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &frac[..digits.min(3)]);
        millis = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let (oh, om) = (num(rest.get(1..3)?)?, num(rest.get(4..6)?)?);
            if rest.len() != 6 || &rest[3..4] != ":" || oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_s;
    u64::try_from(secs * 1000 + millis).ok()
}

fn add_months(ms: u64, months: u32) -> u64 {
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let total = y * 12 + i64::from(mo - 1) + i64::from(months);
    let (ny, nmo) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u32);
    // The 31st plus a month is the last day of a shorter month.
    let nd = d.min(days_in_month(ny, nmo) as u32);
    let days = days_from_civil(ny, nmo, nd);
    (days as u64) * 86_400_000 + (secs % 86_400) * 1000 + ms % 1000
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(Duration::parse("30s"), Some(Duration::Seconds(30)));
        assert_eq!(Duration::parse("5m"), Some(Duration::Seconds(300)));
        assert_eq!(Duration::parse("1h"), Some(Duration::Seconds(3600)));
        assert_eq!(Duration::parse("30d"), Some(Duration::Seconds(30 * 86_400)));
        assert_eq!(Duration::parse("2w"), Some(Duration::Seconds(14 * 86_400)));
        assert_eq!(Duration::parse("1mo"), Some(Duration::Months(1)));
        for bad in ["", "30", "s", "0s", "-5m", "1.5h", "10x", "5 m", "99999999999999999999s", "1000000d"] {
            assert_eq!(Duration::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_round_trip() {
        for ms in [0, 1_795_595_811_123, 951_782_400_000 /* 2000-02-29 */, 4_102_444_800_000] {
            assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Some(ms));
        }
        assert_eq!(format_rfc3339(1_795_595_811_123), "2026-11-25T08:36:51.123Z");
    }

    #[test]
    fn timestamps_accept_offsets_fractions_and_dates() {
        let base = parse_rfc3339("2026-11-25T08:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2026-11-25T09:30:00+01:30"), Some(base));
        assert_eq!(parse_rfc3339("2026-11-25T08:00:00.5Z"), Some(base + 500));
        assert_eq!(parse_rfc3339("2026-11-25"), Some(base - 8 * 3_600_000));
        for bad in [
            "2026-13-01",
            "2026-02-30T00:00:00Z",
            "2026-11-25T24:00:00Z",
            "yesterday",
            "2026-11-25T08:00:00",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn months_are_calendar_months() {
        let jan31 = parse_rfc3339("2027-01-31T12:00:00Z").unwrap();
        assert_eq!(format_rfc3339(Duration::Months(1).after(jan31)), "2027-02-28T12:00:00.000Z");
        assert_eq!(format_rfc3339(Duration::Months(13).after(jan31)), "2028-02-29T12:00:00.000Z");
        assert_eq!(Duration::Seconds(30).after(1000), 31_000);
    }
}
