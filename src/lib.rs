//! `sargs`: an edge agent that records municipal cameras into sealed, signed,
//! chained segments and keeps each one exactly as long as its policy allows.
//!
//! The library holds every capability; the `sargs` and `sargsctl` binaries are
//! thin command-line layers over it. Each module states at its top the
//! guarantee it keeps (see `docs/design.md` in the shared design brief for the
//! guarantees users rely on).

pub mod agent;
pub mod capture;
pub mod clock;
pub mod config;
pub mod demo;
pub mod dock;
pub mod events;
pub mod hq;
pub mod liveness;
pub mod retention;
pub mod service;
pub mod store;
pub mod sync;
pub mod wiring;

/// The agent's version, stamped into every manifest.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
