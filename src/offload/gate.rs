//! Whether the uploader may send now: `[offload] schedule` and
//! `[offload] interfaces` ([`crate::config::when`]).
//!
//! Invariants:
//! - the gate is asked before every record: an upload that started goes to
//!   its end (a window that closes meanwhile does not cut a record in two),
//!   and the next record waits. Nothing is lost while it is closed: the
//!   queue is the index (see [`super`]);
//! - deciding sends nothing: the gate reads the local clock and
//!   `/sys/class/net` only, so a metered link is never used to find out
//!   whether it may be used;
//! - an interface is up when the kernel's operational state says `up`, or
//!   `unknown` (drivers that report no carrier state) with the interface
//!   administratively up; absent, `down`, `dormant` (Wi-Fi not associated),
//!   `lowerlayerdown` and the rest are down;
//! - while it is closed, telemetry's `offload.paused` says why.

use std::path::{Path, PathBuf};

use chrono::Timelike;

use crate::config::when::Rules;

/// Where the kernel shows network interfaces.
const SYS_CLASS_NET: &str = "/sys/class/net";
/// `IFF_UP` in `/sys/class/net/NAME/flags`.
const IFF_UP: u32 = 0x1;

/// The rules, and where to look at interfaces.
pub struct Gate {
    rules: Rules,
    net: PathBuf,
}

impl Gate {
    pub fn new(rules: Rules) -> Gate {
        Gate {
            rules,
            net: PathBuf::from(SYS_CLASS_NET),
        }
    }

    /// Why uploads wait now, or `None` if they may go.
    pub fn closed(&self) -> Option<String> {
        let local = crate::clock::now().with_timezone(&chrono::Local);
        let minute = (local.hour() * 60 + local.minute()) as u16;
        self.closed_at(minute)
    }

    /// [`Gate::closed`] at `minute` after local midnight.
    fn closed_at(&self, minute: u16) -> Option<String> {
        let schedule = &self.rules.schedule;
        if !schedule.is_empty() && !schedule.iter().any(|w| w.contains(minute)) {
            let next = schedule
                .iter()
                .map(|w| w.opens_in(minute))
                .min()
                .unwrap_or(0);
            let windows: Vec<String> = schedule.iter().map(ToString::to_string).collect();
            return Some(format!(
                "outside offload.schedule ({} local time); the next window opens in {} h {:02} min",
                windows.join(", "),
                next / 60,
                next % 60
            ));
        }
        let names = &self.rules.interfaces;
        if names.is_empty() {
            return None;
        }
        let states: Vec<(String, Result<(), String>)> = names
            .iter()
            .map(|n| (n.clone(), interface_up(&self.net, n)))
            .collect();
        if states.iter().any(|(_, s)| s.is_ok()) {
            return None;
        }
        let why: Vec<String> = states
            .into_iter()
            .map(|(n, s)| format!("{n}: {}", s.err().unwrap_or_default()))
            .collect();
        Some(format!(
            "none of offload.interfaces is up ({})",
            why.join("; ")
        ))
    }
}

/// `Ok` if interface `name` is up (see the module invariant), else what it is.
fn interface_up(net: &Path, name: &str) -> Result<(), String> {
    let dir = net.join(name);
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).map(|s| s.trim().to_owned());
    let state = match read("operstate") {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("not present".into()),
        Err(e) => return Err(format!("{}: {e}", dir.join("operstate").display())),
    };
    let admin_up = || {
        read("flags")
            .ok()
            .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
            .is_some_and(|f| f & IFF_UP != 0)
    };
    match state.as_str() {
        "up" => Ok(()),
        "unknown" if admin_up() => Ok(()),
        "unknown" => Err("administratively down".into()),
        other => Err(other.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::when::Window;

    fn gate(schedule: &[&str], interfaces: &[&str]) -> Gate {
        Gate::new(Rules {
            schedule: schedule
                .iter()
                .map(|w| Window::parse(w).expect("window"))
                .collect(),
            interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn no_rule_is_always_open() {
        assert_eq!(gate(&[], &[]).closed_at(0), None);
        assert_eq!(gate(&[], &[]).closed_at(12 * 60), None);
    }

    #[test]
    fn the_schedule_opens_and_closes_and_says_when_it_opens() {
        let g = gate(&["22:00-06:00", "12:00-13:00"], &[]);
        assert_eq!(g.closed_at(23 * 60), None);
        assert_eq!(g.closed_at(12 * 60 + 30), None);
        let why = g.closed_at(10 * 60 + 45).expect("closed at 10:45");
        assert!(why.contains("22:00-06:00, 12:00-13:00"), "{why}");
        assert!(why.contains("opens in 1 h 15 min"), "{why}");
    }

    /// The loopback interface is up on every Linux machine (operational
    /// state `unknown`, administratively up); a name no kernel has is not.
    #[test]
    fn interfaces_are_read_from_the_kernel() {
        assert_eq!(interface_up(Path::new(SYS_CLASS_NET), "lo"), Ok(()));
        assert_eq!(gate(&[], &["lo"]).closed_at(0), None);
        let why = gate(&[], &["sargs-none0", "sargs-none1"])
            .closed_at(0)
            .expect("closed");
        assert_eq!(
            why,
            "none of offload.interfaces is up (sargs-none0: not present; sargs-none1: not present)"
        );
        assert_eq!(
            gate(&[], &["sargs-none0", "lo"]).closed_at(0),
            None,
            "one is enough"
        );
        // Both kinds of rule must hold.
        assert!(gate(&["01:00-02:00"], &["lo"]).closed_at(0).is_some());
        assert!(gate(&["00:00-02:00"], &["sargs-none0"])
            .closed_at(0)
            .is_some());
    }
}
