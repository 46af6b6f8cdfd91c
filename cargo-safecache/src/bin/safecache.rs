//! `safecache`: the same program as `cargo safecache`, for people who do not
//! go through cargo (and to save cargo's start-up time).

fn main() -> std::process::ExitCode {
    cargo_safecache::main(cargo_safecache::Binary::Safecache)
}
