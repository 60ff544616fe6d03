//! Date ranges and interval buckets in the project timezone, with PostHog's
//! rules (SEMANTICS.md rule 1): both ends inclusive; unless explicit, the end
//! moves to the last instant of its day for day/week/month intervals and the
//! start to the first; a missing start is `-7d`; `all` starts at the earliest
//! event; date strings without an offset are in the project timezone.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use crate::error::QueryError;
use crate::event::TimestampMs;
use crate::query::{FunnelQuery, Interval};

/// An inclusive UTC range in milliseconds. `from == i64::MIN` means "all".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    pub from: TimestampMs,
    pub to: TimestampMs,
}

impl DateRange {
    pub fn contains(&self, ts: TimestampMs) -> bool {
        self.from <= ts && ts <= self.to
    }
}

/// Parses the project timezone (default UTC).
pub fn parse_tz(name: Option<&str>) -> Result<Tz, QueryError> {
    match name {
        None | Some("") => Ok(Tz::UTC),
        Some(n) => n
            .parse::<Tz>()
            .map_err(|_| QueryError::invalid("timezone", format!("unknown timezone {n:?}"))),
    }
}

/// Parses an absolute timestamp: RFC 3339 (offset honoured), or a naive
/// `YYYY-MM-DD[ T]HH:MM[:SS[.fff]]` / `YYYY-MM-DD` taken in `tz`.
/// Returns the instant and whether a time of day was given.
pub fn parse_instant(s: &str, tz: Tz) -> Option<(DateTime<Utc>, bool)> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some((dt.with_timezone(&Utc), true));
    }
    let s2 = s.replace('T', " ");
    let s2 = s2.trim_end_matches('Z');
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s2, fmt) {
            let utc = if s.ends_with('Z') {
                Utc.from_utc_datetime(&n)
            } else {
                local_to_utc(n, tz)
            };
            return Some((utc, true));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s2, "%Y-%m-%d") {
        return Some((local_to_utc(d.and_hms_opt(0, 0, 0)?, tz), false));
    }
    None
}

/// Parses a timestamp as sent by a client: RFC 3339, naive (UTC), or a
/// number (seconds or milliseconds since the epoch).
pub fn parse_event_timestamp(v: &serde_json::Value) -> Option<TimestampMs> {
    match v {
        serde_json::Value::String(s) => {
            parse_instant(s, Tz::UTC).map(|(d, _)| d.timestamp_millis())
        }
        serde_json::Value::Number(n) => {
            let f = n.as_f64()?;
            if !f.is_finite() {
                return None;
            }
            // Heuristic shared with PostHog's SDK-side: < 1e11 means seconds.
            let ms = if f.abs() < 1e11 { f * 1000.0 } else { f };
            Some(ms as i64)
        }
        _ => None,
    }
}

fn local_to_utc(n: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&n) {
        chrono::LocalResult::Single(d) => d.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(a, _) => a.with_timezone(&Utc),
        // A local time skipped by DST: take the instant an hour later.
        chrono::LocalResult::None => local_to_utc(n + Duration::hours(1), tz),
    }
}

fn start_of_day(t: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
    let local = t.with_timezone(&tz).date_naive();
    local_to_utc(local.and_hms_opt(0, 0, 0).expect("midnight"), tz)
}

fn end_of_day(t: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
    let local = t.with_timezone(&tz).date_naive();
    let next = local.succ_opt().unwrap_or(local);
    local_to_utc(next.and_hms_opt(0, 0, 0).expect("midnight"), tz) - Duration::milliseconds(1)
}

fn truncate_hour(t: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
    let l = t.with_timezone(&tz);
    let n = l.date_naive().and_hms_opt(l.hour(), 0, 0).expect("hour");
    local_to_utc(n, tz)
}

/// Subtracts a relative amount like `-7d` from `now`; returns the instant and
/// the unit letter.
fn parse_relative(s: &str, now: DateTime<Utc>) -> Option<(DateTime<Utc>, char)> {
    let body = s.strip_prefix('-')?;
    let body = body
        .strip_suffix("Start")
        .or_else(|| body.strip_suffix("End"))
        .unwrap_or(body);
    let unit = body.chars().last()?;
    let n: i64 = body[..body.len() - unit.len_utf8()].parse().ok()?;
    // Out-of-range amounts give `None` (an error naming the field), never
    // a panic.
    let back = |d: Option<Duration>| now.checked_sub_signed(d?);
    let t = match unit {
        's' => back(Duration::try_seconds(n))?,
        'M' => back(Duration::try_minutes(n))?,
        'h' => back(Duration::try_hours(n))?,
        'd' => back(Duration::try_days(n))?,
        'w' => back(Duration::try_weeks(n))?,
        'm' => add_months(now, n.checked_neg()?)?,
        'q' => add_months(now, n.checked_mul(-3)?)?,
        'y' => add_months(now, n.checked_mul(-12)?)?,
        _ => return None,
    };
    Some((t, unit))
}

fn add_months(t: DateTime<Utc>, months: i64) -> Option<DateTime<Utc>> {
    let total = (t.year() as i64 * 12 + t.month0() as i64).checked_add(months)?;
    let y = i32::try_from(total.div_euclid(12)).ok()?;
    let m0 = total.rem_euclid(12) as u32;
    let mut day = t.day();
    loop {
        if let Some(d) = NaiveDate::from_ymd_opt(y, m0 + 1, day) {
            return Some(Utc.from_utc_datetime(&d.and_time(t.time())));
        }
        day = day.checked_sub(1)?;
    }
}

/// The "current time" of a query.
pub fn query_now(q: &FunnelQuery) -> Result<DateTime<Utc>, QueryError> {
    match &q.now {
        None => Ok(Utc::now()),
        Some(s) => parse_instant(s, Tz::UTC)
            .map(|(d, _)| d)
            .ok_or_else(|| QueryError::invalid("now", format!("not a timestamp: {s:?}"))),
    }
}

/// Resolves the query's range. `earliest` is the earliest event in the
/// store (used for `all`).
pub fn resolve_range(
    q: &FunnelQuery,
    earliest: Option<TimestampMs>,
) -> Result<DateRange, QueryError> {
    let tz = parse_tz(q.timezone.as_deref())?;
    let now = query_now(q)?;
    let interval = q.interval.unwrap_or_default();
    let hourly = matches!(interval, Interval::Hour | Interval::Minute);
    let explicit = q.explicit_date;

    let from = match q.date_from.as_deref().map(str::trim) {
        Some("all") => match earliest {
            Some(e) => {
                let e = Utc.timestamp_millis_opt(e).single().unwrap_or(now);
                if hourly {
                    truncate_hour(e, tz)
                } else {
                    start_of_day(e, tz)
                }
            }
            None => {
                return Ok(DateRange {
                    from: i64::MIN,
                    to: i64::MIN,
                })
            }
        },
        None | Some("") => relative_start(now - Duration::days(7), 'd', hourly, tz),
        Some(s) => {
            if let Some((t, unit)) = parse_relative(s, now) {
                relative_start(t, unit, hourly, tz)
            } else {
                let (t, _) = parse_instant(s, tz).ok_or_else(|| {
                    QueryError::invalid("date_from", format!("not a date: {s:?}"))
                })?;
                if hourly || explicit {
                    t
                } else {
                    start_of_day(t, tz)
                }
            }
        }
    };

    let to = match q.date_to.as_deref().map(str::trim) {
        None | Some("") => {
            if explicit {
                now
            } else if hourly {
                truncate_hour(now, tz) + Duration::hours(1) - Duration::milliseconds(1)
            } else {
                end_of_day(now, tz)
            }
        }
        Some(s) => {
            let t = if let Some((t, _)) = parse_relative(s, now) {
                t
            } else {
                parse_instant(s, tz)
                    .ok_or_else(|| QueryError::invalid("date_to", format!("not a date: {s:?}")))?
                    .0
            };
            if hourly || explicit {
                t
            } else {
                end_of_day(t, tz)
            }
        }
    };
    // (With `all`, the start comes from the data: a range ending before the
    // first event is empty, not wrong.)
    let from_data = q.date_from.as_deref().map(str::trim) == Some("all");
    if from > to && !from_data {
        return Err(QueryError::invalid(
            "date_to",
            format!(
                "the range ends ({}) before it starts (date_from {})",
                to.to_rfc3339(),
                from.to_rfc3339()
            ),
        ));
    }
    Ok(DateRange {
        from: from.timestamp_millis(),
        to: to.timestamp_millis(),
    })
}

fn relative_start(t: DateTime<Utc>, unit: char, hourly: bool, tz: Tz) -> DateTime<Utc> {
    match unit {
        's' | 'M' => t,
        'h' => truncate_hour(t, tz),
        _ if hourly => truncate_hour(t, tz),
        _ => start_of_day(t, tz),
    }
}

/// Start (UTC ms) of the interval bucket containing `ts`, in `tz`. Weeks start
/// on Sunday.
pub fn bucket_start(ts: TimestampMs, interval: Interval, tz: Tz) -> TimestampMs {
    let t = Utc.timestamp_millis_opt(ts).single().unwrap_or_default();
    let l = t.with_timezone(&tz);
    let naive = match interval {
        Interval::Minute => l.date_naive().and_hms_opt(l.hour(), l.minute(), 0),
        Interval::Hour => l.date_naive().and_hms_opt(l.hour(), 0, 0),
        Interval::Day => l.date_naive().and_hms_opt(0, 0, 0),
        Interval::Week => {
            let back = l.weekday().num_days_from_sunday() as i64;
            (l.date_naive() - Duration::days(back)).and_hms_opt(0, 0, 0)
        }
        Interval::Month => {
            NaiveDate::from_ymd_opt(l.year(), l.month(), 1).and_then(|d| d.and_hms_opt(0, 0, 0))
        }
    }
    .expect("valid bucket start");
    local_to_utc(naive, tz).timestamp_millis()
}

/// Start of the bucket after the one starting at `start`.
pub fn next_bucket(start: TimestampMs, interval: Interval, tz: Tz) -> TimestampMs {
    let t = Utc.timestamp_millis_opt(start).single().unwrap_or_default();
    let l = t.with_timezone(&tz).naive_local();
    let next = match interval {
        Interval::Minute => l + Duration::minutes(1),
        Interval::Hour => l + Duration::hours(1),
        Interval::Day => l + Duration::days(1),
        Interval::Week => l + Duration::days(7),
        Interval::Month => {
            let (y, m) = if l.month() == 12 {
                (l.year() + 1, 1)
            } else {
                (l.year(), l.month() + 1)
            };
            NaiveDate::from_ymd_opt(y, m, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .expect("valid month")
        }
    };
    let n = local_to_utc(next, tz).timestamp_millis();
    // Hour buckets across a DST fold: always move forward.
    if n <= start {
        start + 3_600_000
    } else {
        n
    }
}

/// Every bucket start from the bucket of `range.from` to the bucket of `range.to`.
pub fn buckets(range: DateRange, interval: Interval, tz: Tz) -> Vec<TimestampMs> {
    let mut out = Vec::new();
    if range.from > range.to || range.from == i64::MIN {
        return out;
    }
    let mut b = bucket_start(range.from, interval, tz);
    while b <= range.to && out.len() < 100_000 {
        out.push(b);
        b = next_bucket(b, interval, tz);
    }
    out
}

/// Formats a bucket start for output: a date for day/week/month in UTC,
/// otherwise RFC 3339 with the project offset.
pub fn format_bucket(ts: TimestampMs, interval: Interval, tz: Tz) -> String {
    let t = Utc.timestamp_millis_opt(ts).single().unwrap_or_default();
    let l = t.with_timezone(&tz);
    match interval {
        Interval::Day | Interval::Week | Interval::Month if tz == Tz::UTC => {
            l.format("%Y-%m-%d").to_string()
        }
        _ => l.format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
    }
}

/// Formats a UTC timestamp as RFC 3339 with milliseconds.
pub fn format_ts(ts: TimestampMs) -> String {
    Utc.timestamp_millis_opt(ts)
        .single()
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ts.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(from: Option<&str>, to: Option<&str>, tz: &str) -> FunnelQuery {
        FunnelQuery {
            date_from: from.map(String::from),
            date_to: to.map(String::from),
            timezone: Some(tz.into()),
            now: Some("2024-06-15T12:00:00Z".into()),
            ..Default::default()
        }
    }

    #[test]
    fn day_range_snaps_to_day_bounds() {
        let r = resolve_range(
            &q(Some("2021-05-01"), Some("2021-05-14 00:00:00"), "UTC"),
            None,
        )
        .unwrap();
        assert_eq!(format_ts(r.from), "2021-05-01T00:00:00.000Z");
        assert_eq!(format_ts(r.to), "2021-05-14T23:59:59.999Z");
    }

    #[test]
    fn out_of_range_and_reversed_ranges_are_refused() {
        for from in ["-1000000000000000d", "-9223372036854775807s", "-100000000y"] {
            let e = resolve_range(&q(Some(from), None, "UTC"), None).unwrap_err();
            assert!(e.to_string().contains("`date_from`"), "{from}: {e}");
        }
        let e = resolve_range(&q(Some("2024-03-01"), Some("2024-02-01"), "UTC"), None).unwrap_err();
        assert!(e.to_string().contains("`date_to`: the range ends"), "{e}");
        // `all` takes its start from the data: ending before it is empty.
        assert!(resolve_range(
            &q(Some("all"), Some("2020-01-01"), "UTC"),
            Some(1.7e12 as i64)
        )
        .is_ok());
    }

    #[test]
    fn default_range_is_last_seven_days() {
        let r = resolve_range(&q(None, None, "UTC"), None).unwrap();
        assert_eq!(format_ts(r.from), "2024-06-08T00:00:00.000Z");
        assert_eq!(format_ts(r.to), "2024-06-15T23:59:59.999Z");
    }

    #[test]
    fn timezone_moves_the_range() {
        let r = resolve_range(
            &q(Some("2020-01-01"), Some("2020-01-02"), "US/Pacific"),
            None,
        )
        .unwrap();
        assert_eq!(format_ts(r.from), "2020-01-01T08:00:00.000Z");
        assert_eq!(format_ts(r.to), "2020-01-03T07:59:59.999Z");
    }

    #[test]
    fn weeks_start_on_sunday() {
        // 2021-05-05 is a Wednesday; its week starts Sunday 2021-05-02.
        let ts = Utc
            .with_ymd_and_hms(2021, 5, 5, 10, 0, 0)
            .unwrap()
            .timestamp_millis();
        let b = bucket_start(ts, Interval::Week, Tz::UTC);
        assert_eq!(format_bucket(b, Interval::Week, Tz::UTC), "2021-05-02");
    }

    #[test]
    fn bad_dates_name_the_field() {
        let e = resolve_range(&q(Some("yesterday-ish"), None, "UTC"), None).unwrap_err();
        assert!(e.to_string().contains("date_from"), "{e}");
        let e = resolve_range(&q(None, None, "Mars/Olympus"), None).unwrap_err();
        assert!(e.to_string().contains("timezone"), "{e}");
    }
}
