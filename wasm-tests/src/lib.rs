//! Deterministic simulation of the safecache core under wasmtime.
