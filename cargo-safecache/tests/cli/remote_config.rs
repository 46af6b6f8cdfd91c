//! `config` for the remote tier: each remote setting is stored, shown and
//! removed; a bad value is a one-line usage error that leaves the config
//! file as it was; a stored remote is the one `run --key` uses, and the
//! options and variables override it.

use std::path::Path;

use serde_json::Value;

use crate::support::{Out, Sandbox};

/// The variables of the remote tier, which a developer's shell may set.
const REMOTE_VARS: [&str; 6] = [
    "SAFECACHE_REMOTE",
    "SAFECACHE_REMOTE_MODE",
    "SAFECACHE_REMOTE_NAMESPACE",
    "SAFECACHE_REMOTE_TRUSTED_KEYS",
    "SAFECACHE_REMOTE_SIGNING_KEY",
    "SAFECACHE_REMOTE_TIMEOUT",
];

/// `cargo-safecache ARGS` on `cache`, with `vars` set and no other remote
/// variable.
fn run_on(sb: &Sandbox, cache: &Path, vars: &[(&str, &str)], args: &[&str]) -> Out {
    let mut cmd = sb.cmd(args);
    cmd.env("SAFECACHE_DIR", cache);
    for var in REMOTE_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    Out::of(&mut cmd)
}

fn run(sb: &Sandbox, args: &[&str]) -> Out {
    run_on(sb, &sb.cache, &[], args)
}

fn config_json(sb: &Sandbox) -> Value {
    let out = run(sb, &["--message-format", "json", "config"]);
    out.assert_code(0);
    serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap()
}

fn config_bytes(cache: &Path) -> Option<Vec<u8>> {
    std::fs::read(cache.join(".safecache/config.json")).ok()
}

/// The keys whose manifests `store` holds in `namespace`.
fn manifests(store: &Path, namespace: &str) -> Vec<String> {
    match std::fs::read_dir(store.join(namespace).join("v1/manifests")) {
        Ok(dir) => {
            let mut names: Vec<String> = dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            names
        }
        Err(_) => Vec::new(),
    }
}

fn url_of(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

#[test]
fn each_remote_setting_is_stored_shown_and_unset() {
    let sb = Sandbox::new();
    let keygen = run(&sb, &["remote", "keygen", sb.path("ci").to_str().unwrap()]);
    keygen.assert_code(0);
    let public = keygen.stdout.trim().to_owned();
    assert!(public.starts_with("ed25519:"), "{keygen}");
    let store = sb.path("store");
    let url = url_of(&store);
    let secret = sb.path("ci.key").display().to_string();
    let pub_file = sb.path("ci.pub").display().to_string();

    // (setting, value given, `config NAME` shows, the JSON field, what it stores)
    let settings = [
        ("remote-url", url.as_str(), url.clone(), "url", url.clone()),
        ("remote-mode", "Read-Only", "read-only".to_owned(), "mode", "read-only".to_owned()),
        ("remote-namespace", "main", "main".to_owned(), "namespace", "main".to_owned()),
        ("remote-trusted-keys", public.as_str(), public.clone(), "trusted_keys", public.clone()),
        ("remote-signing-key", secret.as_str(), secret.clone(), "signing_key", secret.clone()),
        ("remote-timeout", "90s", "90s".to_owned(), "timeout", "90s".to_owned()),
    ];
    for (setting, value, shown, field, stored) in &settings {
        let out = run(&sb, &["config", setting, value]);
        out.assert_code(0);
        assert!(out.stderr.contains(&format!("Configured {setting} {shown} for")), "{out}");
        let out = run(&sb, &["config", setting]);
        out.assert_code(0);
        assert_eq!(out.stdout, format!("{setting} = {shown}\n"), "{out}");
        assert_eq!(config_json(&sb)["remote"][field], *stored, "{setting}");
    }
    // A relative key file is stored as an absolute path.
    let mut cmd = sb.cmd(["config", "remote-trusted-keys", "ci.pub"]);
    cmd.current_dir(sb.tmp.path());
    Out::of(&mut cmd).assert_code(0);
    assert_eq!(config_json(&sb)["remote"]["trusted_keys"], pub_file.as_str());

    // Every setting is listed, the secret key only by its path.
    let all = run(&sb, &["config"]);
    all.assert_code(0);
    for setting in ["remote-url", "remote-mode", "remote-option"] {
        assert!(all.stdout.contains(&format!("{setting} = ")), "{all}");
    }
    let key_text = std::fs::read_to_string(sb.path("ci.key")).unwrap();
    assert!(!all.stdout.contains(key_text.trim()), "{all}");

    for (setting, ..) in &settings {
        let out = run(&sb, &["config", "--unset", setting]);
        out.assert_code(0);
        assert!(run(&sb, &["config", setting]).stdout.contains("(default"), "{setting}");
    }
    let remote = &config_json(&sb)["remote"];
    assert!(
        ["url", "mode", "namespace", "trusted_keys", "signing_key", "timeout"].iter().all(|f| remote[f].is_null()),
        "{remote}"
    );
    assert_eq!(run(&sb, &["config", "remote-url"]).stdout, "remote-url = off (default)\n");
    run(&sb, &["config", "remote-url", "OFF"]).assert_code(0);
    assert_eq!(config_json(&sb)["remote"]["url"], "off");
}

#[cfg(feature = "aws")]
#[test]
fn remote_options_are_added_replaced_removed_and_hidden_when_secret() {
    let sb = Sandbox::new();
    run(&sb, &["config", "remote-url", "s3://bucket/prefix"]).assert_code(0);
    run(&sb, &["config", "remote-option", "AWS_REGION=eu-west-1"]).assert_code(0);
    run(&sb, &["config", "remote-option", "aws_region=eu-north-1"]).assert_code(0);
    run(&sb, &["config", "remote-option", "aws_access_key_id=AKIDEXAMPLE"]).assert_code(0);
    let secret = run(&sb, &["config", "remote-option", "aws_secret_access_key=hunter2"]);
    secret.assert_code(0);
    assert!(secret.stderr.contains("warning:") && !secret.stderr.contains("hunter2"), "{secret}");
    let options = &config_json(&sb)["remote"]["options"];
    assert_eq!(options["aws_region"], "eu-north-1");
    assert_eq!(options["aws_secret_access_key"], "(hidden)");
    let shown = run(&sb, &["config", "remote-option"]);
    assert_eq!(
        shown.stdout,
        "remote-option = aws_access_key_id=AKIDEXAMPLE\nremote-option = aws_region=eu-north-1\n\
         remote-option = aws_secret_access_key=(hidden)\n",
        "{shown}"
    );
    let file = std::fs::read_to_string(sb.cache.join(".safecache/config.json")).unwrap();
    assert!(file.contains("hunter2"), "the file keeps it: {file}");

    // `NAME=` removes one; --unset removes them all.
    run(&sb, &["config", "remote-option", "aws_region="]).assert_code(0);
    assert!(config_json(&sb)["remote"]["options"].get("aws_region").is_none());
    // A URL of another backend must not strand the stored options.
    let before = config_bytes(&sb.cache);
    run(&sb, &["config", "remote-url", &url_of(&sb.path("s"))])
        .assert_one_line_error(2, "config --unset remote-option");
    assert_eq!(config_bytes(&sb.cache), before);
    run(&sb, &["config", "--unset", "remote-option"]).assert_code(0);
    assert_eq!(config_json(&sb)["remote"]["options"], serde_json::json!({}));
    assert_eq!(config_json(&sb)["remote"]["url"], "s3://bucket/prefix");
}

#[test]
fn a_bad_remote_value_is_a_one_line_usage_error_that_changes_nothing() {
    let sb = Sandbox::new();
    // No URL stored: an option cannot be checked.
    run(&sb, &["config", "durability", "full"]).assert_code(0);
    let before = config_bytes(&sb.cache).unwrap();
    run(&sb, &["config", "remote-option", "aws_region=x"]).assert_one_line_error(2, "set remote-url first");
    assert_eq!(config_bytes(&sb.cache).unwrap(), before);

    run(&sb, &["config", "remote-url", &url_of(&sb.path("store"))]).assert_code(0);
    run(&sb, &["config", "remote-namespace", "main"]).assert_code(0);
    let before = config_bytes(&sb.cache).unwrap();
    #[cfg_attr(feature = "gcp", allow(unused_mut))]
    let mut bad: Vec<(&str, &str, &str)> = vec![
        ("remote-url", "not a url", "invalid remote URL"),
        ("remote-url", "ftp://host/dir", "unsupported remote URL"),
        ("remote-mode", "sometimes", "read-write, read-only or off"),
        ("remote-namespace", "Main", "1 to 64"),
        ("remote-namespace", "", "1 to 64"),
        ("remote-trusted-keys", "ed25519:1234", "invalid trusted key"),
        ("remote-trusted-keys", "missing.pub", "cannot read the trusted key file"),
        ("remote-signing-key", "missing.key", "cannot use it as a signing key"),
        ("remote-timeout", "0s", "positive duration"),
        ("remote-timeout", "soon", "expected a duration"),
        ("remote-option", "aws_region", "expected NAME=VALUE"),
        ("remote-option", "aws_region=eu-west-1", "unknown file option `aws_region`"),
    ];
    #[cfg(not(feature = "gcp"))]
    bad.push(("remote-url", "gs://bucket/prefix", "rebuild with the `gcp` feature"));
    for (setting, value, fragment) in bad {
        let out = run(&sb, &["config", setting, value]);
        out.assert_one_line_error(2, fragment);
        assert!(out.stderr.contains("nothing was changed"), "{out}");
        assert_eq!(config_bytes(&sb.cache).unwrap(), before, "{setting} {value} changed the config");
    }
    // A world-readable secret key is no signing key.
    let keygen = run(&sb, &["remote", "keygen", sb.path("open").to_str().unwrap()]);
    keygen.assert_code(0);
    let key = sb.path("open.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    run(&sb, &["config", "remote-signing-key", key.to_str().unwrap()]).assert_one_line_error(2, "signing key");
    assert_eq!(config_bytes(&sb.cache).unwrap(), before);
}

#[test]
fn run_key_uses_the_stored_remote_and_the_variables_override_it() {
    let sb = Sandbox::new();
    let store = sb.path("store");
    std::fs::create_dir(&store).unwrap();
    let url = url_of(&store);
    let (a, b) = (sb.path("a"), sb.path("b"));
    for cache in [&a, &b] {
        run_on(&sb, cache, &[], &["config", "remote-url", &url]).assert_code(0);
        run_on(&sb, cache, &[], &["config", "remote-namespace", "stored"]).assert_code(0);
    }
    let fill = ["run", "--key", "k", "--", "sh", "-c", "echo shared > \"$SAFECACHE_OUT/f\""];
    let out = run_on(&sb, &a, &[], &fill);
    out.assert_code(0);
    assert_eq!(manifests(&store, "stored"), ["k"], "{out}");

    // Cache B restores it from the store: its own command never runs.
    let out = run_on(&sb, &b, &[], &["run", "--key", "k", "--", "false"]);
    out.assert_code(0);
    assert_eq!(std::fs::read_to_string(Path::new(&out.last_stdout_line()).join("f")).unwrap(), "shared\n");

    // The variables override what is stored, and `config` says so.
    let env = [("SAFECACHE_REMOTE_NAMESPACE", "fromenv")];
    let shown = run_on(&sb, &a, &env, &["config", "remote-namespace"]);
    assert_eq!(
        shown.stdout,
        "remote-namespace = stored; --remote-namespace or SAFECACHE_REMOTE_NAMESPACE (fromenv) overrides it\n"
    );
    let fill = ["run", "--key", "j", "--", "sh", "-c", "echo j > \"$SAFECACHE_OUT/f\""];
    run_on(&sb, &a, &env, &fill).assert_code(0);
    assert_eq!(manifests(&store, "fromenv"), ["j"]);
    assert_eq!(manifests(&store, "stored"), ["k"]);
    // SAFECACHE_REMOTE=off turns the stored remote off for one command.
    let fill = ["run", "--key", "local", "--", "sh", "-c", "echo l > \"$SAFECACHE_OUT/f\""];
    run_on(&sb, &a, &[("SAFECACHE_REMOTE", "off")], &fill).assert_code(0);
    assert_eq!(manifests(&store, "stored"), ["k"]);

    // status names the stored remote without contacting it.
    let status = run_on(&sb, &a, &[], &["status"]);
    assert!(status.stdout.contains(&format!("remote: {url} (namespace `stored`, read-write)")), "{status}");
    let stats = run_on(&sb, &a, &[], &["--message-format", "json", "stats"]);
    let stats: Value = serde_json::from_str(stats.stdout.trim()).unwrap();
    assert_eq!((stats["uploads"].as_u64(), stats["remote_misses"].as_u64()), (Some(2), Some(2)), "{stats}");
    let stats = run_on(&sb, &b, &[], &["--message-format", "json", "stats"]);
    let stats: Value = serde_json::from_str(stats.stdout.trim()).unwrap();
    assert_eq!(stats["remote_hits"].as_u64(), Some(1), "{stats}");
    assert!(stats["bytes_downloaded"].as_u64().unwrap() > 0, "{stats}");
}
