//! `amai console ...`: the operator console (crate `amai-console`) outside
//! `amai up`, and its one-time sign-in links. `amai up` serves the console
//! itself and prints a token link; `link` prints a link signed with an
//! operator key (valid once, for five minutes), for a console that is
//! already running; `serve` runs a console against `--nats-url` for a
//! deployment whose parts run separately.

use std::path::PathBuf;
use std::process::ExitCode;

use amai_bus::IdentityKeys;
use anyhow::Context;
use serde_json::json;

use crate::client_cmd::print;
use crate::config::Settings;
use crate::keystore::Keystore;
use crate::server::{open_store, trust_root, IdentityKeysOrKey, TrustRootSource};
use crate::shutdown::Shutdown;

/// `amai console ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ConsoleCommand {
    /// Print a one-time sign-in link for a running console, signed with an
    /// operator key (valid once, for five minutes).
    Link {
        /// The operator's key file (default: the data dir's operator key).
        #[arg(long, env = "AMAI_KEYS")]
        keys: Option<PathBuf>,
        /// The operator's identity id (needed after a key rotation).
        #[arg(long = "id", env = "AMAI_ID")]
        id: Option<String>,
        /// The console's origin (default: http://<--console-addr>).
        #[arg(long)]
        origin: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the console on --console-addr against --nats-url, acting as the
    /// operator whose key is given; prints a sign-in link. Ctrl-C stops it.
    Serve {
        /// The operator's key file (default: the data dir's operator key).
        #[arg(long, env = "AMAI_KEYS")]
        keys: Option<PathBuf>,
    },
}

fn operator_keys(settings: &Settings, keys: Option<PathBuf>) -> anyhow::Result<IdentityKeys> {
    match keys {
        Some(path) => IdentityKeys::load(&path)
            .with_context(|| format!("cannot load the operator key {}", path.display())),
        None => Keystore::open(&settings.data_dir)?
            .operator()
            .with_context(|| {
                "no operator key in the data dir: pass --keys <operator key file>".to_string()
            }),
    }
}

/// Runs `amai console ...`.
pub(crate) async fn console(settings: &Settings, cmd: ConsoleCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConsoleCommand::Link {
            keys,
            id,
            origin,
            json: json_out,
        } => {
            let keys = operator_keys(settings, keys)?;
            let id = id.unwrap_or_else(|| keys.identity_id());
            let origin = origin.unwrap_or_else(|| amai_console::origin_of(settings.console_addr));
            let now = amai_bus::request::now_ms();
            let link = amai_console::signed_login_link(&origin, &keys, &id, now);
            print(
                json_out,
                json!({"link": link, "operator_id": id, "valid_for_secs": amai_console::SIGNED_LINK_TTL.as_secs()}),
                format!(
                    "{link}\n(valid once, for {} minutes)",
                    amai_console::SIGNED_LINK_TTL.as_secs() / 60
                ),
            );
            Ok(ExitCode::SUCCESS)
        }
        ConsoleCommand::Serve { keys } => {
            let url = settings.nats_url.clone().context(
                "amai console serve connects to a running deployment: pass --nats-url (amai up serves its own console)",
            )?;
            let operator = operator_keys(settings, keys)?;
            let keystore = Keystore::open(&settings.data_dir)?;
            let root = match trust_root(settings, &keystore, TrustRootSource::Required) {
                Ok(root) => root,
                // The console's own operator may be the trust root.
                Err(_) => IdentityKeysOrKey::Key(operator.public_key()),
            };
            let (client, store) = open_store(settings, &url, "amai-console", root.public()).await?;
            let config = amai_console::ConsoleConfig::builder()
                .addr(settings.console_addr)
                .nats(client)
                .store(store)
                .operator_keys(operator)
                .login_token(amai_console::generate_login_token())
                .build()
                .context("console settings")?;
            let listener = config.bind().await.with_context(|| {
                format!(
                    "cannot listen on {}: pass --console-addr",
                    settings.console_addr
                )
            })?;
            let origin = amai_console::origin_of(listener.local_addr()?);
            eprintln!(
                "amai console: on {origin}; sign in with {}",
                config.login_link(&origin)
            );
            let shutdown = Shutdown::with_signals();
            amai_console::serve(config, listener, shutdown.wait_owned()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
