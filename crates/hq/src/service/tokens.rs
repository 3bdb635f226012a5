//! API tokens and the roles they carry.
//!
//! A token is `sargs_<id>_<secret>`: the id names it (listing, revoking),
//! the secret (32 random bytes) proves it and is stored only as its SHA-256.
//! Every API route checks the role on the server.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyPool;

use sargs_core::seal::manifest::{hex, sha256_hex};

use super::db::{at, ms};

/// What a token may do. Every role reads; each write belongs to one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Agents, enrolment, `status` and `resend`.
    Admin,
    /// Holds: place, extend, release; offloads to the evidence store.
    DutyOfficer,
    /// Data-subject requests, restrictions, erasures, inventories.
    Dpo,
    /// Reads only.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::DutyOfficer => "duty-officer",
            Role::Dpo => "dpo",
            Role::Auditor => "auditor",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        [Role::Admin, Role::DutyOfficer, Role::Dpo, Role::Auditor]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    /// Whether this role may issue a command of `kind`.
    pub fn may_issue(self, kind: &str) -> bool {
        match self {
            Role::DutyOfficer => kind.starts_with("hold.") || kind == "offload",
            Role::Dpo => {
                kind.starts_with("request.")
                    || matches!(kind, "restrict" | "unrestrict" | "erase" | "inventory")
            }
            Role::Admin => matches!(kind, "status" | "resend"),
            Role::Auditor => false,
        }
    }
}

/// Who presented a valid token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: String,
    pub owner: String,
    pub role: Role,
}

/// Makes a token; returns its id and the token text (shown once).
pub async fn add(pool: &AnyPool, owner: &str, role: Role) -> anyhow::Result<(String, String)> {
    if owner.trim().is_empty() {
        anyhow::bail!("--owner must name who the token is for");
    }
    let mut secret = [0u8; 32];
    let mut idb = [0u8; 4];
    let rng = ring::rand::SystemRandom::new();
    ring::rand::SecureRandom::fill(&rng, &mut secret)
        .and_then(|_| ring::rand::SecureRandom::fill(&rng, &mut idb))
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    let id = format!("t{}", hex(&idb));
    let secret = hex(&secret);
    sqlx::query(
        "INSERT INTO tokens (id, owner, role, secret_sha256, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(owner)
    .bind(role.as_str())
    .bind(sha256_hex(secret.as_bytes()))
    .bind(ms(Utc::now()))
    .execute(pool)
    .await?;
    Ok((id.clone(), format!("sargs_{id}_{secret}")))
}

/// Revokes a token by id.
pub async fn revoke(pool: &AnyPool, id: &str) -> anyhow::Result<()> {
    let done =
        sqlx::query("UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(ms(Utc::now()))
            .execute(pool)
            .await?;
    if done.rows_affected() == 0 {
        anyhow::bail!("no active token {id}");
    }
    Ok(())
}

/// The caller a token belongs to, if it is valid and not revoked.
pub async fn check(pool: &AnyPool, token: &str) -> Result<Option<Caller>, sqlx::Error> {
    let Some((id, secret)) = token.strip_prefix("sargs_").and_then(|t| t.split_once('_')) else {
        return Ok(None);
    };
    let row: Option<(String, String, String)> = sqlx::query_as(
        "SELECT owner, role, secret_sha256 FROM tokens WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(owner, role, hash)| {
        let given = sha256_hex(secret.as_bytes());
        // Both are hex digests of the same length: compared in full.
        let same = given
            .bytes()
            .zip(hash.bytes())
            .fold(given.len() == hash.len(), |ok, (a, b)| ok & (a == b));
        same.then_some(())?;
        Some(Caller {
            token: id.to_owned(),
            owner,
            role: Role::parse(&role)?,
        })
    }))
}

/// One token as listed (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub id: String,
    pub owner: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn list(pool: &AnyPool) -> Result<Vec<Listed>, sqlx::Error> {
    let rows: Vec<(String, String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT id, owner, role, created_at, revoked_at FROM tokens ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, owner, role, c, r)| Listed {
            id,
            owner,
            role,
            created_at: at(c),
            revoked_at: r.map(at),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn each_write_belongs_to_one_role() {
        for kind in ["hold.place", "hold.release", "hold.extend", "offload"] {
            assert!(Role::DutyOfficer.may_issue(kind));
            assert!(!Role::Dpo.may_issue(kind) && !Role::Admin.may_issue(kind));
        }
        for kind in ["request.open", "restrict", "erase", "inventory"] {
            assert!(Role::Dpo.may_issue(kind));
            assert!(!Role::DutyOfficer.may_issue(kind));
        }
        assert!(Role::Admin.may_issue("resend"));
        for kind in ["hold.place", "erase", "resend", "status"] {
            assert!(!Role::Auditor.may_issue(kind));
        }
    }
}
