//! The simulated process of the wasm-tests host: one safecache role, run as
//! a wasm32-wasip1 program against the cache preopened at `/cache`.
//!
//! Natively this binary is only a stub, so that `cargo test --workspace`
//! can build it; the host builds the real one for wasm32-wasip1.

#[cfg(target_os = "wasi")]
mod guest;

#[cfg(target_os = "wasi")]
fn main() {
    guest::main();
}

#[cfg(not(target_os = "wasi"))]
fn main() {
    eprintln!("sim-guest runs only under the wasm-tests host, built for wasm32-wasip1");
    std::process::exit(2);
}
