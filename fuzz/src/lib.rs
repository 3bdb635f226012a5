//! Coverage-guided fuzzing of everything sargs reads from outside, on stable
//! Rust with AFL++ (`cargo afl`, driven by `scripts/fuzz`).
//!
//! Each [`Target`] is one kind of input and the product's own entry point
//! for it: HQ's signed commands and their payloads, the agent's records and
//! receipts, `sargs.toml` and `hq.toml`, policy files, sealed segments (age
//! header, stream, salvage), files docked from body cameras, and every
//! message HQ's service takes from the broker. A target is made once per
//! process (keys, scratch directory, ledger), then runs input after input.
//!
//! The same binary, `sargs-fuzz`, is the fuzzer's target when built by
//! `cargo afl build` (`--cfg fuzzing`) and, built as usual, replays files
//! through a target: a crash the fuzzer found is reproduced with
//! `sargs-fuzz TARGET FILE`. The seed corpora in `fuzz/corpus/<target>/`
//! are made by `sargs-fuzz seeds` with the product's own writers.
//!
//! Invariant: a target's `run` returns for every input. A panic, an abort or
//! a hang inside it is a defect of the product code it calls; the harness
//! itself never panics on an input (only on a broken setup, loudly).

pub mod fixture;
mod hq;
mod loaders;
mod media;
mod records;
pub mod seeds;

use std::path::{Path, PathBuf};

/// One target made ready: runs one input.
pub trait Harness {
    fn run(&self, data: &[u8]);
}

/// A kind of input and how to fuzz it.
pub struct Target {
    pub name: &'static str,
    /// What the target covers, in a line.
    pub covers: &'static str,
    /// The longest one input may take before the fuzzer calls it a hang.
    pub timeout_ms: u32,
    /// The fuzzer's dictionary of the input's tokens (`fuzz/dict/`), if any.
    pub dictionary: Option<&'static str>,
    make: fn() -> Result<Box<dyn Harness>, String>,
}

impl Target {
    /// The target made ready (its keys, scratch directory, ledger).
    pub fn harness(&self) -> Result<Box<dyn Harness>, String> {
        (self.make)()
    }

    /// Its seed corpus in the repository.
    pub fn corpus(&self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(self.name)
    }
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "command_envelope",
        covers: "a signed command as the agent receives it: envelope, signature, trusted key, payload, target, times",
        timeout_ms: 1000,
        dictionary: Some("json.dict"),
        make: records::CommandEnvelope::make,
    },
    Target {
        name: "command_payload",
        covers: "a command payload: schema, ids, scopes, every kind's arguments; written back, signed and verified",
        timeout_ms: 1000,
        dictionary: Some("json.dict"),
        make: records::CommandPayload::make,
    },
    Target {
        name: "manifest",
        covers: "a record: envelope opened with the device key; a manifest payload signed and verified as a camera's chain",
        timeout_ms: 1000,
        dictionary: Some("json.dict"),
        make: records::ManifestTarget::make,
    },
    Target {
        name: "receipt",
        covers: "a deletion receipt: envelope opened with the device key; a receipt payload signed and verified as the receipt chain",
        timeout_ms: 1000,
        dictionary: Some("json.dict"),
        make: records::ReceiptTarget::make,
    },
    Target {
        name: "config",
        covers: "sargs.toml (with the shipped policy beside it) and hq.toml, through their loaders",
        timeout_ms: 1000,
        dictionary: Some("toml.dict"),
        make: loaders::ConfigTarget::make,
    },
    Target {
        name: "policy",
        covers: "a policy file through its loader; notices and deadlines of what it defines",
        timeout_ms: 1000,
        dictionary: Some("toml.dict"),
        make: loaders::PolicyTarget::make,
    },
    Target {
        name: "age",
        covers: "a sealed segment opened with HQ's identity: age header, stream, salvage of a cut-short stream",
        timeout_ms: 1000,
        dictionary: None,
        make: media::AgeTarget::make,
    },
    Target {
        name: "dock_probe",
        covers: "a file on a body camera's storage, probed by the dock (GStreamer's discoverer)",
        timeout_ms: 10_000,
        dictionary: None,
        make: media::DockProbe::make,
    },
    Target {
        name: "hq_message",
        covers: "a message from the broker into HQ's ledger: topic, size, JSON, envelope, every event, status, response and command",
        timeout_ms: 2000,
        dictionary: Some("json.dict"),
        make: hq::HqMessage::make,
    },
];

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The files under `paths` (a directory gives the files in it), in order.
pub fn inputs(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            files.retain(|f| f.is_file());
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Runs every file under `paths` through `target`; the number run.
pub fn replay(target: &Target, paths: &[PathBuf]) -> Result<usize, String> {
    let harness = target.harness()?;
    let files = inputs(paths).map_err(|e| e.to_string())?;
    for f in &files {
        let data = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        harness.run(&data);
    }
    Ok(files.len())
}

/// Runs `harness` under AFL++ (persistent mode): never returns while the
/// fuzzer feeds it; a panic aborts, which the fuzzer records as a crash.
#[cfg(fuzzing)]
pub fn fuzz(harness: Box<dyn Harness>) {
    let harness = std::panic::AssertUnwindSafe(harness);
    afl::fuzz(true, move |data| {
        let harness = &harness;
        harness.0.run(data)
    });
}
