//! Retention periods as a policy states them: "30 days", "3 months", "3 years".
//!
//! Guarantee: a period is a positive whole number of one unit, and adding it
//! to an instant follows the calendar the policy speaks in:
//! - `hours`, `days`, `weeks` are exact lengths (a day is 24 h; all
//!   arithmetic is in UTC, so there is no daylight-saving shift);
//! - `months` and `years` are calendar steps that keep the time of day and
//!   clamp to the last day of a shorter month (31 Jan + 1 month = 28/29 Feb,
//!   29 Feb 2024 + 1 year = 28 Feb 2025), so "three months" never ends later
//!   than the same day number three months on.
//!
//! The text form is `"<count> <unit>"`; singular and plural unit names are
//! both accepted, and the period is written back in its canonical form
//! (`1 day`, `30 days`), so canonical text round-trips unchanged.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Months, Utc};

/// The largest count accepted, in any unit. Policies speak in tens of days or
/// a few years; anything bigger is a typing mistake.
pub const MAX_COUNT: u32 = 100_000;

/// The unit of a [`Period`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeriodUnit {
    /// Exactly 3600 seconds.
    Hours,
    /// Exactly 24 hours.
    Days,
    /// Exactly 7 days.
    Weeks,
    /// Calendar months, clamped to the end of a shorter month.
    Months,
    /// Calendar years (12 calendar months).
    Years,
}

impl PeriodUnit {
    fn names(self) -> (&'static str, &'static str) {
        match self {
            PeriodUnit::Hours => ("hour", "hours"),
            PeriodUnit::Days => ("day", "days"),
            PeriodUnit::Weeks => ("week", "weeks"),
            PeriodUnit::Months => ("month", "months"),
            PeriodUnit::Years => ("year", "years"),
        }
    }

    const ALL: [PeriodUnit; 5] = [
        PeriodUnit::Hours,
        PeriodUnit::Days,
        PeriodUnit::Weeks,
        PeriodUnit::Months,
        PeriodUnit::Years,
    ];
}

/// A retention period: a positive count of one [`PeriodUnit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Period {
    count: u32,
    unit: PeriodUnit,
}

/// Why a text is not a period.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error(
        "a period is written as \"<count> <unit>\", e.g. \"30 days\" or \"3 months\"; got {0:?}"
    )]
    Shape(String),
    #[error("the count {0:?} is not a whole number from 1 to {MAX_COUNT}")]
    Count(String),
    #[error("unknown unit {0:?}; expected hours, days, weeks, months or years")]
    Unit(String),
}

impl Period {
    /// Builds a period; `None` when `count` is 0 or above [`MAX_COUNT`].
    pub fn new(count: u32, unit: PeriodUnit) -> Option<Period> {
        (1..=MAX_COUNT)
            .contains(&count)
            .then_some(Period { count, unit })
    }

    /// The count of units.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The unit.
    pub fn unit(&self) -> PeriodUnit {
        self.unit
    }

    /// `t` plus this period, or `None` if the result is out of range.
    ///
    /// Days, hours and weeks are exact durations; months and years are
    /// calendar steps clamped to the end of the target month.
    pub fn add_to(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let n = i64::from(self.count);
        match self.unit {
            PeriodUnit::Hours => t.checked_add_signed(Duration::try_hours(n)?),
            PeriodUnit::Days => t.checked_add_signed(Duration::try_days(n)?),
            PeriodUnit::Weeks => t.checked_add_signed(Duration::try_weeks(n)?),
            PeriodUnit::Months => t.checked_add_months(Months::new(self.count)),
            PeriodUnit::Years => t.checked_add_months(Months::new(self.count.checked_mul(12)?)),
        }
    }

    /// True if, from every starting instant, this period ends no earlier than
    /// `other` does. Checked over every day start of a full four-year leap
    /// cycle (and every hour of its first day), which covers every
    /// month-length and leap-year combination the calendar arithmetic sees.
    pub fn covers(&self, other: &Period) -> bool {
        let Some(base) = DateTime::<Utc>::from_timestamp(1_704_067_200, 0) else {
            // 2024-01-01T00:00:00Z is always representable.
            return false;
        };
        let starts = (0..(4 * 366)).map(|d| base + Duration::days(d));
        let hours = (1..24).map(|h| base + Duration::hours(h));
        starts
            .chain(hours)
            .all(|t| match (self.add_to(t), other.add_to(t)) {
                (Some(a), Some(b)) => a >= b,
                _ => false,
            })
    }
}

impl FromStr for Period {
    type Err = PeriodError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split_whitespace();
        let (Some(count), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(PeriodError::Shape(s.to_owned()));
        };
        let count_ok = count.bytes().all(|b| b.is_ascii_digit());
        let n: u32 = count
            .parse()
            .ok()
            .filter(|n| count_ok && (1..=MAX_COUNT).contains(n))
            .ok_or_else(|| PeriodError::Count(count.to_owned()))?;
        let unit_lc = unit.to_ascii_lowercase();
        let unit = PeriodUnit::ALL
            .into_iter()
            .find(|u| {
                let (one, many) = u.names();
                unit_lc == one || unit_lc == many
            })
            .ok_or_else(|| PeriodError::Unit(unit.to_owned()))?;
        Ok(Period { count: n, unit })
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (one, many) = self.unit.names();
        let name = if self.count == 1 { one } else { many };
        write!(f, "{} {}", self.count, name)
    }
}

impl serde::Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 13, 45, 7)
            .single()
            .expect("valid date")
    }

    fn p(s: &str) -> Period {
        s.parse().expect("valid period")
    }

    #[test]
    fn parses_and_round_trips_canonical_text() {
        for s in [
            "30 days", "1 day", "3 months", "1 month", "3 years", "12 hours", "2 weeks", "1 year",
        ] {
            assert_eq!(p(s).to_string(), s);
            assert_eq!(
                serde_json::to_string(&p(s)).expect("json"),
                format!("\"{s}\"")
            );
        }
        assert_eq!(p("  1 days ").to_string(), "1 day");
        assert_eq!(p("3 Months").to_string(), "3 months");
    }

    #[test]
    fn month_arithmetic_clamps_to_month_end() {
        assert_eq!(p("1 month").add_to(at(2023, 1, 31)), Some(at(2023, 2, 28)));
        assert_eq!(p("1 month").add_to(at(2024, 1, 31)), Some(at(2024, 2, 29)));
        assert_eq!(p("3 months").add_to(at(2024, 1, 31)), Some(at(2024, 4, 30)));
        assert_eq!(
            p("3 months").add_to(at(2024, 11, 30)),
            Some(at(2025, 2, 28))
        );
        assert_eq!(p("1 year").add_to(at(2024, 2, 29)), Some(at(2025, 2, 28)));
        assert_eq!(p("4 years").add_to(at(2024, 2, 29)), Some(at(2028, 2, 29)));
        assert_eq!(p("3 years").add_to(at(2022, 2, 24)), Some(at(2025, 2, 24)));
    }

    #[test]
    fn days_and_hours_are_exact() {
        assert_eq!(p("30 days").add_to(at(2024, 2, 1)), Some(at(2024, 3, 2)));
        assert_eq!(p("1 day").add_to(at(2024, 12, 31)), Some(at(2025, 1, 1)));
        // 2024-03-31 is the EU daylight-saving switch: UTC arithmetic ignores it.
        let t = at(2024, 3, 30);
        assert_eq!(p("1 day").add_to(t), Some(t + Duration::hours(24)));
        assert_eq!(p("12 hours").add_to(t), Some(t + Duration::hours(12)));
        assert_eq!(p("2 weeks").add_to(t), Some(t + Duration::days(14)));
    }

    #[test]
    fn overflow_is_none() {
        assert_eq!(p("100000 years").add_to(DateTime::<Utc>::MAX_UTC), None);
        assert_eq!(p("1 day").add_to(DateTime::<Utc>::MAX_UTC), None);
    }

    #[test]
    fn rejects_bad_periods() {
        for s in ["", "   ", "30", "days", "30days", "1 day extra"] {
            assert!(
                matches!(s.parse::<Period>(), Err(PeriodError::Shape(_))),
                "{s:?}"
            );
        }
        for s in [
            "0 days",
            "-1 months",
            "+1 months",
            "1.5 days",
            "100001 days",
            "x days",
        ] {
            assert!(
                matches!(s.parse::<Period>(), Err(PeriodError::Count(_))),
                "{s:?}"
            );
        }
        for s in ["3 fortnights", "1 sec", "2 dayz"] {
            assert!(
                matches!(s.parse::<Period>(), Err(PeriodError::Unit(_))),
                "{s:?}"
            );
        }
        assert_eq!(Period::new(0, PeriodUnit::Days), None);
    }

    #[test]
    fn covers_compares_across_units() {
        assert!(p("3 years").covers(&p("3 months")));
        assert!(p("3 months").covers(&p("3 months")));
        assert!(p("1 month").covers(&p("28 days")));
        assert!(!p("1 month").covers(&p("29 days")));
        assert!(!p("30 days").covers(&p("1 month")));
        assert!(p("31 days").covers(&p("1 month")));
        assert!(p("1 year").covers(&p("365 days")));
        assert!(!p("1 year").covers(&p("366 days")));
        assert!(p("24 hours").covers(&p("1 day")));
    }
}
