//! Bearer tokens: the one a command is given (`--token`), and the ones the
//! load commands mint for their simulated users with the development signing
//! key (`--signing-key`).
//!
//! The services verify every token against their verifying key and limit each
//! subject's writes (`RATE_LIMIT_WRITES_PER_SECOND`, 50/s with a burst of 100
//! by default). A load command therefore acts as many subjects: each buyer,
//! author or follower its own, minted once before the load starts so that
//! signing never costs throughput.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use service_kit::auth::{DevKeys, TokenIssuer};

use crate::client::ServiceClient;

/// The scope that lets a caller create and change products.
pub const INVENTORY_ADMIN: &str = "inventory:admin";

/// How long the load commands' tokens last: longer than any run.
const LOAD_TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);

/// The development signing key and the claims its tokens carry.
#[derive(Debug, Clone, clap::Args)]
pub struct SigningArgs {
    /// Ed25519 signing key (PEM) that `capctl token` and the load commands
    /// mint tokens with (`capctl dev-keys` or `make run` creates it).
    #[arg(
        long,
        env = "CAPCTL_SIGNING_KEY",
        default_value = ".local/auth/signing-key.pem",
        global = true
    )]
    pub signing_key: PathBuf,
    /// `iss` of the minted tokens (the services' `AUTH_ISSUER`).
    #[arg(long, env = "CAPCTL_ISSUER", default_value = TokenIssuer::DEFAULT_ISSUER, global = true)]
    pub issuer: String,
    /// `aud` of the minted tokens (the services' `AUTH_AUDIENCE`).
    #[arg(long, env = "CAPCTL_AUDIENCE", default_value = TokenIssuer::DEFAULT_AUDIENCE, global = true)]
    pub audience: String,
}

/// Mints tokens with the signing key.
#[derive(Debug, Clone)]
pub struct Minter {
    issuer: TokenIssuer,
}

impl Minter {
    /// Reads the signing key; says how to make one when there is none.
    pub fn load(args: &SigningArgs) -> anyhow::Result<Self> {
        if !args.signing_key.exists() {
            anyhow::bail!(
                "no signing key at {} to mint tokens with: `capctl dev-keys --dir {}` (or `make run`) \
                 creates the development pair; or pass --signing-key / CAPCTL_SIGNING_KEY",
                args.signing_key.display(),
                args.signing_key
                    .parent()
                    .filter(|dir| !dir.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .display()
            );
        }
        let issuer = TokenIssuer::from_pem_file(&args.signing_key, &args.issuer, &args.audience)?;
        Ok(Self { issuer })
    }

    /// A token for `subject` with `scopes`, valid for `ttl`.
    pub fn mint(&self, subject: &str, scopes: &[&str], ttl: Duration) -> String {
        self.issuer.mint(subject, scopes, ttl)
    }

    /// A load token for `subject` with `scopes`.
    pub fn token(&self, subject: &str, scopes: &[&str]) -> Arc<str> {
        self.mint(subject, scopes, LOAD_TOKEN_TTL).into()
    }

    /// `client` acting as `subject` with `scopes`.
    pub fn client_for(
        &self,
        client: &ServiceClient,
        subject: &str,
        scopes: &[&str],
    ) -> ServiceClient {
        client.with_token(self.token(subject, scopes))
    }

    /// `client` as the administrator the load commands create products as.
    pub fn admin(&self, client: &ServiceClient) -> ServiceClient {
        self.client_for(client, "capctl-admin", &[INVENTORY_ADMIN])
    }

    /// One token per subject, in order, minted now (no scopes).
    pub fn tokens<S: AsRef<str>>(&self, subjects: impl IntoIterator<Item = S>) -> Vec<Arc<str>> {
        subjects
            .into_iter()
            .map(|subject| self.token(subject.as_ref(), &[]))
            .collect()
    }

    /// One client per subject, in order: `client` acting as each.
    pub fn clients<S: AsRef<str>>(
        &self,
        client: &ServiceClient,
        subjects: impl IntoIterator<Item = S>,
    ) -> Vec<ServiceClient> {
        self.tokens(subjects)
            .into_iter()
            .map(|token| client.with_token(token))
            .collect()
    }
}

/// The arguments of `capctl token`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// The user the token acts for (`sub`).
    pub subject: String,
    /// A scope to grant, e.g. `inventory:admin` (repeat for several).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// How long the token is valid: `90s`, `30m`, `1h`, `7d` (a bare number is seconds).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,
}

/// `capctl token`: a development token for one subject.
pub fn mint_token(signing: &SigningArgs, args: &TokenArgs) -> anyhow::Result<String> {
    anyhow::ensure!(!args.subject.is_empty(), "the subject must not be empty");
    let scopes: Vec<&str> = args.scopes.iter().map(String::as_str).collect();
    Ok(Minter::load(signing)?.mint(&args.subject, &scopes, args.ttl))
}

/// The arguments of `capctl dev-keys`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevKeysArgs {
    /// Where the pair lives (created if missing; an existing pair is kept).
    #[arg(long, default_value = ".local/auth")]
    pub dir: PathBuf,
}

/// `capctl dev-keys`: the development key pair in `dir`, created if missing.
pub fn dev_keys(args: &DevKeysArgs) -> anyhow::Result<serde_json::Value> {
    let keys = DevKeys::ensure(&args.dir).with_context(|| {
        format!(
            "creating the development key pair in {}",
            args.dir.display()
        )
    })?;
    Ok(serde_json::json!({
        "signing_key": keys.signing_key,
        "verifying_key": keys.verifying_key,
    }))
}

/// `90s`, `30m`, `1h`, `7d`, or a bare number of seconds; at least a second.
pub fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{raw}' is not a duration such as 90s, 30m, 1h or 7d"))?;
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit '{unit}' in '{raw}' (s, m, h or d)")),
    };
    let secs = number
        .checked_mul(unit_secs)
        .filter(|secs| *secs > 0)
        .ok_or_else(|| format!("'{raw}' must be at least a second and at most a few centuries"))?;
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_take_a_unit() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_ttl("0h").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("").is_err());
    }

    #[test]
    fn minted_tokens_carry_subject_and_scopes() {
        let dir = std::env::temp_dir().join(format!("capctl-auth-{}", uuid::Uuid::new_v4()));
        let keys = DevKeys::ensure(&dir).expect("keys");
        let signing = SigningArgs {
            signing_key: keys.signing_key.clone(),
            issuer: TokenIssuer::DEFAULT_ISSUER.to_owned(),
            audience: TokenIssuer::DEFAULT_AUDIENCE.to_owned(),
        };
        let token = mint_token(
            &signing,
            &TokenArgs {
                subject: "alice".into(),
                scopes: vec![INVENTORY_ADMIN.into()],
                ttl: Duration::from_secs(60),
            },
        )
        .expect("token");
        let payload = token.split('.').nth(1).expect("a JWT has a payload");
        use base64::Engine;
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .expect("base64url"),
        )
        .expect("JSON claims");
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["scope"], INVENTORY_ADMIN);
        assert_eq!(claims["iss"], "cap-services");
        assert!(claims["exp"].as_u64() > claims["iat"].as_u64());
        let missing = SigningArgs {
            signing_key: dir.join("nope.pem"),
            ..signing
        };
        let error = Minter::load(&missing).expect_err("no key");
        assert!(error.to_string().contains("capctl dev-keys"), "{error}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
