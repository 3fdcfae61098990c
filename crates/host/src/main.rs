//! `shapecast-host`: receives shapecast streams.
fn main() -> anyhow::Result<()> {
    Ok(())
}
