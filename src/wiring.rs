//! How the agent's parts are put together from a config: where events go
//! and what the retention engine is opened with. One place, shared by the
//! running agent ([`crate::agent`]) and by the commands that work on a data
//! directory without it (`sargs ingest`, `apply`, `reindex`), so an event
//! made by hand reaches HQ through the same durable outbox as one made by
//! the agent.

use std::sync::Arc;

use crate::config::Config;
use crate::events::{EventSink, LogEvents};
use crate::hq::messages::{OutboxEvents, Topics};
use crate::hq::outbox::Outbox;
use crate::retention::{Retention, RetentionError, Setup};
use crate::store::StoreError;
use sargs_core::seal::sign::DeviceKey;

/// The retention engine's event sink, and the outbox behind it if any.
pub type Events = (Arc<dyn EventSink>, Option<Arc<Outbox>>);

/// Where events go: with an HQ link configured, the durable outbox (also
/// when no agent runs, e.g. `sargs apply`), else the log.
pub fn event_sink(config: &Config) -> Result<Events, StoreError> {
    let Some(link) = &config.link else {
        return Ok((Arc::new(LogEvents), None));
    };
    let data_dir = &config.agent.data_dir;
    let outbox =
        Arc::new(
            Outbox::open(data_dir, link.outbox_max).map_err(|source| StoreError::Io {
                path: data_dir.join("outbox"),
                source,
            })?,
        );
    let topics = Topics::new(&link.prefix, &config.agent.id);
    let sink = OutboxEvents {
        agent: config.agent.id.clone(),
        topic: topics.events,
        outbox: outbox.clone(),
    };
    Ok((Arc::new(sink), Some(outbox)))
}

/// What the retention engine of `config`'s store is opened with.
pub fn retention_setup(config: &Config, key: Arc<DeviceKey>, events: Arc<dyn EventSink>) -> Setup {
    let data_dir = config.agent.data_dir.clone();
    let probe = data_dir.clone();
    Setup {
        agent_id: config.agent.id.clone(),
        data_dir,
        key,
        policy: config.policy.clone(),
        settings: config.retention,
        command_keys: config.command_keys.clone(),
        events,
        free_space: Box::new(move || sargs_core::fsutil::free_bytes(&probe)),
        offload_store: config.offload.is_some(),
    }
}

/// The retention engine of `config`'s store (the store must be taken), with
/// its event sink (and the outbox behind it, if any).
pub fn open_retention(
    config: &Config,
    key: Arc<DeviceKey>,
) -> Result<(Retention, Events), RetentionError> {
    let events = event_sink(config).map_err(|e| match e {
        StoreError::Io { path, source } => RetentionError::Io { path, source },
        other => RetentionError::Corrupt(other.to_string()),
    })?;
    let retention = Retention::open(retention_setup(config, key, events.0.clone()))?;
    Ok((retention, events))
}
