//! The signed remote manifest: its exact bytes, and that no signature
//! survives a change of any field it covers.

use std::collections::BTreeSet;

use safecache::Key;
use safecache_remote::{
    ArchiveRef, Counts, DOMAIN, ManifestError, Namespace, PublicKey, RemoteManifest, SecretKey, SignedManifest, Trust,
    objects,
};

fn manifest() -> RemoteManifest {
    RemoteManifest {
        namespace: Namespace::new("main").unwrap(),
        key: Key::new("git/serde").unwrap(),
        archive: ArchiveRef { blake3: blake3::hash(b"archive"), size: 1234 },
        counts: Counts { names: 12, bytes: 3456 },
    }
}

fn signer() -> SecretKey {
    SecretKey::from_seed(&[1; 32])
}

fn trusting(keys: &[&SecretKey]) -> Trust {
    Trust::Keys(keys.iter().map(|k| k.public_key()).collect::<BTreeSet<PublicKey>>())
}

fn ns(name: &str) -> Namespace {
    Namespace::new(name).unwrap()
}

fn key(name: &str) -> Key {
    Key::new(name).unwrap()
}

#[test]
fn the_signed_bytes_are_exactly_the_documented_ones() {
    let m = manifest();
    let mut expected = DOMAIN.to_vec();
    expected.extend_from_slice(&[0, 0, 0, 1]);
    expected.extend_from_slice(&[0, 0, 0, 4]);
    expected.extend_from_slice(b"main");
    expected.extend_from_slice(&[0, 0, 0, 9]);
    expected.extend_from_slice(b"git/serde");
    expected.extend_from_slice(blake3::hash(b"archive").as_bytes());
    expected.extend_from_slice(&1234u64.to_be_bytes());
    expected.extend_from_slice(&12u64.to_be_bytes());
    expected.extend_from_slice(&3456u64.to_be_bytes());
    assert_eq!(m.signed_bytes(), expected);
    assert_eq!(DOMAIN, b"safecache-remote-manifest\n");
}

#[test]
fn the_encoding_is_one_json_line() {
    let signed = manifest().sign(&[&signer()]);
    let text = String::from_utf8(signed.to_bytes()).unwrap();
    assert_eq!(text, GOLDEN);
    assert_eq!(SignedManifest::parse(text.as_bytes()).unwrap(), signed);
}

/// The manifest above, signed by the key of seed `[1; 32]` (ed25519
/// signatures are deterministic). docs/REMOTE.md shows the same line.
const GOLDEN: &str = concat!(
    r#"{"format":1,"namespace":"main","key":"git/serde","archive":{"blake3":"#,
    r#""1ff28929422717d74e648482a67b31b423e83858609e2ae1aef3ab9f77066c5b","size":1234},"#,
    r#""counts":{"names":12,"bytes":3456},"signatures":[{"public_key":"#,
    r#""ed25519:8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c","signature":"#,
    r#""ecbce77bf944a0411b8ec4623b5c995366cad3a6e737eef7d205d7954e965c30"#,
    r#"5db59af0014130e9dbddbcebd8183286fb359a7aa5b27e98b392ccda93739b0f"}]}"#,
    "\n"
);

#[test]
fn a_signed_manifest_verifies_for_its_namespace_and_key_only() {
    let signed = manifest().sign(&[&signer()]);
    let trust = trusting(&[&signer()]);
    assert_eq!(signed.verify(&ns("main"), &key("git/serde"), &trust).unwrap(), &manifest());
    for (namespace, k) in [("pr", "git/serde"), ("main", "git/serde2")] {
        let err = signed.verify(&ns(namespace), &key(k), &trust).unwrap_err();
        assert!(matches!(err, ManifestError::Mismatch { .. }), "{err:?}");
    }
}

#[test]
fn without_keys_any_manifest_is_accepted_and_with_keys_only_a_trusted_signature() {
    let unsigned = manifest().sign(&[]);
    assert!(unsigned.verify(&ns("main"), &key("git/serde"), &Trust::Any).is_ok());
    let err = unsigned.verify(&ns("main"), &key("git/serde"), &trusting(&[&signer()])).unwrap_err();
    assert!(matches!(err, ManifestError::Untrusted), "{err:?}");

    let stranger = SecretKey::from_seed(&[2; 32]);
    let by_stranger = manifest().sign(&[&stranger]);
    let err = by_stranger.verify(&ns("main"), &key("git/serde"), &trusting(&[&signer()])).unwrap_err();
    assert!(matches!(err, ManifestError::Untrusted), "{err:?}");

    // A stranger's signature beside a trusted one does no harm, and any of
    // several trusted keys will do.
    let both = manifest().sign(&[&stranger, &signer()]);
    assert!(both.verify(&ns("main"), &key("git/serde"), &trusting(&[&signer()])).is_ok());
    let other = SecretKey::from_seed(&[3; 32]);
    assert!(both.verify(&ns("main"), &key("git/serde"), &trusting(&[&other, &signer()])).is_ok());
}

/// Every field the signature covers, changed one at a time.
fn variants() -> Vec<(&'static str, RemoteManifest)> {
    let base = manifest();
    let with = |f: &dyn Fn(&mut RemoteManifest)| {
        let mut m = base.clone();
        f(&mut m);
        m
    };
    vec![
        ("namespace", with(&|m| m.namespace = ns("pr"))),
        ("key", with(&|m| m.key = key("git/serde2"))),
        ("hash", with(&|m| m.archive.blake3 = blake3::hash(b"other archive"))),
        ("size", with(&|m| m.archive.size += 1)),
        ("names", with(&|m| m.counts.names += 1)),
        ("bytes", with(&|m| m.counts.bytes += 1)),
    ]
}

#[test]
fn a_signature_cannot_be_replayed_under_another_field() {
    let signature = manifest().sign(&[&signer()]).signatures;
    let trust = trusting(&[&signer()]);
    for (field, m) in variants() {
        assert_ne!(m.signed_bytes(), manifest().signed_bytes(), "{field}");
        let forged = SignedManifest { manifest: m.clone(), signatures: signature.clone() };
        // Through the store's bytes, as a reader gets it.
        let parsed = SignedManifest::parse(&forged.to_bytes()).unwrap();
        let err = parsed.verify(&m.namespace, &m.key, &trust).unwrap_err();
        assert!(matches!(err, ManifestError::BadSignature(k) if k == signer().public_key()), "{field}: {err:?}");
    }
}

#[test]
fn tampering_with_any_byte_of_the_object_fails() {
    let bytes = manifest().sign(&[&signer()]).to_bytes();
    let trust = trusting(&[&signer()]);
    for at in 0..bytes.len() {
        for new in [b'0', b'1', b'a', b'"', b' '] {
            if bytes[at] == new {
                continue;
            }
            let mut tampered = bytes.clone();
            tampered[at] = new;
            let accepted = SignedManifest::parse(&tampered)
                .ok()
                .and_then(|s| s.verify(&ns("main"), &key("git/serde"), &trust).ok().cloned());
            assert_eq!(accepted, None, "byte {at} set to {:?} was accepted", char::from(new));
        }
    }
}

#[test]
fn malformed_objects_are_refused() {
    let good = String::from_utf8(manifest().sign(&[&signer()]).to_bytes()).unwrap();
    type Expected = fn(&ManifestError) -> bool;
    let cases: Vec<(String, Expected)> = vec![
        (good.replace("\"format\":1", "\"format\":2"), |e| matches!(e, ManifestError::UnknownFormat(2))),
        (good.replace(",\"counts\"", ",\"extra\":1,\"counts\""), |e| matches!(e, ManifestError::Malformed(_))),
        (good.replace("{\"format\"", "{ \"format\""), |e| matches!(e, ManifestError::NotCanonical)),
        (good.trim_end().to_owned(), |e| matches!(e, ManifestError::NotCanonical)),
        (good.replace("git/serde", "../etc"), |e| matches!(e, ManifestError::InvalidField { field: "key" })),
        (good.replace("\"main\"", "\"Main\""), |e| matches!(e, ManifestError::InvalidNamespace(_))),
        (good.replace("\"size\":1234", "\"size\":-1"), |e| matches!(e, ManifestError::Malformed(_))),
        (good.replace("\"size\":1234", "\"size\":18446744073709551616"), |e| matches!(e, ManifestError::Malformed(_))),
        (
            good.replace(
                &blake3::hash(b"archive").to_hex().to_string(),
                &blake3::hash(b"archive").to_hex().to_uppercase(),
            ),
            |e| matches!(e, ManifestError::InvalidField { field: "archive.blake3" }),
        ),
        (good.replace("ed25519:", "rsa:"), |e| {
            matches!(e, ManifestError::InvalidField { field: "signatures.public_key" })
        }),
        (format!("{}{good}", " ".repeat(70_000)), |e| matches!(e, ManifestError::TooLong)),
    ];
    for (text, expected) in cases {
        let err = SignedManifest::parse(text.as_bytes()).unwrap_err();
        assert!(expected(&err), "{text}: {err:?}");
    }
    let many: Vec<SecretKey> = (0..9).map(|i| SecretKey::from_seed(&[i; 32])).collect();
    let signed = manifest().sign(&many.iter().collect::<Vec<_>>());
    let err = SignedManifest::parse(&signed.to_bytes()).unwrap_err();
    assert!(matches!(err, ManifestError::InvalidField { field: "signatures" }), "{err:?}");
}

#[test]
fn namespaces_are_checked() {
    for good in ["main", "pr-12", "a", "x.y_z", &"a".repeat(64)] {
        assert!(Namespace::new(good).is_ok(), "{good}");
    }
    for bad in ["", "Main", "-x", ".x", "a/b", "a b", &"a".repeat(65)] {
        assert!(matches!(Namespace::new(bad), Err(ManifestError::InvalidNamespace(_))), "{bad}");
    }
}

#[test]
fn object_names() {
    assert_eq!(objects::manifest(&ns("main"), &key("git/Serde")), "main/v1/manifests/git+@serde");
    let hash = blake3::hash(b"archive");
    assert_eq!(objects::archive(&ns("main"), &hash), format!("main/v1/archives/{}.tar.zst", hash.to_hex()));
}
