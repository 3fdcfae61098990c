//! `shapecast-train`: makes the models the runtime runs.
fn main() -> anyhow::Result<()> {
    Ok(())
}
