//! Model test: random sequences of sealing, holds, releases, requests,
//! restrictions, erasures, time passing, clock jumps, disk pressure and
//! restarts, run against the real engine on a real store. After every step:
//! - no segment was deleted while something protected it (judged by the
//!   model's own, independently written rule, at the true time), and none
//!   before its deadline except by an erasure that covers it or under disk
//!   pressure (a clock running ahead must not delete early);
//! - after a sweep that trusted the clock, no unprotected segment is alive
//!   past its deadline;
//! - the receipt chain verifies and names exactly the deleted segments;
//! - chains, receipts and index agree (`audit`).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Duration as D, Months, Utc};
use proptest::prelude::*;

use super::*;
use sargs_core::retention::receipt::verify_chain;

#[derive(Debug, Clone)]
enum Op {
    Seal {
        cam: usize,
        n: u8,
    },
    Advance {
        hours: u32,
    },
    Leap {
        days: u16,
    },
    Hold {
        cam: usize,
        back_days: u16,
        len_days: u16,
        until_days: Option<u16>,
    },
    HoldIds {
        picks: Vec<usize>,
    },
    Release {
        pick: usize,
    },
    Extend {
        pick: usize,
        beyond_days: u16,
    },
    RequestOpen {
        cam: usize,
        back_days: u16,
        len_days: u16,
    },
    RequestClose {
        pick: usize,
    },
    RequestExtend {
        pick: usize,
        days: u16,
    },
    Restrict {
        cam: usize,
        back_days: u16,
        len_days: u16,
    },
    Unrestrict {
        pick: usize,
    },
    Erase {
        cam: usize,
        back_days: u16,
        len_days: u16,
        request: Option<usize>,
    },
    /// The agent's clock is off by `days`, unsynchronised, for `steps` steps.
    ClockJump {
        days: i32,
        steps: u8,
    },
    Pressure {
        spare_segments: u8,
    },
    Relieve,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let cam = 0usize..2;
    prop_oneof![
        4 => (cam.clone(), 1u8..4).prop_map(|(cam, n)| Op::Seal { cam, n }),
        4 => (1u32..24 * 40).prop_map(|hours| Op::Advance { hours }),
        2 => (30u16..1200).prop_map(|days| Op::Leap { days }),
        2 => (cam.clone(), 0u16..120, 1u16..60, proptest::option::weighted(0.3, 1u16..200))
            .prop_map(|(cam, back_days, len_days, until_days)| Op::Hold { cam, back_days, len_days, until_days }),
        1 => proptest::collection::vec(0usize..1000, 1..4).prop_map(|picks| Op::HoldIds { picks }),
        2 => (0usize..100).prop_map(|pick| Op::Release { pick }),
        1 => (0usize..100, 1u16..400).prop_map(|(pick, beyond_days)| Op::Extend { pick, beyond_days }),
        2 => (cam.clone(), 0u16..120, 1u16..60)
            .prop_map(|(cam, back_days, len_days)| Op::RequestOpen { cam, back_days, len_days }),
        1 => (0usize..100).prop_map(|pick| Op::RequestClose { pick }),
        1 => (0usize..100, 1u16..120).prop_map(|(pick, days)| Op::RequestExtend { pick, days }),
        1 => (cam.clone(), 0u16..120, 1u16..60)
            .prop_map(|(cam, back_days, len_days)| Op::Restrict { cam, back_days, len_days }),
        1 => (0usize..100).prop_map(|pick| Op::Unrestrict { pick }),
        2 => (cam, 0u16..120, 1u16..60, proptest::option::of(0usize..100))
            .prop_map(|(cam, back_days, len_days, request)| Op::Erase { cam, back_days, len_days, request }),
        1 => (prop_oneof![(-400i32..-1), (1i32..400)], 1u8..4).prop_map(|(days, steps)| Op::ClockJump { days, steps }),
        1 => (0u8..4).prop_map(|spare_segments| Op::Pressure { spare_segments }),
        1 => Just(Op::Relieve),
        1 => Just(Op::Restart),
    ]
}

/// What a hold, request or restriction covers, as the model keeps it.
#[derive(Debug, Clone)]
enum MScope {
    Range {
        cam: usize,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    Ids(HashSet<String>),
}

impl MScope {
    fn covers(&self, s: &Seg) -> bool {
        match self {
            MScope::Range { cam, from, to } => s.cam == *cam && s.start < *to && s.end >= *from,
            MScope::Ids(ids) => ids.contains(&s.id),
        }
    }

    fn scope(&self) -> Scope {
        match self {
            MScope::Range { cam, from, to } => Fixture::range(*cam, *from, *to),
            MScope::Ids(ids) => Scope::Segments(ids.iter().cloned().collect()),
        }
    }
}

#[derive(Debug, Clone)]
struct Seg {
    id: String,
    cam: usize,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    delete_after: DateTime<Utc>,
    cap: Option<DateTime<Utc>>,
    deleted: bool,
}

#[derive(Debug, Clone)]
struct MHold {
    id: String,
    scope: MScope,
    until: Option<DateTime<Utc>>,
    beyond: Option<DateTime<Utc>>,
    released: bool,
}

#[derive(Debug, Clone)]
struct MReq {
    id: String,
    scope: MScope,
    opened: DateTime<Utc>,
    due: DateTime<Utc>,
    closed: bool,
}

#[derive(Debug, Clone)]
struct MRes {
    id: String,
    scope: MScope,
    lifted: bool,
}

#[derive(Default)]
struct Model {
    segs: Vec<Seg>,
    holds: Vec<MHold>,
    reqs: Vec<MReq>,
    res: Vec<MRes>,
}

impl Model {
    /// The model's rule, written from the issue's words, not from `rules.rs`.
    fn protected(&self, s: &Seg, t: DateTime<Utc>, except: Option<&str>) -> bool {
        let before_cap = s.cap.is_none_or(|c| t < c);
        let hold = self.holds.iter().any(|h| {
            !h.released
                && h.until.is_none_or(|u| t < u)
                && h.scope.covers(s)
                && (before_cap || h.beyond.is_some_and(|b| t < b))
        });
        let req = self.reqs.iter().any(|r| {
            !r.closed
                && t < r.due
                && Some(r.id.as_str()) != except
                && r.scope.covers(s)
                && before_cap
        });
        let res = self
            .res
            .iter()
            .any(|r| !r.lifted && r.scope.covers(s) && before_cap);
        hold || req || res
    }
}

struct Run {
    f: Fixture,
    m: Model,
    now: DateTime<Utc>,
    offset: D,
    synced: bool,
    next_start: [DateTime<Utc>; 2],
    n: usize,
    pressure: bool,
    /// Steps left with the clock off.
    off_for: u8,
    /// True time of the previous sweep: the monotonic clock follows true time.
    last_sweep: DateTime<Utc>,
}

impl Run {
    fn range(&self, cam: usize, back_days: u16, len_days: u16) -> MScope {
        let from = self.now - D::days(back_days.into());
        MScope::Range {
            cam,
            from,
            to: from + D::days(len_days.into()),
        }
    }

    fn apply(&mut self, action: Action) -> Response {
        // Commands are stamped and judged at the agent's (possibly wrong) clock.
        let wall = self.now + self.offset;
        let cmd = self.f.command(action, wall);
        self.f
            .retention
            .apply(&self.f.signed(&cmd), wall)
            .expect("apply")
    }

    fn id(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}-{}", self.n)
    }

    fn step(&mut self, op: &Op) {
        let deleted_before: HashSet<String> = self
            .m
            .segs
            .iter()
            .filter(|s| s.deleted)
            .map(|s| s.id.clone())
            .collect();
        let mut erase_except: Option<String> = None;
        let mut erased: Option<MScope> = None;
        match op.clone() {
            Op::Seal { cam, n } => {
                for _ in 0..n {
                    let start = self.next_start[cam].max(self.now - D::minutes(2));
                    let id = self.f.seal(cam, start, 60);
                    let (keep, cap) = if cam == 0 {
                        (D::days(30), None)
                    } else {
                        (D::zero(), Some(3))
                    };
                    let delete_after = if cam == 0 {
                        start + keep
                    } else {
                        start.checked_add_months(Months::new(3)).expect("months")
                    };
                    self.m.segs.push(Seg {
                        id,
                        cam,
                        start,
                        end: start + D::seconds(60),
                        delete_after,
                        cap: cap.and_then(|y: u32| start.checked_add_months(Months::new(12 * y))),
                        deleted: false,
                    });
                    self.next_start[cam] = start + D::seconds(60);
                }
            }
            Op::Advance { hours } => self.now += D::hours(hours.into()),
            Op::Leap { days } => self.now += D::days(days.into()),
            Op::Hold {
                cam,
                back_days,
                len_days,
                until_days,
            } => {
                let scope = self.range(cam, back_days, len_days);
                let until = until_days.map(|d| self.now + D::days(d.into()));
                let hold = self.id("H");
                let r = self.apply(Action::HoldPlace {
                    hold: hold.clone(),
                    case: "c".into(),
                    scope: scope.scope(),
                    until,
                    offload: false,
                });
                if r.applied() {
                    self.m.holds.push(MHold {
                        id: hold,
                        scope,
                        until,
                        beyond: None,
                        released: false,
                    });
                }
            }
            Op::HoldIds { picks } => {
                if self.m.segs.is_empty() {
                    return self.check(&deleted_before, None, None);
                }
                let ids: HashSet<String> = picks
                    .iter()
                    .map(|p| self.m.segs[p % self.m.segs.len()].id.clone())
                    .collect();
                let scope = MScope::Ids(ids);
                let hold = self.id("H");
                let r = self.apply(Action::HoldPlace {
                    hold: hold.clone(),
                    case: "c".into(),
                    scope: scope.scope(),
                    until: None,
                    offload: false,
                });
                assert!(r.applied(), "{r:?}");
                self.m.holds.push(MHold {
                    id: hold,
                    scope,
                    until: None,
                    beyond: None,
                    released: false,
                });
            }
            Op::Release { pick } => {
                if let Some(i) = pick_of(self.m.holds.len(), pick) {
                    let hold = self.m.holds[i].id.clone();
                    let r = self.apply(Action::HoldRelease { hold });
                    assert_eq!(r.applied(), !self.m.holds[i].released, "{r:?}");
                    self.m.holds[i].released = true;
                }
            }
            Op::Extend { pick, beyond_days } => {
                if let Some(i) = pick_of(self.m.holds.len(), pick) {
                    let until = self.now + D::days(beyond_days.into()) + self.offset;
                    let hold = self.m.holds[i].id.clone();
                    let r = self.apply(Action::HoldExtend {
                        hold,
                        until: None,
                        beyond_cap_until: Some(until),
                    });
                    if r.applied() {
                        self.m.holds[i].beyond = Some(until);
                    }
                }
            }
            Op::RequestOpen {
                cam,
                back_days,
                len_days,
            } => {
                let scope = self.range(cam, back_days, len_days);
                let request = self.id("R");
                let r = self.apply(Action::RequestOpen {
                    request: request.clone(),
                    scope: scope.scope(),
                    due: None,
                });
                assert!(r.applied(), "{r:?}");
                let opened = self.now + self.offset;
                let due = opened.checked_add_months(Months::new(1)).expect("months");
                self.m.reqs.push(MReq {
                    id: request,
                    scope,
                    opened,
                    due,
                    closed: false,
                });
            }
            Op::RequestClose { pick } => {
                if let Some(i) = pick_of(self.m.reqs.len(), pick) {
                    let r = self.apply(Action::RequestClose {
                        request: self.m.reqs[i].id.clone(),
                    });
                    if r.applied() {
                        self.m.reqs[i].closed = true;
                    }
                }
            }
            Op::RequestExtend { pick, days } => {
                if let Some(i) = pick_of(self.m.reqs.len(), pick) {
                    let due = self.m.reqs[i].opened + D::days(days.into());
                    let r = self.apply(Action::RequestExtend {
                        request: self.m.reqs[i].id.clone(),
                        due,
                    });
                    if r.applied() {
                        self.m.reqs[i].due = due;
                    }
                }
            }
            Op::Restrict {
                cam,
                back_days,
                len_days,
            } => {
                let scope = self.range(cam, back_days, len_days);
                let restriction = self.id("X");
                let r = self.apply(Action::Restrict {
                    restriction: restriction.clone(),
                    scope: scope.scope(),
                    reason: "r".into(),
                });
                assert!(r.applied(), "{r:?}");
                self.m.res.push(MRes {
                    id: restriction,
                    scope,
                    lifted: false,
                });
            }
            Op::Unrestrict { pick } => {
                if let Some(i) = pick_of(self.m.res.len(), pick) {
                    let r = self.apply(Action::Unrestrict {
                        restriction: self.m.res[i].id.clone(),
                    });
                    if r.applied() {
                        self.m.res[i].lifted = true;
                    }
                }
            }
            Op::Erase {
                cam,
                back_days,
                len_days,
                request,
            } => {
                let scope = self.range(cam, back_days, len_days);
                let request = request
                    .and_then(|p| pick_of(self.m.reqs.len(), p))
                    .map(|i| self.m.reqs[i].id.clone());
                erase_except = request.clone();
                erased = Some(scope.clone());
                let r = self.apply(Action::Erase {
                    scope: scope.scope(),
                    request,
                });
                assert!(r.applied(), "{r:?}");
            }
            Op::ClockJump { days, steps } => {
                self.offset = D::days(days.into());
                self.synced = false;
                self.off_for = steps;
            }
            Op::Pressure { spare_segments } => {
                let media = super::media_bytes(&self.f.data_dir());
                let cap = (1u64 << 20) + media + u64::from(spare_segments) * 1200;
                self.f
                    .capacity
                    .store(cap.saturating_sub(4000), Ordering::SeqCst);
                self.pressure = true;
            }
            Op::Relieve => {
                self.f.capacity.store(u64::MAX / 2, Ordering::SeqCst);
                self.pressure = false;
            }
            Op::Restart => self.f.restart(),
        }
        // Every step ends with a sweep at the agent's clock, a minute on.
        self.now += D::minutes(1);
        if self.off_for == 0 {
            self.offset = D::zero();
            self.synced = true;
        } else {
            self.off_for -= 1;
        }
        let wall = self.now + self.offset;
        let sync = if self.synced {
            SyncState::Synchronised
        } else {
            SyncState::Unsynchronised
        };
        let elapsed = (self.now - self.last_sweep)
            .to_std()
            .unwrap_or(Duration::ZERO);
        self.last_sweep = self.now;
        let report = self
            .f
            .sweep_at(wall, elapsed.max(Duration::from_secs(60)), sync);
        self.check(&deleted_before, erase_except.as_deref(), erased.as_ref());
        if report.paused.is_none() {
            for s in self.m.segs.iter().filter(|s| !s.deleted) {
                assert!(
                    s.delete_after > self.now || self.m.protected(s, self.now, None),
                    "{} alive past its deadline {} at {} and unprotected",
                    s.id,
                    s.delete_after,
                    self.now
                );
            }
        }
    }

    /// Finds what this step deleted and checks it was allowed.
    fn check(
        &mut self,
        deleted_before: &HashSet<String>,
        except: Option<&str>,
        erased: Option<&MScope>,
    ) {
        for i in 0..self.m.segs.len() {
            if self.m.segs[i].deleted || self.f.media_exists(&self.m.segs[i].id) {
                continue;
            }
            let s = self.m.segs[i].clone();
            assert!(!deleted_before.contains(&s.id));
            assert!(
                !self.m.protected(&s, self.now, except),
                "{} was deleted at {} while protected (holds {:?}, requests {:?}, restrictions {:?})",
                s.id, self.now, self.m.holds, self.m.reqs, self.m.res
            );
            let erasure = erased.is_some_and(|e| e.covers(&s));
            assert!(
                s.delete_after <= self.now || erasure || self.pressure,
                "{} deleted at {} before its deadline {} without erasure or disk pressure",
                s.id,
                self.now,
                s.delete_after
            );
            self.m.segs[i].deleted = true;
        }
        let chain = verify_chain(
            &self.f.data_dir().join("receipts"),
            &self.f.key.public_key(),
        )
        .expect("chain");
        assert!(chain.problems.is_empty(), "{:?}", chain.problems);
        let deleted: HashSet<String> = self
            .m
            .segs
            .iter()
            .filter(|s| s.deleted)
            .map(|s| s.id.clone())
            .collect();
        assert_eq!(chain.deleted, deleted, "one receipt per deleted segment");
        assert_eq!(chain.receipts as usize, deleted.len());
        self.f.audit_ok();
    }
}

fn pick_of(len: usize, pick: usize) -> Option<usize> {
    (len > 0).then(|| pick % len)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn retention_model(ops in proptest::collection::vec(op(), 1..40)) {
        let mut f = Fixture::new_with(false);
        let now = t0();
        f.sweep(now);
        let mut run = Run { f, m: Model::default(), now, offset: D::zero(), synced: true, next_start: [now; 2], n: 0, pressure: false, last_sweep: now, off_for: 0 };
        for op in &ops {
            run.step(op);
        }
    }
}
