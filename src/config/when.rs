//! `[offload] schedule` and `[offload] interfaces`: when the uploader may
//! send. A vehicle on LTE uploads at the depot's Wi-Fi; a site with a thin
//! uplink uploads at night.
//!
//! Invariants:
//! - a window is `HH:MM-HH:MM` of the gateway's local time (its time zone,
//!   `TZ` or `/etc/localtime`), the start included and the end not; an end
//!   before the start crosses midnight (`22:00-06:00`); equal ends are
//!   refused (a whole day is no schedule, and an empty window never sends);
//! - an interface is named as the kernel names it (1 to 15 bytes, no `/`,
//!   no white space, not `.` or `..`);
//! - no rule means always; with both kinds, both must hold (inside a window
//!   and one of the interfaces up). What is refused names its key and index
//!   (`offload.schedule[1]`).

use std::fmt;

use super::check::Collector;

/// One window of the day, in minutes after local midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    start: u16,
    end: u16,
}

/// Minutes in a day.
const DAY: u16 = 24 * 60;

impl Window {
    /// Parses `HH:MM-HH:MM`.
    pub fn parse(text: &str) -> Result<Window, String> {
        let bad =
            || format!("{text:?} is not a window HH:MM-HH:MM of local time, e.g. \"22:00-06:00\"");
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        let (start, end) = (
            minute(a.trim()).ok_or_else(bad)?,
            minute(b.trim()).ok_or_else(bad)?,
        );
        if start == end {
            return Err(format!(
                "{text:?} starts where it ends: leave the schedule out to send at any time"
            ));
        }
        Ok(Window { start, end })
    }

    /// Whether `minute` (after local midnight) is inside.
    pub fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// Minutes from `minute` until the window next opens (0 if open).
    pub fn opens_in(&self, minute: u16) -> u16 {
        if self.contains(minute) {
            0
        } else {
            (self.start + DAY - minute) % DAY
        }
    }

    /// The minute after local midnight the window opens at.
    pub fn start(&self) -> u16 {
        self.start
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.start), hm(self.end))
    }
}

/// `HH:MM` (00:00 to 23:59; `24:00` for the end of the day) as minutes.
fn minute(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) => Some(0),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// When the uploader may send: no rule means always.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// Windows of local time; empty: any time.
    pub schedule: Vec<Window>,
    /// Network interfaces, one of which must be up; empty: any.
    pub interfaces: Vec<String>,
}

/// Validates `offload.schedule` and `offload.interfaces`.
pub(super) fn rules(v: &mut Collector<'_>, schedule: &[String], interfaces: &[String]) -> Rules {
    let schedule = schedule
        .iter()
        .enumerate()
        .filter_map(|(i, w)| v.ok(format!("offload.schedule[{i}]"), Window::parse(w)))
        .collect();
    for (i, name) in interfaces.iter().enumerate() {
        if let Err(reason) = interface_name(name) {
            v.invalid(format!("offload.interfaces[{i}]"), reason);
        }
    }
    Rules {
        schedule,
        interfaces: interfaces.to_vec(),
    }
}

/// A network interface's name as Linux allows it.
fn interface_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        Err(format!(
            "{name:?} is not a network interface name (1 to 15 bytes, no '/' or white space), e.g. \"wlan0\""
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_contain_and_cross_midnight() {
        let night = Window::parse("22:00-06:00").expect("night");
        assert_eq!(night.to_string(), "22:00-06:00");
        assert!(night.contains(22 * 60));
        assert!(night.contains(23 * 60 + 59));
        assert!(night.contains(0));
        assert!(night.contains(5 * 60 + 59));
        assert!(!night.contains(6 * 60), "the end is not included");
        assert!(!night.contains(12 * 60));
        assert_eq!(night.opens_in(21 * 60 + 30), 30);
        assert_eq!(night.opens_in(6 * 60), 16 * 60);
        assert_eq!(night.opens_in(23 * 60), 0);

        let day = Window::parse("08:30-17:00").expect("day");
        assert!(day.contains(8 * 60 + 30) && day.contains(16 * 60 + 59));
        assert!(!day.contains(8 * 60 + 29) && !day.contains(17 * 60));
        assert_eq!(day.opens_in(17 * 60), 15 * 60 + 30);

        let to_midnight = Window::parse("18:00-24:00").expect("to midnight");
        assert!(to_midnight.contains(23 * 60 + 59) && !to_midnight.contains(0));
        assert_eq!(
            Window::parse(" 06:00 - 07:00 ")
                .expect("spaces")
                .to_string(),
            "06:00-07:00"
        );
    }

    #[test]
    fn a_window_that_is_not_one_is_refused_with_what_is_wrong() {
        for bad in [
            "",
            "22:00",
            "22-06",
            "6:00-7:00",
            "25:00-06:00",
            "22:60-06:00",
            "aa:bb-cc:dd",
            "22:00-06:00-07:00",
        ] {
            let e = Window::parse(bad).expect_err(bad);
            assert!(e.contains("HH:MM-HH:MM"), "{bad}: {e}");
        }
        let e = Window::parse("06:00-06:00").expect_err("empty");
        assert!(e.contains("starts where it ends"), "{e}");
    }

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        for good in ["wlan0", "eth0", "wwan0", "enp1s0.100", "a"] {
            assert!(interface_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "wl an0",
            "../eth0",
            "a-name-too-long-for-linux",
        ] {
            assert!(interface_name(bad).is_err(), "{bad}");
        }
    }
}
