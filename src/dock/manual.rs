//! `sargs ingest --from DIR --camera ID`: one dock session by hand, with a
//! progress bar on a terminal (files, bytes, rate) and the same events as
//! the agent's dock mode (to the durable outbox when an HQ link is
//! configured, so HQ hears of it when the agent next runs).
//!
//! It takes the store for maintenance, so it refuses to run beside an agent
//! on the same data directory (that agent ingests its dock paths itself).
//! Ctrl-C stops after dropping the current file, which stays on the camera.

use std::path::Path;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::ingest::{Session, Watch};
use crate::config::Config;
use crate::events::{FileDone, Finished};
use crate::store::{CameraLog, SealContext, Store, StoreError};
use sargs_core::seal::sign::DeviceKey;

/// The terminal's view of a session.
struct Bar(ProgressBar);

impl Watch for Bar {
    fn started(&self, files: u64, bytes: u64) {
        self.0.set_length(bytes);
        self.0.set_message(format!("0/{files} files"));
    }
    fn advanced(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn file(&self, d: &FileDone) {
        self.0
            .set_message(format!("{}/{} files", d.files_done, d.files_total));
        if !d.parses_as_video {
            self.0.println(format!(
                "{}: does not parse as video; sealed as evidence and flagged",
                d.original_name
            ));
        }
    }
}

/// Ingests the recordings in `dir` as body camera `camera`'s (a
/// `[[dock.camera]]` of `config`); `keep` overrides `dock.keep_originals`.
pub fn ingest(
    config: &Config,
    dir: &Path,
    camera: &str,
    keep: Option<bool>,
) -> Result<Finished, String> {
    let Some(body) = config.body_camera(camera) else {
        return Err(format!(
            "{}: camera {camera:?} is not a [[dock.camera]] (body cameras are configured there, with serial and officer)",
            config.file.display()
        ));
    };
    if !dir.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    let mut settings = config.dock.clone().ok_or("no [dock] table")?;
    if let Some(k) = keep {
        settings.keep_originals = k;
    }
    crate::capture::init()?;
    let data_dir = &config.agent.data_dir;
    let store = Store::lock(data_dir).map_err(|e| match e {
        StoreError::Locked { path } => format!(
            "{}: the agent is running on this data directory; it ingests cameras docked at dock.paths itself (stop it to ingest by hand)",
            path.display()
        ),
        e => e.to_string(),
    })?;
    let key = Arc::new(
        DeviceKey::load_or_create(&config.agent.signing_key)
            .map_err(|e| format!("device key: {e}"))?,
    );
    let (retention, (events, _)) =
        crate::wiring::open_retention(config, key.clone()).map_err(|e| e.to_string())?;
    let retention = Arc::new(retention);
    let ctx = Arc::new(SealContext::of(config, key, Some(retention.clone())));
    let mut log = CameraLog::open(
        store.camera_dir(camera),
        body.camera.clone(),
        ctx,
        store.unclean(),
    )
    .map_err(|e| e.to_string())?;
    let cancel = CancellationToken::new();
    stop_on_ctrl_c(cancel.clone());
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:32}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .map_err(|e| e.to_string())?
        .progress_chars("=> "),
    );
    let watch = Bar(bar);
    let session = Session {
        agent_id: &config.agent.id,
        body,
        settings: &settings,
        retention: &retention,
        events: events.as_ref(),
        watch: &watch,
        cancel: &cancel,
        data_dir,
        min_free_bytes: config.agent.min_free_bytes,
    };
    let finished = session.ingest_dir(&mut log, dir);
    watch.0.finish_and_clear();
    drop(log);
    drop(retention);
    store.close().map_err(|e| e.to_string())?;
    Ok(finished)
}

/// Cancels `token` on SIGINT or SIGTERM.
fn stop_on_ctrl_c(token: CancellationToken) {
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                tracing::info!("stopping after the current file");
                token.cancel();
            });
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no signal handler: Ctrl-C ends the ingest at once");
    }
}
