//! The running agent: one store owner, one recorder thread per camera, one
//! shutdown path.
//!
//! Start order: take the data directory (lock, unclean-stop detection), load
//! or create the device key, recover each camera's chain, then start the
//! cameras. Stop order: cancel the token, let every camera close its open
//! segment, join the threads, then mark the stop clean. A store that cannot
//! be taken or a key that cannot be read stops start-up with the reason; a
//! camera that cannot record only affects that camera.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio_util::sync::CancellationToken;

use crate::capture::{DiskFloor, Recorder};
use crate::config::Config;
use crate::seal::sign::{DeviceKey, KeyError};
use crate::store::{CameraLog, SealContext, Store, StoreError};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}")]
    Gstreamer(String),
    #[error("starting camera thread {camera}: {source}")]
    Thread {
        camera: String,
        source: std::io::Error,
    },
}

/// A running agent.
pub struct Agent {
    store: Store,
    cameras: Vec<(String, JoinHandle<()>)>,
    cancel: CancellationToken,
}

impl Agent {
    /// Starts recording every enabled camera of `config`.
    pub fn start(config: &Config) -> Result<Agent, StartError> {
        crate::capture::init().map_err(StartError::Gstreamer)?;
        let store = Store::open(&config.agent.data_dir)?;
        let key = DeviceKey::load_or_create(&config.agent.signing_key)?;
        tracing::info!(agent = %config.agent.id, data_dir = %config.agent.data_dir.display(),
            device_key = %key.public_key_b64(), unclean_stop = store.unclean(), "agent starting");
        let ctx = Arc::new(SealContext {
            agent_id: config.agent.id.clone(),
            key,
            recipients: config.recipients.clone(),
            policy: config.policy.clone(),
        });
        let cancel = CancellationToken::new();
        let mut logs = Vec::new();
        for cam in config.enabled_cameras() {
            let log = CameraLog::open(
                store.camera_dir(&cam.id),
                cam.clone(),
                ctx.clone(),
                store.unclean(),
            )?;
            logs.push(log);
        }
        let mut cameras = Vec::new();
        for log in logs {
            let id = log.camera().id.clone();
            let rec = Recorder::new(
                log,
                DiskFloor {
                    path: config.agent.data_dir.clone(),
                    min_free_bytes: config.agent.min_free_bytes,
                },
                config.policy.clone(),
                config.agent.id.clone(),
                config.supervision,
                cancel.clone(),
            );
            let handle = std::thread::Builder::new()
                .name(format!("cam-{id}"))
                .spawn(move || rec.run())
                .map_err(|source| {
                    cancel.cancel();
                    StartError::Thread {
                        camera: id.clone(),
                        source,
                    }
                })?;
            cameras.push((id, handle));
        }
        Ok(Agent {
            store,
            cameras,
            cancel,
        })
    }

    /// The token that stops the agent.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops every camera (each closes its open segment) and marks a clean stop.
    pub fn stop(self) -> Result<(), StoreError> {
        self.cancel.cancel();
        for (id, handle) in self.cameras {
            if handle.join().is_err() {
                tracing::error!(camera = %id, "camera thread panicked");
            }
        }
        self.store.close()?;
        tracing::info!("agent stopped");
        Ok(())
    }
}
