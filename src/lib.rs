//! `sargs`: an edge agent that records municipal cameras into sealed, signed,
//! chained segments and keeps each one exactly as long as its policy allows.
//!
//! The agent's library: configuration, capture, the store, retention, the
//! dock, the HQ link and the service; the `sargs` binary is a thin command
//! line over it. The formats and proofs it shares with HQ (sealing,
//! manifests, chains, receipts, commands, the policy) are in `sargs-core`.
//! Each module states at its top the invariant it keeps; `docs/design.md`
//! gives the guarantees users rely on and how the workspace is layered
//! ("Layers and packages").

pub mod agent;
pub mod backoff;
pub mod capture;
pub mod clock;
pub mod config;
pub mod demo;
pub mod diskwatch;
pub mod dock;
pub mod events;
pub mod hq;
pub mod liveness;
pub mod offload;
pub mod retention;
pub mod service;
pub mod store;
pub mod sync;
pub mod wiring;

/// The agent's version, stamped into every manifest.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
