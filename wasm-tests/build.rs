//! Builds the guest (`wasm-tests/guest`) for wasm32-wasip1, so that plain
//! `cargo test` runs the simulation on a fresh clone.
//!
//! The nested cargo uses its own target directory (beside the outer one),
//! so it never waits on the lock the outer build holds, and it is cleared
//! of the outer build's flags and wrappers (clippy, coverage, rustflags).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("workspace root").to_owned();
    for watched in ["core/src", "core/Cargo.toml", "wasm-tests/guest/src", "wasm-tests/guest/Cargo.toml", "Cargo.lock"]
    {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=SAFECACHE_SIM_GUEST");

    // An escape hatch for hosts that bring their own guest build.
    if let Some(prebuilt) = env::var_os("SAFECACHE_SIM_GUEST") {
        println!("cargo:rustc-env=SIM_GUEST_WASM={}", Path::new(&prebuilt).display());
        return;
    }

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let target_dir = guest_target_dir(&out);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--package", "wasm-tests-guest", "--bin", "sim-guest"])
        .args(["--target", "wasm32-wasip1", "--target-dir"])
        .arg(&target_dir);
    if env::var_os("CARGO_NET_OFFLINE").is_some() {
        cmd.arg("--offline");
    }
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CLIPPY_ARGS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_LLVM_COV",
        "LLVM_PROFILE_FILE",
        "CARGO_INCREMENTAL",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo to build the wasm guest");
    assert!(
        status.success(),
        "building the wasm guest failed ({status}); is the target installed? `rustup target add wasm32-wasip1`"
    );
    let wasm = target_dir.join("wasm32-wasip1/release/sim-guest.wasm");
    assert!(wasm.is_file(), "the guest build produced no {}", wasm.display());
    println!("cargo:rustc-env=SIM_GUEST_WASM={}", wasm.display());
}

/// `<target>/sim-guest`, found from `OUT_DIR` (`<target>/[<triple>/]<profile>/build/<pkg>-<hash>/out`),
/// so that every profile and every check or test build shares one guest build.
fn guest_target_dir(out: &Path) -> PathBuf {
    let mut dir = out;
    while let Some(parent) = dir.parent() {
        if dir.file_name().is_some_and(|n| n == "build") {
            // parent is the profile dir; its parent is the target dir (or
            // `<target>/<triple>`, which works as well).
            if let Some(target) = parent.parent() {
                return target.join("sim-guest");
            }
        }
        dir = parent;
    }
    out.join("sim-guest")
}
