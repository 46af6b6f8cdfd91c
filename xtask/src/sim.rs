//! This defines `cargo xtask sim` (owned by the simulation work).

pub(crate) fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask sim` is not built yet")
}
