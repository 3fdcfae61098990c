//! `shapecast`: the edge runtime that runs on the robot.

fn main() -> anyhow::Result<()> {
    println!("shapecast {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}
