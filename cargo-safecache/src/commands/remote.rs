//! `remote keygen NAME`, `remote check` and `ls --remote`: the remote
//! tier's own commands (docs/REMOTE.md). The fills' use of the tier is in
//! `fill` and `crate::remote`.

use std::path::Path;

use anyhow::{Context, Result};
use safecache::display::escape;
use safecache_remote::SecretKey;

use crate::cli::RemoteMode;
use crate::ctx::Ctx;
use crate::exit::{self, Coded};
use crate::remote::{Ended, Setup, open_parent, shown_error};
use crate::report::{KeyPair, RemoteChecked, RemoteListed};

/// `remote keygen NAME`: writes NAME.key and NAME.pub, never replacing
/// either.
pub(crate) fn keygen(ctx: &Ctx, name: &Path) -> Result<u8> {
    let stem = name.file_name().and_then(|n| n.to_str()).filter(|n| !n.is_empty()).ok_or_else(|| Coded {
        code: exit::USAGE,
        message: format!("`{}` names no file: give the pair's path without its extension", name.display()),
    })?;
    let (secret, public) = (name.with_file_name(format!("{stem}.key")), name.with_file_name(format!("{stem}.pub")));
    for path in [&secret, &public] {
        if path.symlink_metadata().is_ok() {
            return Err(Coded {
                code: exit::USAGE,
                message: format!(
                    "`{}` exists already, and a key is never replaced: pick another NAME, or remove the old pair \
                     once nothing uses it",
                    path.display()
                ),
            }
            .into());
        }
    }
    let (dir, _) = open_parent(name)?;
    let key = SecretKey::generate().context("cannot make a key")?;
    safecache_remote::keys::write_key_pair(&dir, stem, &key)
        .map_err(|e| anyhow::anyhow!("{}", shown_error(&e)))
        .with_context(|| format!("cannot write the key pair `{}`", name.display()))?;
    ctx.ui.report(KeyPair::new(&secret, &public, key.public_key().to_string()))?;
    Ok(exit::OK)
}

/// The remote the options and the cache's config name: `remote check` and
/// `ls --remote` need one.
fn configured(ctx: &Ctx) -> Result<Setup> {
    let cache = ctx.open()?;
    Setup::resolve(&ctx.remote, &cache.config()?)?.ok_or_else(|| {
        Coded {
            code: exit::USAGE,
            message: "no remote is configured (or its mode is off): set SAFECACHE_REMOTE=s3://BUCKET/PREFIX, pass \
                      --remote-url URL, or store one with `config remote-url URL`"
                .to_owned(),
        }
        .into()
    })
}

/// Runs `future` as the fills run their transfers (`remote::block_on`:
/// the timeout, a cancelling signal, a panicking client), or says why it
/// did not end.
fn block_on<F: Future>(setup: &Setup, what: &str, future: F) -> Result<F::Output> {
    match crate::remote::block_on(setup.timeout, future) {
        Ended::Done(output) => Ok(output),
        stopped => Err(anyhow::anyhow!("{what} {}: the remote tier {}", setup.shown(), stopped.why(setup.timeout))),
    }
}

/// `remote check`.
pub(crate) fn check(ctx: &Ctx) -> Result<u8> {
    let setup = configured(ctx)?;
    let remote = setup.open()?;
    let checked = block_on(&setup, "checking", remote.check())?.map_err(|e| {
        anyhow::anyhow!(
            "the remote {} (namespace `{}`) does not work: {}",
            setup.shown(),
            setup.namespace,
            shown_error(&e)
        )
    })?;
    ctx.ui.report(RemoteChecked {
        url: setup.shown(),
        namespace: setup.namespace.to_string(),
        mode: setup.mode.name(),
        create_exclusive: checked.wrote.then_some(true),
        signed_only: matches!(setup.trust, safecache_remote::Trust::Keys(_)),
        signs: setup.mode == RemoteMode::ReadWrite && setup.signing_key.is_some(),
        probe_left: checked.probe_left,
    })?;
    Ok(exit::OK)
}

/// `ls --remote [PREFIX]`.
pub(crate) fn ls(ctx: &Ctx, prefix: Option<&str>) -> Result<u8> {
    let setup = configured(ctx)?;
    let remote = setup.open()?;
    let listing = block_on(&setup, "listing", remote.list())?.map_err(|e| {
        anyhow::anyhow!(
            "cannot list the remote {} (namespace `{}`): {}",
            setup.shown(),
            setup.namespace,
            shown_error(&e)
        )
    })?;
    let mut listed = 0usize;
    for item in listing.keys.iter().filter(|l| prefix.is_none_or(|p| l.key.as_str().starts_with(p))) {
        listed += 1;
        ctx.ui.report(RemoteListed {
            key: item.key.as_str().to_owned(),
            manifest_bytes: item.manifest_size,
            modified: item.modified_unix,
        })?;
    }
    for foreign in &listing.foreign {
        ctx.ui.warn(format!("`{foreign}` among the remote's manifests is not a key's manifest; it is ignored"));
    }
    if listed == 0 {
        let which = prefix.map(|p| format!(" starting with `{}`", escape(p))).unwrap_or_default();
        ctx.ui.status("Listed", format!("0 keys{which} in {} (namespace `{}`)", setup.shown(), setup.namespace));
    }
    Ok(exit::OK)
}
