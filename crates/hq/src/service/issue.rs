//! Commands the service issues itself — from the API, and the `resend` that
//! heals what a broker lost — signed with HQ's command key
//! (`commands.key_file`), recorded in the ledger with their issuer, then
//! published (QoS 1) on the agent's or the fleet's command topic. Recorded
//! before published: an agent's response can never arrive for a command the
//! ledger does not know.

use std::sync::Arc;

use chrono::{Duration, Utc};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::AsyncClient;
use sqlx::AnyPool;

use sargs_core::command::{Action, Command, Target, Trust};
use sargs_core::seal::sign::DeviceKey;

/// Signs, records and publishes.
#[derive(Clone)]
pub struct Issuer {
    pub key: Arc<DeviceKey>,
    pub client: AsyncClient,
    pub prefix: String,
    pub trust: Trust,
    pub pool: AnyPool,
}

impl Issuer {
    /// Issues `action` to `target` on behalf of `issuer`; valid for `valid`.
    pub async fn issue(
        &self,
        target: Target,
        issuer: &str,
        action: Action,
        valid: Duration,
    ) -> anyhow::Result<Command> {
        let now = Utc::now();
        let cmd = Command {
            id: crate::verbs::random_id("c-")?,
            issued_at: now,
            expires_at: now + valid,
            target,
            issuer: issuer.to_owned(),
            action,
        };
        self.send(cmd).await
    }

    /// Signs, records and publishes a command already built.
    pub async fn send(&self, cmd: Command) -> anyhow::Result<Command> {
        // The agent's own schema checks, before anything is signed.
        sargs_core::command::parse_payload(&sargs_core::command::to_payload(&cmd))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let bytes = sargs_core::command::sign(&self.key, &cmd);
        super::commands::record(&self.pool, &self.trust, &bytes).await?;
        let topic = match &cmd.target {
            Target::Agent(a) => format!("{}/agents/{a}/commands", self.prefix),
            Target::Fleet => format!("{}/fleet/commands", self.prefix),
        };
        self.client
            .publish(topic, QoS::AtLeastOnce, false, bytes)
            .await?;
        tracing::info!(id = %cmd.id, kind = cmd.action.kind(), issuer = %cmd.issuer, "command issued");
        Ok(cmd)
    }
}
