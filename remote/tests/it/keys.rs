//! Key pairs and their files.

use std::os::unix::fs::PermissionsExt;

use safecache_remote::keys::{read_public_key, read_secret_key, write_key_pair};
use safecache_remote::{KeyError, PublicKey, SecretKey};

use crate::support::temp_dir;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_key_pair_is_written_0600_and_read_back() {
    let dir = temp_dir();
    let key = SecretKey::generate().unwrap();
    write_key_pair(&dir.dir, "ci", &key).unwrap();
    let root = dir.temp.path();
    assert_eq!(mode(&root.join("ci.key")), 0o600);
    assert_eq!(mode(&root.join("ci.pub")) & 0o600, 0o600);
    let secret_text = std::fs::read_to_string(root.join("ci.key")).unwrap();
    assert!(secret_text.starts_with("ed25519-secret:") && secret_text.ends_with('\n') && secret_text.len() == 80);
    assert_eq!(std::fs::read_to_string(root.join("ci.pub")).unwrap(), format!("{}\n", key.public_key()));
    assert_eq!(read_secret_key(&dir.dir, "ci.key").unwrap().public_key(), key.public_key());
    assert_eq!(read_public_key(&dir.dir, "ci.pub").unwrap(), key.public_key());
    assert_ne!(SecretKey::generate().unwrap().public_key(), key.public_key());
}

#[test]
fn an_existing_key_is_never_replaced() {
    let dir = temp_dir();
    let key = SecretKey::generate().unwrap();
    write_key_pair(&dir.dir, "ci", &key).unwrap();
    let err = write_key_pair(&dir.dir, "ci", &SecretKey::generate().unwrap()).unwrap_err();
    assert!(
        matches!(&err, KeyError::Io { op: "create", source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists)
    );
    assert_eq!(read_secret_key(&dir.dir, "ci.key").unwrap().public_key(), key.public_key());
}

#[test]
fn a_secret_key_others_may_read_is_refused() {
    let dir = temp_dir();
    write_key_pair(&dir.dir, "ci", &SecretKey::generate().unwrap()).unwrap();
    let path = dir.temp.path().join("ci.key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = read_secret_key(&dir.dir, "ci.key").unwrap_err();
    assert!(matches!(err, KeyError::TooOpen { mode: 0o640, .. }), "{err:?}");
    assert!(err.to_string().contains("make it 0600"), "{err}");
}

#[test]
fn a_key_file_behind_a_symlink_is_refused() {
    let dir = temp_dir();
    write_key_pair(&dir.dir, "ci", &SecretKey::generate().unwrap()).unwrap();
    std::os::unix::fs::symlink("ci.key", dir.temp.path().join("link.key")).unwrap();
    let err = read_secret_key(&dir.dir, "link.key").unwrap_err();
    assert!(matches!(err, KeyError::Io { op: "open", .. }), "{err:?}");
}

#[test]
fn malformed_keys_are_refused() {
    let good = SecretKey::from_seed(&[9; 32]).public_key().to_string();
    for bad in [
        "",
        "ed25519:",
        &good.to_uppercase(),
        &good.replace("ed25519:", "ed25519 "),
        &format!("{good}0"),
        &good[..good.len() - 1],
        // Not a point on the curve.
        &format!("ed25519:{}", "02".repeat(31) + "80"),
    ] {
        assert!(matches!(bad.parse::<PublicKey>(), Err(KeyError::Malformed { .. })), "{bad}");
    }
    assert!(matches!(SecretKey::from_text("ed25519-secret:zz"), Err(KeyError::Malformed { .. })));
    let dir = temp_dir();
    std::fs::write(dir.temp.path().join("big.pub"), vec![b'a'; 2000]).unwrap();
    assert!(matches!(read_public_key(&dir.dir, "big.pub"), Err(KeyError::Malformed { .. })));
}
