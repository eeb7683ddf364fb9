//! `shipfeed verify`: is this delivery authentic under this secret?

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use chrono::Utc;
use shipfeed::registry::{self, Settings};
use shipfeed::{auth, Credentials, Headers, Provider, RawDelivery, Secret};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The provider that sent the delivery.
    #[arg(long, short)]
    provider: Provider,
    /// Environment variable holding the secret (HMAC key, password or token); never a literal,
    /// so it stays out of shell history. Repeat it for secrets in rotation: the answer says
    /// which position matched.
    #[arg(long, required = true)]
    secret_env: Vec<String>,
    /// The secret is the password for this HTTP Basic user (Shipup) instead of an HMAC key.
    #[arg(long, conflicts_with_all = ["fixed_bearer", "token_header"])]
    basic_user: Option<String>,
    /// The secret is a fixed bearer token (Shipup), compared as a string.
    #[arg(long, alias = "bearer")]
    fixed_bearer: bool,
    /// The secret is the value of this custom header (HappyColis subscription headers).
    #[arg(long)]
    token_header: Option<String>,
    /// A request header, `Name: value` (repeatable). Default: the `FILE.headers` sidecar.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// The exact body bytes.
    file: PathBuf,
}

pub(crate) fn run(args: &Args) -> Result<ExitCode> {
    let adapter = registry::adapter(args.provider, &Settings::default())?;
    let mut credentials = Vec::new();
    for var in &args.secret_env {
        let secret = std::env::var(var)
            .with_context(|| format!("environment variable `{var}` is not set"))?;
        credentials.push(credentials_with(args, Secret::new(secret)));
    }
    let body = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let headers = if args.headers.is_empty() {
        let sidecar = {
            let mut name = args.file.as_os_str().to_owned();
            name.push(".headers");
            PathBuf::from(name)
        };
        std::fs::read_to_string(&sidecar)
            .map(|text| Headers::parse_lines(&text))
            .unwrap_or_default()
    } else {
        let mut headers = Headers::new();
        for line in &args.headers {
            let Some((name, value)) = line.split_once(':') else {
                bail!("--header `{line}` is not `Name: value`");
            };
            headers.insert(name.trim(), value.trim());
        }
        headers
    };
    let delivery = RawDelivery {
        body,
        headers,
        received_at: Utc::now(),
    };
    match auth::verify_any(adapter.as_ref(), &delivery, &credentials) {
        Ok(position) if credentials.len() > 1 => {
            println!("valid (secret {position}, ${})", args.secret_env[position]);
            Ok(ExitCode::SUCCESS)
        }
        Ok(_) => {
            println!("valid");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            println!("invalid: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The credentials the flags describe, with this secret.
fn credentials_with(args: &Args, secret: Secret) -> Credentials {
    if let Some(username) = &args.basic_user {
        Credentials::Basic {
            username: username.clone(),
            password: secret,
        }
    } else if args.fixed_bearer {
        Credentials::Bearer(secret)
    } else if let Some(header) = &args.token_header {
        Credentials::HeaderToken {
            header: header.clone(),
            token: secret,
        }
    } else {
        Credentials::Hmac(secret)
    }
}
